//! Autotuning: the fastest correct candidate is chosen; choices are cached per adapter and program, a second run
//! reads them at once, a corrupt or foreign cache is ignored with a warning and rewritten, checkpoints record the
//! kernels and a resumed run reuses them. Small shapes only: tuning at the model's real sizes is `vae tune`'s job.

mod common;
use common::{mnist_dir, scratch};
use std::path::Path;
use std::process::{Command, Output};

use vae_wgpu::kernels::matmul::Product;
use vae_wgpu::kernels::matmul::{EpilogueKind, Kernel, Layout};
use vae_wgpu::training::checkpoint::Checkpoint;
use vae_wgpu::tune::{self, TuneMode};

/// The matmul products of the test model's training run: fc3's forward pass is one unless the reparameterization
/// computes it (on GPUs, not CPU adapters: `decode_fused`).
fn products() -> usize {
    if vae_wgpu::kernels::reparam::decode_fused(common::gpu()) {
        10
    } else {
        11
    }
}

const VAE: &str = env!("CARGO_BIN_EXE_vae");

fn product(m: u32, n: u32, k: u32) -> Product {
    Product {
        name: "test".into(),
        layout: Layout::NT,
        epilogue: EpilogueKind::Bias,
        shape: (m, n, k),
        models: 1,
    }
}

