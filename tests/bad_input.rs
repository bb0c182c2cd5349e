//! The catalogue of bad input: every case ends with a non-zero exit and a message that names the file or option
//! and the fix, with no panic and no output written. Data cases use a small valid dataset with one file broken;
//! downloads go to a closed local port, so a missing file fails at once instead of fetching MNIST.

mod common;
use common::{gz, idx, scratch};
use std::path::{Path, PathBuf};
use std::process::Command;

const VAE: &str = env!("CARGO_BIN_EXE_vae");
const NO_MIRROR: &str = "http://127.0.0.1:9/";

/// A valid little dataset: 300 training and 100 test images of 28×28, as the four uncompressed IDX files.
fn dataset(name: &str) -> PathBuf {
    let dir = scratch(name);
    std::fs::create_dir_all(&dir).unwrap();
    let img = |n: u32| {
        idx(
            [0, 0, 8, 3],
            &[n, 28, 28],
            &(0..n * 784)
                .map(|i| (i * 7 % 256) as u8)
                .collect::<Vec<_>>(),
        )
    };
    let lab = |n: u32| {
        idx(
            [0, 0, 8, 1],
            &[n],
            &(0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>(),
        )
    };
    std::fs::write(dir.join("train-images-idx3-ubyte"), img(300)).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), lab(300)).unwrap();
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), img(100)).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), lab(100)).unwrap();
    dir
}

/// Runs `vae args…` and checks the refusal: non-zero exit, each of `needles` in the message, no panic, and
/// `out` (the output directory it was given, if any) not created.
#[track_caller]
fn refused(args: &[&str], out: Option<&Path>, needles: &[&str]) {
    check_refusal(Command::new(VAE).args(args), args, out, needles);
}

/// [`refused`] with no adapter visible: the refusal must come before the program opens the GPU (and, for
/// training, tunes its kernels, minutes on a software driver), or the message would be about the adapter.
#[track_caller]
fn refused_before_the_gpu(args: &[&str], out: Option<&Path>, needles: &[&str]) {
    let mut cmd = Command::new(VAE);
    cmd.args(args)
        .env("WGPU_BACKEND", "vulkan")
        .env("VK_DRIVER_FILES", "/nonexistent/no_icd.json")
        .env_remove("WGPU_ADAPTER_NAME");
    check_refusal(&mut cmd, args, out, needles);
}

#[track_caller]
fn check_refusal(cmd: &mut Command, args: &[&str], out: Option<&Path>, needles: &[&str]) {
    let o = cmd.output().expect("run vae");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} was accepted:\n{stderr}");
    assert_eq!(
        o.status.code(),
        Some(1),
        "{args:?}: exit code (a panic exits 101):\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{args:?} panicked:\n{stderr}"
    );
    for n in needles {
        assert!(
            stderr.contains(n),
            "{args:?}: message lacks {n:?}:\n{stderr}"
        );
    }
    if let Some(out) = out {
        assert!(
            !out.exists(),
            "{args:?} wrote its output directory {}",
            out.display()
        );
    }
}

fn train_on(data: &Path, extra: &[&str], needles: &[&str]) {
    let out = scratch("out");
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--mirror",
        NO_MIRROR,
    ];
    args.extend_from_slice(extra);
    refused(&args, Some(&out), needles);
}

