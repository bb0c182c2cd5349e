//! `vae train`: the whole run, from options to metrics.csv, checkpoints and pictures. What it is told and the
//! settings it takes are in `options.rs`, its output directory in `outdir.rs`, what it reports in `metrics.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use super::checkpoint::Checkpoint;
use super::eval::{EvalConfig, Evaluator, RECON_IMAGES, SAMPLE_IMAGES};
use super::metrics::{EpochStats, METRICS_HEADER, metrics_line, progress_bar};
use super::options::{TrainOptions, first_epoch, invalid, load_data, model_for};
use super::outdir::{check_out, default_out_dir, prepare_out, resumes_in};
use super::settings::Settings;
use super::trainer::{EpochEnd, TrainConfig, Trainer};
use crate::atomic::write_atomic;
use crate::data::mnist::Split;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::kernels::matmul::Product;
use crate::model::ModelConfig;
use crate::model::inference::Inference;
use crate::model::net::Net;
use crate::output::images::Grid;
use crate::output::pictures::end_of_training;
use crate::tune::{self, Chosen};

/// Fails, before anything is allocated, when the model or batch needs a buffer larger than the device allows,
/// naming the limit and the largest --hidden or --batch-size that fits.
pub fn check_sizes(gpu: &Gpu, model: ModelConfig, batch: u32) -> Result<()> {
    let limits = gpu.device.limits();
    // Every buffer is bound whole as storage, and kernels index elements with 32-bit integers.
    let by_bytes = limits
        .max_buffer_size
        .min(limits.max_storage_buffer_binding_size)
        / 4;
    let (limit_name, limit_elems) = if by_bytes > u32::MAX as u64 {
        ("32-bit element indices in the kernels", u32::MAX as u64)
    } else if limits.max_buffer_size <= limits.max_storage_buffer_binding_size {
        ("max_buffer_size", by_bytes)
    } else {
        ("max_storage_buffer_binding_size", by_bytes)
    };
    let (p, l) = (model.pixels, model.latent);
    let params = model.param_count();
    if params > limit_elems {
        let fits = |h: u32| ModelConfig { hidden: h, ..model }.param_count() <= limit_elems;
        // The largest hidden width that fits: a binary search over what param_count says.
        let (mut lo, mut hi) = (0u32, model.hidden);
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) { lo = mid } else { hi = mid }
        }
        return Err(Error::TooLarge {
            op: "building the model",
            what: format!(
                "a {p}-{}-{l} model's parameter buffer ({params} floats)",
                model.hidden
            ),
            needed: params * 4,
            limit: limit_elems * 4,
            limit_name,
            hint: format!("the largest --hidden that fits with --latent {l} is {lo}"),
        });
    }
    let widest = (p as u64).max(model.hidden as u64).max(2 * l as u64);
    let b = batch as u64;
    if b * widest > limit_elems {
        return Err(Error::TooLarge {
            op: "allocating activations",
            what: format!("a batch of {b} rows of {widest} floats"),
            needed: b * widest * 4,
            limit: limit_elems * 4,
            limit_name,
            hint: format!(
                "the largest --batch-size that fits is {}",
                limit_elems / widest
            ),
        });
    }
    Ok(())
}

/// What a run needs from start to end: the settings it trains with, the trainer and evaluator of its network, where
/// it writes and the metrics so far.
struct Run<'a> {
    settings: &'a Settings,
    trainer: Trainer<'a>,
    evaluator: Evaluator<'a>,
    out: &'a Path,
    image: (usize, usize),
    /// The kernel of each product the plans compute (recorded in checkpoints).
    kernels: BTreeMap<String, String>,
    /// Training time of an interrupted epoch before this run resumed it.
    resumed_seconds: f64,
    /// metrics.csv's rows so far, without the header.
    lines: Vec<String>,
    verbose: bool,
}

