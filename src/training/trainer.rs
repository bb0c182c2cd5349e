//! Training: the dataset resident on the GPU as bytes, a shuffled index list per epoch, whole steps (gather,
//! forward, fused losses, backward, Adam) recorded many to a submission, and loss totals kept on the GPU until a
//! log point reads them.

use crate::data::mnist::Split;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::adam::{AdamConfig, adam};
use crate::kernels::gather::{Binarize, ByteMatrix};
use crate::kernels::philox::{Philox, stream};
use crate::kernels::reparam::reparam;
use crate::kernels::{Dispatch, StepParams, StepTable};
use crate::model::ModelConfig;
use crate::model::net::{self, Net, Source, TERMS, Workspace};

/// What a training run is.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub batch: u32,
    pub adam: AdamConfig,
    pub seed: u64,
    /// Weight on the KL term once warmed up (β of a β-VAE; 1: the ELBO).
    pub beta: f32,
    /// Epochs over which the KL weight ramps linearly from 0 to `beta` (0: no warm-up).
    pub kl_warmup: f32,
    /// Dynamic binarization of the inputs (train: fresh each step; test: fixed).
    pub binarize: bool,
    /// Steps recorded per submission, and between loss readbacks.
    pub log_interval: u32,
}

/// Loss totals over some examples (summed over pixels, latent dimensions and examples).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossSum {
    pub bce: f64,
    pub kl: f64,
    pub examples: u64,
}

impl LossSum {
    pub fn loss(&self) -> f64 {
        self.bce + self.kl
    }
    /// (loss, bce, kl) per example.
    pub fn per_example(&self) -> (f64, f64, f64) {
        let n = self.examples.max(1) as f64;
        (self.loss() / n, self.bce / n, self.kl / n)
    }
    fn add(&mut self, log: &[f32], rows: &[u32]) {
        for (i, &r) in rows.iter().enumerate() {
            self.bce += log[TERMS * i] as f64;
            self.kl += log[TERMS * i + 1] as f64;
            self.examples += r as u64;
        }
    }
}

/// The batches of one pass over `n` examples: full batches, then the remainder (kept, not dropped).
fn batches(n: u32, batch: u32) -> Vec<u32> {
    let mut v = vec![batch; (n / batch) as usize];
    if !n.is_multiple_of(batch) {
        v.push(n % batch);
    }
    v
}

/// Dispatch lists for a full batch and, where the set does not divide, the last partial one.
struct Plans {
    full: Vec<Dispatch>,
    last: Option<(u32, Vec<Dispatch>)>,
}

impl Plans {
    fn for_rows(&self, rows: u32) -> &[Dispatch] {
        match &self.last {
            Some((r, d)) if *r == rows => d,
            _ => &self.full,
        }
    }
}

pub struct Trainer<'g> {
    pub gpu: &'g Gpu,
    pub config: TrainConfig,
    pub net: Net,
    train: ByteMatrix,
    test: ByteMatrix,
    train_index: wgpu::Buffer,
    test_index: wgpu::Buffer,
    steps: StepTable,
    eval_steps: StepTable,
    train_log: wgpu::Buffer,
    eval_log: wgpu::Buffer,
    train_plans: Plans,
    eval_plans: Plans,
    /// The training step's activations (tests read ε and friends from here).
    pub train_ws: Workspace,
    eval_ws: Workspace,
    sample_ws: Workspace,
    sample_plan: Vec<Dispatch>,
    /// Adam steps taken so far.
    pub step: u32,
    n_train: u32,
    n_test: u32,
}

/// What one epoch did.
#[derive(Clone, Copy, Debug)]
pub struct EpochStats {
    pub epoch: u32,
    pub train: LossSum,
    pub test: LossSum,
    pub seconds: f64,
}

/// Rows of the image grids written at the end of each epoch.
pub const RECON_IMAGES: u32 = 8;
pub const SAMPLE_IMAGES: u32 = 64;

