//! The trainer: the training set resident on the GPU as bytes, a shuffled index list per epoch, the input batches
//! of several steps gathered ahead in one dispatch, whole steps (forward, backward, Adam) recorded many to a
//! submission (as many as take about a quarter of a second here: [`Pace`]), and loss totals kept on the GPU
//! until a log point reads them.

#[cfg(not(target_arch = "wasm32"))]
use std::collections::VecDeque;
use web_time::Instant;

use super::pace::Pace;
use super::plans::{LossSum, Plans, batches, first_non_finite, products};
use super::settings::Settings;
use crate::data::mnist::Split;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Plan};
use crate::kernels::MAX_STEP_DISPATCHES;
use crate::kernels::adam::{AdamConfig, adam_bce_fused, adam_models};
use crate::kernels::contract::TERMS;
use crate::kernels::gather::{Batches, Binarize, ByteMatrix, gather_models};
use crate::kernels::matmul::Product;
use crate::kernels::philox::{self, Philox, stream};
use crate::kernels::{ModelStep, StepParams, StepTable};
use crate::model::ModelConfig;
use crate::model::net::{self, Net, Source, Workspace};

/// What a training run is (for several models trained together, their shared settings, and the first model's own:
/// see [`ModelRun`]).
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub batch: u32,
    pub adam: AdamConfig,
    /// The seed of the model's noise (its initial parameters are the caller's, usually from the same seed).
    pub seed: u64,
    /// The seed of the data: each epoch's shuffle and the dynamic binarization's noise, shared by models trained
    /// together (`vae train` takes its --seed unless told otherwise).
    pub data_seed: u64,
    /// Weight on the KL term once warmed up (β of a β-VAE; 1: the ELBO).
    pub beta: f32,
    /// Epochs over which the KL weight ramps linearly from 0 to `beta` (0: no warm-up).
    pub kl_warmup: f32,
    /// Dynamic binarization of the inputs (fresh each step).
    pub binarize: bool,
    /// Steps between loss readbacks; a submission holds at most this many (fewer where the steps are slow:
    /// [`Pace`]).
    pub log_interval: u32,
}

impl TrainConfig {
    /// The trainer's configuration for a run's settings.
    pub fn new(model: ModelConfig, s: &Settings, log_interval: u32) -> TrainConfig {
        TrainConfig {
            model,
            batch: s.batch_size,
            adam: AdamConfig {
                lr: s.lr,
                ..Default::default()
            },
            seed: s.seed,
            data_seed: s.data_seed(),
            beta: s.beta,
            kl_warmup: s.kl_warmup,
            binarize: s.binarize,
            log_interval,
        }
    }
}

/// What may differ between models trained together in one batched step (a sweep): the seed of the model's noise,
/// its KL weight and warm-up, its learning rate and whether it trains on binarized images. A model's run in a
/// sweep computes what its run alone computes, to the bit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelRun {
    pub seed: u64,
    pub beta: f32,
    pub kl_warmup: f32,
    pub lr: f32,
    pub binarize: bool,
}

impl ModelRun {
    /// The one model of a run of `config`.
    pub fn of(config: &TrainConfig) -> ModelRun {
        ModelRun {
            seed: config.seed,
            beta: config.beta,
            kl_warmup: config.kl_warmup,
            lr: config.adam.lr,
            binarize: config.binarize,
        }
    }

    /// The KL weight of step `i` (0-based) of `epoch` (1-based) of `steps`: β, ramped linearly over the warm-up
    /// epochs.
    pub fn kl_weight(&self, epoch: u32, i: u32, steps: u32) -> f32 {
        let (beta, warmup) = (self.beta, self.kl_warmup);
        if warmup <= 0.0 {
            return beta;
        }
        let progress = (epoch - 1) as f64 + (i + 1) as f64 / steps as f64;
        (beta as f64 * (progress / warmup as f64).min(1.0)) as f32
    }
}

