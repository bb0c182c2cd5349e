//! `vae sweep` (issue 25): the models of a β × seed × learning-rate grid trained together in one batched step
//! ([`Trainer::batched`]), over the same shuffled batches, each written to its own directory as `vae train`
//! writes a run (metrics.csv, the checkpoint, the pictures), with the sweep's own sweep.csv and pictures beside.
//!
//! A model of a sweep computes what `vae train --seed S --beta B --lr L --data-seed D` computes with the same
//! kernels, to the bit. Tuning times the step's products at the sweep's model count (their keys in the choices
//! and the cache end in ` xM`), so a tuned sweep may take other kernels than a tuned run alone; with `--no-tune`
//! on both they take the same. Each model's checkpoint records the kernels the sweep took under the single
//! model's keys, so `vae train --resume` continues it with them.
//! Evaluation runs model by model, on one single-model network that each model's parameters are copied into.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::checkpoint::Checkpoint;
use super::eval::{EvalConfig, Evaluator};
use super::grid::{Grid, GridPoint};
use super::metrics::{EpochStats, METRICS_HEADER, metrics_line, progress_bar};
use super::options::{TrainOptions, load_data, model_for};
use super::outdir::{check_out, default_out_dir, prepare_out};
use super::plans::LossSum;
use super::run::{check_sizes, distinct, epoch_pictures, kernels_used, largest_fitting};
use super::settings::Settings;
use super::trainer::{EpochEnd, ModelRun, TrainConfig, Trainer};
use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::model::ModelConfig;
use crate::model::inference::Inference;
use crate::model::net::{Net, model_stride};
use crate::output::pictures::end_of_training;
use crate::output::sweep::{SweepModel, rate_distortion_png, sweep_png};
use crate::tune;

/// Everything `vae sweep` is told: the shared options (as `vae train` takes them; their --lr, --seed and --beta
/// unused), the grid, and the data seed every model shares (default: the grid's first seed).
#[derive(Clone, Debug)]
pub struct SweepOptions {
    pub train: TrainOptions,
    pub grid: Grid,
    pub data_seed: Option<u64>,
}

/// sweep.csv's header: one row per model and epoch.
pub const SWEEP_HEADER: &str =
    "model,beta,seed,lr,epoch,train_loss,train_bce,train_kl,test_loss,test_bce,test_kl";

/// One model of the sweep as the run writes it.
struct Member {
    point: GridPoint,
    settings: Settings,
    out: PathBuf,
    /// metrics.csv's rows so far.
    lines: Vec<String>,
    history: Vec<EpochStats>,
}

/// The settings of the grid's model `p` over the shared `base`, with the shared data seed.
fn member_settings(base: &Settings, p: GridPoint, data_seed: u64) -> Settings {
    Settings {
        seed: p.seed,
        beta: p.beta,
        lr: p.lr,
        data_seed: (data_seed != p.seed).then_some(data_seed),
        ..base.clone()
    }
}

/// Fails before anything is allocated where M models' buffers pass what the device allows one buffer (every
/// model's parameters live in one), naming the largest model count that fits.
fn check_models_fit(gpu: &Gpu, model: ModelConfig, batch: u32, models: usize) -> Result<()> {
    let limits = gpu.device.limits();
    let limit = limits
        .max_buffer_size
        .min(limits.max_storage_buffer_binding_size)
        .min(4 * u32::MAX as u64);
    let stride = model_stride(model.layout().len) as u64 * 4;
    // The widest activation of one model, 64-aligned, as `Workspace::batched` lays them out.
    let widest = model_stride(
        batch as usize * (model.pixels.max(model.hidden).max(2 * model.latent)) as usize,
    ) as u64
        * 4;
    let per = stride.max(widest);
    if per * models as u64 > limit {
        return Err(Error::Invalid(format!(
            "{models} models of {}-{}-{} at batch {batch} need {} per buffer, past this device's {} \
             (max_buffer_size / max_storage_buffer_binding_size): the largest sweep that fits here trains {} \
             models at once; split the grid",
            model.pixels,
            model.hidden,
            model.latent,
            crate::error::bytes(per * models as u64),
            crate::error::bytes(limit),
            limit / per
        )));
    }
    Ok(())
}