impl Run<'_> {
    /// Trains, evaluates and saves one epoch: metrics.csv, the checkpoint and the pictures, then one line. On
    /// Ctrl-C it stops at a step boundary, writes a checkpoint at that step and returns `Error::Interrupted`.
    fn epoch(&mut self, epoch: u32, epochs: u32) -> Result<EpochStats> {
        if crate::interrupt::requested() {
            let path = self.out.join("checkpoint.safetensors");
            let saved = match epoch - 1 {
                0 => "no epoch had ended: nothing was saved".to_string(),
                e => format!(
                    "the checkpoint of epoch {e} is complete; continue with --resume {}",
                    path.display()
                ),
            };
            return Err(Error::Interrupted(format!(
                "stopped before epoch {epoch}; {saved}"
            )));
        }
        let bar = progress_bar(self.verbose, self.trainer.steps_per_epoch(), epoch, epochs);
        bar.set_position(self.trainer.epoch_step as u64);
        let start = Instant::now();
        let end = self.trainer.train_epoch(epoch, |done, sum| {
            bar.set_position(done as u64);
            if sum[0].examples > 0 {
                bar.set_message(format!("loss {:.2}", sum[0].per_example().0));
            }
        })?;
        self.trainer.gpu.wait()?;
        let seconds = start.elapsed().as_secs_f64() + std::mem::take(&mut self.resumed_seconds);
        bar.finish_and_clear();
        let train = match end {
            EpochEnd::Done(sum) => sum[0],
            EpochEnd::Interrupted => return Err(self.interrupted(epoch, seconds)),
        };
        let test = self.evaluator.evaluate()?;
        let stats = EpochStats {
            epoch,
            train,
            test,
            seconds,
        };
        let (tl, tb, tk) = train.per_example();
        let (vl, vb, vk) = test.per_example();
        if !(tl.is_finite() && vl.is_finite()) {
            return Err(invalid(format!(
                "the loss became non-finite during epoch {epoch} (train {tl}, test {vl}); lower --lr"
            )));
        }
        let n = self.trainer.n_train();
        self.lines.push(metrics_line(&stats, n));
        let csv = self.metrics_csv();
        write_atomic(&self.out.join("metrics.csv"), csv.as_bytes())?;
        self.checkpoint(epoch, 0.0)?
            .save(&self.out.join("checkpoint.safetensors"))?;
        self.trainer.gpu.set_hang_note(self.saved());
        self.pictures(epoch)?;
        if self.verbose {
            println!(
                "epoch {epoch:>3}  train {tl:8.3} (bce {tb:8.3} kl {tk:6.3})  test {vl:8.3} (bce {vb:8.3} kl {vk:6.3})  {seconds:6.2} s  {:8.0} samples/s",
                n as f64 / seconds
            );
        }
        Ok(stats)
    }

    fn metrics_csv(&self) -> String {
        let rows: String = self.lines.iter().map(|l| format!("{l}\n")).collect();
        format!("{METRICS_HEADER}\n{rows}")
    }

    /// A GPU fault (device loss, a hang, memory, an error from the driver) with where the run stopped and what
    /// it keeps: no checkpoint can be written once the device is gone, so the last complete one is what the
    /// user resumes from. Other errors pass through as they are.
    fn stopped(&self, e: Error) -> Error {
        match e {
            Error::DeviceLost { .. }
            | Error::GpuTimeout { .. }
            | Error::OutOfMemory { .. }
            | Error::Internal { .. }
            | Error::Validation { .. }
            | Error::Readback { .. } => {}
            other => return other,
        }
        Error::Stopped {
            cause: Box::new(e),
            at: format!("the run stopped after step {}", self.trainer.step),
            saved: self.saved(),
        }
    }

    /// What the output directory holds to resume from, in words.
    fn saved(&self) -> String {
        let path = self.out.join("checkpoint.safetensors");
        match Checkpoint::load(&path) {
            Ok(c) => format!(
                "the last complete checkpoint, at step {} (epoch {}{}), is intact: continue with --resume {}",
                c.step,
                c.epoch,
                match c.epoch_step {
                    0 => String::new(),
                    s => format!(" and {s} steps"),
                },
                path.display()
            ),
            Err(_) => "no checkpoint had been written yet: start the run again".into(),
        }
    }

    /// Writes a checkpoint at the step the interrupted epoch reached, and says so.
    fn interrupted(&self, epoch: u32, seconds: f64) -> Error {
        let path = self.out.join("checkpoint.safetensors");
        let (done, of) = (self.trainer.epoch_step, self.trainer.steps_per_epoch());
        let saved = self
            .checkpoint(epoch - 1, seconds)
            .and_then(|ck| ck.save(&path));
        match saved {
            Ok(()) => Error::Interrupted(format!(
                "checkpoint written at step {} (epoch {epoch}, step {done} of {of}) in {}; continue with --resume {}",
                self.trainer.step,
                path.display(),
                path.display()
            )),
            Err(e) => e,
        }
    }

    /// The run's state after `epoch` whole epochs (and, mid-epoch, the steps and loss of the next one so far),
    /// read back from the GPU.
    fn checkpoint(&self, epoch: u32, partial_seconds: f64) -> Result<Checkpoint> {
        let (m, v) = self.trainer.moments()?;
        Ok(Checkpoint {
            model: self.trainer.net.config,
            params: self.trainer.params()?,
            m,
            v,
            step: self.trainer.step,
            epoch,
            epoch_step: self.trainer.epoch_step,
            partial: self.trainer.partial[0],
            partial_seconds,
            settings: self.settings.clone(),
            image: Some((self.image.0 as u32, self.image.1 as u32)),
            metrics: self.metrics_csv(),
            kernels: self.kernels.clone(),
        })
    }

    /// reconstruction_<epoch>.png and sample_<epoch>.png.
    fn pictures(&self, epoch: u32) -> Result<()> {
        epoch_pictures(&self.evaluator, self.image, self.out, epoch)
    }
}

