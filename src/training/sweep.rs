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
//! Ctrl-C writes every model's checkpoint at the step reached; `vae sweep --resume DIR` continues the sweep from
//! its manifest (`sweep.txt`: the data seed, the models in order, the kernel choices) and the checkpoints.

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
pub const SWEEP_HEADER: &str = "model,beta,seed,lr,kl_warmup,binarize,epoch,train_loss,train_bce,train_kl,test_loss,test_bce,test_kl";

/// One model of the sweep as the run writes it.
struct Member {
    point: GridPoint,
    /// Its directory's name under the sweep's.
    name: String,
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
        kl_warmup: p.kl_warmup,
        binarize: p.binarize,
        data_seed: (data_seed != p.seed).then_some(data_seed),
        ..base.clone()
    }
}

/// Fails before anything is allocated where M models' buffers pass what the device allows one buffer (every
/// model's parameters live in one), naming the largest model count that fits.
pub fn check_models_fit(gpu: &Gpu, model: ModelConfig, batch: u32, models: usize) -> Result<()> {
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

/// The sweep's manifest in its directory: its data seed, its models' directories in order, and the kernel
/// choices it took (under their batched keys): what `vae sweep --resume` reads back.
const MANIFEST: &str = "sweep.txt";

/// What a sweep's manifest holds.
struct Manifest {
    data_seed: u64,
    dirs: Vec<String>,
    choices: Vec<(String, String)>,
}

impl Manifest {
    fn text(&self) -> String {
        let mut s = String::from(
            "# vae sweep: the data seed, the models in order and the kernel choices (vae sweep --resume reads this)\n",
        );
        s += &format!("data_seed {}\n", self.data_seed);
        for d in &self.dirs {
            s += &format!("model {d}\n");
        }
        for (k, v) in &self.choices {
            s += &format!("choice {k}\t{v}\n");
        }
        s
    }

    fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let bad = |why: String| Error::Data {
            path: path.display().to_string(),
            message: format!("{why}: --resume takes the directory a vae sweep wrote"),
        };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let (mut data_seed, mut dirs, mut choices) = (None, Vec::new(), Vec::new());
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            match line.split_once(' ') {
                Some(("data_seed", v)) => {
                    data_seed = Some(
                        v.trim()
                            .parse()
                            .map_err(|_| bad(format!("data_seed {v:?}")))?,
                    )
                }
                Some(("model", d)) if !d.contains('/') && !d.contains("..") => {
                    dirs.push(d.to_string())
                }
                Some(("choice", kv)) => match kv.split_once('\t') {
                    Some((k, v)) => choices.push((k.to_string(), v.to_string())),
                    None => return Err(bad(format!("a choice without its kernel: {kv:?}"))),
                },
                _ => return Err(bad(format!("an unreadable line {line:?}"))),
            }
        }
        match (data_seed, dirs.is_empty()) {
            (Some(data_seed), false) => Ok(Manifest {
                data_seed,
                dirs,
                choices,
            }),
            _ => Err(bad("no data seed or no models".into())),
        }
    }
}

/// Where a sweep starts: new (its grid) or resumed (its directory's models, each from its checkpoint).
struct Start {
    out: PathBuf,
    data_seed: u64,
    base: Settings,
    members: Vec<Member>,
    checkpoints: Vec<Checkpoint>,
    choices: Option<Vec<(String, String)>>,
    /// sweep.csv's rows so far.
    csv: Vec<String>,
}

