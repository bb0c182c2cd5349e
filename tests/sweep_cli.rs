//! `vae sweep` end to end on a subset of MNIST (issue 25): a 2 × 2 grid writes a run per model as `vae train`
//! writes one, whose losses and checkpoint equal the matching `vae train` run's to the bit, and which `vae train
//! --resume` continues; sweep.csv and both pictures; and bad grids refused before anything is written.

mod common;
use common::{mnist_dir, scratch};
use std::path::Path;
use std::process::{Command, Output};

const VAE: &str = env!("CARGO_BIN_EXE_vae");

fn vae(args: &[&str]) -> Output {
    Command::new(VAE).args(args).output().expect("run vae")
}

#[track_caller]
fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vae failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `vae COMMAND --data <MNIST> --out OUT EXTRA...`, run to its end.
fn vae_in(command: &str, out: &Path, extra: &[&str]) -> Output {
    vae_cmd(command, out, extra).output().expect("run vae")
}

/// The command of [`vae_in`], to run as the caller likes.
fn vae_cmd(command: &str, out: &Path, extra: &[&str]) -> Command {
    let data = mnist_dir();
    let mut cmd = Command::new(VAE);
    cmd.arg(command)
        .args([
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(extra);
    cmd
}

/// The shared options of the runs compared here: a small model, a subset, every batch but the last full.
const SHAPE: [&str; 8] = [
    "--hidden",
    "64",
    "--train-samples",
    "1000",
    "--test-samples",
    "300",
    "--kl-warmup",
    "1",
];

/// metrics.csv without its timing columns (epoch_seconds, samples_per_second).
fn losses(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).expect("metrics.csv");
    text.lines()
        .map(|l| l.split(',').take(7).collect::<Vec<_>>().join(","))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The checkpoint's tensor bytes (after the safetensors header, which holds the settings).
fn tensors(dir: &Path) -> Vec<u8> {
    let bytes = std::fs::read(dir.join("checkpoint.safetensors")).expect("a checkpoint");
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + n..].to_vec()
}

#[test]
fn a_sweep_writes_each_model_as_vae_train_would_and_the_pictures() {
    let data = mnist_dir();
    let data = data.to_str().unwrap();
    let root = scratch("sweep_cli");
    let sweep_out = root.join("sweep");
    let grid = [
        "--epochs",
        "2",
        "--beta",
        "0.5,2",
        "--seeds",
        "1,2",
        "--no-tune",
    ];
    let args = [&grid[..], &SHAPE[..]].concat();
    let stdout = ok(&vae_in("sweep", &sweep_out, &args));
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("epoch")).count(),
        2,
        "{stdout}"
    );
    let dirs = [
        "beta0.5-seed1-lr0.001",
        "beta0.5-seed2-lr0.001",
        "beta2-seed1-lr0.001",
        "beta2-seed2-lr0.001",
    ];
    for d in dirs {
        for f in [
            "metrics.csv",
            "checkpoint.safetensors",
            "sample_2.png",
            "manifold.png",
        ] {
            assert!(sweep_out.join(d).join(f).is_file(), "{d}/{f}");
        }
    }
    for f in ["sweep.png", "rate_distortion.png"] {
        assert!(sweep_out.join(f).is_file(), "{f}");
    }
    let csv = std::fs::read_to_string(sweep_out.join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4 * 2, "{csv}");

    // The last model alone: seed 2, β 2, over the sweep's batches (its data seed, the first of --seeds).
    let alone = root.join("alone");
    let one = [
        "--no-tune",
        "--epochs",
        "2",
        "--beta",
        "2",
        "--seed",
        "2",
        "--data-seed",
        "1",
    ];
    ok(&vae_in("train", &alone, &[&one[..], &SHAPE[..]].concat()));
    let member = sweep_out.join("beta2-seed2-lr0.001");
    assert_eq!(
        losses(&member),
        losses(&alone),
        "the sweep's model and the run alone"
    );
    assert_eq!(
        tensors(&member),
        tensors(&alone),
        "their checkpoints' tensors"
    );
    // And the models differ from each other.
    assert_ne!(
        losses(&member),
        losses(&sweep_out.join("beta2-seed1-lr0.001"))
    );

    // `vae train --resume` continues a sweep's model as it continues the run alone.
    for dir in [&member, &alone] {
        let ck = dir.join("checkpoint.safetensors");
        ok(&vae(&[
            "train",
            "--data",
            data,
            "--resume",
            ck.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
            "--epochs",
            "3",
        ]));
    }
    assert_eq!(losses(&member), losses(&alone), "after resuming both");
    assert_eq!(losses(&member).lines().count(), 4);
}