/// Replaces one file of a fresh dataset by `bytes` (under `name`, which may add .gz) and expects a refusal.
fn broken(file: &str, name: &str, bytes: Vec<u8>, needles: &[&str]) {
    let d = dataset("data");
    std::fs::remove_file(d.join(file)).unwrap();
    std::fs::write(d.join(name), bytes).unwrap();
    train_on(&d, &[], &[&[name][..], needles].concat());
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn missing_data_directory_or_file() {
    let missing = scratch("nowhere");
    train_on(
        &missing,
        &[],
        &[
            "train-images-idx3-ubyte",
            "no mirror gave a good copy",
            "data/README.md",
        ],
    );
    assert!(
        !missing.exists(),
        "a data directory was created for nothing"
    );
    let d = dataset("data");
    std::fs::remove_file(d.join("t10k-labels-idx1-ubyte")).unwrap();
    train_on(&d, &[], &["t10k-labels-idx1-ubyte.gz", "--mirror"]);
}

#[test]
fn broken_data_files() {
    let img = |n: u32| idx([0, 0, 8, 3], &[n, 28, 28], &vec![0u8; (n * 784) as usize]);
    let lab = |n: u32, l: u8| idx([0, 0, 8, 1], &[n], &vec![l; n as usize]);
    let ti = "train-images-idx3-ubyte";
    let tl = "train-labels-idx1-ubyte";
    broken(tl, tl, vec![], &["too short for an IDX header"]);
    let mut truncated = gz(&img(300));
    truncated.truncate(truncated.len() / 2);
    broken(
        ti,
        "train-images-idx3-ubyte.gz",
        truncated,
        &["corrupt or truncated", "fetch it again"],
    );
    broken(ti, "train-images-idx3-ubyte.gz", img(300), &["not gzip"]);
    broken(
        ti,
        ti,
        idx([1, 0, 8, 3], &[300, 28, 28], &[0; 300 * 784]),
        &["wrong magic number"],
    );
    broken(
        ti,
        ti,
        idx([0, 0, 0x0d, 3], &[300, 28, 28], &[0; 300 * 784]),
        &["element type 0x0d", "unsigned byte"],
    );
    broken(tl, tl, lab(299, 1), &["299 labels", "300 images"]);
    broken(tl, tl, lab(300, 10), &["label 10", "out of range"]);
    broken(
        ti,
        ti,
        [img(300), vec![0; 5]].concat(),
        &["5 bytes of trailing data"],
    );
    broken(ti, ti, img(300)[..1000].to_vec(), &["truncated"]);
    broken(tl, tl, img(300), &["3 dimensions, expected 1"]);
    // Test images of another size than the training images.
    broken(
        "t10k-images-idx3-ubyte",
        "t10k-images-idx3-ubyte",
        idx([0, 0, 8, 3], &[100, 20, 20], &[0; 100 * 400]),
        &["28×28", "20×20"],
    );
}

#[test]
fn bad_options() {
    let d = dataset("data");
    for (args, needles) in [
        (vec!["--batch-size", "0"], vec!["--batch-size 0"]),
        (
            vec!["--batch-size", "301"],
            vec!["--batch-size 301", "at most 300"],
        ),
        (vec!["--epochs", "0"], vec!["--epochs 0"]),
        (vec!["--lr", "0"], vec!["--lr 0", "positive"]),
        (vec!["--lr", "-0.001"], vec!["--lr -0.001"]),
        (vec!["--lr", "NaN"], vec!["--lr NaN"]),
        (vec!["--lr", "inf"], vec!["--lr inf"]),
        (vec!["--latent", "0"], vec!["--latent 0"]),
        (vec!["--hidden", "0"], vec!["--hidden 0"]),
        (vec!["--beta", "-1"], vec!["--beta -1"]),
        (
            vec!["--hidden", "50000000"],
            vec!["max_", "the largest --hidden that fits"],
        ),
        (
            vec!["--backend", "vulcan"],
            vec!["unknown backend \"vulcan\"", "vulkan"],
        ),
        (
            vec!["--adapter", "no-such-gpu"],
            vec![
                "no adapter matches \"no-such-gpu\"",
                "the adapters wgpu can see are",
            ],
        ),
    ] {
        train_on(&d, &args, &needles);
    }
    // clap's own refusals (a typo, a non-number) also exit non-zero with a message and no panic.
    let o = Command::new(VAE)
        .args(["train", "--batch-size", "lots"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid value 'lots'"));
}

#[test]
fn unusable_output_directory_and_bad_checkpoints() {
    let d = dataset("data");
    let ds = d.to_str().unwrap();
    // An --out under a regular file cannot be created.
    let file = d.join("train-labels-idx1-ubyte");
    let under = file.join("run").join("deeper");
    refused_before_the_gpu(
        &[
            "train",
            "--data",
            ds,
            "--out",
            under.to_str().unwrap(),
            "--epochs",
            "1",
        ],
        None,
        &[
            "creating the output directory",
            "is not a directory",
            "--out",
        ],
    );
    // An --out that is (or lies under) a symbolic link to nothing cannot be created either.
    #[cfg(unix)]
    {
        let dangling = scratch("dangling");
        std::fs::create_dir_all(&dangling).unwrap();
        let link = dangling.join("run");
        std::os::unix::fs::symlink(dangling.join("gone"), &link).unwrap();
        for out in [link.clone(), link.join("deeper")] {
            refused_before_the_gpu(
                &["train", "--data", ds, "--out", out.to_str().unwrap()],
                None,
                &[
                    "creating the output directory",
                    "is a symbolic link to",
                    "which does not exist",
                    "--out",
                ],
            );
        }
        assert!(
            !dangling.join("gone").exists(),
            "the refused run created the link's target"
        );
    }
    // An --out that holds another run.
    let taken = scratch("taken");
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("checkpoint.safetensors"), b"a run's").unwrap();
    refused_before_the_gpu(
        &["train", "--data", ds, "--out", taken.to_str().unwrap()],
        None,
        &["already holds a run", "--resume", "another --out"],
    );
    assert_eq!(
        std::fs::read_dir(&taken).unwrap().count(),
        1,
        "the refused run wrote into the other run's directory"
    );
    // Checkpoints: truncated, not safetensors, from another configuration.
    let ck = scratch("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let good = ck.join("good.safetensors");
    let model = vae_wgpu::model::ModelConfig::new(784, 32, 3).unwrap();
    let mut c = common::checkpoint(model, 1);
    c.settings.batch_size = 100;
    c.save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let truncated = ck.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let png = ck.join("picture.safetensors");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\nnot a checkpoint").unwrap();
    for (path, needle) in [
        (&truncated, "not a readable safetensors file"),
        (&png, "not a readable safetensors file"),
    ] {
        let out = scratch("out");
        refused(
            &[
                "train",
                "--data",
                ds,
                "--out",
                out.to_str().unwrap(),
                "--resume",
                path.to_str().unwrap(),
                "--epochs",
                "2",
            ],
            Some(&out),
            &[path.file_name().unwrap().to_str().unwrap(), needle],
        );
        refused(
            &["eval", "--data", ds, "--checkpoint", path.to_str().unwrap()],
            None,
            &[needle],
        );
    }
    let out = scratch("out");
    refused(
        &[
            "train",
            "--data",
            ds,
            "--out",
            out.to_str().unwrap(),
            "--resume",
            good.to_str().unwrap(),
            "--epochs",
            "2",
            "--hidden",
            "400",
        ],
        Some(&out),
        &["--hidden 400 does not match the checkpoint's 32"],
    );
    // A checkpoint for other images than the data's.
    let small = dataset("small");
    broken_pixels(&small);
    refused(
        &[
            "eval",
            "--data",
            small.to_str().unwrap(),
            "--checkpoint",
            good.to_str().unwrap(),
        ],
        None,
        &["784-pixel images", "20×20"],
    );
}

/// Turns a dataset into 20×20 images.
fn broken_pixels(dir: &Path) {
    let img = |n: u32| idx([0, 0, 8, 3], &[n, 20, 20], &vec![0u8; (n * 400) as usize]);
    std::fs::write(dir.join("train-images-idx3-ubyte"), img(300)).unwrap();
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), img(100)).unwrap();
}