pub struct Trainer<'a> {
    pub gpu: &'a Gpu,
    pub net: &'a Net,
    pub config: TrainConfig,
    /// The models trained together, in the net's order (one for `vae train`).
    pub runs: Vec<ModelRun>,
    /// The training images; the step plans read them.
    data: ByteMatrix,
    index: wgpu::Buffer,
    steps: StepTable,
    log: wgpu::Buffer,
    /// The step plans of each x slot: the plans of slot s read their batch from the workspace's x slot s.
    plans: Vec<Plans>,
    /// The input batches of the next `ahead` steps into their x slots: recorded before the step of slot 0.
    gather: Plan,
    /// Steps whose batches one gather fills: the workspace's x slots, or the steps of an epoch if fewer.
    ahead: u32,
    /// The step from which x slots are counted (the first step of the epoch this run takes).
    x_start: u32,
    /// The loss partials of a submission's steps to their rows of the loss log: recorded once per submission,
    /// after its last step.
    reduce: Plan,
    /// The training step's activations (tests read ε and friends from here).
    pub ws: Workspace,
    /// Adam steps taken so far.
    pub step: u32,
    /// Steps of the current epoch already taken (0 at an epoch boundary; more after an interrupted run resumes).
    pub epoch_step: u32,
    /// The current epoch's training loss so far, per model (restored with `epoch_step`).
    pub partial: Vec<LossSum>,
    n: u32,
    /// The current epoch's step-table rows, as `begin_epoch` wrote them.
    rows: Vec<StepParams>,
    /// How many steps a submission holds, measured as the run goes.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))] // the native epoch loop's
    pace: Pace,
}

/// A submission on its way through the GPU.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))] // the native epoch loop's
struct InFlight {
    index: wgpu::SubmissionIndex,
    steps: u32,
    /// When it was submitted.
    at: Instant,
}

impl EpochEnd {
    /// The epoch's loss per model; an interrupt is an error here (benchmarks and tests, which do not checkpoint).
    pub fn finished(self) -> Result<Vec<LossSum>> {
        match self {
            EpochEnd::Done(sum) => Ok(sum),
            EpochEnd::Interrupted => Err(Error::Interrupted("the epoch did not finish".into())),
        }
    }
}

/// How an epoch of training ended.
#[derive(Clone, Debug, PartialEq)]
pub enum EpochEnd {
    /// Every step was taken: the epoch's training loss, per model.
    Done(Vec<LossSum>),
    /// Stopped at a step boundary because the user asked (Ctrl-C); `Trainer::epoch_step` steps are done.
    Interrupted,
}

/// Input batches gathered ahead in one dispatch, at most: the launch is paid once per this many steps.
pub const X_SLOTS: u32 = 32;

/// Bytes the input batches gathered ahead may take, unless one batch takes more (then they take that): 32 at
/// batch 128 on MNIST (12.8 MB), 10 at batch 1024, 1 at batch 60,000 (as without gathering ahead).
pub const X_BYTES: u64 = 32 << 20;

/// One training step of `rows` examples whose batch is in x slot `slot`: forward (with the KL and the BCE's
/// gradient), backward, Adam with the BCE's value; both loss terms leave their partials in the step's slot,
/// which become loss totals at the end of the submission (`reduce_losses`).
fn step_plan(
    gpu: &Gpu,
    net: &Net,
    ws: &Workspace,
    src: &Source,
    (rows, slot): (u32, u32),
    steps: &StepTable,
    config: &AdamConfig,
) -> Result<Plan> {
    let state = (
        [&net.params, &net.grads, &net.m, &net.v],
        net.layout.len as u32,
    );
    let x = ws.x_at(slot);
    let models = net::models(net, ws, steps);
    let last = if adam_bce_fused(gpu) {
        let bce = net::bce_value(gpu, net, ws, x, rows);
        let adam = adam_models(gpu, "adam+bce", config, state, Some(bce), steps, models)?;
        Plan::from(vec![adam])
    } else {
        // The BCE's value in a loss kernel of its own (the same partials to the bit), then Adam alone.
        let adam = adam_models(gpu, "adam", config, state, None, steps, models)?;
        net::losses(gpu, net, ws, x, rows, steps)?.then(Plan::from(vec![adam]))
    };
    Ok(
        net::forward_from(gpu, net, ws, src, x, (rows, true), steps)?
            .then(net::backward(gpu, net, ws, x, rows)?)
            .then(last),
    )
}