/// Runs `vae sweep`; returns each model's per-epoch statistics, in grid order.
pub fn sweep(opts: &SweepOptions) -> Result<Vec<Vec<EpochStats>>> {
    let t = &opts.train;
    t.check()?;
    if t.resume.is_some() {
        return Err(Error::Invalid(
            "vae sweep does not resume yet: continue any one model with vae train --resume <model dir>/checkpoint.safetensors"
                .into(),
        ));
    }
    let points = opts.grid.points();
    let data_seed = opts.data_seed.unwrap_or(points[0].seed);
    let base = t.settings(None)?;
    let (train, test) = load_data(t, &base)?;
    let model = model_for(&train, &base, None)?;
    let out = t.out.clone().unwrap_or_else(default_out_dir);
    let members: Vec<Member> = points
        .iter()
        .map(|&p| Member {
            point: p,
            settings: member_settings(&base, p, data_seed),
            out: out.join(p.dir_name()),
            lines: Vec::new(),
            history: Vec::new(),
        })
        .collect();
    check_out(&out, false)?;
    for m in &members {
        check_out(&m.out, false)?;
    }
    // Timestamps where the adapter has them, for tuning (as `vae train`).
    let gpu = Gpu::new(GpuOptions {
        timestamps: true,
        ..t.gpu.clone()
    })?;
    check_sizes(&gpu, model, base.batch_size)?;
    check_models_fit(&gpu, model, base.batch_size, members.len())?;
    let init: Vec<Vec<f32>> = points.iter().map(|p| model.init(p.seed)).collect();
    let init: Vec<&[f32]> = init.iter().map(|p| p.as_slice()).collect();
    let runs: Vec<ModelRun> = members
        .iter()
        .map(|m| ModelRun {
            seed: m.point.seed,
            beta: m.point.beta,
            kl_warmup: base.kl_warmup,
            lr: m.point.lr,
        })
        .collect();
    let config = TrainConfig {
        data_seed,
        ..TrainConfig::new(model, &members[0].settings, t.log_interval)
    };
    // The device's memory, tried up front: out of it, the error names the largest model count that builds.
    let fits = |count: u32| -> Result<()> {
        gpu.release_dropped()?;
        let c = count as usize;
        let net = Net::batched(&gpu, model, &init[..c])?;
        let runs = runs[..c].to_vec();
        Trainer::batched(&gpu, &net, config.clone(), runs, &train).map(|_| ())
    };
    if let Err(e @ Error::OutOfMemory { .. }) = fits(members.len() as u32) {
        let advice = match largest_fitting(members.len() as u32, |c| fits(c).is_ok()) {
            Some(c) => format!(
                "{c} model{} at once is the most that fits on this device now ({} do not): split the grid",
                if c == 1 { "" } else { "s" },
                members.len()
            ),
            None => {
                "not even one model fits: see vae train's advice for this model and batch".into()
            }
        };
        return Err(e.advising(advice));
    }
    gpu.release_dropped()?;
    let net = Net::batched(&gpu, model, &init)?;
    let mut trainer = Trainer::batched(&gpu, &net, config, runs, &train)?;
    // The step's products at this model count, tuned (or from the cache) as `vae train` tunes its own.
    let products = distinct(trainer.products());
    let room = trainer.pair_room();
    let chosen = tune::choose(&gpu, &products, &t.tune, room, |w| eprintln!("{w}"))?;
    trainer.rebuild_plans()?;
    // One single-model network for evaluation, and an evaluator per seed (its test noise and binarization).
    let eval_net = Net::new(&gpu, model, init[0])?;
    let mut evaluators: BTreeMap<u64, Evaluator> = BTreeMap::new();
    for m in &members {
        if let std::collections::btree_map::Entry::Vacant(e) = evaluators.entry(m.point.seed) {
            e.insert(Evaluator::new(
                &gpu,
                &eval_net,
                EvalConfig::from(&m.settings),
                &test,
            )?);
        }
    }
    // The checkpoints' kernels, under the single model's keys: `vae train --resume` takes the same ones.
    let batched = format!(" x{}", members.len());
    let kernels: BTreeMap<String, String> = kernels_used(
        &gpu,
        trainer.products().into_iter().chain(
            evaluators
                .values()
                .next()
                .map(|e| e.products())
                .unwrap_or_default(),
        ),
    )
    .into_iter()
    .map(|(k, v)| (k.replace(&batched, ""), v))
    .collect();
    let _locks = std::iter::once(&out)
        .chain(members.iter().map(|m| &m.out))
        .map(|dir| prepare_out(dir, false))
        .collect::<Result<Vec<_>>>()?;
    if t.verbose {
        eprintln!(
            "sweeping {} models of {}-{}-{} in one batched step on {} ({} train / {} test examples, batch {}, \
             data seed {data_seed}, data {}), writing to {}",
            members.len(),
            model.pixels,
            model.hidden,
            model.latent,
            gpu.info,
            trainer.n_train(),
            test.n,
            base.batch_size,
            base.data_kind(),
            out.display()
        );
        eprintln!("{}", chosen.line());
    }
    let mut sweep = SweepRun {
        gpu: &gpu,
        trainer,
        eval_net: &eval_net,
        evaluators,
        members,
        out: &out,
        image: (train.rows, train.cols),
        kernels,
        verbose: t.verbose,
        csv: Vec::new(),
    };
    for epoch in 1..=t.epochs {
        sweep.epoch(epoch, t.epochs)?;
    }
    let params: Vec<Vec<f32>> = (0..sweep.members.len() as u32)
        .map(|k| sweep.trainer.params_of(k))
        .collect::<Result<_>>()?;
    // Training's and evaluation's buffers go before the end-of-run pictures take theirs.
    let members = std::mem::take(&mut sweep.members);
    drop(sweep);
    drop(eval_net);
    drop(net);
    for (m, p) in members.iter().zip(&params) {
        let inf = Inference::fitting(&gpu, model, p, m.point.seed)?;
        end_of_training(&inf, &test, &metrics_csv(&m.lines), &m.out)?;
    }
    let view = pictures_view(&members);
    sweep_png(&view, &out)?;
    rate_distortion_png(&view, &out)?;
    Ok(members.into_iter().map(|m| m.history).collect())
}

