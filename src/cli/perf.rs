//! `vae bench` and `vae profile`: the benchmarks' and the profile's tables.

use std::path::Path;

use vae_wgpu::data::mnist::{self, Split};
use vae_wgpu::gpu::{Gpu, GpuOptions};
use vae_wgpu::kernels;
use vae_wgpu::kernels::contract::EpilogueKind;
use vae_wgpu::kernels::contract::Layout;
use vae_wgpu::kernels::matmul::Kernel;
use vae_wgpu::kernels::matmul::Product;
use vae_wgpu::kernels::philox::{Philox, stream};
use vae_wgpu::model::ModelConfig;
use vae_wgpu::model::net::Net;
use vae_wgpu::perf::bench;
use vae_wgpu::perf::profile;
use vae_wgpu::training::eval::{EvalConfig, Evaluator};
use vae_wgpu::training::run::distinct;
use vae_wgpu::training::trainer::{TrainConfig, Trainer};
use vae_wgpu::tune::{self, MatmulRow};
use vae_wgpu::{Error, Result};

use super::args::{BenchModel, GpuArgs, TuneArgs};

/// The training data for benchmarks: MNIST when present, else random bytes of its shape (said on stderr).
fn bench_data(m: &BenchModel) -> Split {
    match mnist::load(&m.data) {
        Ok(d) => d.train.take(m.train_samples),
        Err(e) => {
            eprintln!("note: {e}\nnote: timing on random bytes of MNIST's shape instead");
            let n = m.train_samples.unwrap_or(60_000);
            let mut rng = Philox::new(1, stream::TEST_INPUT);
            Split {
                images: (0..n * 784).map(|_| rng.below(256) as u8).collect(),
                labels: vec![0; n],
                n,
                rows: 28,
                cols: 28,
            }
        }
    }
}

/// A trainer for `m`'s model at batch `batch` on `train`, with its network (which the caller owns).
fn bench_net(gpu: &Gpu, m: &BenchModel, train: &Split, seed: u64) -> Result<Net> {
    let model = ModelConfig::new(train.pixels() as u32, m.hidden, m.latent)?;
    Net::new(gpu, model, &model.init(seed))
}

fn bench_trainer<'g>(
    gpu: &'g Gpu,
    net: &'g Net,
    batch: u32,
    train: &Split,
    seed: u64,
) -> Result<Trainer<'g>> {
    let config = TrainConfig {
        seed,
        ..bench::bench_config(net.config, batch, train.n)
    };
    Trainer::new(gpu, net, config, train)
}

/// Chooses the kernels of `trainer`'s products as `tune` says, rebuilds its plans and prints the one line.
fn tuned(gpu: &Gpu, trainer: &mut Trainer, tune: &TuneArgs) -> Result<()> {
    let products = distinct(trainer.products());
    let room = trainer.pair_room();
    let chosen = tune::choose(gpu, &products, &tune.into(), room, |w| eprintln!("{w}"))?;
    trainer.rebuild_plans()?;
    eprintln!("{}", chosen.line());
    Ok(())
}

