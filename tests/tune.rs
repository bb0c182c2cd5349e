//! Autotuning: the fastest correct candidate is chosen; choices are cached per adapter and program, a second run
//! reads them at once, a corrupt or foreign cache is ignored with a warning and rewritten, checkpoints record the
//! kernels and a resumed run reuses them. Small shapes only: tuning at the model's real sizes is `vae tune`'s job.

mod common;
use common::{mnist_dir, scratch};
use std::path::Path;
use std::process::{Command, Output};

use vae_wgpu::kernels::matmul::{EpilogueKind, Kernel, Layout};
use vae_wgpu::kernels::tune::{self, Product, TuneMode};
use vae_wgpu::training::checkpoint::Checkpoint;

const VAE: &str = env!("CARGO_BIN_EXE_vae");

fn product(m: u32, n: u32, k: u32) -> Product {
    Product {
        name: "test".into(),
        layout: Layout::NT,
        epilogue: EpilogueKind::Bias,
        shape: (m, n, k),
    }
}

#[test]
fn the_fastest_correct_candidate_is_chosen() {
    let gpu = common::gpu();
    let rows = tune::tune_product(gpu, &product(9, 13, 21), &Kernel::CANDIDATES, 3);
    assert_eq!(rows.len(), Kernel::CANDIDATES.len());
    let timed: Vec<_> = rows
        .iter()
        .filter_map(|r| r.outcome.as_ref().ok().map(|o| (r, o.median_us)))
        .collect();
    assert_eq!(
        timed.len(),
        rows.len(),
        "every candidate is valid here: {rows:?}"
    );
    assert!(timed.iter().all(|(_, us)| *us > 0.0));
    let chosen: Vec<_> = rows.iter().filter(|r| r.chosen).collect();
    assert_eq!(chosen.len(), 1);
    let best = timed
        .iter()
        .map(|(_, us)| *us)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(chosen[0].outcome.as_ref().unwrap().median_us, best);
    // Every candidate was checked against the reference before it was timed.
    assert!(
        timed
            .iter()
            .all(|(r, _)| r.outcome.as_ref().unwrap().error_ratio <= 1.0)
    );
}