/// reconstruction_<epoch>.png (test images over their reconstructions) and sample_<epoch>.png in `out`, from the
/// evaluator's network as it is now.
pub(super) fn epoch_pictures(
    evaluator: &Evaluator,
    tile: (usize, usize),
    out: &Path,
    epoch: u32,
) -> Result<()> {
    let px = tile.0 * tile.1;
    let (x, recon) = evaluator.reconstructions()?;
    let n = x.len() / px;
    let mut grid = Grid::new(2, RECON_IMAGES as usize, tile);
    for i in 0..n {
        grid.put(i, &x[i * px..(i + 1) * px]);
        grid.put(RECON_IMAGES as usize + i, &recon[i * px..(i + 1) * px]);
    }
    grid.save(&out.join(format!("reconstruction_{epoch}.png")))?;
    let samples = evaluator.samples()?;
    let side = (SAMPLE_IMAGES as f64).sqrt() as usize;
    let mut grid = Grid::new(side, side, tile);
    for i in 0..SAMPLE_IMAGES as usize {
        grid.put(i, &samples[i * px..(i + 1) * px]);
    }
    grid.save(&out.join(format!("sample_{epoch}.png")))
}

/// Distinct products, by key, in first-seen order.
pub fn distinct(products: impl IntoIterator<Item = (Product, String)>) -> Vec<Product> {
    let mut seen = std::collections::BTreeSet::new();
    products
        .into_iter()
        .filter(|(p, _)| seen.insert(p.key()))
        .map(|(p, _)| p)
        .collect()
}

/// The kernel of each product, by key, and each pair's choice where the device has one (a pair run as two
/// dispatches, or with a kernel of its own).
pub(super) fn kernels_used(
    gpu: &Gpu,
    products: impl IntoIterator<Item = (Product, String)>,
) -> BTreeMap<String, String> {
    let products: Vec<(Product, String)> = products.into_iter().collect();
    let mut kernels: BTreeMap<String, String> =
        products.iter().map(|(p, k)| (p.key(), k.clone())).collect();
    let list: Vec<Product> = products.into_iter().map(|(p, _)| p).collect();
    for (w, i) in tune::pairs(&list) {
        let key = tune::pair_key_of(&w, &i);
        if let Some(choice) = gpu.choice(&key) {
            kernels.insert(key, choice);
        }
    }
    for key in crate::kernels::FUSIONS {
        let fused = crate::kernels::fused(gpu, key);
        kernels.insert(key.into(), if fused { "fused" } else { "apart" }.into());
    }
    kernels
}