#[test]
fn the_fastest_correct_candidate_is_chosen() {
    let gpu = common::gpu();
    let rows = tune::tune_product(gpu, &product(9, 13, 21), &Kernel::CANDIDATES, 3).unwrap();
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

/// A sweep's product is timed at its model count, each model with its own operands (as the batched step lays
/// them out), with every epilogue: every candidate builds, computes model 0 within the bound and is timed, and
/// the product's key names the count.
#[test]
fn a_batched_product_is_tuned_at_its_model_count() {
    let gpu = common::gpu();
    for epilogue in [
        EpilogueKind::Bias,
        EpilogueKind::BiasGrad,
        EpilogueKind::ReluMask,
        EpilogueKind::KlGrad,
        EpilogueKind::BiasBce,
    ] {
        let layout = match epilogue {
            EpilogueKind::BiasGrad => Layout::TN,
            EpilogueKind::ReluMask | EpilogueKind::KlGrad => Layout::NN,
            _ => Layout::NT,
        };
        let p = Product {
            layout,
            epilogue,
            models: 3,
            ..product(9, 13, 21)
        };
        assert!(p.key().ends_with(" x3"), "{}", p.key());
        let rows = tune::tune_product(gpu, &p, &Kernel::CANDIDATES, 2).unwrap();
        let bad: Vec<_> = rows
            .iter()
            .filter(|r| {
                !r.outcome
                    .as_ref()
                    .is_ok_and(|o| o.error_ratio <= 1.0 && o.median_us > 0.0)
            })
            .collect();
        assert!(bad.is_empty(), "{epilogue:?}: {bad:?}");
        assert_eq!(rows.iter().filter(|r| r.chosen).count(), 1);
    }
}

/// Pairs run apart only where that is faster, and no more of them than the step has room for: the ones that
/// save the most first; a pair no kernel computes runs apart whatever the room.
#[test]
fn pairs_run_apart_within_the_room_the_step_has() {
    // (µs as one dispatch, µs apart): saves 2, saves 5, slower apart.
    let times = [(Some(10.0), 8.0), (Some(10.0), 5.0), (Some(3.0), 9.0)];
    assert_eq!(tune::run_apart(&times, 0), [false, false, false]);
    assert_eq!(tune::run_apart(&times, 1), [false, true, false]);
    assert_eq!(tune::run_apart(&times, 2), [true, true, false]);
    assert_eq!(tune::run_apart(&times, 3), [true, true, false]);
    let unpairable = [(Some(10.0), 8.0), (None, 5.0)];
    assert_eq!(tune::run_apart(&unpairable, 0), [false, true]);
    assert_eq!(tune::run_apart(&unpairable, 1), [false, true]);
    assert_eq!(tune::run_apart(&unpairable, 2), [true, true]);
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
    let chosen = tune::choose(gpu, &products, &mode, 0, |w| warnings.push(w.to_string())).unwrap();
    assert!(chosen.how.starts_with("tuned 1 products"), "{}", chosen.how);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("ignoring the kernel-choice cache"),
        "{warnings:?}"
    );
    // Rewritten: the next choice comes from it, with no warning and no measuring.
    let again = tune::choose(gpu, &products, &mode, 0, |w| panic!("warned again: {w}")).unwrap();
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
    assert!(ck.kernels.len() >= products(), "{:?}", ck.kernels);
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
    // Every product, each with every candidate; one chosen (*) per product.
    assert_eq!(rows.len(), products() * Kernel::CANDIDATES.len(), "{out}");
    assert_eq!(
        rows.iter().filter(|l| l.contains(" *")).count(),
        products(),
        "{out}"
    );
    assert!(out.contains("cached in"), "{out}");
    assert!(cache.exists());
    // Each of the three layers' gradient pairs: every kernel timed or unavailable as one dispatch, then the two
    // products apart; exactly one of those marked, and the pair chosen only where it is no slower than apart or
    // the step has no room for one more dispatch (a line says so). The step's 10 dispatches leave room for one
    // pair apart where the reparameterization computes fc3's forward pass (a dispatch fewer), else none.
    const BOUND: &str = "one dispatch all the same";
    let room = usize::from(vae_wgpu::kernels::reparam::decode_fused(common::gpu()));
    let mut pairs_apart = 0;
    for layer in ["fc4", "fc3", "heads"] {
        let label = format!("{layer}.weight_grad+input_grad");
        let lines = || {
            out.lines()
                .filter(|l| l.split_whitespace().next() == Some(label.as_str()))
        };
        let bound = lines().any(|l| l.contains(BOUND));
        let rows: Vec<&str> = lines().filter(|l| !l.contains(BOUND)).collect();
        assert_eq!(rows.len(), Kernel::CANDIDATES.len() + 1, "{out}");
        let marked: Vec<&str> = rows.iter().copied().filter(|l| l.contains(" *")).collect();
        assert_eq!(marked.len(), 1, "{label}\n{out}");
        let us = |l: &str| -> f64 { l.split_whitespace().nth(2).unwrap().parse().unwrap() };
        let apart = rows.last().unwrap();
        assert!(apart.contains("unpaired "), "{apart}");
        if marked[0].contains("*unpaired") {
            pairs_apart += 1;
        } else {
            assert_eq!(us(marked[0]) > us(apart), bound, "{label}\n{out}");
        }
    }
    assert!(
        pairs_apart <= room,
        "{pairs_apart} pairs apart, room for {room}\n{out}"
    );
    // The cache holds the three pairs' choices: a kernel or `unpaired`.
    let cached = tune::read_cache(&cache, &tune::identity(common::gpu()))
        .unwrap()
        .unwrap();
    let pairs: Vec<&String> = cached
        .iter()
        .filter(|(k, _)| k.starts_with("pair "))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(pairs.len(), 3, "{cached:?}");
    assert!(
        pairs
            .iter()
            .all(|v| *v == vae_wgpu::kernels::matmul::UNPAIRED || Kernel::parse(v).is_some()),
        "{cached:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// What a candidate's row must say under the faults a rejection test arms.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    /// Unavailable, the reason starting with the first text (who rejected it while doing what) and holding the
    /// second (wgpu's or naga's own words).
    Rejected(&'static str, &'static str),
    /// Unavailable: its results differ from the CPU reference.
    Wrong,
    /// Checked and timed.
    Timed,
}

/// `VAE_TEST_FAULT` (src/fault.rs) for `reject:<kernel or module>` each of `rejected`, `wrong:<kernel>` each of
/// `wrong`.
fn faults(rejected: &[&str], wrong: &[&str]) -> String {
    let points = rejected.iter().map(|k| format!("reject:{k}"));
    let points = points.chain(wrong.iter().map(|k| format!("wrong:{k}")));
    points.collect::<Vec<_>>().join(",")
}

/// `vae tune` or `vae bench matmul` on a small model (784-24-2, batch 16), with `faults` armed.
fn perf_command(what: &[&str], cache: &Path, faults: &str, extra: &[&str]) -> Output {
    Command::new(VAE)
        .args(what)
        .args(["--data", mnist_dir().to_str().unwrap()])
        .args(["--train-samples", "64", "--batch-size", "16"])
        .args(["--hidden", "24", "--latent", "2"])
        .args(["--tune-cache", cache.to_str().unwrap()])
        .args(extra)
        .env("VAE_TEST_FAULT", faults)
        .output()
        .unwrap()
}

/// `vae train`, one epoch of that model, with `faults` armed.
fn train_with_faults(out: &Path, cache: &Path, faults: &str) -> Output {
    Command::new(VAE)
        .args(["train", "--data", mnist_dir().to_str().unwrap()])
        .args(["--out", out.to_str().unwrap()])
        .args(["--tune-cache", cache.to_str().unwrap()])
        .args(["--train-samples", "64", "--test-samples", "32"])
        .args(["--batch-size", "16", "--hidden", "24", "--latent", "2"])
        .args(["--epochs", "1"])
        .env("VAE_TEST_FAULT", faults)
        .output()
        .unwrap()
}

/// A row of `vae tune`'s or `vae bench matmul`'s table: kernel, marked `*`, and why it is unavailable if it is.
struct Row {
    kernel: String,
    marked: bool,
    unavailable: Option<String>,
}

fn table(out: &str) -> Vec<Row> {
    out.lines()
        .filter(|l| l.contains("×") && !l.starts_with("product"))
        .map(|l| {
            // product, layout, epilogue, m×n×k, then the kernel with its mark.
            let kernel = l.split_whitespace().nth(4).unwrap();
            Row {
                kernel: kernel.trim_start_matches('*').to_string(),
                marked: kernel.starts_with('*'),
                unavailable: l
                    .split_once(" unavailable: ")
                    .map(|(_, why)| why.to_string()),
            }
        })
        .collect()
}

/// Every product's every candidate has a row that says what `want` says of it, and each product's marked
/// kernel is a timed one.
fn check_rows(out: &str, want: &impl Fn(&str) -> Want) {
    let rows = table(out);
    assert_eq!(rows.len(), products() * Kernel::CANDIDATES.len(), "{out}");
    for r in &rows {
        let why = r.unavailable.as_deref();
        match want(&r.kernel) {
            Want::Rejected(start, holds) => assert!(
                why.is_some_and(|w| w.starts_with(start) && w.contains(holds)),
                "{}: {why:?}, want {start:?} … {holds:?}\n{out}",
                r.kernel
            ),
            Want::Wrong => assert!(
                why.is_some_and(
                    |w| w.starts_with("wrong results (") && w.contains("× the error bound)")
                ),
                "{}: {why:?}\n{out}",
                r.kernel
            ),
            Want::Timed => assert!(
                why.is_none(),
                "{} should be timed: {why:?}\n{out}",
                r.kernel
            ),
        }
    }
    let marked: Vec<&Row> = rows.iter().filter(|r| r.marked).collect();
    assert_eq!(marked.len(), products(), "{out}");
    assert!(
        marked.iter().all(|r| want(&r.kernel) == Want::Timed),
        "a rejected or wrong kernel is marked\n{out}"
    );
}

/// With `faults` armed: `vae tune` succeeds and its table says why each rejected or wrong candidate is unavailable,
/// chooses among the rest and caches only those; `vae bench matmul` shows the same; a training run takes the
/// choices from that cache and trains, with no rejected or wrong kernel in its checkpoint.
fn rejected_candidates_are_skipped(name: &str, faults: &str, want: impl Fn(&str) -> Want) {
    let dir = scratch(name);
    let cache = dir.join("kernels.txt");
    let o = perf_command(&["tune"], &cache, faults, &["--runs", "1"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    check_rows(&out, &want);
    // The cache (identified as without faults: a rejection is the adapter's, not the program's) holds a choice
    // for every product, each one that was timed.
    let cached = tune::read_cache(&cache, &tune::identity(common::gpu()))
        .unwrap()
        .unwrap();
    let kernels: Vec<(&String, &String)> = cached
        .iter()
        .filter(|(_, k)| Kernel::parse(k).is_some())
        .collect();
    let products = kernels.iter().filter(|(p, _)| !p.starts_with("pair "));
    assert_eq!(products.count(), self::products(), "{cached:?}");
    // The products' choices and the pairs' (where a pair runs as one dispatch).
    for (product, kernel) in kernels {
        assert_eq!(want(kernel), Want::Timed, "{product}: {kernel}");
    }

    // `vae bench matmul` lists every candidate too, the step's kernels from that cache.
    let o = perf_command(
        &["bench", "matmul"],
        &cache,
        faults,
        &["--square", "0", "--reps", "1", "--runs", "1"],
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    assert!(err.contains("products from the cache"), "{err}");
    check_rows(&out, &want);

    // Training with the tuned cache on that adapter: its kernels from the cache, a finite loss, a checkpoint.
    let run = dir.join("run");
    let o = train_with_faults(&run, &cache, faults);
    let err = stderr(&o);
    assert!(err.contains("products from the cache"), "{err}");
    let ck = Checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
    for (product, kernel) in &ck.kernels {
        if Kernel::parse(kernel).is_some() {
            assert_eq!(want(kernel), Want::Timed, "{product}: {kernel}");
        }
        // A layer's weight gradient (TN out×in×rows) and input gradient (NN rows×in×out) run in one dispatch with
        // their pair's kernel where the pair has one, else each with its own.
        let pair_of = |p: &String| match p.split_whitespace().collect::<Vec<_>>()[..] {
            ["NN", dims, _] => {
                let d: Vec<&str> = dims.split('x').collect();
                let w = format!("TN {}x{}x{} BiasGrad", d[2], d[1], d[0]);
                cached
                    .keys()
                    .find(|k| **k == format!("pair {w} + {p}"))
                    .cloned()
            }
            ["TN", ..] => cached
                .keys()
                .find(|k| k.starts_with(&format!("pair {p} + ")))
                .cloned(),
            _ => None,
        };
        let want_kernel = pair_of(product)
            .and_then(|pair| cached.get(&pair).cloned())
            .filter(|c| c != vae_wgpu::kernels::matmul::UNPAIRED)
            .or_else(|| cached.get(product).cloned());
        if !product.starts_with("pair ")
            && let Some(c) = want_kernel
        {
            assert_eq!(kernel, &c, "{product}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn candidates_whose_pipeline_is_rejected_or_results_are_wrong_are_unavailable_and_never_chosen() {
    // The adapter refuses to build both portable defaults (so even the plans tuning reads its products from need
    // another kernel) and three more candidates; split16x16m, often the fastest on lavapipe, computes wrong
    // numbers, so a missing check would let it win.
    let rejected = ["reg64", "reg128", "tiled128k8", "tiled128k16", "tiled64k16"];
    let wrong = "split16x16m";
    rejected_candidates_are_skipped("reject-pipeline", &faults(&rejected, &[wrong]), |k| {
        if rejected.contains(&k) {
            Want::Rejected(
                "rejected while building pipeline",
                "'REJECTED_BY_VAE_TEST_FAULT' not found",
            )
        } else if k == wrong {
            Want::Wrong
        } else {
            Want::Timed
        }
    });
}

#[test]
fn a_shader_module_that_fails_validation_makes_its_candidates_unavailable() {
    // The modules of the register-blocked and the split kernels fail validation; one tiled kernel is wrong.
    let wrong = "tiled128k16";
    let naga = "VAE_TEST_FAULT reject:1: error: no definition in scope for identifier: `reject_this_module`";
    let faults = faults(&["matmul", "matmul_split"], &[wrong]);
    rejected_candidates_are_skipped("reject-module", &faults, |k| {
        if k.starts_with("reg") {
            Want::Rejected("rejected while compiling shader module matmul: ", naga)
        } else if k.starts_with("split") {
            Want::Rejected(
                "rejected while compiling shader module matmul_split: ",
                naga,
            )
        } else if k == wrong {
            Want::Wrong
        } else {
            Want::Timed
        }
    });
}

#[test]
fn a_product_no_candidate_computes_is_a_clear_error() {
    let dir = scratch("reject-all");
    let cache = dir.join("kernels.txt");
    let no_kernel = |err: &str, first_reason: &str| {
        assert!(
            err.contains("error: no matmul kernel works for fc1.forward (NT 16×24×784 BiasRelu)"),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "every candidate is unavailable (reg64: {first_reason}"
            )),
            "{err}"
        );
        assert!(
            err.contains("Update the GPU driver, or choose another adapter"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    };
    // One candidate builds but is wrong: the plans build with it, tuning finds nothing; the table, then the error,
    // and no cache.
    let names: Vec<String> = Kernel::CANDIDATES.iter().map(Kernel::name).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let (wrong, rejected) = all.split_last().unwrap();
    let o = perf_command(
        &["tune"],
        &cache,
        &faults(rejected, &[wrong]),
        &["--runs", "1"],
    );
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    no_kernel(&err, "rejected while building pipeline");
    assert!(err.contains(&format!("{wrong}: wrong results (")), "{err}");
    let rows = table(&out);
    assert_eq!(rows.len(), products() * Kernel::CANDIDATES.len(), "{out}");
    assert!(
        rows.iter().all(|r| r.unavailable.is_some() && !r.marked),
        "{out}"
    );
    assert!(!cache.exists());
    // Every module rejected: training stops before it starts, with nothing written, tuned or not.
    let every_module = faults(&["matmul", "matmul_tiled", "matmul_split"], &[]);
    for no_tune in [false, true] {
        let out_dir = dir.join("run");
        let mut train = Command::new(VAE);
        train
            .args(["train", "--data", mnist_dir().to_str().unwrap()])
            .args(["--out", out_dir.to_str().unwrap()])
            .args(["--tune-cache", cache.to_str().unwrap()])
            .args(["--train-samples", "64", "--test-samples", "32"])
            .args(["--batch-size", "16", "--hidden", "24", "--latent", "2"])
            .args(["--epochs", "1"])
            .env("VAE_TEST_FAULT", &every_module);
        if no_tune {
            train.arg("--no-tune");
        }
        let o = train.output().unwrap();
        assert_eq!(o.status.code(), Some(1));
        no_kernel(
            &String::from_utf8_lossy(&o.stderr),
            "rejected while compiling shader module matmul: VAE_TEST_FAULT reject:1: error:",
        );
        assert!(!out_dir.exists() && !cache.exists());
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_rejection_is_said_in_one_line() {
    // wgpu's reports are trees whose last line is the root cause; naga's start with it, its notes last.
    let unavailable = vae_wgpu::kernels::matmul::unavailable;
    let wgpu = vae_wgpu::Error::Validation {
        context: "building pipeline matmul::matmul".into(),
        message: "Validation Error\n\nCaused by:\n  In Device::create_compute_pipeline, label = 'matmul'\n    Entry point matmul not found\n".into(),
    };
    assert_eq!(
        unavailable(&wgpu),
        "rejected while building pipeline matmul::matmul: Entry point matmul not found"
    );
    let naga = vae_wgpu::Error::Validation {
        context: "compiling shader module matmul".into(),
        message: "shaders/matmul.wgsl:12: error: expected ';'\n  ┌─ wgsl:40:3\n  │\n".into(),
    };
    assert_eq!(
        unavailable(&naga),
        "rejected while compiling shader module matmul: shaders/matmul.wgsl:12: error: expected ';'"
    );
    let noted = vae_wgpu::Error::Validation {
        context: "compiling shader module matmul".into(),
        message: "prelude:1: error: Type [19] '' is invalid\n = Using `f64` values requires the `naga::valid::Capabilities::FLOAT64` flag\n\n".into(),
    };
    assert_eq!(
        unavailable(&noted),
        "rejected while compiling shader module matmul: prelude:1: error: Type [19] '' is invalid (Using `f64` values requires the `naga::valid::Capabilities::FLOAT64` flag)"
    );
    let wrong = vae_wgpu::Error::Mismatch {
        what: "fc1.forward with reg64".into(),
        ratio: f64::INFINITY,
    };
    assert_eq!(
        unavailable(&wrong),
        "wrong results (an output is NaN, infinite or unwritten)"
    );
}
