//! Evaluation of the current network: the test-set loss (with sampled z, as the reference computes it), the
//! reconstructions and the prior samples drawn each epoch, and `vae eval`'s report.

use super::plans::{LossSum, Plans, batches, products};
use super::settings::Settings;
use crate::data::mnist::Split;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Plan};
use crate::kernels::contract::TERMS;
use crate::kernels::gather::{Binarize, ByteMatrix};
use crate::kernels::matmul::Product;
use crate::kernels::philox::stream;
use crate::kernels::{StepParams, StepTable};
#[cfg(not(target_arch = "wasm32"))]
use crate::model::inference::Inference;
use crate::model::net::{self, Net, Source, Workspace};
use crate::model::sigmoid;
#[cfg(not(target_arch = "wasm32"))]
use crate::training::checkpoint::Checkpoint;

/// Test images in the reconstruction picture (each drawn over its reconstruction).
pub const RECON_IMAGES: u32 = 8;
/// Images in the sample picture (an 8 × 8 grid).
pub const SAMPLE_IMAGES: u32 = 64;

/// How a model is evaluated: the batch size, and the seed and binarization of the run it comes from.
#[derive(Clone, Copy, Debug)]
pub struct EvalConfig {
    pub batch: u32,
    pub seed: u64,
    /// Binarize the test set, once and the same way every epoch (the run trained on binarized images).
    pub binarize: bool,
}

impl From<&Settings> for EvalConfig {
    fn from(s: &Settings) -> Self {
        EvalConfig {
            batch: s.batch_size,
            seed: s.seed,
            binarize: s.binarize,
        }
    }
}

pub struct Evaluator<'a> {
    gpu: &'a Gpu,
    net: &'a Net,
    config: EvalConfig,
    data: ByteMatrix,
    index: wgpu::Buffer,
    n: u32,
    batch: u32,
    steps: StepTable,
    log: wgpu::Buffer,
    plans: Plans,
    ws: Workspace,
    recon_plan: Plan,
    sample_ws: Workspace,
    sample_steps: StepTable,
    sample_plan: Plan,
}

impl<'a> Evaluator<'a> {
    /// Uploads the test set and builds the evaluation, reconstruction and sampling plans once.
    pub fn new(
        gpu: &'a Gpu,
        net: &'a Net,
        config: EvalConfig,
        test: &Split,
    ) -> Result<Evaluator<'a>> {
        let n = test.n as u32;
        if n == 0 {
            return Err(Error::Invalid(
                "the test set is empty: --test-samples must be at least 1".into(),
            ));
        }
        let batch = config.batch.clamp(1, n);
        let data = ByteMatrix::upload(gpu, "test.images", &test.images, net.config.pixels)?;
        let index = gpu.storage_init("test.index", &(0..n).collect::<Vec<_>>())?;
        let sizes = batches(n, batch);
        // The test batches in order, each with its own noise (rng_step = batch number).
        let steps = StepTable::new(gpu, sizes.len() as u32)?;
        let rows: Vec<StepParams> = (0..sizes.len() as u32)
            .map(|b| StepParams {
                batch_offset: b * batch,
                loss_slot: b,
                rng_step: b,
                ..Default::default()
            })
            .collect();
        steps.write(gpu, 0, &rows)?;
        let log = gpu.storage::<f32>("eval.loss_log", sizes.len() * TERMS)?;
        let ws = Workspace::new(gpu, "eval", net.config, batch.max(RECON_IMAGES), 1)?;
        let sample_ws = Workspace::new(gpu, "sample", net.config, SAMPLE_IMAGES, 1)?;
        gpu.fill(&sample_ws.heads, 0f32);
        let sample_steps = StepTable::new(gpu, 1)?;
        sample_steps.write(gpu, 0, &[StepParams::default()])?;
        let mut evaluator = Evaluator {
            gpu,
            net,
            config,
            data,
            index,
            n,
            batch,
            steps,
            log,
            plans: Plans::empty(),
            ws,
            recon_plan: Plan::default(),
            sample_ws,
            sample_steps,
            sample_plan: Plan::default(),
        };
        evaluator.rebuild_plans()?;
        Ok(evaluator)
    }

    /// Builds (again) the evaluation, reconstruction and sampling plans with the device's current kernel choices.
    pub fn rebuild_plans(&mut self) -> Result<()> {
        let (gpu, net, config) = (self.gpu, self.net, self.config);
        // The old plans go first, so their parameter buffers are not held twice over.
        (self.plans, self.recon_plan, self.sample_plan) =
            (Plans::empty(), Plan::default(), Plan::default());
        gpu.release_dropped()?;
        let src = Source {
            data: &self.data,
            index: &self.index,
            seed: config.seed,
            stream: stream::EVAL_NOISE,
            binarize: config.binarize.then_some(Binarize {
                seed: config.seed,
                stream: stream::BINARIZE_EVAL,
            }),
        };
        let (ws, steps, log) = (&self.ws, &self.steps, &self.log);
        self.plans = Plans::build(&batches(self.n, self.batch), |rows| {
            Ok(net::forward(gpu, net, ws, &src, (rows, false), steps)?
                .then(net::losses(gpu, net, ws, ws.x_at(0), rows, steps)?)
                .then(net::reduce_losses(gpu, net, ws, steps, log)?))
        })?;
        // Reconstructions: the first test images through the model, with the first batch's noise.
        let recon = (RECON_IMAGES.min(self.n), false);
        self.recon_plan = net::forward(gpu, net, ws, &src, recon, steps)?;
        self.sample_plan =
            prior_samples(gpu, net, &self.sample_ws, &self.sample_steps, config.seed)?;
        Ok(())
    }

    /// The matmuls of every plan, as (product, kernel), duplicates included.
    pub fn products(&self) -> Vec<(Product, String)> {
        let all = self
            .plans
            .all()
            .chain([&self.recon_plan, &self.sample_plan]);
        all.flat_map(products).collect()
    }

    pub fn n_test(&self) -> u32 {
        self.n
    }

    /// The test-set loss with sampled z, on the GPU, in one submission.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn evaluate(&self) -> Result<LossSum> {
        pollster::block_on(self.evaluate_async())
    }

    /// [`Self::evaluate`] without blocking (the browser; natively the same).
    pub async fn evaluate_async(&self) -> Result<LossSum> {
        let sizes = batches(self.n, self.batch);
        let plans = sizes.iter().enumerate();
        let plans = plans.map(|(i, &r)| (self.plans.for_rows(r), i as u32));
        self.gpu.submit_plans("eval", plans)?;
        let log: Vec<f32> = self
            .gpu
            .read_async(&self.log, 0, sizes.len() * TERMS)
            .await?;
        let mut sum = LossSum::default();
        sum.add(&log, &sizes);
        Ok(sum)
    }

    /// The first `RECON_IMAGES` test images and their reconstructions' Bernoulli means, each (n, pixels).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn reconstructions(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        pollster::block_on(self.reconstructions_async())
    }

    /// [`Self::reconstructions`] without blocking (the browser; natively the same).
    pub async fn reconstructions_async(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        self.gpu
            .submit_plans("reconstruct", [(&self.recon_plan, 0)])?;
        let len = (RECON_IMAGES.min(self.n) * self.net.config.pixels) as usize;
        let x = self.gpu.read_async(&self.ws.x, 0, len).await?;
        let logits: Vec<f32> = self.gpu.read_async(&self.ws.logits, 0, len).await?;
        Ok((x, logits.iter().map(|&l| sigmoid(l)).collect()))
    }

    /// `SAMPLE_IMAGES` decoded draws from the prior (the same z every epoch), Bernoulli means (n, pixels).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn samples(&self) -> Result<Vec<f32>> {
        pollster::block_on(self.samples_async())
    }

    /// [`Self::samples`] without blocking (the browser; natively the same).
    pub async fn samples_async(&self) -> Result<Vec<f32>> {
        self.gpu.submit_plans("sample", [(&self.sample_plan, 0)])?;
        let len = (SAMPLE_IMAGES * self.net.config.pixels) as usize;
        let logits: Vec<f32> = self.gpu.read_async(&self.sample_ws.logits, 0, len).await?;
        Ok(logits.iter().map(|&l| sigmoid(l)).collect())
    }
}