#[test]
fn the_cache_round_trips_and_refuses_what_it_cannot_trust() {
    let dir = scratch("cache");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("k.txt");
    let choices = [("NT 9x13x21 Bias".to_string(), "split4x4k".to_string())].into();
    tune::write_cache(&path, "adapter=A", &choices).unwrap();
    assert_eq!(tune::read_cache(&path, "adapter=A"), Ok(Some(choices)));
    // Absent: no cache, no warning.
    assert_eq!(
        tune::read_cache(&dir.join("none.txt"), "adapter=A"),
        Ok(None)
    );
    // Written for another adapter or program.
    let e = tune::read_cache(&path, "adapter=B").unwrap_err();
    assert!(e.contains("another adapter or program"), "{e}");
    // Corrupt: a line that is not product<TAB>kernel, a kernel that does not exist, not a cache at all.
    let text = std::fs::read_to_string(&path).unwrap();
    for (bad, why) in [
        (format!("{text}garbage\n"), "is not `product<TAB>kernel`"),
        (
            text.replace("split4x4k", "split3x3q"),
            "names no known kernel",
        ),
        ("\u{0}\u{1}binary".to_string(), "not a kernel-choice cache"),
    ] {
        std::fs::write(&path, bad).unwrap();
        let e = tune::read_cache(&path, "adapter=A").unwrap_err();
        assert!(e.contains(why), "{e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_corrupt_cache_is_ignored_with_a_warning_and_rewritten() {
    let gpu = common::gpu();
    let dir = scratch("rewrite");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("k.txt");
    std::fs::write(&path, "not a cache\n").unwrap();
    let products = [product(5, 7, 3)];
    let mode = TuneMode::Tune {
        cache: Some(path.clone()),
    };
    let mut warnings = Vec::new();
    let chosen = tune::choose(gpu, &products, &mode, |w| warnings.push(w.to_string())).unwrap();
    assert!(chosen.how.starts_with("tuned 1 products"), "{}", chosen.how);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("ignoring the kernel-choice cache"),
        "{warnings:?}"
    );
    // Rewritten: the next choice comes from it, with no warning and no measuring.
    let again = tune::choose(gpu, &products, &mode, |w| panic!("warned again: {w}")).unwrap();
    assert!(again.how.contains("from the cache"), "{}", again.how);
    assert!(again.tuned.is_none());
    let id = tune::identity(gpu);
    let cached = tune::read_cache(&path, &id).unwrap().unwrap();
    assert!(Kernel::parse(&cached[&products[0].key()]).is_some());
    std::fs::remove_dir_all(&dir).ok();
}

fn train(out: &Path, cache: &Path, extra: &[&str]) -> Output {
    Command::new(VAE)
        .args(["train", "--data", mnist_dir().to_str().unwrap()])
        .args([
            "--out",
            out.to_str().unwrap(),
            "--tune-cache",
            cache.to_str().unwrap(),
        ])
        .args([
            "--train-samples",
            "96",
            "--test-samples",
            "32",
            "--batch-size",
            "32",
        ])
        .args(["--hidden", "24", "--latent", "2"])
        .args(extra)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{e}");
    e
}

#[test]
fn training_tunes_once_caches_and_records_its_kernels() {
    let dir = scratch("train");
    let cache = dir.join("kernels.txt");
    let (first, second) = (dir.join("a"), dir.join("b"));
    let e = stderr(&train(&first, &cache, &["--epochs", "1"]));
    assert!(e.contains("kernels: tuned"), "{e}");
    let e = stderr(&train(&second, &cache, &["--epochs", "1"]));
    assert!(e.contains("products from the cache"), "{e}");
    // The checkpoint records a kernel for each product; both runs used the cached choices.
    let ck = Checkpoint::load(&first.join("checkpoint.safetensors")).unwrap();
    assert!(ck.kernels.len() >= 11, "{:?}", ck.kernels);
    assert_eq!(
        ck.kernels,
        Checkpoint::load(&second.join("checkpoint.safetensors"))
            .unwrap()
            .kernels
    );
    // A resumed run takes the checkpoint's kernels, even with the cache gone.
    std::fs::remove_file(&cache).unwrap();
    let resume = first.join("checkpoint.safetensors");
    let e = stderr(&train(
        &first,
        &cache,
        &["--epochs", "2", "--resume", resume.to_str().unwrap()],
    ));
    assert!(e.contains("products from the checkpoint"), "{e}");
    assert!(!cache.exists());
    // --no-tune: the fixed defaults, said so.
    let e = stderr(&train(
        &dir.join("c"),
        &cache,
        &["--epochs", "1", "--no-tune"],
    ));
    assert!(e.contains("fixed portable defaults"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn vae_tune_prints_every_candidate_and_marks_the_choice() {
    let dir = scratch("tune-cmd");
    let cache = dir.join("kernels.txt");
    let o = Command::new(VAE)
        .args(["tune", "--data", mnist_dir().to_str().unwrap()])
        .args([
            "--train-samples",
            "64",
            "--batch-size",
            "16",
            "--hidden",
            "24",
            "--latent",
            "2",
        ])
        .args(["--runs", "2", "--tune-cache", cache.to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("×") && !l.starts_with("product"))
        .collect();
    // 11 products, each with every candidate; one chosen (*) per product.
    assert_eq!(rows.len(), 11 * Kernel::CANDIDATES.len(), "{out}");
    assert_eq!(
        rows.iter().filter(|l| l.contains(" *")).count(),
        11,
        "{out}"
    );
    assert!(out.contains("cached in"), "{out}");
    assert!(cache.exists());
    std::fs::remove_dir_all(&dir).ok();
}