/// Sets the device's kernel choices for the run's products: the checkpoint's when resuming (exact resume holds
/// even where tuning would now choose otherwise), else as `opts.tune` says.
fn choose_kernels(
    gpu: &Gpu,
    opts: &TrainOptions,
    ck: Option<&Checkpoint>,
    trainer: &Trainer,
    evaluator: &Evaluator,
) -> Result<Chosen> {
    if let Some(ck) = ck.filter(|c| !c.kernels.is_empty()) {
        gpu.clear_choices();
        gpu.set_choices(ck.kernels.clone());
        return Ok(Chosen {
            how: format!("{} products from the checkpoint", ck.kernels.len()),
            seconds: 0.0,
            tuned: None,
        });
    }
    // The step's products; the evaluator's full batches are the same products, the rest take the defaults.
    let _ = evaluator;
    let products = distinct(trainer.products());
    let room = trainer.pair_room();
    tune::choose(gpu, &products, &opts.tune, room, |w| eprintln!("{w}"))
}

/// Runs `vae train`; returns the per-epoch statistics of the epochs it trained.
pub fn train(opts: &TrainOptions) -> Result<Vec<EpochStats>> {
    opts.check()?;
    let resumed = match &opts.resume {
        Some(path) => Some((Checkpoint::load(path)?, path.as_path())),
        None => None,
    };
    let ck = resumed.as_ref().map(|(c, _)| c);
    let settings = opts.settings(ck)?;
    let first = first_epoch(opts, ck)?;
    let (train, test) = load_data(opts, &settings)?;
    let model = model_for(&train, &settings, resumed.as_ref().map(|(c, p)| (c, *p)))?;
    let out = opts.out.clone().unwrap_or_else(default_out_dir);
    let resuming_here = opts.resume.as_ref().is_some_and(|r| resumes_in(r, &out));
    check_out(&out, resuming_here)?;
    // Timestamps where the adapter has them: tuning on a cache miss then times kernels on the GPU's clock, as
    // `vae tune` does (they share the cache), not as submit and wait, whose overhead on a GPU is a large part
    // of a small kernel's time. A training step itself reads no timestamps.
    let gpu = Gpu::new(GpuOptions {
        timestamps: true,
        ..opts.gpu.clone()
    })?;
    check_sizes(&gpu, model, settings.batch_size)?;
    let params = ck.map_or_else(|| model.init(settings.seed), |c| c.params.clone());
    let net = Net::new(&gpu, model, &params).map_err(|e| {
        e.advising(format!(
            "The model's parameters alone do not fit: use a smaller --hidden (now {}) or a device with more memory",
            model.hidden
        ))
    })?;
    let (mut trainer, mut evaluator) =
        build_for_device(&gpu, &net, &settings, opts.log_interval, &train, &test)?;
    let chosen = choose_kernels(&gpu, opts, ck, &trainer, &evaluator)?;
    trainer.rebuild_plans()?;
    evaluator.rebuild_plans()?;
    let mut kernels = kernels_used(
        &gpu,
        trainer.products().into_iter().chain(evaluator.products()),
    );
    let reduction = crate::kernels::Reduction::for_gpu(&gpu);
    kernels.insert(
        crate::kernels::Reduction::KEY.into(),
        reduction.name().into(),
    );
    let mut lines = Vec::new();
    if let Some(ck) = ck {
        trainer.restore(&ck.m, &ck.v, ck.step)?;
        trainer.epoch_step = ck.epoch_step;
        trainer.partial = vec![ck.partial];
        // The earlier epochs' rows, so the new metrics.csv tells the whole run.
        lines.extend(
            ck.metrics
                .lines()
                .skip(1)
                .filter(|l| !l.is_empty())
                .map(String::from),
        );
    }
    let _lock = prepare_out(&out, resuming_here)?;
    if opts.verbose {
        let resuming = match ck {
            Some(c) if c.epoch_step > 0 => {
                format!(", resuming in epoch {first} after step {}", c.epoch_step)
            }
            Some(_) => format!(", resuming at epoch {first}"),
            None => String::new(),
        };
        eprintln!(
            "training {}-{}-{} on {} ({} train / {} test examples, batch {}, data {}){resuming}, writing to {}",
            model.pixels,
            model.hidden,
            model.latent,
            gpu.info,
            trainer.n_train(),
            evaluator.n_test(),
            settings.batch_size,
            settings.data_kind(),
            out.display()
        );
        eprintln!("{}", chosen.line());
    }
    let mut run = Run {
        settings: &settings,
        trainer,
        evaluator,
        out: &out,
        image: (train.rows, train.cols),
        kernels,
        resumed_seconds: ck.map_or(0.0, |c| c.partial_seconds),
        lines,
        verbose: opts.verbose,
    };
    run.trainer.gpu.set_hang_note(run.saved());
    let history = (first..=opts.epochs)
        .map(|epoch| run.epoch(epoch, opts.epochs).map_err(|e| run.stopped(e)))
        .collect::<Result<Vec<_>>>()?;
    // The training curve, the latent scatter and (2-D) the manifold, from the final parameters.
    let (params, metrics) = (run.trainer.params()?, run.metrics_csv());
    // Training's buffers are the pictures' now: a device that held the run holds them.
    drop(run);
    drop(net);
    let inf = Inference::fitting(&gpu, model, &params, settings.seed)?;
    end_of_training(&inf, &test, &metrics, &out)?;
    Ok(history)
}