/// A resumed sweep's start: the manifest, each model's checkpoint (all at one step, of one shape and shared
/// settings), and the options given, which must agree with them.
fn resumed(t: &TrainOptions, dir: &Path) -> Result<Start> {
    if let Some(out) = &t.out
        && !super::outdir::resumes_in(&dir.join(MANIFEST), out)
    {
        return Err(Error::Invalid(format!(
            "--out {} is not the sweep being resumed ({}): a resumed sweep writes where it started; leave --out out",
            out.display(),
            dir.display()
        )));
    }
    let manifest = Manifest::read(dir)?;
    let checkpoints = manifest
        .dirs
        .iter()
        .map(|d| Checkpoint::load(&dir.join(d).join("checkpoint.safetensors")))
        .collect::<Result<Vec<_>>>()?;
    let first = &checkpoints[0];
    // The options given must agree with the sweep's shared settings, as `vae train --resume` checks its own.
    let base = t.settings(Some(first))?;
    for (d, ck) in manifest.dirs.iter().zip(&checkpoints) {
        let shared = Settings {
            seed: base.seed,
            beta: base.beta,
            lr: base.lr,
            kl_warmup: base.kl_warmup,
            binarize: base.binarize,
            data_seed: base.data_seed,
            ..ck.settings.clone()
        };
        if shared != base
            || (ck.step, ck.epoch, ck.epoch_step) != (first.step, first.epoch, first.epoch_step)
        {
            return Err(Error::Data {
                path: dir.join(d).display().to_string(),
                message: format!(
                    "this model's checkpoint is not of the same sweep as {}'s (its shared settings or its step \
                     differ): resume it alone with vae train --resume",
                    manifest.dirs[0]
                ),
            });
        }
    }
    let members = manifest
        .dirs
        .iter()
        .zip(&checkpoints)
        .map(|(d, ck)| Member {
            point: GridPoint {
                beta: ck.settings.beta,
                seed: ck.settings.seed,
                lr: ck.settings.lr,
                kl_warmup: ck.settings.kl_warmup,
                binarize: ck.settings.binarize,
            },
            name: d.clone(),
            settings: ck.settings.clone(),
            out: dir.join(d),
            lines: ck
                .metrics
                .lines()
                .skip(1)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
            history: Vec::new(),
        })
        .collect();
    let csv = std::fs::read_to_string(dir.join("sweep.csv"))
        .map(|t| t.lines().skip(1).map(String::from).collect())
        .unwrap_or_default();
    Ok(Start {
        out: dir.to_path_buf(),
        data_seed: manifest.data_seed,
        base,
        members,
        checkpoints,
        choices: Some(manifest.choices),
        csv,
    })
}

/// A new sweep's start: the grid's models over the shared settings.
fn fresh(opts: &SweepOptions) -> Result<Start> {
    let t = &opts.train;
    let points = opts.grid.points();
    let data_seed = opts.data_seed.unwrap_or(points[0].seed);
    let base = t.settings(None)?;
    let out = t.out.clone().unwrap_or_else(default_out_dir);
    let members = points
        .iter()
        .map(|&p| Member {
            point: p,
            name: opts.grid.dir_name(&p),
            settings: member_settings(&base, p, data_seed),
            out: out.join(opts.grid.dir_name(&p)),
            lines: Vec::new(),
            history: Vec::new(),
        })
        .collect();
    Ok(Start {
        out,
        data_seed,
        base,
        members,
        checkpoints: Vec::new(),
        choices: None,
        csv: Vec::new(),
    })
}

