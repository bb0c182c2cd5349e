//! Faults: a process killed at eight chosen moments (before any checkpoint, mid-epoch at a chosen step, between a
//! checkpoint's temporary write and its rename, right after a checkpoint) never leaves a corrupt checkpoint, and each restart
//! resumes from the last one to the same result; a diverging run stops at the next log point keeping its last
//! good checkpoint; two runs cannot share an output directory. These need MNIST in data/mnist/ (see
//! data/README.md).

mod common;
use common::{mnist_dir, scratch};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use vae_wgpu::training::checkpoint::Checkpoint;

const VAE: &str = env!("CARGO_BIN_EXE_vae");

const RUN: [&str; 13] = [
    "--no-tune",
    "--train-samples",
    "1000",
    "--test-samples",
    "200",
    "--batch-size",
    "50",
    "--hidden",
    "100",
    "--latent",
    "3",
    "--log-interval",
    "5",
];

fn train_cmd(out: &Path, extra: &[&str]) -> Command {
    train_cmd_with(out, &RUN, extra)
}

/// [`train_cmd`] with `run` in place of [`RUN`].
fn train_cmd_with(out: &Path, run: &[&str], extra: &[&str]) -> Command {
    let mut c = Command::new(VAE);
    c.args([
        "train",
        "--data",
        mnist_dir().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .args(run)
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

/// The epoch of the checkpoint in `ck`, if there is one (checkpoints are renamed into place whole).
fn checkpoint_epoch(ck: &Path) -> Option<u32> {
    Checkpoint::load(ck).ok().map(|c| c.epoch)
}

/// Where a run is killed.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// Right after the process starts, before any GPU work.
    Startup,
    /// At the log point after global step `step` (mid-epoch), stalled there by the test-only fault hook.
    InEpoch(u32),
    /// Stalled between writing checkpoint.safetensors's temporary file and renaming it into place.
    BeforeRename,
    /// As soon as the checkpoint of `epoch` is in place (while the run draws its pictures and goes on).
    AfterCheckpoint(u32),
}

/// Polls every few milliseconds until `done()` holds; fails after a minute.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn killed_runs_resume_from_their_last_checkpoint_and_end_bit_identical() {
    let straight = scratch("straight");
    let o = train_cmd(&straight, &["--epochs", "4"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = scratch("killed");
    let ck = out.join("checkpoint.safetensors");
    let stderr_file = out.with_extension("stderr");
    // Eight moments, in order, and the epoch the run after each one must resume at (None: from scratch).
    let moments = [
        (Moment::Startup, None),
        (Moment::InEpoch(10), None),
        (Moment::AfterCheckpoint(1), Some(2)),
        (Moment::InEpoch(25), Some(2)),
        (Moment::BeforeRename, Some(2)),
        (Moment::AfterCheckpoint(2), Some(3)),
        (Moment::InEpoch(55), Some(3)),
        (Moment::AfterCheckpoint(3), Some(4)),
    ];
    // The epoch each start resumed at, as its first line says.
    let mut resumed_at: Vec<Option<u32>> = Vec::new();
    let start = |fault: Option<String>| {
        let mut args = vec!["--epochs", "4"];
        if ck.exists() {
            args.extend(["--resume", ck.to_str().unwrap()]);
        }
        let mut cmd = train_cmd(&out, &args);
        cmd.stderr(std::fs::File::create(&stderr_file).unwrap());
        if let Some(point) = fault {
            cmd.env(vae_wgpu::fault::VARIABLE, point);
        }
        cmd.spawn().unwrap()
    };
    let stderr_now = || std::fs::read_to_string(&stderr_file).unwrap_or_default();
    let resume_epoch = |text: &str| -> Option<u32> {
        let at = text.find("resuming at epoch ")? + "resuming at epoch ".len();
        text[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    for (moment, next_resume) in moments {
        let before = checkpoint_epoch(&ck);
        let fault = match moment {
            Moment::BeforeRename => Some("stall-before-rename:checkpoint.safetensors".to_string()),
            Moment::InEpoch(step) => Some(format!("stall-after-step:{step}")),
            _ => None,
        };
        let mut child = start(fault);
        match moment {
            Moment::Startup => std::thread::sleep(Duration::from_millis(20)),
            Moment::InEpoch(_) => {
                wait_for("the stall mid-epoch", || {
                    stderr_now().contains("stalled at")
                });
            }
            Moment::BeforeRename => {
                wait_for("the stall before the rename", || {
                    stderr_now().contains("stalled at")
                });
                assert_eq!(checkpoint_epoch(&ck), before, "the rename happened");
                let tmp = format!(".checkpoint.safetensors.tmp{}", child.id());
                assert!(out.join(tmp).exists(), "no temporary checkpoint");
            }
            Moment::AfterCheckpoint(epoch) => {
                wait_for("the checkpoint", || checkpoint_epoch(&ck) == Some(epoch));
            }
        }
        let was_running = child.try_wait().unwrap().is_none();
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        assert!(
            was_running,
            "{moment:?}: the run ended before it was killed"
        );
        resumed_at.push(resume_epoch(&stderr_now()));
        // The kill left a whole checkpoint: the one before it, or (right after one) the new one.
        match moment {
            Moment::AfterCheckpoint(e) => assert_eq!(checkpoint_epoch(&ck), Some(e)),
            _ => assert_eq!(
                checkpoint_epoch(&ck),
                before,
                "{moment:?} changed the checkpoint"
            ),
        }
        assert_eq!(
            checkpoint_epoch(&ck).map(|e| e + 1),
            next_resume,
            "{moment:?}"
        );
    }
    // Finish the run.
    let o = start(None).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr_now());
    resumed_at.push(resume_epoch(&stderr_now()));
    // Every start after a checkpoint existed resumed from it, at the epoch after it.
    assert_eq!(
        resumed_at,
        [
            None,
            None,
            None,
            Some(2),
            Some(2),
            Some(2),
            Some(3),
            Some(3),
            Some(4)
        ]
    );
    // The stalled run's temporary file was cleared by a later run.
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // Exact resume: the killed-and-resumed run ends where the straight one does, to the bit.
    assert_eq!(losses(&out), losses(&straight));
    let (a, b) = (
        Checkpoint::load(&ck).unwrap(),
        Checkpoint::load(&straight.join("checkpoint.safetensors")).unwrap(),
    );
    assert_eq!((a.params, a.m, a.v, a.step), (b.params, b.m, b.v, b.step));
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_file(&stderr_file).ok();
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
    assert!(e.contains("Lower the learning rate"), "{e}");
    // The step where the loss went non-finite, and the log point where the run saw it and stopped: the next one
    // (log interval 5, 20 steps an epoch, the checkpoint's 20 steps done).
    let number_after = |key: &str| -> u32 {
        let at = e.find(key).unwrap_or_else(|| panic!("no {key:?} in: {e}")) + key.len();
        e[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (bad, seen) = (
        number_after("non-finite at step "),
        number_after("log point after step "),
    );
    assert!(bad > 20, "the first resumed step is 21: {e}");
    assert_eq!(
        seen,
        bad.div_ceil(5) * 5,
        "stopped at another log point: {e}"
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

/// Sends SIGINT (Ctrl-C) to `pid` through kill(1), which every Unix has.
#[cfg(unix)]
fn interrupt(pid: u32) {
    let s = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(s.success(), "kill -INT {pid} failed");
}

/// Starts a run (resuming the checkpoint in `out` if there is one) with the faults `faults` armed, presses Ctrl-C
/// once at each stall as it reaches it, and returns the run's exit code and stderr.
#[cfg(unix)]
fn interrupt_at(out: &Path, faults: &str) -> (Option<i32>, String) {
    interrupt_at_with(out, &RUN, faults)
}

/// [`interrupt_at`] with `run` in place of [`RUN`].
#[cfg(unix)]
fn interrupt_at_with(out: &Path, run: &[&str], faults: &str) -> (Option<i32>, String) {
    let ck = out.join("checkpoint.safetensors");
    let stderr_file = out.with_extension("stderr");
    let mut args = vec!["--epochs", "3"];
    if ck.exists() {
        args.extend(["--resume", ck.to_str().unwrap()]);
    }
    let mut cmd = train_cmd_with(out, run, &args);
    cmd.stderr(std::fs::File::create(&stderr_file).unwrap())
        .env(vae_wgpu::fault::VARIABLE, faults);
    let mut child = cmd.spawn().unwrap();
    let text = || std::fs::read_to_string(&stderr_file).unwrap_or_default();
    let stalls = faults.split(',').filter(|p| p.starts_with("stall-"));
    for (n, point) in stalls.enumerate() {
        wait_for(point, || text().matches("stalled at").count() > n);
        interrupt(child.id());
    }
    let status = child.wait().unwrap();
    let e = text();
    std::fs::remove_file(&stderr_file).ok();
    (status.code(), e)
}

#[cfg(unix)]
#[test]
fn ctrl_c_checkpoints_at_the_step_and_the_resumed_run_ends_bit_identical() {
    // 20 steps an epoch (1000 examples, batch 50), log points every 5 steps, 3 epochs.
    let straight = scratch("straight-3");
    let o = train_cmd(&straight, &["--epochs", "3"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = scratch("interrupted");
    let ck = out.join("checkpoint.safetensors");
    // Ctrl-C mid-epoch in the first epoch (nothing saved yet), then in the second, each run resuming the
    // checkpoint the one before wrote: (global step, epochs complete, steps into the next epoch).
    for (step, epoch, epoch_step) in [(10, 0, 10), (35, 1, 15)] {
        let (code, e) = interrupt_at(&out, &format!("stall-after-step:{step}"));
        assert_eq!(code, Some(130), "{e}");
        assert!(!e.contains("panicked"), "{e}");
        let at = format!(
            "checkpoint written at step {step} (epoch {}, step {epoch_step} of 20)",
            epoch + 1
        );
        assert!(e.contains(&at), "{e}");
        assert!(e.contains("--resume"), "the message says how to go on: {e}");
        let c = Checkpoint::load(&ck).unwrap();
        assert_eq!((c.step, c.epoch, c.epoch_step), (step, epoch, epoch_step));
        assert_eq!(c.partial.examples, 50 * epoch_step as u64);
        match epoch {
            0 => assert!(
                !out.join("metrics.csv").exists(),
                "metrics.csv before an epoch ended"
            ),
            _ => assert_eq!(losses(&out).len(), epoch as usize, "metrics.csv rows"),
        }
        if step == 35 {
            assert!(e.contains("resuming in epoch 1 after step 10"), "{e}");
        }
    }
    // Ctrl-C at the last step of epoch 2: the epoch finishes (evaluation, checkpoint) and the run stops there.
    let (code, e) = interrupt_at(&out, "stall-after-step:40");
    assert_eq!(code, Some(130), "{e}");
    assert!(e.contains("resuming in epoch 2 after step 15"), "{e}");
    assert!(e.contains("stopped before epoch 3"), "{e}");
    let c = Checkpoint::load(&ck).unwrap();
    assert_eq!((c.step, c.epoch, c.epoch_step), (40, 2, 0));
    let complete = std::fs::read(&ck).unwrap();
    // Ctrl-C twice: the first press stops the run at step 45, and the second arrives while the checkpoint there
    // is half written (stalled before its rename): the run exits at once and the last complete checkpoint stays.
    let (code, e) = interrupt_at(
        &out,
        "stall-after-step:45,stall-before-rename:checkpoint.safetensors",
    );
    assert_eq!(code, Some(130), "{e}");
    assert!(e.contains("interrupted again"), "{e}");
    assert_eq!(
        std::fs::read(&ck).unwrap(),
        complete,
        "the checkpoint changed"
    );
    // The resumed run ends where the straight run does, to the bit: the same losses in every epoch (the
    // interrupted epochs' training losses included) and the same parameters and moments.
    let args = ["--epochs", "3", "--resume", ck.to_str().unwrap()];
    let o = train_cmd(&out, &args).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming at epoch 3"), "{}", stderr(&o));
    assert_eq!(losses(&out), losses(&straight));
    let (a, b) = (
        Checkpoint::load(&ck).unwrap(),
        Checkpoint::load(&straight.join("checkpoint.safetensors")).unwrap(),
    );
    assert_eq!((a.params, a.m, a.v, a.step), (b.params, b.m, b.v, b.step));
    assert_eq!((a.epoch_step, a.partial.examples), (0, 0));
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_dir_all(&straight).ok();
}

/// Ctrl-C while steps are in flight, on an adapter whose steps are slow: there a submission holds one step, which
/// the `submission-seconds:0` fault makes so on any adapter. With the default log interval (50 steps, longer than
/// the 20-step epoch), a submission used to hold the whole epoch, which a Ctrl-C then waited for. Now the run
/// stops once the steps in flight are done, checkpoints that step, and the resumed run ends as a straight run
/// with log points every 5 steps does, to the bit (how steps are grouped into submissions changes nothing).
#[cfg(unix)]
#[test]
fn ctrl_c_mid_submission_stops_when_the_steps_in_flight_are_done() {
    let straight = scratch("straight-slow");
    let o = train_cmd(&straight, &["--epochs", "3"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut run = RUN.to_vec();
    run.truncate(RUN.len() - 2);
    run.extend(["--log-interval", "50"]);
    let out = scratch("interrupted-slow");
    let ck = out.join("checkpoint.safetensors");
    // Ctrl-C right after the steps that end at step 7 of epoch 2 (global step 27) are submitted.
    let faults = "submission-seconds:0,stall-after-submit:27";
    let (code, e) = interrupt_at_with(&out, &run, faults);
    assert_eq!(code, Some(130), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(
        e.contains("checkpoint written at step 27 (epoch 2, step 7 of 20)"),
        "{e}"
    );
    let c = Checkpoint::load(&ck).unwrap();
    assert_eq!((c.step, c.epoch, c.epoch_step), (27, 1, 7));
    assert_eq!(c.partial.examples, 50 * 7);
    assert_eq!(losses(&out).len(), 1, "metrics.csv rows");
    let args = ["--epochs", "3", "--resume", ck.to_str().unwrap()];
    let o = train_cmd_with(&out, &run, &args).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("resuming in epoch 2 after step 7"),
        "{}",
        stderr(&o)
    );
    assert_eq!(losses(&out), losses(&straight));
    let (a, b) = (
        Checkpoint::load(&ck).unwrap(),
        Checkpoint::load(&straight.join("checkpoint.safetensors")).unwrap(),
    );
    assert_eq!((a.params, a.m, a.v, a.step), (b.params, b.m, b.v, b.step));
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_dir_all(&straight).ok();
}

/// Waits for `child` at most `limit`; kills it and fails past that.
fn wait_at_most(child: &mut std::process::Child, limit: Duration, what: &str) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if start.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            panic!("{what}: the run was still going after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs 3 epochs in `out` (resuming its checkpoint if there is one) with `faults` armed and `extra` options;
/// returns the exit code and stderr, failing if the run takes more than `limit`.
fn run_with_faults(
    out: &Path,
    faults: &str,
    extra: &[&str],
    limit: Duration,
) -> (Option<i32>, String) {
    let ck = out.join("checkpoint.safetensors");
    let stderr_file = out.with_extension("stderr");
    let mut args = vec!["--epochs", "3"];
    if ck.exists() {
        args.extend(["--resume", ck.to_str().unwrap()]);
    }
    args.extend(extra);
    let mut cmd = train_cmd(out, &args);
    cmd.stderr(std::fs::File::create(&stderr_file).unwrap());
    if !faults.is_empty() {
        cmd.env(vae_wgpu::fault::VARIABLE, faults);
    }
    let code = wait_at_most(&mut cmd.spawn().unwrap(), limit, faults);
    let e = std::fs::read_to_string(&stderr_file).unwrap_or_default();
    std::fs::remove_file(&stderr_file).ok();
    (code, e)
}

#[test]
fn a_lost_device_stops_the_run_cleanly_and_the_run_resumes() {
    let out = scratch("lost");
    let ck = out.join("checkpoint.safetensors");
    // The device is destroyed (as a driver reset would lose it) at the log point after step 25, mid-epoch 2.
    let minute = Duration::from_secs(60);
    let (code, e) = run_with_faults(&out, "lose-device-after-step:25", &[], minute);
    assert_eq!(code, Some(1), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    for want in [
        "the GPU device was lost",
        "start the program again",
        "the run stopped after step 25",
        "the last complete checkpoint, at step 20 (epoch 1), is intact",
        &format!("--resume {}", ck.display()),
    ] {
        assert!(e.contains(want), "no {want:?} in: {e}");
    }
    let c = Checkpoint::load(&ck).unwrap();
    assert_eq!((c.step, c.epoch), (20, 1));
    // On a working device the run continues from it to the end.
    let (code, e) = run_with_faults(&out, "", &[], minute);
    assert_eq!(code, Some(0), "{e}");
    assert!(e.contains("resuming at epoch 2"), "{e}");
    assert_eq!(Checkpoint::load(&ck).unwrap().step, 60);
    assert_eq!(losses(&out).len(), 3);
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn a_hung_gpu_stops_the_run_at_the_wait_timeout() {
    // Work that takes minutes or hours is submitted at the log point after step 25 (the next submission follows
    // it; drivers such as lavapipe block in that call) and after step 40 (the end of epoch 2: the next call
    // is a wait). Either way the run must stop at its timeout (3 s) with the message, and exit.
    for step in [25, 40] {
        let out = scratch("hung");
        let faults = format!("hang-after-step:{step}");
        let limit = Duration::from_secs(60);
        let (code, e) = run_with_faults(&out, &faults, &["--gpu-timeout", "3"], limit);
        assert_eq!(code, Some(1), "{e}");
        assert!(!e.contains("panicked"), "{e}");
        for want in [
            "within 3 s, so the program takes it to be hung",
            "raise the limit with --gpu-timeout",
            "the last complete checkpoint, at step 20 (epoch 1), is intact",
        ] {
            assert!(
                e.contains(want),
                "hang after step {step}: no {want:?} in: {e}"
            );
        }
        let c = Checkpoint::load(&out.join("checkpoint.safetensors")).unwrap();
        assert_eq!((c.step, c.epoch), (20, 1));
        std::fs::remove_dir_all(&out).ok();
    }
}

/// Trains `epochs` epochs of the small model at `batch` in `out` with `faults` armed; returns exit code, stderr.
fn train_at_batch(out: &Path, batch: u32, epochs: u32, faults: &str) -> (Option<i32>, String) {
    let o = Command::new(VAE)
        .args(["train", "--data", mnist_dir().to_str().unwrap()])
        .args([
            "--out",
            out.to_str().unwrap(),
            "--no-tune",
            "--hidden",
            "100",
            "--latent",
            "3",
        ])
        .args(["--train-samples", "1000", "--test-samples", "200"])
        .args([
            "--batch-size",
            &batch.to_string(),
            "--epochs",
            &epochs.to_string(),
        ])
        .env(vae_wgpu::fault::VARIABLE, faults)
        .output()
        .unwrap();
    (o.status.code(), stderr(&o))
}

#[test]
fn out_of_memory_at_start_up_names_the_largest_batch_size_that_fits() {
    // A device of 14 MB (simulated against this program's allocations as the device reports them): the data, the
    // model and its optimizer state fit, a workspace of 1000 rows (four 3 MB activations and more) does not.
    let device = "memory:14000000";
    let out = scratch("oom-start");
    let (code, e) = train_at_batch(&out, 1000, 1, device);
    assert_eq!(code, Some(1), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    for want in [
        "the GPU ran out of memory while creating buffer",
        "asking for ",
        "the device reports ",
        "allocated by this program",
        "is the largest that fits on this device now (tried at start-up; --batch-size 1000 does not)",
    ] {
        assert!(e.contains(want), "no {want:?} in: {e}");
    }
    assert!(!out.join("checkpoint.safetensors").exists());
    let largest: u32 = e
        .split("--batch-size ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no batch size in: {e}"));
    assert!((1..1000).contains(&largest), "{e}");
    // The advice is exact: that batch size trains to the end (pictures included) on the same device...
    let (code, e) = train_at_batch(&out, largest, 1, device);
    assert_eq!(code, Some(0), "--batch-size {largest}: {e}");
    assert!(out.join("training_curve.png").exists(), "{e}");
    // ...and one more does not, naming the same.
    let out2 = scratch("oom-start-more");
    let (code, e) = train_at_batch(&out2, largest + 1, 1, device);
    assert_eq!(code, Some(1), "{e}");
    let want = format!("--batch-size {largest} is the largest that fits");
    assert!(e.contains(&want), "no {want:?} in: {e}");
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_dir_all(&out2).ok();
}

#[test]
fn out_of_memory_mid_run_keeps_the_checkpoint_and_pictures_shrink_to_fit() {
    let out = scratch("oom-later");
    let ck = out.join("checkpoint.safetensors");
    let minute = Duration::from_secs(60);
    // The 12th readback (a log point of epoch 2) cannot get its staging buffer.
    let (code, e) = run_with_faults(&out, "oom:readback.staging#12", &[], minute);
    assert_eq!(code, Some(1), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    let c = Checkpoint::load(&ck).expect("the epoch-1 checkpoint");
    assert!(c.epoch >= 1, "{e}");
    for want in [
        "the GPU ran out of memory while creating buffer \"readback.staging\", asking for ",
        "the device reports ",
        &format!(
            "the last complete checkpoint, at step {} (epoch {}), is intact",
            c.step, c.epoch
        ),
        &format!("--resume {}", ck.display()),
    ] {
        assert!(e.contains(want), "no {want:?} in: {e}");
    }
    // The resumed run ends; its end-of-training pictures do not get their 1024-row workspace and use half.
    let (code, e) = run_with_faults(&out, "oom:infer.", &[], minute);
    assert_eq!(code, Some(0), "{e}");
    assert!(
        e.contains("note: the device's memory holds 512 rows at a time for inference, not 1024"),
        "{e}"
    );
    for picture in ["training_curve.png", "latent_scatter.png"] {
        assert!(out.join(picture).exists(), "no {picture}: {e}");
    }
    assert_eq!(Checkpoint::load(&ck).unwrap().step, 60);
    assert_eq!(losses(&out).len(), 3);
    std::fs::remove_dir_all(&out).ok();
}