/// The trainer and the evaluator at `settings`' batch size. Each attempt also makes room for the run's largest
/// readback (the parameters, at checkpoints), so a batch size that builds here also runs. Out of memory, the
/// error names the largest batch size that does build, found by building again at smaller sizes.
fn build_for_device<'a>(
    gpu: &'a Gpu,
    net: &'a Net,
    settings: &Settings,
    log_interval: u32,
    train: &Split,
    test: &Split,
) -> Result<(Trainer<'a>, Evaluator<'a>)> {
    let build = |batch: u32| -> Result<(Trainer<'a>, Evaluator<'a>)> {
        // What earlier uploads (or a failed attempt) dropped is freed first: every attempt sees the same memory.
        gpu.release_dropped()?;
        let s = Settings {
            batch_size: batch,
            ..settings.clone()
        };
        let trainer = Trainer::new(
            gpu,
            net,
            TrainConfig::new(net.config, &s, log_interval),
            train,
        )?;
        let evaluator = Evaluator::new(gpu, net, EvalConfig::from(&s), test)?;
        let readback = (net.layout.len * size_of::<f32>()) as u64;
        gpu.buffer(
            "readback.room",
            readback,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        Ok((trainer, evaluator))
    };
    build(settings.batch_size).map_err(|e| match e {
        Error::OutOfMemory { .. } => {
            let advice = match largest_fitting(settings.batch_size, |b| build(b).is_ok()) {
                Some(b) => format!(
                    "--batch-size {b} is the largest that fits on this device now (tried at start-up; --batch-size {} does not)",
                    settings.batch_size
                ),
                None => format!(
                    "Not even --batch-size 1 fits: use a smaller --hidden (now {}), fewer --train-samples/--test-samples (the data sets live on the device), or a device with more memory",
                    net.config.hidden
                ),
            };
            e.advising(advice)
        }
        e => e,
    })
}

/// The largest value in 1..`failed` for which `fits` holds (`fits` is taken to be monotone: what fits, fits
/// smaller), found by halving down from `failed` and then bisecting; `None` if not even 1 fits.
pub(super) fn largest_fitting(failed: u32, fits: impl Fn(u32) -> bool) -> Option<u32> {
    let mut hi = failed; // does not fit
    let mut lo = hi / 2;
    while lo > 0 && !fits(lo) {
        hi = lo;
        lo /= 2;
    }
    if lo == 0 {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}