impl<'g> Trainer<'g> {
    /// Uploads the data and builds every dispatch once. `params` is the initial flat parameter vector.
    pub fn new(
        gpu: &'g Gpu,
        config: TrainConfig,
        train: &Split,
        test: &Split,
        params: &[f32],
    ) -> Result<Trainer<'g>> {
        let n_train = train.n as u32;
        let n_test = test.n as u32;
        if n_test == 0 {
            return Err(Error::Invalid(
                "the test set is empty: --test-samples must be at least 1".into(),
            ));
        }
        if config.batch == 0 || config.batch > n_train {
            return Err(Error::Invalid(format!(
                "--batch-size {} must be between 1 and the number of training examples ({n_train})",
                config.batch
            )));
        }
        let cfg = config.model;
        let net = Net::new(gpu, cfg, params)?;
        let pixels = cfg.pixels;
        let train_data = ByteMatrix::upload(gpu, "train.images", &train.images, pixels)?;
        let test_data = ByteMatrix::upload(gpu, "test.images", &test.images, pixels)?;
        let train_index = gpu.storage::<u32>("train.index", n_train as usize)?;
        let test_index = gpu.storage_init("test.index", &(0..n_test).collect::<Vec<_>>())?;

        let train_batches = batches(n_train, config.batch);
        let eval_batches = batches(n_test, config.batch);
        let steps = StepTable::new(gpu, train_batches.len() as u32)?;
        let eval_steps = StepTable::new(gpu, eval_batches.len() as u32)?;
        let train_log = gpu.storage::<f32>("train.loss_log", train_batches.len() * TERMS)?;
        let eval_log = gpu.storage::<f32>("eval.loss_log", eval_batches.len() * TERMS)?;
        // Evaluation rows: the test batches in order, each with its own noise (rng_step = batch number).
        let rows: Vec<StepParams> = (0..eval_batches.len() as u32)
            .map(|b| StepParams {
                batch_offset: b * config.batch,
                loss_slot: b,
                rng_step: b,
                kl_weight: config.beta,
                ..Default::default()
            })
            .collect();
        eval_steps.write(gpu, 0, &rows)?;

        let train_ws = Workspace::new(gpu, "train", cfg, config.batch)?;
        let eval_ws = Workspace::new(gpu, "eval", cfg, config.batch.max(RECON_IMAGES))?;
        let binarize = |stream| {
            config.binarize.then_some(Binarize {
                seed: config.seed,
                stream,
            })
        };
        let train_src = Source {
            data: &train_data,
            index: &train_index,
            seed: config.seed,
            stream: stream::TRAIN_NOISE,
            binarize: binarize(stream::BINARIZE_TRAIN),
        };
        let test_src = Source {
            data: &test_data,
            index: &test_index,
            seed: config.seed,
            stream: stream::EVAL_NOISE,
            binarize: binarize(stream::BINARIZE_EVAL),
        };
        let train_plan = |rows| -> Result<Vec<Dispatch>> {
            let mut d = net::forward(
                gpu, &net, &train_ws, &train_src, rows, &steps, &train_log, true,
            )?;
            d.push(adam(
                gpu,
                "adam",
                &config.adam,
                &net.params,
                &net.grads,
                &net.m,
                &net.v,
                net.layout.len as u32,
                &steps,
            )?);
            Ok(d)
        };
        let eval_plan = |rows| {
            net::forward(
                gpu,
                &net,
                &eval_ws,
                &test_src,
                rows,
                &eval_steps,
                &eval_log,
                false,
            )
        };
        let last = |v: &[u32]| (v.last() != v.first()).then(|| *v.last().unwrap());
        let train_plans = Plans {
            full: train_plan(train_batches[0])?,
            last: last(&train_batches)
                .map(|r| train_plan(r).map(|d| (r, d)))
                .transpose()?,
        };
        let eval_plans = Plans {
            full: eval_plan(eval_batches[0])?,
            last: last(&eval_batches)
                .map(|r| eval_plan(r).map(|d| (r, d)))
                .transpose()?,
        };