/// What the sweep's pictures need of each model: β, its directory and its last epoch's test losses.
fn pictures_view(members: &[Member]) -> Vec<SweepModel> {
    members
        .iter()
        .filter_map(|m| {
            let last = m.history.last()?;
            let (_, test_bce, test_kl) = last.test.per_example();
            Some(SweepModel {
                beta: m.point.beta,
                dir: m.out.clone(),
                epoch: last.epoch,
                test_bce,
                test_kl,
            })
        })
        .collect()
}

fn metrics_csv(lines: &[String]) -> String {
    let rows: String = lines.iter().map(|l| format!("{l}\n")).collect();
    format!("{METRICS_HEADER}\n{rows}")
}

/// A sweep under way.
struct SweepRun<'a> {
    gpu: &'a Gpu,
    trainer: Trainer<'a>,
    eval_net: &'a Net,
    evaluators: BTreeMap<u64, Evaluator<'a>>,
    members: Vec<Member>,
    out: &'a Path,
    image: (usize, usize),
    kernels: BTreeMap<String, String>,
    verbose: bool,
    /// sweep.csv's rows so far.
    csv: Vec<String>,
}

impl SweepRun<'_> {
    /// Trains every model one epoch in the batched step, then evaluates and writes each, and prints one line.
    fn epoch(&mut self, epoch: u32, epochs: u32) -> Result<()> {
        let bar = progress_bar(self.verbose, self.trainer.steps_per_epoch(), epoch, epochs);
        let start = Instant::now();
        let end = self.trainer.train_epoch(epoch, |done, sums| {
            bar.set_position(done as u64);
            if sums[0].examples > 0 {
                let losses = sums.iter().map(|s| s.per_example().0);
                let (lo, hi) = losses.fold((f64::MAX, f64::MIN), |(a, b), l| (a.min(l), b.max(l)));
                bar.set_message(format!("loss {lo:.2} to {hi:.2}"));
            }
        })?;
        self.gpu.wait()?;
        let seconds = start.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let sums = match end {
            EpochEnd::Done(sums) => sums,
            EpochEnd::Interrupted => {
                return Err(Error::Interrupted(format!(
                    "stopped in epoch {epoch}; each model's checkpoint of epoch {} is in its directory under {} \
                     (continue one with vae train --resume)",
                    epoch - 1,
                    self.out.display()
                )));
            }
        };
        let n = self.trainer.n_train();
        for (k, sum) in sums.into_iter().enumerate() {
            self.finish_model(k, epoch, (sum, seconds))?;
        }
        let csv: String = self.csv.iter().map(|l| format!("{l}\n")).collect();
        write_atomic(
            &self.out.join("sweep.csv"),
            format!("{SWEEP_HEADER}\n{csv}").as_bytes(),
        )?;
        if self.verbose {
            let test = |m: &Member| {
                m.history
                    .last()
                    .map_or(f64::NAN, |h| h.test.per_example().0)
            };
            let by_test = |a: &&Member, b: &&Member| test(a).total_cmp(&test(b));
            let best = self.members.iter().min_by(by_test).expect("a model");
            let worst = self.members.iter().max_by(by_test).expect("a model");
            println!(
                "epoch {epoch:>3}  test best {:8.3} ({})  worst {:8.3} ({})  {seconds:6.2} s  {:8.0} samples/s over {} models",
                test(best),
                best.point.dir_name(),
                test(worst),
                worst.point.dir_name(),
                n as f64 * self.members.len() as f64 / seconds,
                self.members.len()
            );
        }
        Ok(())
    }

    /// Model `k`'s end of `epoch`: its test loss (its parameters copied into the evaluation network), its
    /// metrics.csv row, checkpoint and pictures, and its sweep.csv row.
    fn finish_model(
        &mut self,
        k: usize,
        epoch: u32,
        (train, seconds): (LossSum, f64),
    ) -> Result<()> {
        let (gpu, net) = (self.gpu, self.trainer.net);
        let bytes = (net.layout.len * 4) as u64;
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        let from = (net.model_offset(k as u32) * 4) as u64;
        encoder.copy_buffer_to_buffer(&net.params, from, &self.eval_net.params, 0, bytes);
        gpu.submit("sweep.eval_params", encoder.finish());
        let m = &mut self.members[k];
        let evaluator = &self.evaluators[&m.point.seed];
        let test = evaluator.evaluate()?;
        let stats = EpochStats {
            epoch,
            train,
            test,
            seconds,
        };
        let (tl, vl) = (train.per_example().0, test.per_example().0);
        if !(tl.is_finite() && vl.is_finite()) {
            return Err(Error::Invalid(format!(
                "model {} ({}): the loss became non-finite during epoch {epoch} (train {tl}, test {vl}); lower its --lr",
                k,
                m.point.dir_name()
            )));
        }
        let n = self.trainer.n_train();
        m.lines.push(metrics_line(&stats, n));
        m.history.push(stats);
        write_atomic(&m.out.join("metrics.csv"), metrics_csv(&m.lines).as_bytes())?;
        let (mm, vv) = self.trainer.moments_of(k as u32)?;
        Checkpoint {
            model: net.config,
            params: self.trainer.params_of(k as u32)?,
            m: mm,
            v: vv,
            step: self.trainer.step,
            epoch,
            epoch_step: 0,
            partial: LossSum::default(),
            partial_seconds: 0.0,
            settings: m.settings.clone(),
            image: Some((self.image.0 as u32, self.image.1 as u32)),
            metrics: metrics_csv(&m.lines),
            kernels: self.kernels.clone(),
        }
        .save(&m.out.join("checkpoint.safetensors"))?;
        epoch_pictures(evaluator, self.image, &m.out, epoch)?;
        let (_, tb, tk) = train.per_example();
        let (_, vb, vk) = test.per_example();
        let p = m.point;
        self.csv.push(format!(
            "{},{},{},{},{epoch},{tl:.4},{tb:.4},{tk:.4},{vl:.4},{vb:.4},{vk:.4}",
            p.dir_name(),
            p.beta,
            p.seed,
            p.lr
        ));
        Ok(())
    }
}