/// Tuning times the step's products at the sweep's model count: the cache holds them under keys ending in ` x2`,
/// beside none of a single model's step (the evaluation's single-model products are not tuned, as in
/// `vae train`).
#[test]
fn a_sweep_tunes_at_its_model_count() {
    let root = scratch("sweep_cli_tune");
    let cache = root.join("choices.txt");
    let out = root.join("sweep");
    let small = [
        "--hidden",
        "32",
        "--batch-size",
        "64",
        "--train-samples",
        "256",
        "--test-samples",
        "64",
    ];
    let args = [
        &[
            "--epochs",
            "1",
            "--seeds",
            "1,2",
            "--tune-cache",
            cache.to_str().unwrap(),
        ],
        &small[..],
    ]
    .concat();
    ok(&sweep_cmd(&out, &args).output().unwrap());
    let text = std::fs::read_to_string(&cache).expect("the tuning cache");
    let keyed: Vec<&str> = text.lines().filter(|l| l.contains(" x2")).collect();
    assert!(keyed.len() >= 4, "{text}");
    assert!(
        text.lines()
            .filter(|l| l.contains("784") && !l.starts_with('#'))
            .all(|l| l.contains(" x2")),
        "a product tuned for one model: {text}"
    );
    // The checkpoint records the kernels under the single model's keys, for `vae train --resume`.
    let ck = std::fs::read(out.join("beta1-seed1-lr0.001/checkpoint.safetensors")).unwrap();
    let n = u64::from_le_bytes(ck[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&ck[8..8 + n]);
    assert!(
        header.contains("784") && !header.contains(" x2"),
        "{header}"
    );
}

/// A sweep too large for the device's memory is refused before training, with the largest model count that fits
/// (a device of 24 MB, simulated: a few of these small models fit, eight do not), and writes nothing.
#[test]
fn a_sweep_too_large_for_the_memory_names_the_most_models_that_fit() {
    let out = scratch("sweep_cli_memory").join("sweep");
    let grid = [
        "--seeds",
        "1,2,3,4",
        "--beta",
        "1,2",
        "--epochs",
        "1",
        "--no-tune",
    ];
    let o = sweep_cmd(&out, &[&grid[..], &SHAPE[..6]].concat())
        .env("VAE_TEST_FAULT", "memory:24000000")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    let fit: u32 = stderr
        .split(" model")
        .next()
        .and_then(|s| s.rsplit(". ").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no model count in: {stderr}"));
    assert!((1..8).contains(&fit), "{stderr}");
    assert!(
        stderr.contains("at once is the most that fits on this device now (8 do not)"),
        "{stderr}"
    );
    assert!(!out.exists(), "wrote {}", out.display());
}

#[test]
fn bad_grids_are_refused_before_anything_is_written() {
    let root = scratch("sweep_cli_bad");
    let out = root.join("never");
    let (betas, seeds) = (
        (0..17).map(|b| b.to_string()).collect::<Vec<_>>().join(","),
        (0..16).map(|s| s.to_string()).collect::<Vec<_>>().join(","),
    );
    let cases: [(&[&str], &str); 5] = [
        (&["--beta", ""], "--beta"),
        (&["--beta", "1,-2"], "--beta"),
        (&["--seeds", "1,2,1"], "--seeds"),
        (&["--lr", "0.001,1e-3"], "--lr"),
        (&["--beta", &betas, "--seeds", &seeds], "272 models"),
    ];
    for (grid, says) in cases {
        let mut args = vec![
            "sweep",
            "--out",
            out.to_str().unwrap(),
            "--data",
            "no/such/dir",
        ];
        args.extend(grid);
        let o = vae(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{grid:?} was accepted");
        assert!(stderr.contains(says), "{grid:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{grid:?}: {stderr}");
        assert!(!out.exists(), "{grid:?} wrote {}", out.display());
    }
    // A directory that holds no sweep to resume.
    let o = vae(&[
        "sweep",
        "--resume",
        root.join("nothing").to_str().unwrap(),
        "--epochs",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sweep.txt") && stderr.contains("directory a vae sweep wrote"),
        "{stderr}"
    );
    assert!(
        !root.join("nothing").exists(),
        "resuming nothing created {}",
        root.join("nothing").display()
    );
}

/// `vae sweep --data <MNIST> --out OUT ARGS...`.
fn sweep_cmd(out: &Path, args: &[&str]) -> Command {
    vae_cmd("sweep", out, args)
}

/// The models' directories of the 2-model sweeps below.
const PAIR: [&str; 2] = ["beta1-seed1-lr0.001", "beta1-seed2-lr0.001"];

/// Ctrl-C mid-epoch writes every model's checkpoint at that step; `vae sweep --resume` continues the sweep from
/// there and, resumed again at an epoch boundary, ends where a straight sweep ends, to the bit, for every model.
#[cfg(unix)]
#[test]
fn an_interrupted_and_resumed_sweep_equals_a_straight_one() {
    let root = scratch("sweep_cli_resume");
    let grid = ["--seeds", "1,2", "--no-tune", "--log-interval", "3"];
    let shape = [&SHAPE[..], &grid[..]].concat();
    let straight = root.join("straight");
    let o = sweep_cmd(&straight, &[&shape[..], &["--epochs", "3"]].concat())
        .output()
        .unwrap();
    ok(&o);

    // 8 steps an epoch (1000 examples, batch 128); Ctrl-C at the log point after step 11 (log points every 3 steps), in epoch 2.
    let out = root.join("interrupted");
    let stderr_file = root.join("interrupted.stderr");
    let mut child = sweep_cmd(&out, &[&shape[..], &["--epochs", "3"]].concat())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .env("VAE_TEST_FAULT", "stall-after-step:11")
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&stderr_file).unwrap_or_default();
    let start = std::time::Instant::now();
    while !text().contains("stalled at") {
        assert!(start.elapsed().as_secs() < 120, "never stalled: {}", text());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let s = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(s.success());
    let status = child.wait().unwrap();
    let e = text();
    assert_eq!(status.code(), Some(130), "{e}");
    assert!(
        e.contains("written at step 11 (epoch 2, step 3 of 8)") && e.contains("--resume"),
        "{e}"
    );

    // Resumed mid-epoch up to epoch 2, then at the epoch boundary up to 3.
    for epochs in ["2", "3"] {
        let o = Command::new(VAE)
            .args([
                "sweep",
                "--data",
                mnist_dir().to_str().unwrap(),
                "--resume",
                out.to_str().unwrap(),
            ])
            .args(["--epochs", epochs])
            .output()
            .unwrap();
        ok(&o);
    }
    for d in PAIR {
        assert_eq!(losses(&out.join(d)), losses(&straight.join(d)), "{d}");
        assert_eq!(tensors(&out.join(d)), tensors(&straight.join(d)), "{d}");
    }
    let csv = |dir: &Path| std::fs::read_to_string(dir.join("sweep.csv")).unwrap();
    assert_eq!(csv(&out), csv(&straight), "sweep.csv tells the whole sweep");

    // A grid with --resume is refused: the resumed sweep has its models.
    let o = Command::new(VAE)
        .args([
            "sweep",
            "--resume",
            out.to_str().unwrap(),
            "--beta",
            "2",
            "--epochs",
            "4",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("do not go with --resume"));
}

/// Warm-up and binarization as axes of the grid: each model is named for them and equals `vae train` with them.
#[test]
fn warm_ups_and_binarizations_are_axes_of_the_grid() {
    let root = scratch("sweep_cli_axes");
    let out = root.join("sweep");
    // The shared shape without its warm-up, which is an axis here.
    let shape = [&SHAPE[..6], &["--no-tune"]].concat();
    let grid = [
        "--epochs",
        "2",
        "--seeds",
        "3",
        "--kl-warmup",
        "0,1",
        "--binarize",
        "no,yes",
    ];
    ok(&vae_in("sweep", &out, &[&grid[..], &shape[..]].concat()));
    let names = [
        "beta1-seed3-lr0.001-warmup0-grey",
        "beta1-seed3-lr0.001-warmup0-binarized",
        "beta1-seed3-lr0.001-warmup1-grey",
        "beta1-seed3-lr0.001-warmup1-binarized",
    ];
    for n in names {
        assert!(out.join(n).join("checkpoint.safetensors").is_file(), "{n}");
    }
    let alone = root.join("alone");
    let one = [
        "--epochs",
        "2",
        "--seed",
        "3",
        "--kl-warmup",
        "1",
        "--binarize",
    ];
    ok(&vae_in("train", &alone, &[&one[..], &shape[..]].concat()));
    let member = out.join(names[3]);
    assert_eq!(losses(&member), losses(&alone));
    assert_eq!(tensors(&member), tensors(&alone));
}