        // Samples: z ~ N(0, I) is the reparameterization of μ = 0, log σ² = 0 (a zero `heads`), then the decoder.
        let sample_ws = Workspace::new(gpu, "sample", cfg, SAMPLE_IMAGES)?;
        let sample_steps = StepTable::new(gpu, 1)?;
        sample_steps.write(gpu, 0, &[StepParams::default()])?;
        let mut sample_plan = vec![reparam(
            gpu,
            "sample.reparam",
            &sample_ws.heads,
            &sample_ws.z,
            &sample_ws.eps,
            (SAMPLE_IMAGES, cfg.latent),
            config.seed,
            stream::SAMPLE,
            &sample_steps,
        )?];
        gpu.fill(&sample_ws.heads, 0f32);
        sample_plan.extend(net::decode(gpu, &net, &sample_ws, SAMPLE_IMAGES)?);

        Ok(Trainer {
            gpu,
            config,
            net,
            train: train_data,
            test: test_data,
            train_index,
            test_index,
            steps,
            eval_steps,
            train_log,
            eval_log,
            train_plans,
            eval_plans,
            train_ws,
            eval_ws,
            sample_ws,
            sample_plan,
            step: 0,
            n_train,
            n_test,
        })
    }

    /// The KL weight of step `i` (0-based) of `epoch` (1-based): β, ramped linearly over the warm-up epochs.
    pub fn kl_weight(&self, epoch: u32, i: u32, steps: u32) -> f32 {
        let (beta, warmup) = (self.config.beta, self.config.kl_warmup);
        if warmup <= 0.0 {
            return beta;
        }
        let progress = (epoch - 1) as f64 + (i + 1) as f64 / steps as f64;
        (beta as f64 * (progress / warmup as f64).min(1.0)) as f32
    }

    /// Continues from a checkpoint's optimizer state: Adam's moments and its step count.
    pub fn restore(&mut self, m: &[f32], v: &[f32], step: u32) -> Result<()> {
        if m.len() != self.net.layout.len || v.len() != self.net.layout.len {
            return Err(Error::Invalid(
                "optimizer state does not match the model".into(),
            ));
        }
        self.gpu
            .queue
            .write_buffer(&self.net.m, 0, bytemuck::cast_slice(m));
        self.gpu
            .queue
            .write_buffer(&self.net.v, 0, bytemuck::cast_slice(v));
        self.step = step;
        Ok(())
    }

    /// Adam's moments, read back (checkpoints only).
    pub fn moments(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let n = self.net.layout.len;
        Ok((
            self.gpu.read(&self.net.m, 0, n)?,
            self.gpu.read(&self.net.v, 0, n)?,
        ))
    }

    pub fn steps_per_epoch(&self) -> u32 {
        self.n_train.div_ceil(self.config.batch)
    }

    /// Uploads the epoch's shuffled order and its step-table rows; returns the batch sizes. `train_epoch` calls
    /// it; `vae profile` and `vae bench` record the steps themselves.
    pub fn begin_epoch(&mut self, epoch: u32) -> Result<Vec<u32>> {
        let gpu = self.gpu;
        let b = self.config.batch;
        let order =
            Philox::with_lane(self.config.seed, stream::SHUFFLE, epoch).permutation(self.n_train);
        gpu.queue
            .write_buffer(&self.train_index, 0, bytemuck::cast_slice(&order));
        let sizes = batches(self.n_train, b);
        let rows: Vec<StepParams> = (0..sizes.len() as u32)
            .map(|i| {
                let t = self.step + i + 1;
                let mut row = StepParams {
                    batch_offset: i * b,
                    loss_slot: i,
                    rng_step: t,
                    kl_weight: self.kl_weight(epoch, i, sizes.len() as u32),
                    ..Default::default()
                };
                self.config.adam.fill(&mut row, t);
                row
            })
            .collect();
        self.steps.write(gpu, 0, &rows)?;
        Ok(sizes)
    }

    /// The dispatches of one training step of `rows` examples, in order.
    pub fn step_plan(&self, rows: u32) -> &[Dispatch] {
        self.train_plans.for_rows(rows)
    }

    /// Trains one epoch (1-based `epoch`). `progress(steps_done, running)` is called at each log point.
    pub fn train_epoch(
        &mut self,
        epoch: u32,
        mut progress: impl FnMut(u32, &LossSum),
    ) -> Result<LossSum> {
        let gpu = self.gpu;
        let sizes = self.begin_epoch(epoch)?;
        let mut sum = LossSum::default();
        let interval = self.config.log_interval.max(1) as usize;
        for first in (0..sizes.len()).step_by(interval) {
            let chunk = &sizes[first..(first + interval).min(sizes.len())];
            let plans = &self.train_plans;
            gpu.submit_pass("train.steps", |pass| {
                for (i, &r) in chunk.iter().enumerate() {
                    for d in plans.for_rows(r) {
                        d.record(pass, (first + i) as u32);
                    }
                }
            })?;
            // Log point: the only readback of the epoch's training losses.
            let log: Vec<f32> = gpu.read(&self.train_log, first * TERMS, chunk.len() * TERMS)?;
            if let Some(bad) = log.iter().position(|v| !v.is_finite()) {
                // A non-finite loss means non-finite parameters from that step on: stop before they are saved.
                let step = self.step + (first + bad / TERMS) as u32 + 1;
                return Err(Error::NonFinite {
                    step,
                    epoch,
                    what: if bad % TERMS == 0 {
                        "reconstruction (BCE)"
                    } else {
                        "KL"
                    },
                    lr: self.config.adam.lr,
                });
            }
            sum.add(&log, chunk);
            progress((first + chunk.len()) as u32, &sum);
        }
        self.step += sizes.len() as u32;
        Ok(sum)
    }

    /// The test-set loss with sampled z (as the reference computes it), on the GPU, one submission.
    pub fn evaluate(&self) -> Result<LossSum> {
        let sizes = batches(self.n_test, self.config.batch);
        let plans = &self.eval_plans;
        self.gpu.submit_pass("eval", |pass| {
            for (i, &r) in sizes.iter().enumerate() {
                for d in plans.for_rows(r) {
                    d.record(pass, i as u32);
                }
            }
        })?;
        let log: Vec<f32> = self.gpu.read(&self.eval_log, 0, sizes.len() * TERMS)?;
        let mut sum = LossSum::default();
        sum.add(&log, &sizes);
        Ok(sum)
    }

    /// The first `RECON_IMAGES` test images and their reconstructions' Bernoulli means, each (n, pixels).
    pub fn reconstructions(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let n = RECON_IMAGES.min(self.n_test);
        let d = net::forward(
            self.gpu,
            &self.net,
            &self.eval_ws,
            &Source {
                data: &self.test,
                index: &self.test_index,
                seed: self.config.seed,
                stream: stream::EVAL_NOISE,
                binarize: self.config.binarize.then_some(Binarize {
                    seed: self.config.seed,
                    stream: stream::BINARIZE_EVAL,
                }),
            },
            n,
            &self.eval_steps,
            &self.eval_log,
            false,
        )?;
        self.gpu.submit_pass("reconstruct", |pass| {
            for k in &d {
                k.record(pass, 0);
            }
        })?;
        let len = (n * self.net.config.pixels) as usize;
        let x = self.gpu.read(&self.eval_ws.x, 0, len)?;
        let logits: Vec<f32> = self.gpu.read(&self.eval_ws.logits, 0, len)?;
        Ok((x, logits.iter().map(|&l| sigmoid(l)).collect()))
    }

    /// `SAMPLE_IMAGES` decoded draws from the prior (the same z every epoch), Bernoulli means (n, pixels).
    pub fn samples(&self) -> Result<Vec<f32>> {
        self.gpu.submit_pass("sample", |pass| {
            for d in &self.sample_plan {
                d.record(pass, 0);
            }
        })?;
        let len = (SAMPLE_IMAGES * self.net.config.pixels) as usize;
        let logits: Vec<f32> = self.gpu.read(&self.sample_ws.logits, 0, len)?;
        Ok(logits.iter().map(|&l| sigmoid(l)).collect())
    }

    /// The parameters, read back (log points and checkpoints only).
    pub fn params(&self) -> Result<Vec<f32>> {
        self.gpu.read(&self.net.params, 0, self.net.layout.len)
    }

    pub fn n_train(&self) -> u32 {
        self.n_train
    }
    pub fn n_test(&self) -> u32 {
        self.n_test
    }
    pub fn train_data(&self) -> &ByteMatrix {
        &self.train
    }
}

fn sigmoid(l: f32) -> f32 {
    1.0 / (1.0 + (-l).exp())
}
