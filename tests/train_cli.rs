//! The `vae train` binary end to end on a subset of MNIST (on lavapipe in CI), and the download path against a
//! loopback HTTP server.

mod common;
use common::{mnist_dir, scratch};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

const VAE: &str = env!("CARGO_BIN_EXE_vae");

fn vae(args: &[&str]) -> Output {
    Command::new(VAE).args(args).output().expect("run vae")
}

/// `vae train --data <data> --out <out> --no-tune <extra...>` (tuning is tested on its own, in tests/tune.rs).
fn train(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-tune",
    ];
    args.extend_from_slice(extra);
    vae(&args)
}

#[track_caller]
fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vae failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// metrics.csv rows as numbers, after checking the header.
fn metrics(dir: &Path) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).expect("metrics.csv");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            "epoch,train_loss,train_bce,train_kl,test_loss,test_bce,test_kl,epoch_seconds,samples_per_second"
        )
    );
    lines
        .map(|l| {
            l.split(',')
                .map(|v| v.parse::<f64>().expect("a number"))
                .collect()
        })
        .collect()
}

/// How many different pixel values a PNG holds (a blank picture has one or two).
fn distinct_colours(path: &Path) -> usize {
    let decoder = png::Decoder::new(BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().expect("a valid PNG");
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let mut seen: Vec<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    seen.sort();
    seen.dedup();
    seen.len()
}

/// Every command on a trained model, on `ck`: each exits 0 and writes what it says, of the right size.
fn commands_on_a_checkpoint(ck: &Path, data: &Path) {
    let dir = ck.parent().unwrap().join("commands");
    std::fs::create_dir_all(&dir).unwrap();
    let (ck, data) = (ck.to_str().unwrap(), data.to_str().unwrap());
    let run = |args: &[&str], file: &str| -> String {
        let out = dir.join(file);
        let mut all = args.to_vec();
        all.extend([
            "--checkpoint",
            ck,
            "--data",
            data,
            "--out",
            out.to_str().unwrap(),
        ]);
        let stdout = ok(&vae(&all));
        assert!(stdout.contains("wrote"), "{args:?}: {stdout}");
        stdout
    };
    run(&["reconstruct", "--n", "5"], "r.png");
    assert_eq!(png_size(&dir.join("r.png")), (5 * 29 + 1, 2 * 29 + 1));
    run(&["interpolate", "--pairs", "2", "--steps", "4"], "i.png");
    assert_eq!(png_size(&dir.join("i.png")), (6 * 29 + 1, 2 * 29 + 1));
    run(&["sample", "--n", "16"], "s.png");
    assert_eq!(png_size(&dir.join("s.png")), (4 * 29 + 1, 4 * 29 + 1));
    run(
        &["latent", "--side", "5", "--test-samples", "300"],
        "latent",
    );
    assert_eq!(
        png_size(&dir.join("latent/manifold.png")),
        (5 * 29 + 1, 5 * 29 + 1)
    );
    assert!(distinct_colours(&dir.join("latent/latent_scatter.png")) > 10);
    for png in ["r.png", "i.png", "s.png", "latent/manifold.png"] {
        assert!(distinct_colours(&dir.join(png)) > 10, "{png} is blank");
    }
    // eval: the ELBO and the importance-sampled log p(x), which is above it.
    let stdout = ok(&vae(&[
        "eval",
        "--checkpoint",
        ck,
        "--data",
        data,
        "--test-samples",
        "100",
        "--iw-samples",
        "50",
    ]));
    let number_after = |key: &str| -> f64 {
        let at = stdout
            .find(key)
            .unwrap_or_else(|| panic!("no {key:?}: {stdout}"))
            + key.len();
        let text = stdout[at..].trim_start();
        let end = text
            .find(|c: char| c != '-' && c != '.' && !c.is_ascii_digit())
            .unwrap();
        text[..end].parse().unwrap()
    };
    let (elbo, ll) = (number_after("ELBO:"), number_after("log p(x) ≈"));
    assert!(
        ll > elbo && ll < 0.0,
        "log p(x) {ll} vs ELBO {elbo}: {stdout}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn png_size(path: &Path) -> (u32, u32) {
    let decoder = png::Decoder::new(BufReader::new(
        std::fs::File::open(path).expect("png exists"),
    ));
    let reader = decoder.read_info().expect("a valid PNG");
    let info = reader.info();
    (info.width, info.height)
}

#[test]
fn short_run_lowers_the_test_loss_and_writes_metrics_and_pictures() {
    let out = scratch("short");
    let data = mnist_dir();
    let stdout = ok(&train(
        &data,
        &out,
        &[
            "--train-samples",
            "2048",
            "--test-samples",
            "1000",
            "--epochs",
            "2",
        ],
    ));
    assert!(stdout.contains("epoch   2"), "{stdout}");
    let rows = metrics(&out);
    assert_eq!(rows.len(), 2);
    // An untrained decoder scores about 784·ln 2 ≈ 543 nats; 16 steps of Adam bring the test loss well below 300
    // (≈ 245 measured), and the second epoch lowers it by more than 5 nats (≈ 25 measured).
    let (first, second) = (rows[0][4], rows[1][4]);
    assert!(first < 300.0, "test loss after epoch 1: {first}");
    assert!(second < first - 5.0, "test loss {first} → {second}");
    for r in &rows {
        // loss = bce + kl, per sample, for train and test.
        assert!(
            (r[1] - r[2] - r[3]).abs() < 1e-3 && (r[4] - r[5] - r[6]).abs() < 1e-3,
            "{r:?}"
        );
        assert!(
            r[3] > 0.0 && r[6] > 0.0 && r[7] > 0.0 && r[8] > 0.0,
            "{r:?}"
        );
    }
    for epoch in 1..=2 {
        // 8 test images over their reconstructions; an 8×8 grid of samples; 28×28 tiles with 1-pixel gaps.
        assert_eq!(
            png_size(&out.join(format!("reconstruction_{epoch}.png"))),
            (8 * 29 + 1, 2 * 29 + 1)
        );
        assert_eq!(
            png_size(&out.join(format!("sample_{epoch}.png"))),
            (8 * 29 + 1, 8 * 29 + 1)
        );
    }
    // The end-of-run pictures: the curve, the scatter and (a 2-D latent space) the manifold, each a real PNG
    // with something drawn on it.
    for (name, size) in [
        ("training_curve.png", (1000, 450)),
        ("latent_scatter.png", (820, 760)),
        ("manifold.png", (20 * 29 + 1, 20 * 29 + 1)),
    ] {
        assert_eq!(png_size(&out.join(name)), size, "{name}");
        assert!(distinct_colours(&out.join(name)) > 10, "{name} is blank");
    }
    commands_on_a_checkpoint(&out.join("checkpoint.safetensors"), &data);
    // Sampling from the prior needs only the decoder and the image shape the checkpoint records: it works from a
    // directory with no dataset in sight.
    let empty = scratch("no-data");
    std::fs::create_dir_all(&empty).unwrap();
    let ck = out.join("checkpoint.safetensors");
    let sample = empty.join("s.png");
    let o = Command::new(VAE)
        .current_dir(&empty)
        .args(["sample", "--checkpoint", ck.to_str().unwrap(), "--n", "9"])
        .args(["--out", sample.to_str().unwrap()])
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(png_size(&sample), (3 * 29 + 1, 3 * 29 + 1));
    std::fs::remove_dir_all(&empty).ok();
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn the_same_seed_gives_the_same_losses() {
    let data = mnist_dir();
    let run = |seed: &str| {
        let out = scratch("seed");
        ok(&train(
            &data,
            &out,
            &[
                "--train-samples",
                "1000",
                "--test-samples",
                "300",
                "--epochs",
                "1",
                "--batch-size",
                "96",
                "--latent",
                "3",
                "--hidden",
                "64",
                "--seed",
                seed,
            ],
        ));
        let rows = metrics(&out);
        std::fs::remove_dir_all(&out).ok();
        rows[0][..7].to_vec() // the losses, not the timings
    };
    let a = run("7");
    assert_eq!(a, run("7"), "same seed, same adapter: identical losses");
    assert_ne!(a, run("8"), "another seed gives other losses");
}

#[test]
fn bad_options_are_refused_with_a_message() {
    let data = mnist_dir();
    let d = data.to_str().unwrap();
    for (args, needle) in [
        (vec!["--batch-size", "0"], "--batch-size 0"),
        (vec!["--epochs", "0"], "--epochs 0"),
        (vec!["--lr", "-1"], "--lr -1"),
        (vec!["--lr", "NaN"], "--lr NaN"),
        (vec!["--latent", "0"], "--latent 0"),
        (
            vec!["--train-samples", "100", "--batch-size", "128"],
            "larger than the training set",
        ),
    ] {
        let out = scratch("bad");
        let mut full = vec!["train", "--data", d, "--out", out.to_str().unwrap()];
        full.extend(args.iter());
        let o = vae(&full);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} created the output directory");
    }
}

/// Serves `files` (name → bytes) over HTTP/1.1 on loopback until the test ends; returns the base URL.
fn serve(files: Vec<(String, Vec<u8>)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/mnist/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let body = files
                .iter()
                .find(|(n, _)| path == format!("/mnist/{n}"))
                .map(|(_, b)| b.clone());
            let _ = match body {
                Some(b) => stream
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|_| stream.write_all(&b)),
                None => stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    url
}

#[test]
fn missing_data_is_downloaded_md5_checked_from_the_first_good_mirror() {
    let src = mnist_dir();
    let names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ];
    let good: Vec<(String, Vec<u8>)> = names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                std::fs::read(src.join(n)).expect("the gzipped MNIST files"),
            )
        })
        .collect();
    // A mirror whose training labels are corrupted (one byte flipped) and which lacks the test labels.
    let mut bad = good.clone();
    let last = bad[1].1.len() - 10;
    bad[1].1[last] ^= 0x40;
    bad.pop();
    let (good_url, bad_url) = (serve(good), serve(bad));

    // Only the bad mirror: refused, nothing kept, a message naming the md5 mismatch.
    let data = scratch("download-bad");
    let out = scratch("download-bad-out");
    let o = train(&data, &out, &["--mirror", &bad_url, "--epochs", "1"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("does not match the published"), "{stderr}");
    assert!(!data.join(names[1]).exists(), "a corrupt download was kept");
    assert!(!out.exists());

    // The bad mirror first, then the good one: every file arrives intact and a short run trains.
    let out = scratch("download-out");
    ok(&train(
        &data,
        &out,
        &[
            "--mirror",
            &bad_url,
            "--mirror",
            &good_url,
            "--train-samples",
            "256",
            "--test-samples",
            "100",
            "--epochs",
            "1",
        ],
    ));
    for n in names {
        assert_eq!(
            std::fs::read(data.join(n)).unwrap(),
            std::fs::read(src.join(n)).unwrap(),
            "{n}"
        );
    }
    assert_eq!(metrics(&out).len(), 1);
    std::fs::remove_dir_all(&data).ok();
    std::fs::remove_dir_all(&out).ok();
}

