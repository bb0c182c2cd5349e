//! Faults: a process killed at random moments never leaves a corrupt checkpoint and resumes to the same result;
//! a diverging run stops at the next log point keeping its last good checkpoint; two runs cannot share an output
//! directory. These need MNIST in data/mnist/ (see data/README.md).

mod common;
use common::{mnist_dir, scratch};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use vae_wgpu::training::checkpoint::Checkpoint;

const VAE: &str = env!("CARGO_BIN_EXE_vae");

const RUN: [&str; 10] = [
    "--train-samples",
    "2000",
    "--test-samples",
    "200",
    "--batch-size",
    "100",
    "--latent",
    "3",
    "--log-interval",
    "5",
];

fn train_cmd(out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(VAE);
    c.args([
        "train",
        "--data",
        mnist_dir().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .args(RUN)
    .args(extra)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

fn losses(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').take(7).collect::<Vec<_>>().join(","))
        .collect()
}

#[test]
fn killed_runs_keep_a_valid_checkpoint_and_resume_to_the_same_result() {
    let straight = scratch("straight");
    let started = std::time::Instant::now();
    let o = train_cmd(&straight, &["--epochs", "4"]).output().unwrap();
    // Kill moments are fractions of a whole run's time, so the test means the same on a slow or fast device.
    let whole = started.elapsed().as_millis() as u64;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let out = scratch("killed");
    let ck = out.join("checkpoint.safetensors");
    let mut kills = 0;
    // Kill after these fractions (per mille) of a whole run, spread over loading, training, evaluation, writing.
    for per_mille in [220u64, 410, 110, 630, 320, 750, 170, 510] {
        let delay = whole * per_mille / 1000;
        let resume = ck.exists();
        let mut args = vec!["--epochs", "4"];
        if resume {
            args.extend(["--resume", ck.to_str().unwrap()]);
        }
        let mut child = train_cmd(&out, &args).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL on Unix
            kills += 1;
        }
        let status = child.wait().unwrap();
        if status.success() {
            break;
        }
        // Whatever is there is a complete checkpoint (never a torn one).
        if ck.exists() {
            let c = Checkpoint::load(&ck).unwrap_or_else(|e| panic!("after kill {kills}: {e}"));
            assert!((1..=4).contains(&c.epoch));
        }
    }
    // Finish the run.
    let mut args = vec!["--epochs", "4"];
    if ck.exists() && Checkpoint::load(&ck).unwrap().epoch < 4 {
        args.extend(["--resume", ck.to_str().unwrap()]);
    }
    if Checkpoint::load(&ck).map(|c| c.epoch).unwrap_or(0) < 4 {
        let o = train_cmd(&out, &args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(
        kills >= 3,
        "only {kills} kills landed; the run is too fast for this test"
    );
    // Exact resume: the killed-and-resumed run ends where the straight one does, to the bit.
    assert_eq!(losses(&out), losses(&straight));
    assert_eq!(
        Checkpoint::load(&ck).unwrap().params,
        Checkpoint::load(&straight.join("checkpoint.safetensors"))
            .unwrap()
            .params
    );
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_dir_all(&straight).ok();
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn a_diverging_run_stops_and_keeps_its_last_good_checkpoint() {
    let out = scratch("diverge");
    let o = train_cmd(&out, &["--epochs", "1"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let ck = out.join("checkpoint.safetensors");
    let good = std::fs::read(&ck).unwrap();
    // An absurd learning rate: the parameters blow up within a few steps.
    let o = train_cmd(
        &out,
        &[
            "--epochs",
            "3",
            "--resume",
            ck.to_str().unwrap(),
            "--lr",
            "1e6",
        ],
    )
    .output()
    .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("became non-finite at step") && e.contains("Lower the learning rate"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
    assert_eq!(
        std::fs::read(&ck).unwrap(),
        good,
        "the last good checkpoint changed"
    );
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn two_runs_cannot_share_an_output_directory() {
    let out = scratch("locked");
    std::fs::create_dir_all(&out).unwrap();
    // A live owner (this test process) holds the lock.
    std::fs::write(out.join(".vae.lock"), format!("{}\n", std::process::id())).unwrap();
    let o = train_cmd(&out, &["--epochs", "1"]).output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains(&format!("another run (process {})", std::process::id())),
        "{e}"
    );
    assert!(!out.join("metrics.csv").exists());
    // A lock left by a process that is gone is taken over; the run releases it when done.
    std::fs::write(out.join(".vae.lock"), "4000000000\n").unwrap();
    let o = train_cmd(&out, &["--epochs", "1"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.join(".vae.lock").exists());
    // A finished run in the directory is not overwritten by a new one.
    let o = train_cmd(&out, &["--epochs", "1"]).output().unwrap();
    assert!(stderr(&o).contains("already holds a run"), "{}", stderr(&o));
    std::fs::remove_dir_all(&out).ok();
}