/// Elements of the workspace's input batches: [`X_SLOTS`] batches within [`X_BYTES`] and the device's binding
/// limit, and at least one batch. Not fewer for a short epoch (which uses fewer of them), and not a whole number
/// of batches: so the workspace grows with the batch size and never shrinks, and a batch size that fits is
/// followed only by smaller ones that fit (the out-of-memory advice searches on that).
fn x_len(gpu: &Gpu, batch: u32, pixels: u32) -> u64 {
    let limits = gpu.device.limits();
    let bytes = X_BYTES
        .min(limits.max_storage_buffer_binding_size)
        .min(limits.max_buffer_size);
    x_len_within(net::x_stride(batch, pixels) as u64, bytes / 4)
}

/// [`x_len`] for batches `one` elements apart within `room` elements.
fn x_len_within(one: u64, room: u64) -> u64 {
    one.max((X_SLOTS as u64 * one).min(room))
}

impl<'a> Trainer<'a> {
    /// Uploads the training set and builds every dispatch once; `net` holds the initial parameters.
    pub fn new(
        gpu: &'a Gpu,
        net: &'a Net,
        config: TrainConfig,
        train: &Split,
    ) -> Result<Trainer<'a>> {
        let runs = vec![ModelRun::of(&config)];
        Trainer::batched(gpu, net, config, runs, train)
    }

    /// [`Trainer::new`] for the models of `net` trained together in one batched step, model k with the settings
    /// `runs[k]`, every model over the same batches (`config`'s data seed) with `config`'s other settings.
    pub fn batched(
        gpu: &'a Gpu,
        net: &'a Net,
        config: TrainConfig,
        runs: Vec<ModelRun>,
        train: &Split,
    ) -> Result<Trainer<'a>> {
        if runs.len() != net.models as usize {
            return Err(Error::Invalid(format!(
                "{} model settings for a net of {} models",
                runs.len(),
                net.models
            )));
        }
        let models = net.models;
        let n = train.n as u32;
        if config.batch == 0 || config.batch > n {
            return Err(Error::Invalid(format!(
                "--batch-size {} must be between 1 and the number of training examples ({n})",
                config.batch
            )));
        }
        let data = ByteMatrix::upload(gpu, "train.images", &train.images, net.config.pixels)?;
        let index = gpu.storage::<u32>("train.index", n as usize)?;
        let sizes = batches(n, config.batch);
        // Model rows for several models; one model reads its values from its step rows, as it always has (on
        // lavapipe the model rows' reads cost a single model's epoch 15–20%). Each model's values are computed
        // the same way in both places, so a model trained among others computes what it computes alone
        // (tests/sweep.rs).
        let rows_for = if models > 1 { models } else { 0 };
        let steps = StepTable::with_models(gpu, sizes.len() as u32, rows_for)?;
        let log = gpu.storage::<f32>("train.loss_log", sizes.len() * models as usize * TERMS)?;
        // One slot of loss partials per step of a submission.
        let slots = config.log_interval.max(1).min(sizes.len() as u32);
        let x_len = x_len(gpu, config.batch, net.config.pixels);
        // Models that differ in their binarization each get their own input batches; otherwise one serves all.
        let x_per_model = runs.iter().any(|r| r.binarize != runs[0].binarize);
        let ws = Workspace::batched(
            gpu,
            "train",
            net.config,
            (config.batch, slots),
            (x_len, x_per_model),
            models,
        )?;
        let ahead = ws.x_slots.min(sizes.len() as u32);
        let mut trainer = Trainer {
            gpu,
            net,
            config,
            runs,
            data,
            index,
            steps,
            log,
            plans: Vec::new(),
            gather: Plan::default(),
            ahead,
            x_start: 0,
            reduce: Plan::default(),
            ws,
            step: 0,
            epoch_step: 0,
            partial: vec![LossSum::default(); models as usize],
            n,
            rows: Vec::new(),
            pace: Pace::for_run(),
        };
        trainer.rebuild_plans()?;
        Ok(trainer)
    }

    /// Builds (again) the plan of every batch size with the device's current kernel choices: after tuning, or
    /// after a checkpoint's choices are restored.
    pub fn rebuild_plans(&mut self) -> Result<()> {
        let (gpu, net, config) = (self.gpu, self.net, &self.config);
        // The old plans go first, so their parameter buffers are not held twice over.
        (self.plans, self.gather, self.reduce) = (Vec::new(), Plan::default(), Plan::default());
        gpu.release_dropped()?;
        let src = Source {
            data: &self.data,
            index: &self.index,
            // One model's noise key; several models' come from their model rows.
            seed: self.runs[0].seed,
            stream: stream::TRAIN_NOISE,
            // The binarization's noise, keyed by the data's seed: the same for every model that binarizes.
            binarize: self.runs.iter().any(|r| r.binarize).then_some(Binarize {
                seed: config.data_seed,
                stream: stream::BINARIZE_TRAIN,
            }),
        };
        let (ws, steps, log) = (&self.ws, &self.steps, &self.log);
        let sizes = batches(self.n, config.batch);
        self.plans = (0..self.ahead)
            .map(|slot| {
                let plan = |rows| step_plan(gpu, net, ws, &src, (rows, slot), steps, &config.adam);
                Plans::build(&sizes, plan)
            })
            .collect::<Result<_>>()?;
        let at = Batches {
            rows: config.batch,
            steps: self.ahead,
            stride: ws.x_stride,
        };
        let (data, index, binarize) = (src.data, src.index, src.binarize);
        // Each model's own batches where they differ in their binarization, else one for all.
        let per_model = (ws.x_model_stride > 0).then_some((net.models, ws.x_model_stride));
        let gather = gather_models(
            gpu,
            "gather",
            (data, index, &ws.x),
            at,
            steps,
            binarize,
            per_model,
        )?;
        self.gather = Plan::from(vec![gather]);
        self.reduce = net::reduce_losses(gpu, net, ws, steps, log)?;
        Ok(())
    }

    /// How many of the step's gradient pairs may run as two dispatches, the step keeping within
    /// [`MAX_STEP_DISPATCHES`] (see [`crate::tune::tune`]).
    pub fn pair_room(&self) -> usize {
        let plan = self.plans[0].for_rows(self.config.batch);
        // A pair run apart is one dispatch more, its input gradient's (`fc4.input_grad`; together they are
        // `fc4.weight_grad+input_grad`).
        let apart = plan
            .iter()
            .filter(|d| d.label.ends_with(".input_grad"))
            .count();
        MAX_STEP_DISPATCHES.saturating_sub(plan.len() - apart)
    }

    /// The matmuls of every step plan (those of x slot 0: the other slots' differ only in where x starts), as
    /// (product, kernel) in plan order, duplicates included.
    pub fn products(&self) -> Vec<(Product, String)> {
        self.plans[0].all().flat_map(products).collect()
    }

    /// Adam's settings for the model `run`: the run's, with its learning rate.
    fn model_adam(&self, run: &ModelRun) -> AdamConfig {
        AdamConfig {
            lr: run.lr,
            ..self.config.adam
        }
    }

    /// The KL weight of the first model at step `i` (0-based) of `epoch` (1-based): see [`ModelRun::kl_weight`].
    pub fn kl_weight(&self, epoch: u32, i: u32, steps: u32) -> f32 {
        self.runs[0].kl_weight(epoch, i, steps)
    }

    /// Continues from a checkpoint's optimizer state: Adam's moments and its step count (one model).
    pub fn restore(&mut self, m: &[f32], v: &[f32], step: u32) -> Result<()> {
        self.restore_model(0, m, v)?;
        self.step = step;
        Ok(())
    }

    /// Continues model `k` from its optimizer state (Adam's moments); the step count is the run's.
    pub fn restore_model(&mut self, k: u32, m: &[f32], v: &[f32]) -> Result<()> {
        if m.len() != self.net.layout.len || v.len() != self.net.layout.len || k >= self.net.models
        {
            return Err(Error::Invalid(
                "optimizer state does not match the model".into(),
            ));
        }
        let at = (self.net.model_offset(k) * 4) as u64;
        let queue = &self.gpu.queue;
        queue.write_buffer(&self.net.m, at, bytemuck::cast_slice(m));
        queue.write_buffer(&self.net.v, at, bytemuck::cast_slice(v));
        Ok(())
    }

    /// Adam's moments, read back (checkpoints only): the first model's.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn moments(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        self.moments_of(0)
    }

    /// Model `k`'s Adam moments, read back (checkpoints only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn moments_of(&self, k: u32) -> Result<(Vec<f32>, Vec<f32>)> {
        pollster::block_on(self.moments_of_async(k))
    }

    /// [`Trainer::moments_of`] without blocking (the browser's checkpoint; natively the same).
    pub async fn moments_of_async(&self, k: u32) -> Result<(Vec<f32>, Vec<f32>)> {
        let (at, n) = (self.net.model_offset(k), self.net.layout.len);
        Ok((
            self.gpu.read_async(&self.net.m, at, n).await?,
            self.gpu.read_async(&self.net.v, at, n).await?,
        ))
    }

    /// The parameters, read back (log points and checkpoints only): the first model's.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn params(&self) -> Result<Vec<f32>> {
        self.params_of(0)
    }

    /// Model `k`'s parameters, read back (log points and checkpoints only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn params_of(&self, k: u32) -> Result<Vec<f32>> {
        pollster::block_on(self.params_of_async(k))
    }

    /// [`Trainer::params_of`] without blocking (the browser; natively the same).
    pub async fn params_of_async(&self, k: u32) -> Result<Vec<f32>> {
        let at = self.net.model_offset(k);
        self.gpu
            .read_async(&self.net.params, at, self.net.layout.len)
            .await
    }

    pub fn n_train(&self) -> u32 {
        self.n
    }

    pub fn steps_per_epoch(&self) -> u32 {
        self.n.div_ceil(self.config.batch)
    }

    /// Uploads the epoch's shuffled order and its step-table rows; returns the batch sizes. `train_epoch` calls
    /// it; `vae profile` records the steps itself.
    pub fn begin_epoch(&mut self, epoch: u32) -> Result<Vec<u32>> {
        let order =
            Philox::with_lane(self.config.data_seed, stream::SHUFFLE, epoch).permutation(self.n);
        let gpu = self.gpu;
        gpu.queue
            .write_buffer(&self.index, 0, bytemuck::cast_slice(&order));
        let sizes = batches(self.n, self.config.batch);
        // Adam's step count at the epoch's start: a resumed, interrupted epoch has taken `epoch_step` already.
        let base = self.step - self.epoch_step;
        // Submissions start at `epoch_step` and hold `slots` steps each; each step's partials take its place.
        let (start, slots) = (self.epoch_step, self.ws.slots);
        self.x_start = start;
        let count = sizes.len() as u32;
        let rows: Vec<StepParams> = (0..count)
            .map(|i| {
                let t = base + i + 1;
                let mut row = StepParams {
                    batch_offset: i * self.config.batch,
                    loss_slot: i,
                    rng_step: t,
                    kl_weight: self.kl_weight(epoch, i, count),
                    partial_slot: i.saturating_sub(start) % slots,
                    ..Default::default()
                };
                self.model_adam(&self.runs[0]).fill(&mut row, t);
                row
            })
            .collect();
        self.steps.write(gpu, 0, &rows)?;
        self.rows = rows;
        if self.steps.models == 0 {
            // One model: its values are in its step rows.
            return Ok(sizes);
        }
        // Each model's values at each step: what its step rows would hold were it trained alone.
        let model_rows: Vec<ModelStep> = (0..count)
            .flat_map(|i| self.runs.iter().map(move |r| (i, r)))
            .map(|(i, run)| {
                let adam = self.model_adam(run);
                let (adam_step_size, adam_inv_sqrt_bc2) = adam.step_fields(base + i + 1);
                let [key_lo, key_hi] = philox::key(run.seed);
                ModelStep {
                    adam_step_size,
                    adam_inv_sqrt_bc2,
                    kl_weight: run.kl_weight(epoch, i, count),
                    key_lo,
                    key_hi,
                    binarize: run.binarize as u32,
                    ..Default::default()
                }
            })
            .collect();
        self.steps.write_models(gpu, 0, &model_rows)?;
        Ok(sizes)
    }

    /// The plan of one training step of `rows` examples whose batch is in x slot 0.
    pub fn step_plan(&self, rows: u32) -> &Plan {
        self.plans[0].for_rows(rows)
    }

    /// The dispatch that gathers the input batches of [`Trainer::gathered_ahead`] steps at once, recorded with
    /// the row of the first of them.
    pub fn gather_plan(&self) -> &Plan {
        &self.gather
    }

    /// Steps whose input batches one gather fills.
    pub fn gathered_ahead(&self) -> u32 {
        self.ahead
    }

    /// What step `i` of the epoch (`rows` examples) records, each plan with its step-table row: the gather of
    /// the next batches where the step's batch is the first of them, then the step's plan for its x slot. Steps
    /// are numbered from the epoch's start; x slots count from the step `begin_epoch` started at.
    pub fn recorded(&self, i: u32, rows: u32) -> impl Iterator<Item = (&Plan, u32)> {
        let slot = i.wrapping_sub(self.x_start) % self.ahead;
        let gather = (slot == 0).then_some((&self.gather, i));
        gather
            .into_iter()
            .chain([(self.plans[slot as usize].for_rows(rows), i)])
    }

    /// The plan that turns the loss partials of a submission's steps into their rows of the loss log: recorded
    /// after the submission's last step, with that step's row.
    pub fn reduce_plan(&self) -> &Plan {
        &self.reduce
    }

    /// Rows `first..first + count` of the loss log (BCE and KL of each step, for each model in turn), read back:
    /// log points only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn loss_rows(&self, first: usize, count: usize) -> Result<Vec<f32>> {
        pollster::block_on(self.loss_rows_async(first, count))
    }

    /// [`Trainer::loss_rows`] without blocking (the browser's log points; natively the same).
    pub async fn loss_rows_async(&self, first: usize, count: usize) -> Result<Vec<f32>> {
        let row = self.net.models as usize * TERMS;
        self.gpu
            .read_async(&self.log, first * row, count * row)
            .await
    }

    /// Steps between log points, and the most one submission holds: the log interval, or the epoch where that
    /// is shorter.
    pub fn steps_per_submission(&self) -> u32 {
        self.ws.slots
    }

    /// The test-only faults armed for the log point after this step (see `crate::fault`).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))] // the native epoch loop's
    fn faults_after_step(&self) -> Result<()> {
        if !crate::fault::any_armed() {
            return Ok(());
        }
        let step = self.step;
        crate::fault::stall_at(&format!("stall-after-step:{step}"));
        if crate::fault::fires(&format!("lose-device-after-step:{step}")) {
            // What a driver reset does to the program: every later call on the device fails.
            self.gpu.device.destroy();
        }
        if crate::fault::fires(&format!("hang-after-step:{step}")) {
            crate::kernels::hang::submit(self.gpu)?;
        }
        Ok(())
    }

    /// Submits steps `first..first + count` of the epoch (`sizes` their batch sizes) and the reduction of their
    /// loss partials into the loss log; does not wait. The steps' partials take slots 0.. of the workspace, so
    /// the reduction (recorded with the last step's row) covers exactly them.
    fn submit_steps(&mut self, sizes: &[u32], first: usize, count: usize) -> Result<InFlight> {
        let rows = &mut self.rows[first..first + count];
        for (slot, row) in rows.iter_mut().enumerate() {
            row.partial_slot = slot as u32;
        }
        self.steps.write(self.gpu, first as u32, rows)?;
        let chunk = &sizes[first..first + count];
        let steps = chunk.iter().enumerate();
        let plans = steps.flat_map(|(i, &r)| self.recorded((first + i) as u32, r));
        let last = (first + count - 1) as u32;
        let plans = plans.chain([(&self.reduce, last)]);
        let index = self.gpu.submit_plans("train.steps", plans)?;
        Ok(InFlight {
            index,
            steps: count as u32,
            at: Instant::now(),
        })
    }

    /// Waits for the oldest submission in flight and times it: from when it could start (its submission, or
    /// the end of the one before) to its end. Returns its steps.
    #[cfg(not(target_arch = "wasm32"))]
    fn complete_oldest(
        &mut self,
        queue: &mut VecDeque<InFlight>,
        ended: &mut Option<Instant>,
    ) -> Result<u32> {
        let Some(oldest) = queue.pop_front() else {
            return Ok(0);
        };
        self.gpu
            .wait_for_submission(oldest.index, "a submission of training steps")?;
        let now = Instant::now();
        let start = ended.map_or(oldest.at, |e| e.max(oldest.at));
        self.pace
            .completed(oldest.steps, (now - start).as_secs_f64());
        *ended = Some(now);
        Ok(oldest.steps)
    }

    /// The log point after steps `first..end` of the epoch: their losses read back (the only readback of the
    /// epoch's training losses), checked, and added to the epoch's; the step counts move on.
    #[cfg(not(target_arch = "wasm32"))]
    fn log_point(&mut self, epoch: u32, sizes: &[u32], first: usize, end: usize) -> Result<()> {
        let log = self.loss_rows(first, end - first)?;
        self.account(epoch, sizes, (first, end), &log)
    }

    /// The losses `log` of steps `first..end` of the epoch, read back at a log point: checked, and added to the
    /// epoch's; the step counts move on.
    fn account(
        &mut self,
        epoch: u32,
        sizes: &[u32],
        (first, end): (usize, usize),
        log: &[f32],
    ) -> Result<()> {
        let models = self.net.models as usize;
        if let Some((row, model, term)) = first_non_finite(log, models) {
            // A non-finite loss means non-finite parameters from that step on: stop before they are saved.
            return Err(Error::NonFinite {
                step: self.step + row as u32 + 1,
                seen: self.step + (end - first) as u32,
                epoch,
                what: term.describe(),
                lr: self.runs[model].lr,
            });
        }
        for (k, sum) in self.partial.iter_mut().enumerate() {
            sum.add_model(log, &sizes[first..end], (k, models));
        }
        self.step += (end - first) as u32;
        self.epoch_step += (end - first) as u32;
        Ok(())
    }

    /// Trains one epoch (1-based `epoch`), from step `epoch_step` on (0 unless resuming an interrupted epoch).
    /// Submissions hold about a quarter of a second of steps each ([`Pace`]), never past a log point (every
    /// `log_interval` steps, and the epoch's end), and one more is queued behind the one the GPU runs. Between
    /// submissions the trainer checks for Ctrl-C: it then lets the work in flight finish, reads back its losses
    /// and stops at that step boundary, leaving `epoch_step` and `partial` for a checkpoint. `progress(steps
    /// done, loss so far)` is called as submissions finish; the loss is the one read at the last log point.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn train_epoch(
        &mut self,
        epoch: u32,
        mut progress: impl FnMut(u32, &[LossSum]),
    ) -> Result<EpochEnd> {
        let sizes = self.begin_epoch(epoch)?;
        let (total, interval) = (sizes.len(), self.ws.slots as usize);
        // Steps read back (`logged`), submitted (`next`) and finished, counted from the epoch's start.
        let (mut logged, mut next) = (self.epoch_step as usize, self.epoch_step as usize);
        let mut done = logged as u32;
        let mut queue: VecDeque<InFlight> = VecDeque::new();
        let mut ended = None;
        loop {
            let stop = crate::interrupt::requested();
            if next > logged && (next == total || next - logged == interval || stop) {
                while !queue.is_empty() {
                    done += self.complete_oldest(&mut queue, &mut ended)?;
                }
                self.log_point(epoch, &sizes, logged, next)?;
                logged = next;
                progress(done, &self.partial);
                self.faults_after_step()?;
            }
            if next == total {
                break;
            }
            if crate::interrupt::requested() {
                if next == logged {
                    // Nothing in flight: the last log point read every step back.
                    return Ok(EpochEnd::Interrupted);
                }
                // Steps in flight: the log point above finishes them first.
                continue;
            }
            let most = (interval - (next - logged)).min(total - next);
            let count = self.pace.steps(most as u32) as usize;
            queue.push_back(self.submit_steps(&sizes, next, count)?);
            next += count;
            if crate::fault::any_armed() {
                let step = self.step + (next - logged) as u32;
                crate::fault::stall_at(&format!("stall-after-submit:{step}"));
            }
            // One submission queued behind the one the GPU runs, no more: the host stays within two
            // submissions of the GPU, and the GPU never waits for the host.
            if queue.len() > 1 {
                done += self.complete_oldest(&mut queue, &mut ended)?;
                progress(done, &self.partial);
            }
        }
        Ok(EpochEnd::Done(self.end_epoch()))
    }

    /// The epoch's training loss per model, and the counts set for the next epoch: once every step is read back.
    fn end_epoch(&mut self) -> Vec<LossSum> {
        let fresh = vec![LossSum::default(); self.partial.len()];
        self.epoch_step = 0;
        std::mem::replace(&mut self.partial, fresh)
    }

    /// Starts epoch `epoch` (1-based) for a caller that takes it a few steps at a time and must not block (the
    /// browser, between animation frames): [`Trainer::submit_some`] submits steps without waiting,
    /// [`Trainer::log_async`] reads their losses back. The steps, their batches, noise and losses are those of
    /// [`Trainer::train_epoch`]; only when the host waits differs.
    pub fn start_epoch(&mut self, epoch: u32) -> Result<Stepping> {
        let sizes = self.begin_epoch(epoch)?;
        let at = self.epoch_step as usize;
        Ok(Stepping {
            epoch,
            sizes,
            logged: at,
            next: at,
        })
    }

    /// Submits up to `count` more steps of the epoch, never past a log point (every `log_interval` steps, and
    /// the epoch's end): returns how many (0 when the next thing due is [`Trainer::log_async`]). Does not wait.
    pub fn submit_some(&mut self, s: &mut Stepping, count: u32) -> Result<u32> {
        let interval = self.ws.slots as usize;
        let most = (interval - (s.next - s.logged)).min(s.sizes.len() - s.next);
        let count = (count as usize).min(most);
        if count > 0 {
            self.submit_steps(&s.sizes, s.next, count)?;
            s.next += count;
        }
        Ok(count as u32)
    }

    /// The log point of the steps submitted since the last one: their losses read back (awaited, never
    /// blocking), checked and added to the epoch's. Returns their rows of the loss log (BCE and KL of each step,
    /// for each model in turn), and, once the epoch's last step is read, its loss per model.
    pub async fn log_async(
        &mut self,
        s: &mut Stepping,
    ) -> Result<(Vec<f32>, Option<Vec<LossSum>>)> {
        let (first, end) = (s.logged, s.next);
        let log = self.loss_rows_async(first, end - first).await?;
        self.account(s.epoch, &s.sizes, (first, end), &log)?;
        s.logged = end;
        let done = (end == s.sizes.len()).then(|| self.end_epoch());
        Ok((log, done))
    }
}