/// Runs `vae sweep` (with `opts.train.resume`, the sweep in that directory continued); returns each model's
/// per-epoch statistics of the epochs it trained, in grid order.
pub fn sweep(opts: &SweepOptions) -> Result<Vec<Vec<EpochStats>>> {
    let t = &opts.train;
    t.check()?;
    let Start {
        out,
        data_seed,
        base,
        members,
        checkpoints,
        choices,
        csv,
    } = match &t.resume {
        Some(dir) => resumed(t, dir)?,
        None => fresh(opts)?,
    };
    let resuming = !checkpoints.is_empty();
    let first_epoch = checkpoints.first().map_or(0, |c| c.epoch) + 1;
    if first_epoch > t.epochs {
        return Err(Error::Invalid(format!(
            "the sweep has already trained {} epochs and --epochs is {}: --epochs is the total, so ask for more",
            first_epoch - 1,
            t.epochs
        )));
    }
    let points: Vec<GridPoint> = members.iter().map(|m| m.point).collect();
    let (train, test) = load_data(t, &base)?;
    let model = model_for(&train, &base, None)?;
    check_out(&out, resuming)?;
    for m in &members {
        check_out(&m.out, resuming)?;
    }
    // Timestamps where the adapter has them, for tuning (as `vae train`).
    let gpu = Gpu::new(GpuOptions {
        timestamps: true,
        ..t.gpu.clone()
    })?;
    check_sizes(&gpu, model, base.batch_size)?;
    check_models_fit(&gpu, model, base.batch_size, members.len())?;
    let init: Vec<Vec<f32>> = match resuming {
        true => checkpoints.iter().map(|c| c.params.clone()).collect(),
        false => points.iter().map(|p| model.init(p.seed)).collect(),
    };
    let init: Vec<&[f32]> = init.iter().map(|p| p.as_slice()).collect();
    let runs: Vec<ModelRun> = members
        .iter()
        .map(|m| ModelRun {
            seed: m.point.seed,
            beta: m.point.beta,
            kl_warmup: m.point.kl_warmup,
            lr: m.point.lr,
            binarize: m.point.binarize,
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
    // The step's products at this model count, tuned (or from the cache) as `vae train` tunes its own; a resumed
    // sweep takes the choices it started with, so it continues exactly.
    let chosen = match &choices {
        Some(c) => {
            gpu.clear_choices();
            gpu.set_choices(c.iter().cloned());
            format!(
                "kernels: {} choices from {}",
                c.len(),
                out.join(MANIFEST).display()
            )
        }
        None => {
            let products = distinct(trainer.products());
            let room = trainer.pair_room();
            tune::choose(&gpu, &products, &t.tune, room, |w| eprintln!("{w}"))?.line()
        }
    };
    trainer.rebuild_plans()?;
    if resuming {
        for (k, ck) in checkpoints.iter().enumerate() {
            trainer.restore_model(k as u32, &ck.m, &ck.v)?;
        }
        trainer.step = checkpoints[0].step;
        trainer.epoch_step = checkpoints[0].epoch_step;
        trainer.partial = checkpoints.iter().map(|c| c.partial).collect();
    }
    // One single-model network for evaluation, and an evaluator per seed (its test noise and binarization).
    let eval_net = Net::new(&gpu, model, init[0])?;
    let mut evaluators: BTreeMap<(u64, bool), Evaluator> = BTreeMap::new();
    for m in &members {
        let key = (m.point.seed, m.point.binarize);
        if let std::collections::btree_map::Entry::Vacant(e) = evaluators.entry(key) {
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
        .map(|dir| prepare_out(dir, resuming))
        .collect::<Result<Vec<_>>>()?;
    let manifest = Manifest {
        data_seed,
        dirs: members.iter().map(|m| m.name.clone()).collect(),
        choices: gpu.choices_snapshot(),
    };
    write_atomic(&out.join(MANIFEST), manifest.text().as_bytes())?;
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
        if resuming {
            eprintln!(
                "resuming at epoch {first_epoch}{}",
                match checkpoints[0].epoch_step {
                    0 => String::new(),
                    s => format!(" after step {s}"),
                }
            );
        }
        eprintln!("{chosen}");
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
        csv,
        resumed_seconds: checkpoints.first().map_or(0.0, |c| c.partial_seconds),
    };
    for epoch in first_epoch..=t.epochs {
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
    /// An evaluator per (seed, binarization): its test noise and its test set.
    evaluators: BTreeMap<(u64, bool), Evaluator<'a>>,
    members: Vec<Member>,
    out: &'a Path,
    image: (usize, usize),
    kernels: BTreeMap<String, String>,
    verbose: bool,
    /// sweep.csv's rows so far.
    csv: Vec<String>,
    /// Training time of an interrupted epoch before this run resumed it.
    resumed_seconds: f64,
}

impl SweepRun<'_> {
    /// Trains every model one epoch in the batched step, then evaluates and writes each, and prints one line.
    fn epoch(&mut self, epoch: u32, epochs: u32) -> Result<()> {
        let bar = progress_bar(self.verbose, self.trainer.steps_per_epoch(), epoch, epochs);
        bar.set_position(self.trainer.epoch_step as u64);
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
        let seconds = start.elapsed().as_secs_f64() + std::mem::take(&mut self.resumed_seconds);
        bar.finish_and_clear();
        let sums = match end {
            EpochEnd::Done(sums) => sums,
            EpochEnd::Interrupted => return Err(self.interrupted(epoch, seconds)),
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
                best.name,
                test(worst),
                worst.name,
                n as f64 * self.members.len() as f64 / seconds,
                self.members.len()
            );
        }
        Ok(())
    }

    /// Model `k`'s state after `epoch` whole epochs (and, mid-epoch, the steps and loss of the next one so far),
    /// read back from the GPU: a checkpoint that `vae train --resume` and `vae sweep --resume` continue.
    fn checkpoint(&self, k: usize, epoch: u32, partial_seconds: f64) -> Result<Checkpoint> {
        let m = &self.members[k];
        let (mm, vv) = self.trainer.moments_of(k as u32)?;
        Ok(Checkpoint {
            model: self.trainer.net.config,
            params: self.trainer.params_of(k as u32)?,
            m: mm,
            v: vv,
            step: self.trainer.step,
            epoch,
            epoch_step: self.trainer.epoch_step,
            partial: self.trainer.partial[k],
            partial_seconds,
            settings: m.settings.clone(),
            image: Some((self.image.0 as u32, self.image.1 as u32)),
            metrics: metrics_csv(&m.lines),
            kernels: self.kernels.clone(),
        })
    }

    /// Ctrl-C in `epoch`: every model's checkpoint at the step the epoch reached, and the error that says so.
    fn interrupted(&self, epoch: u32, seconds: f64) -> Error {
        let (done, of) = (self.trainer.epoch_step, self.trainer.steps_per_epoch());
        let saved = (0..self.members.len()).try_for_each(|k| {
            let path = self.members[k].out.join("checkpoint.safetensors");
            self.checkpoint(k, epoch - 1, seconds)?.save(&path)
        });
        match saved {
            Ok(()) => Error::Interrupted(format!(
                "each model's checkpoint written at step {} (epoch {epoch}, step {done} of {of}); continue the sweep \
                 with vae sweep --resume {}, or one model with vae train --resume <its directory>/checkpoint.safetensors",
                self.trainer.step,
                self.out.display()
            )),
            Err(e) => e,
        }
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
        let evaluator = &self.evaluators[&(m.point.seed, m.point.binarize)];
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
                k, m.name
            )));
        }
        let n = self.trainer.n_train();
        m.lines.push(metrics_line(&stats, n));
        m.history.push(stats);
        write_atomic(&m.out.join("metrics.csv"), metrics_csv(&m.lines).as_bytes())?;
        self.checkpoint(k, epoch, 0.0)?
            .save(&self.members[k].out.join("checkpoint.safetensors"))?;
        let m = &self.members[k];
        epoch_pictures(evaluator, self.image, &m.out, epoch)?;
        let (_, tb, tk) = train.per_example();
        let (_, vb, vk) = test.per_example();
        let p = m.point;
        self.csv.push(format!(
            "{},{},{},{},{},{},{epoch},{tl:.4},{tb:.4},{tk:.4},{vl:.4},{vb:.4},{vk:.4}",
            m.name, p.beta, p.seed, p.lr, p.kl_warmup, p.binarize
        ));
        Ok(())
    }
}