pub fn epoch(
    args: &GpuArgs,
    tune: &TuneArgs,
    m: &BenchModel,
    batches: &[u32],
    warmup: u32,
    reps: u32,
    seed: u64,
) -> Result<()> {
    let gpu = Gpu::new(GpuOptions {
        timestamps: true,
        ..args.into()
    })?;
    let train = bench_data(m);
    // The test loss after the epochs, as bench/compare.py's peers report theirs: a fast run must not be a broken
    // one. Only where the dataset is there (the benchmark times random bytes where it is not).
    let test = mnist::load(&m.data).ok().map(|d| d.test);
    println!(
        "epoch benchmark on {} ({} training examples, {}-{}-{})",
        gpu.info,
        train.n,
        train.pixels(),
        m.hidden,
        m.latent
    );
    println!(
        "{:>6} {:>12} {:>14} {:>6}  {:>14} {:>10}  runs (ms)",
        "batch", "median ms", "samples/s", "reps", "first epoch ms", "test loss"
    );
    for &b in batches {
        // Each batch size trains a model of its own from the same initialization.
        let net = bench_net(&gpu, m, &train, seed)?;
        let mut trainer = bench_trainer(&gpu, &net, b, &train, seed)?;
        tuned(&gpu, &mut trainer, tune)?;
        let row = bench::epoch_bench(&mut trainer, warmup, reps)?;
        let test_loss = match &test {
            Some(test) => {
                let config = EvalConfig {
                    batch: b.min(test.n as u32),
                    seed,
                    binarize: false,
                };
                Some(
                    Evaluator::new(&gpu, &net, config, test)?
                        .evaluate()?
                        .per_example(),
                )
            }
            None => None,
        };
        let runs: Vec<String> = row.runs.iter().map(|r| format!("{r:.1}")).collect();
        println!(
            "{:>6} {:>12.1} {:>14.0} {:>6}  {:>14.1} {:>10}  {}",
            row.batch,
            row.median_ms,
            row.samples_per_second,
            reps,
            row.first_ms,
            test_loss.map_or("-".into(), |t| format!("{:.3}", t.0)),
            runs.join(" ")
        );
        let result = serde_json::json!({
            "impl": "vae-wgpu",
            "seed": seed,
            "adapter": gpu.info.to_string(),
            "batch": row.batch,
            "samples": row.samples,
            "epochs": warmup + reps,
            "median_ms": row.median_ms,
            "samples_per_second": row.samples_per_second,
            "runs_ms": row.runs,
            "first_epoch_ms": row.first_ms,
            "test_loss": test_loss.map(|t| t.0),
            "test_bce": test_loss.map(|t| t.1),
            "test_kl": test_loss.map(|t| t.2),
        });
        println!("RESULT {result}");
    }
    Ok(())
}

/// The distinct products a training run of `m` computes (full batch, the last partial batch), in step order.
/// The training set, the distinct products of a run's steps and how many of its gradient pairs may run apart.
fn run_products(gpu: &Gpu, m: &BenchModel) -> Result<(Split, Vec<Product>, usize)> {
    let train = bench_data(m);
    let net = bench_net(gpu, m, &train, 1)?;
    let trainer = bench_trainer(gpu, &net, m.batch_size, &train, 1)?;
    let room = trainer.pair_room();
    Ok((train, distinct(trainer.products()), room))
}

fn print_row(
    product: &Product,
    kernel: Kernel,
    outcome: &std::result::Result<MatmulRow, String>,
    chosen: bool,
) {
    let (pm, pn, pk) = product.shape;
    let head = format!(
        "{:<18} {:<4} {:<9} {:>14} {:<1}{:<20}",
        product.name,
        format!("{:?}", product.layout),
        format!("{:?}", product.epilogue),
        format!("{pm}×{pn}×{pk}"),
        if chosen { "*" } else { " " },
        kernel.name(),
    );
    match outcome {
        Ok(r) => println!(
            "{head} {:>10.1} {:>10.2} {:>9.3}",
            r.median_us, r.gflops, r.error_ratio
        ),
        Err(why) => println!("{head} unavailable: {why}"),
    }
}

/// A pair's row: its label, the kernel (`*` where the step uses it) and its time for both products in one dispatch.
/// No `×` column: the products' own rows above give their shapes.
fn print_pair_row(
    label: &str,
    kernel: &str,
    outcome: &std::result::Result<MatmulRow, String>,
    chosen: bool,
) {
    let head = format!(
        "{label:<42} {:<1}{kernel:<20}",
        if chosen { "*" } else { " " }
    );
    match outcome {
        Ok(r) => println!(
            "{head} {:>10.1} {:>10.2} {:>9.3}",
            r.median_us, r.gflops, r.error_ratio
        ),
        Err(why) => println!("{head} unavailable: {why}"),
    }
}

fn pair_header() {
    println!(
        "each layer's weight and input gradients in one dispatch, against the two apart (* = the step's choice)"
    );
    println!(
        "{:<42}  {:<20} {:>10} {:>10} {:>9}",
        "pair", "kernel", "median µs", "GFLOP/s", "err/bound"
    );
}

fn table_header() {
    println!(
        "{:<18} {:<4} {:<9} {:>14}  {:<20} {:>10} {:>10} {:>9}",
        "product", "lay.", "epilogue", "m×n×k", "kernel", "median µs", "GFLOP/s", "err/bound"
    );
}