/// Where an epoch taken a few steps at a time stands ([`Trainer::start_epoch`]).
#[derive(Clone, Debug)]
pub struct Stepping {
    /// The epoch (1-based).
    pub epoch: u32,
    sizes: Vec<u32>,
    /// Steps read back and steps submitted, counted from the epoch's start.
    logged: usize,
    next: usize,
}

impl Stepping {
    /// Steps in the epoch.
    pub fn steps(&self) -> usize {
        self.sizes.len()
    }

    /// Steps submitted and not yet read back.
    pub fn in_flight(&self) -> usize {
        self.next - self.logged
    }
}

#[cfg(test)]
mod tests {
    use super::{X_BYTES, X_SLOTS, x_len_within};
    use crate::model::net::x_stride;

    /// The input batches' room never shrinks as the batch grows (the out-of-memory advice relies on it), always
    /// holds one batch, holds [`X_SLOTS`] at batch 128 on MNIST and stays within [`X_BYTES`] unless one batch is
    /// larger.
    #[test]
    fn input_room_grows_with_the_batch_size() {
        let room = X_BYTES / 4;
        let mut last = 0;
        for batch in 1..=70_000u32 {
            let one = x_stride(batch, 784) as u64;
            let len = x_len_within(one, room);
            assert!(
                len >= last && len >= one,
                "batch {batch}: {len} after {last}"
            );
            assert!(len <= room.max(one), "batch {batch}: {len}");
            last = len;
        }
        let one = x_stride(128, 784) as u64;
        assert_eq!(x_len_within(one, room) / one, X_SLOTS as u64);
        let one = x_stride(1024, 784) as u64;
        assert_eq!(x_len_within(one, room) / one, 10);
    }
}