/// Samples: z ~ N(0, I) is the reparameterization of μ = 0, log σ² = 0 (`ws.heads` is zero), then the decoder.
fn prior_samples(
    gpu: &Gpu,
    net: &Net,
    ws: &Workspace,
    steps: &StepTable,
    seed: u64,
) -> Result<Plan> {
    let shape = (SAMPLE_IMAGES, net.config.latent);
    let noise = (seed, stream::SAMPLE);
    let draw = net::reparam_forward(gpu, net, ws, shape, noise, steps, false)?;
    Ok(Plan::from(vec![draw]).then(net::decode(gpu, net, ws, SAMPLE_IMAGES)?))
}

#[cfg(not(target_arch = "wasm32"))]
/// What `vae eval` reports, per test image.
#[derive(Clone, Copy, Debug)]
pub struct EvalReport {
    /// −ELBO, with its two parts.
    pub loss: f64,
    pub bce: f64,
    pub kl: f64,
    /// The importance-sampled log p(x), when asked for.
    pub log_likelihood: Option<f64>,
}

/// `vae eval`: the test ELBO of a checkpoint (on the GPU, sampled z, as during training) and, with `iw` samples
/// per image, the importance-sampled log p(x). The options are checked before any GPU work.
#[cfg(not(target_arch = "wasm32"))]
pub fn evaluate(gpu: &Gpu, ck: &Checkpoint, test: &Split, iw: Option<u32>) -> Result<EvalReport> {
    match iw {
        Some(_) if ck.settings.binarize => {
            return Err(Error::Invalid(
                "--iw-samples is not supported yet for models trained with --binarize (each importance sample would see another binarization); evaluate without it".into(),
            ));
        }
        Some(k) if !(1..=100_000).contains(&k) => {
            return Err(Error::Invalid(format!(
                "--iw-samples {k}: use 1 to 100000 (the IWAE paper uses 5000)"
            )));
        }
        _ => {}
    }
    let net = Net::new(gpu, ck.model, &ck.params)?;
    let config = EvalConfig {
        batch: ck.settings.batch_size,
        seed: ck.settings.seed,
        binarize: ck.settings.binarize,
    };
    let (loss, bce, kl) = Evaluator::new(gpu, &net, config, test)?
        .evaluate()?
        .per_example();
    let log_likelihood = match iw {
        None => None,
        Some(k) => {
            let inf = Inference::fitting(gpu, ck.model, &ck.params, ck.settings.seed)?;
            let data = ByteMatrix::upload(gpu, "test.images", &test.images, ck.model.pixels)?;
            let ll = inf.log_likelihood(&data, test.n as u32, k)?;
            Some(ll.iter().sum::<f64>() / ll.len() as f64)
        }
    };
    Ok(EvalReport {
        loss,
        bce,
        kl,
        log_likelihood,
    })
}