/// Every candidate for every matmul of one training step (read from the step's plans), the kernel the step
/// uses marked `*`, and a square.
pub fn matmul(
    args: &GpuArgs,
    tune: &TuneArgs,
    m: &BenchModel,
    square: u32,
    reps: u32,
    runs: u32,
) -> Result<()> {
    let gpu = Gpu::new(GpuOptions {
        timestamps: true,
        ..args.into()
    })?;
    let train = bench_data(m);
    let net = bench_net(&gpu, m, &train, 1)?;
    let mut trainer = bench_trainer(&gpu, &net, m.batch_size, &train, 1)?;
    tuned(&gpu, &mut trainer, tune)?;
    let mut products = trainer.products();
    let mut seen = std::collections::BTreeSet::new();
    products.retain(|(p, _)| seen.insert(p.key()));
    if square > 0 {
        let p = Product {
            name: format!("square{square}"),
            layout: Layout::NT,
            epilogue: EpilogueKind::None,
            shape: (square, square, square),
            models: 1,
        };
        let k = Kernel::default_for(&gpu, square, square).name();
        products.push((p, gpu.choice(&products_key(square)).unwrap_or(k)));
    }
    println!("matmul on {}", gpu.info);
    println!(
        "every candidate for the products of a batch-{} training step of {}-{}-{}{} (* = the kernel the step uses)",
        m.batch_size,
        train.pixels(),
        m.hidden,
        m.latent,
        if square > 0 { ", then a square" } else { "" }
    );
    table_header();
    // The kernels each product can use (by key): a pair is timed with those both of its products can.
    let mut available: std::collections::BTreeMap<String, Vec<Kernel>> = Default::default();
    for (product, used) in &products {
        let (pm, pn, pk) = product.shape;
        let big = pm as u64 * pn as u64 * pk as u64 > 1 << 30;
        for kernel in Kernel::CANDIDATES {
            if big && matches!(kernel, Kernel::Split { .. }) {
                // One output per few invocations: for small outputs; at this size it would take minutes.
                continue;
            }
            let r = if big { 2 } else { reps };
            let outcome = tune::bench_candidate(&gpu, kernel, product, r, runs)?;
            print_row(product, kernel, &outcome, kernel.name() == *used);
            if outcome.is_ok() {
                available.entry(product.key()).or_default().push(kernel);
            }
        }
    }
    let list: Vec<Product> = products.iter().map(|(p, _)| p.clone()).collect();
    let pairs = tune::pairs(&list);
    if !pairs.is_empty() {
        pair_header();
    }
    for (w, i) in &pairs {
        let label = tune::pair_label(w, i);
        // The step's choice for the pair: its own, else (untuned) its first product's kernel.
        let choice = gpu
            .choice(&tune::pair_key_of(w, i))
            .or_else(|| {
                products
                    .iter()
                    .find(|(p, _)| p == w)
                    .map(|(_, k)| k.clone())
            })
            .unwrap_or_default();
        let parts = [w.clone(), i.clone()];
        let both = |k: &Kernel| {
            [w, i]
                .iter()
                .all(|p| available.get(&p.key()).is_some_and(|a| a.contains(k)))
        };
        for kernel in Kernel::CANDIDATES.into_iter().filter(both) {
            let outcome = tune::bench_parts(&gpu, kernel, &parts, reps, runs)?;
            print_pair_row(&label, &kernel.name(), &outcome, kernel.name() == choice);
        }
        if choice == kernels::matmul::UNPAIRED {
            println!(
                "{label:<42} *{:<20} (the step runs its two products apart)",
                choice
            );
        }
    }
    Ok(())
}

fn products_key(square: u32) -> String {
    kernels::matmul::product_key(Layout::NT, (square, square, square), EpilogueKind::None)
}