/// Train 2 epochs, stop, resume to 3: the third epoch equals a straight 3-epoch run's, to the bit.
#[test]
fn an_interrupted_and_resumed_run_equals_a_straight_one() {
    let data = mnist_dir();
    let common = [
        "--train-samples",
        "1000",
        "--test-samples",
        "300",
        "--batch-size",
        "100",
        "--latent",
        "3",
        // Exact resume holds at any width; a narrow one keeps the six epochs short on a software driver.
        "--hidden",
        "64",
    ];
    let straight = scratch("straight");
    ok(&train(
        &data,
        &straight,
        &[&common[..], &["--epochs", "3"]].concat(),
    ));
    let first = scratch("first");
    ok(&train(
        &data,
        &first,
        &[&common[..], &["--epochs", "2"]].concat(),
    ));
    let resumed = scratch("resumed");
    let ck = first.join("checkpoint.safetensors");
    ok(&train(
        &data,
        &resumed,
        &["--resume", ck.to_str().unwrap(), "--epochs", "3"],
    ));
    let (a, b) = (metrics(&straight), metrics(&resumed));
    assert_eq!(
        b.len(),
        3,
        "the resumed run's metrics.csv tells the whole run"
    );
    for epoch in 0..3 {
        assert_eq!(
            a[epoch][..7],
            b[epoch][..7],
            "epoch {}: losses differ",
            epoch + 1
        );
    }
    // The checkpoints agree too (parameters, moments, step count).
    let load = |d: &Path| {
        vae_wgpu::training::checkpoint::Checkpoint::load(&d.join("checkpoint.safetensors")).unwrap()
    };
    let (ca, cb) = (load(&straight), load(&resumed));
    assert_eq!(
        (ca.params == cb.params, ca.m == cb.m, ca.v == cb.v, ca.step),
        (true, true, true, cb.step)
    );

    // A mismatched option is refused, naming it; so is an --epochs already reached.
    let o = train(
        &data,
        &scratch("mismatch"),
        &[
            "--resume",
            ck.to_str().unwrap(),
            "--epochs",
            "3",
            "--latent",
            "20",
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("--latent 20 does not match the checkpoint's 3"),
        "{stderr}"
    );
    let o = train(
        &data,
        &scratch("done"),
        &["--resume", ck.to_str().unwrap(), "--epochs", "2"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("already trained 2 epochs"),
        "{stderr}"
    );
    // Resumed in place, from inside the run's directory by the checkpoint's bare name: the run continues there
    // (it is not refused as "already holds a run") and ends the same.
    let o = Command::new(VAE)
        .current_dir(&first)
        .args([
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            ".",
            "--no-tune",
        ])
        .args(["--resume", "checkpoint.safetensors", "--epochs", "3"])
        .output()
        .expect("run vae");
    ok(&o);
    let losses =
        |d: &Path| -> Vec<Vec<f64>> { metrics(d).iter().map(|r| r[..7].to_vec()).collect() };
    assert_eq!(losses(&first), losses(&resumed), "resumed in place");

    for d in [straight, first, resumed] {
        std::fs::remove_dir_all(d).ok();
    }
}

#[test]
fn beta_warmup_and_binarization_are_recorded_and_reported() {
    let data = mnist_dir();
    let out = scratch("binarize");
    let o = train(
        &data,
        &out,
        &[
            "--train-samples",
            "512",
            "--test-samples",
            "100",
            "--epochs",
            "2",
            "--binarize",
            "--beta",
            "0.5",
            "--kl-warmup",
            "1",
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("data binarized (dynamic)"), "{stderr}");
    let ck = vae_wgpu::training::checkpoint::Checkpoint::load(&out.join("checkpoint.safetensors"))
        .unwrap();
    let s = &ck.settings;
    assert_eq!((s.binarize, s.beta, s.kl_warmup), (true, 0.5, 1.0));
    let rows = metrics(&out);
    assert!(rows.iter().all(|r| r[1].is_finite() && r[4].is_finite()));
    // It learns: the binarized test loss falls between the epochs (≈ 422 → 294 measured).
    assert!(rows[1][4] < rows[0][4] - 20.0, "{rows:?}");
    let e = vae(&[
        "eval",
        "--checkpoint",
        out.join("checkpoint.safetensors").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--test-samples",
        "50",
    ]);
    ok(&e);
    assert!(String::from_utf8_lossy(&e.stdout).contains("binarized test set"));
    // The importance-sampled log-likelihood is refused on a binarized model, naming the option, writing nothing.
    let e = vae(&[
        "eval",
        "--checkpoint",
        out.join("checkpoint.safetensors").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--iw-samples",
        "10",
    ]);
    let stderr = String::from_utf8_lossy(&e.stderr);
    assert_eq!(e.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--iw-samples") && stderr.contains("--binarize"),
        "{stderr}"
    );
    assert!(e.stdout.is_empty());
    std::fs::remove_dir_all(&out).ok();
}
