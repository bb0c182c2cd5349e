//! `vae profile --capture` under RenderDoc: the capture file is written and holds exactly the profiled steps,
//! every dispatch named as in the code. Needs RenderDoc's command-line tool (`renderdoccmd`); fails, never
//! skips, without it.

mod common;

use common::{mnist_dir, scratch};
use std::process::Command;

const VAE: &str = env!("CARGO_BIN_EXE_vae");

fn renderdoccmd() -> Command {
    let probe = Command::new("renderdoccmd").arg("version").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        panic!(
            "this test needs RenderDoc's renderdoccmd on PATH (Debian/Ubuntu: apt-get install renderdoc; else \
             https://renderdoc.org/builds); it is not skipped without it"
        );
    }
    Command::new("renderdoccmd")
}

#[test]
fn a_renderdoc_capture_holds_the_profiled_steps_with_every_dispatch_named() {
    let dir = scratch("capture");
    std::fs::create_dir_all(&dir).unwrap();
    let o = renderdoccmd()
        .args([
            "capture",
            "-w",
            "-c",
            dir.join("vae").to_str().unwrap(),
            VAE,
        ])
        .args([
            "profile",
            "--capture",
            "--steps",
            "1",
            "--no-tune",
            "--batch-size",
            "8",
        ])
        .args(["--hidden", "16", "--train-samples", "64"])
        .args(["--data", mnist_dir().to_str().unwrap()])
        .args(["--trace", dir.join("trace.json").to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    let capture = out
        .lines()
        .find_map(|l| l.strip_prefix("RenderDoc capture written to "))
        .unwrap_or_else(|| panic!("no capture reported:\n{out}\n{err}"));
    assert!(std::path::Path::new(capture).is_file(), "{capture}");
    // The step's dispatches, as the profile's per-kernel table names them.
    let dispatches: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("dispatches per training step: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dispatch count:\n{out}"));
    // What is recorded less often than once a step (the gather of the next steps' batches, the loss reduction):
    // a one-step profile records each once, its one step being the first of the gathered ones and a submission.
    let less_often: Vec<usize> = out
        .lines()
        .filter_map(|l| l.strip_prefix("plus "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(
        less_often.len(),
        2,
        "no gather and reduction counts:\n{out}"
    );
    let once: usize = less_often.iter().sum();
    let table = out.split_once("GB/s\n").map(|(_, t)| t).unwrap_or_default();
    let labels: Vec<&str> = table
        .lines()
        .take_while(|l| !l.starts_with("trace written"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(labels.len() >= 10, "no kernel table:\n{out}");
    // RenderDoc's own reader turns the capture into XML: every API call with its arguments.
    let xml_path = dir.join("capture.xml");
    let c = renderdoccmd()
        .args([
            "convert",
            "-f",
            capture,
            "-o",
            xml_path.to_str().unwrap(),
            "-c",
            "xml",
        ])
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    let named: Vec<&str> = xml
        .split("<string name=\"pLabelName\" typename=\"string\" important=\"true\">")
        .skip(1)
        .filter_map(|s| s.split('<').next())
        .collect();
    for label in &labels {
        assert!(
            named.contains(label),
            "dispatch {label} has no debug label in the capture; labels there: {named:?}"
        );
    }
    // Exactly the profiled steps: one step timed kernel by kernel, then one recorded as training records it, each
    // a submission of its own with its gather and its loss reduction.
    let recorded = xml.matches("name=\"vkCmdDispatch\"").count();
    assert_eq!(
        recorded,
        2 * (dispatches + once),
        "dispatches in the capture"
    );
    std::fs::remove_dir_all(&dir).ok();
}