/// `vae tune`: measures every candidate for every product of a training run of `m`, prints the table, and writes
/// the choices to the cache.
pub fn tune(args: &GpuArgs, tune: &TuneArgs, m: &BenchModel, runs: u32) -> Result<()> {
    let gpu = Gpu::new(GpuOptions {
        timestamps: true,
        ..args.into()
    })?;
    let (train, products, room) = run_products(&gpu, m)?;
    println!(
        "tuning the {} matmuls of a batch-{} training run of {}-{}-{} on {}",
        products.len(),
        m.batch_size,
        train.pixels(),
        m.hidden,
        m.latent,
        gpu.info
    );
    let start = std::time::Instant::now();
    let mut tuned = tune::tune(&gpu, &products, runs, room)?;
    table_header();
    for row in &tuned.rows {
        print_row(&row.product, row.kernel, &row.outcome, row.chosen);
    }
    if !tuned.pairs.is_empty() {
        pair_header();
    }
    for pair in &tuned.pairs {
        for (kernel, outcome) in &pair.rows {
            print_pair_row(
                &pair.label,
                &kernel.name(),
                outcome,
                kernel.name() == pair.choice,
            );
        }
        let (w, i, us) = pair.apart;
        println!(
            "{:<42} {:<1}{:<20} {us:>10.1}   ({} + {}, two dispatches)",
            pair.label,
            if pair.choice == kernels::matmul::UNPAIRED {
                "*"
            } else {
                " "
            },
            kernels::matmul::UNPAIRED,
            w.name(),
            i.name()
        );
        if pair.bound {
            println!(
                "{:<42}  one dispatch all the same: the step has room for no more than {} dispatches",
                pair.label,
                kernels::MAX_STEP_DISPATCHES
            );
        }
    }
    // After the table, so it shows why each candidate of a product without one is unavailable.
    tuned.complete(&gpu)?;
    // The reductions of the loss kernels: the workgroup-memory tree, and subgroups where the device has them.
    let n = tune::reduction_size(&products);
    let (best, times) = tune::tune_reduction(&gpu, n, runs)?;
    for (r, us) in &times {
        let mark = if *r == best { "*" } else { " " };
        println!(
            "reduction (bce over {n} elements) {mark}{:<10} {us:>10.1} µs",
            r.name()
        );
    }
    tuned
        .choices
        .insert(kernels::Reduction::KEY.into(), best.name().into());
    let identity = tune::identity(&gpu);
    let path = tune
        .tune_cache
        .clone()
        .or_else(|| tune::default_cache_path(&identity));
    match path {
        Some(path) => {
            // Keep what an existing, valid cache knows about other products.
            let mut all = tune::read_cache(&path, &identity)
                .ok()
                .flatten()
                .unwrap_or_default();
            all.extend(tuned.choices.clone());
            tune::write_cache(&path, &identity, &all)?;
            println!(
                "chose {} kernels in {:.1} s; cached in {}",
                tuned.choices.len(),
                start.elapsed().as_secs_f64(),
                path.display()
            );
        }
        None => {
            println!("no user cache directory: the choices are not saved (pass --tune-cache FILE)")
        }
    }
    Ok(())
}

pub fn profile(
    args: &GpuArgs,
    tune: &TuneArgs,
    m: &BenchModel,
    steps: u32,
    trace: &Path,
    capture: bool,
) -> Result<()> {
    if steps == 0 {
        return Err(Error::Invalid("--steps 0: profile at least 1 step".into()));
    }
    let gpu = Gpu::new(GpuOptions {
        timestamps: true,
        debug_labels: capture,
        ..args.into()
    })?;
    let train = bench_data(m);
    let net = bench_net(&gpu, m, &train, 1)?;
    let mut trainer = bench_trainer(&gpu, &net, m.batch_size, &train, 1)?;
    tuned(&gpu, &mut trainer, tune)?;
    let p = profile::profile(&mut trainer, steps, Some(trace), capture)?;
    println!(
        "profile of {} training steps (batch {}, {}-{}-{}) on {}",
        p.steps,
        m.batch_size,
        train.pixels(),
        m.hidden,
        m.latent,
        gpu.info
    );
    if p.kernels.is_empty() {
        println!(
            "this adapter has no timestamp queries: per-kernel times are unavailable (whole-step wall clock only)"
        );
    } else {
        // As wide as the longest label (a pair's, e.g. `fc4.weight_grad+input_grad`).
        let w = p
            .kernels
            .iter()
            .map(|k| k.label.len())
            .max()
            .unwrap_or(0)
            .max(20);
        println!(
            "{:<w$} {:>6} {:>10} {:>10} {:>7} {:>9} {:>8}",
            "kernel", "calls", "mean µs", "median µs", "share", "GFLOP/s", "GB/s"
        );
        for k in &p.kernels {
            let gf = if k.gflops > 0.0 {
                format!("{:.2}", k.gflops)
            } else {
                "-".into()
            };
            println!(
                "{:<w$} {:>6} {:>10.1} {:>10.1} {:>6.1}% {:>9} {:>8.2}",
                k.label,
                k.calls,
                k.mean_us,
                k.median_us,
                100.0 * k.share,
                gf,
                k.gbps
            );
        }
        println!("trace written to {}", trace.display());
    }
    println!("dispatches per training step: {}", p.dispatches);
    let (once, steps) = p.per_gather;
    println!("plus {once} per {steps} steps (the gather of their input batches, ahead of them)");
    let (once, steps) = p.per_submission;
    println!(
        "plus {once} per submission of up to {steps} steps (the loss reduction, at the log point)"
    );
    println!(
        "host time to record and submit a step (no wait): {:.1} µs",
        p.host_step_us
    );
    if let Some(g) = p.gpu_step_us {
        println!("GPU time per step (sum of kernels, one timed pass each): {g:.1} µs");
    }
    println!(
        "wall-clock per step (recorded back to back in one pass, as training does): {:.1} µs",
        p.wall_step_us
    );
    if let Some(c) = &p.captured {
        println!("{c}");
    }
    Ok(())
}

/// `vae bench sweep`: whole epochs of M models trained together in one batched step (untuned kernels, as
/// `vae sweep` trains), for each M of `models`: the epoch's median time, the samples per second summed over the
/// models, and the ratio of the epoch to M epochs of one model (below 1: the batched step beats M runs one after
/// another). M = 1 is timed first as the baseline.
pub fn sweep(
    args: &GpuArgs,
    tune: &TuneArgs,
    m: &BenchModel,
    models: &[u32],
    (warmup, reps): (u32, u32),
) -> Result<()> {
    let most = vae_wgpu::training::grid::MAX_MODELS as u32;
    if let Some(bad) = models.iter().find(|&&c| c == 0 || c > most) {
        return Err(Error::Invalid(format!(
            "--models {bad}: each count must be between 1 and {most}"
        )));
    }
    if reps == 0 {
        return Err(Error::Invalid("--reps 0: time at least 1 epoch".into()));
    }
    let gpu = Gpu::new(GpuOptions {
        timestamps: true,
        ..args.into()
    })?;
    let train = bench_data(m);
    let model = ModelConfig::new(train.pixels() as u32, m.hidden, m.latent)?;
    println!(
        "sweep benchmark on {} ({} training examples, {}-{}-{}, batch {}, median of {reps} epochs after {warmup}; kernels tuned at each model count unless --no-tune)",
        gpu.info, train.n, model.pixels, model.hidden, model.latent, m.batch_size
    );
    println!(
        "{:>6} {:>12} {:>16} {:>12} {:>16}  runs (ms)",
        "models", "epoch ms", "samples/s (sum)", "ms / model", "vs M runs of 1"
    );
    let mut one_ms = None;
    for &count in std::iter::once(&1).chain(models.iter().filter(|&&c| c != 1)) {
        let fits =
            vae_wgpu::training::sweep::check_models_fit(&gpu, model, m.batch_size, count as usize);
        if let Err(e) = fits {
            println!("{count:>6}  does not fit: {e}");
            continue;
        }
        let init: Vec<Vec<f32>> = (0..count).map(|k| model.init(1 + k as u64)).collect();
        let init: Vec<&[f32]> = init.iter().map(|p| p.as_slice()).collect();
        let net = Net::batched(&gpu, model, &init)?;
        let runs = (0..count)
            .map(|k| vae_wgpu::training::trainer::ModelRun {
                seed: 1 + k as u64,
                beta: 1.0,
                kl_warmup: 0.0,
                lr: 1e-3,
                binarize: false,
            })
            .collect();
        let config = bench::bench_config(model, m.batch_size, train.n);
        let mut trainer = Trainer::batched(&gpu, &net, config, runs, &train)?;
        tuned(&gpu, &mut trainer, tune)?;
        let row = bench::epoch_bench(&mut trainer, warmup, reps)?;
        let base = *one_ms.get_or_insert(row.median_ms);
        if count == 1 || models.contains(&count) {
            let times: Vec<String> = row.runs.iter().map(|r| format!("{r:.1}")).collect();
            println!(
                "{count:>6} {:>12.1} {:>16.0} {:>12.2} {:>16.3}  {}",
                row.median_ms,
                row.samples_per_second * count as f64,
                row.median_ms / count as f64,
                row.median_ms / (count as f64 * base),
                times.join(" ")
            );
        }
    }
    Ok(())
}
