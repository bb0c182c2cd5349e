//! Using a trained model: encoding images to latent means, decoding latent codes, and the importance-weighted
//! estimate of log p(x). These wait for the GPU (they are tools, not a training step). Each call builds its plans
//! once, one per distinct chunk size, and records them for every chunk with that chunk's step-table row.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Plan};
use crate::kernels::gather::ByteMatrix;
#[cfg(not(target_arch = "wasm32"))]
use crate::kernels::iwae::{Rows, iw_log_weights, iw_logsumexp};
use crate::kernels::philox::stream;
use crate::kernels::{StepParams, StepTable};
use crate::model::net::{self, Net, Source, Workspace};
use crate::model::{ModelConfig, sigmoid};

/// Rows of the inference workspace the tools use: enough for a big chunk, small enough for any device.
pub const INFER_ROWS: u32 = 1024;

/// A model on the GPU with a workspace of `rows` rows.
pub struct Inference<'g> {
    pub gpu: &'g Gpu,
    pub net: Net,
    pub ws: Workspace,
    pub seed: u64,
}

/// What [`Inference::encode`] returns, each row-major per image.
pub struct Encoded {
    /// μ of q(z|x), (n, latent).
    pub mu: Vec<f32>,
    /// log σ² of q(z|x), (n, latent).
    pub log_var: Vec<f32>,
    /// Bernoulli means of the decoded sampled z, (n, pixels).
    pub recon: Vec<f32>,
}

/// The chunks of `n` rows in pieces of at most `chunk`: (first row, rows).
fn chunks(n: u32, chunk: u32) -> impl Iterator<Item = (u32, u32)> {
    (0..n.div_ceil(chunk)).map(move |c| (c * chunk, chunk.min(n - c * chunk)))
}

/// Plans by chunk size, each built the first time a chunk of that size comes.
struct PlanCache<F: Fn(u32) -> Result<Plan>> {
    build: F,
    plans: HashMap<u32, Plan>,
}

impl<F: Fn(u32) -> Result<Plan>> PlanCache<F> {
    fn new(build: F) -> Self {
        PlanCache {
            build,
            plans: HashMap::new(),
        }
    }

    fn get(&mut self, rows: u32) -> Result<&Plan> {
        if !self.plans.contains_key(&rows) {
            let plan = (self.build)(rows)?;
            self.plans.insert(rows, plan);
        }
        Ok(&self.plans[&rows])
    }
}

impl<'g> Inference<'g> {
    /// The model with the largest workspace up to [`INFER_ROWS`] rows that the device's memory holds, halving
    /// on out-of-memory (and saying so: draws with noise then come in other chunks than with the full size).
    pub fn fitting(
        gpu: &'g Gpu,
        model: ModelConfig,
        params: &[f32],
        seed: u64,
    ) -> Result<Inference<'g>> {
        gpu.release_dropped()?; // what the caller dropped is free memory here
        let net = Net::new(gpu, model, params).map_err(|e| {
            e.advising(format!(
                "The model's parameters alone do not fit on this device (--hidden {})",
                model.hidden
            ))
        })?;
        let mut rows = INFER_ROWS;
        loop {
            match Workspace::new(gpu, "infer", model, rows, 1) {
                Ok(ws) => {
                    if rows < INFER_ROWS {
                        eprintln!(
                            "note: the device's memory holds {rows} rows at a time for inference, not {INFER_ROWS}: \
                             sampled results (IWAE, reconstructions) differ a little from a device that holds {INFER_ROWS}"
                        );
                    }
                    return Ok(Inference { gpu, net, ws, seed });
                }
                Err(Error::OutOfMemory { .. }) if rows > 1 => {
                    rows /= 2;
                    gpu.release_dropped()?;
                }
                Err(e) => {
                    return Err(e.advising(
                        "Not even one row of inference fits beside the model: use a device with more memory".into(),
                    ));
                }
            }
        }
    }

    pub fn new(
        gpu: &'g Gpu,
        model: ModelConfig,
        params: &[f32],
        rows: u32,
        seed: u64,
    ) -> Result<Inference<'g>> {
        Ok(Inference {
            gpu,
            net: Net::new(gpu, model, params)?,
            ws: Workspace::new(gpu, "infer", model, rows.max(1), 1)?,
            seed,
        })
    }

    /// q(z|x) of images `indices` of `data` and the reconstructions of a sampled z (noise: stream PICTURES,
    /// chunk c of the workspace's size drawing with rng_step c).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn encode(&self, data: &ByteMatrix, indices: &[u32]) -> Result<Encoded> {
        pollster::block_on(self.encode_async(data, indices))
    }

    /// [`Self::encode`] without blocking (the browser; natively the same).
    pub async fn encode_async(&self, data: &ByteMatrix, indices: &[u32]) -> Result<Encoded> {
        let (l, p) = (
            self.net.config.latent as usize,
            self.net.config.pixels as usize,
        );
        let index = self.gpu.storage_init("infer.index", indices)?;
        let parts: Vec<(u32, u32)> = chunks(indices.len() as u32, self.ws.rows).collect();
        let table = StepTable::new(self.gpu, parts.len() as u32)?;
        let rows: Vec<StepParams> = (0..parts.len())
            .map(|c| StepParams {
                batch_offset: parts[c].0,
                rng_step: c as u32,
                ..Default::default()
            })
            .collect();
        table.write(self.gpu, 0, &rows)?;
        let src = Source {
            data,
            index: &index,
            seed: self.seed,
            stream: stream::PICTURES,
            binarize: None,
        };
        let mut plans = PlanCache::new(|n| {
            net::forward(self.gpu, &self.net, &self.ws, &src, (n, false), &table)
        });
        let mut out = Encoded {
            mu: Vec::new(),
            log_var: Vec::new(),
            recon: Vec::new(),
        };
        for (c, &(_, n)) in parts.iter().enumerate() {
            self.gpu
                .submit_plans("encode", [(plans.get(n)?, c as u32)])?;
            let n = n as usize;
            let heads: Vec<f32> = self.gpu.read_async(&self.ws.heads, 0, n * 2 * l).await?;
            for row in heads.chunks_exact(2 * l) {
                out.mu.extend_from_slice(&row[..l]);
                out.log_var.extend_from_slice(&row[l..]);
            }
            let logits: Vec<f32> = self.gpu.read_async(&self.ws.logits, 0, n * p).await?;
            out.recon.extend(logits.iter().map(|&v| sigmoid(v)));
        }
        Ok(out)
    }

    /// Bernoulli means p(x|z) of latent codes `z` (n, latent), as (n, pixels).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn decode(&self, z: &[f32]) -> Result<Vec<f32>> {
        pollster::block_on(self.decode_async(z))
    }

    /// [`Self::decode`] without blocking (the browser; natively the same).
    pub async fn decode_async(&self, z: &[f32]) -> Result<Vec<f32>> {
        let (l, p) = (
            self.net.config.latent as usize,
            self.net.config.pixels as usize,
        );
        let mut plans = PlanCache::new(|n| net::decode(self.gpu, &self.net, &self.ws, n));
        let mut out = Vec::new();
        for part in z.chunks(self.ws.rows as usize * l) {
            let n = part.len() / l;
            self.gpu
                .queue
                .write_buffer(&self.ws.z, 0, bytemuck::cast_slice(part));
            self.gpu
                .submit_plans("decode", [(plans.get(n as u32)?, 0)])?;
            let logits: Vec<f32> = self.gpu.read_async(&self.ws.logits, 0, n * p).await?;
            out.extend(logits.iter().map(|&v| sigmoid(v)));
        }
        Ok(out)
    }

    /// log p(x) of each of the first `images` rows of `data`, estimated with `k` importance samples from q(z|x)
    /// (IWAE bound; ≥ the ELBO, and tight as k grows).
    ///
    /// Images go in groups of about 64K sample rows (one submission each; the log-weights a few hundred KiB),
    /// each group's sample rows in chunks of the workspace's size. The noise of chunk c (counted over the whole
    /// call) is Philox counter (element, c, IW_NOISE). Plans are built once per chunk size and per group size;
    /// between groups only the index list and the step-table rows change.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn log_likelihood(&self, data: &ByteMatrix, images: u32, k: u32) -> Result<Vec<f64>> {
        if k == 0 {
            return Err(Error::Invalid(
                "--iw-samples 0: use at least 1 sample".into(),
            ));
        }
        let gpu = self.gpu;
        let (p, l) = (self.net.config.pixels, self.net.config.latent);
        let chunk = self.ws.rows;
        let group = ((1u32 << 16) / k).clamp(1, images.max(1));
        let max_chunks = (group * k).div_ceil(chunk);
        let logw = gpu.storage::<f32>("iwae.logw", (group * k) as usize)?;
        let estimate = gpu.storage::<f32>("iwae.estimate", images as usize)?;
        let index = gpu.storage::<u32>("iwae.index", (group * k) as usize)?;
        // Rows 0..max_chunks: the chunks of a group; row max_chunks: the group's log-mean-exp.
        let table = StepTable::new(gpu, max_chunks + 1)?;
        let src = Source {
            data,
            index: &index,
            seed: self.seed,
            stream: stream::IW_NOISE,
            binarize: None,
        };
        let ws = &self.ws;
        let rows_in = Rows {
            logits: &ws.logits,
            x: &ws.x,
            heads: &ws.heads,
            z: &ws.z,
            eps: &ws.eps,
        };
        let mut chunk_plans = PlanCache::new(|n| {
            let weights = iw_log_weights(gpu, &rows_in, (n, p, l), &logw, &table)?;
            Ok(net::forward(gpu, &self.net, ws, &src, (n, false), &table)?
                .then(Plan::from(vec![weights])))
        });
        let mut lse_plans = PlanCache::new(|g| {
            Ok(Plan::from(vec![iw_logsumexp(
                gpu,
                &logw,
                (g, k),
                &estimate,
                &table,
            )?]))
        });
        let mut chunk_id = 0u32;
        for first in (0..images).step_by(group as usize) {
            let g = group.min(images - first);
            let index_rows: Vec<u32> = (0..g * k).map(|r| first + r / k).collect();
            gpu.queue
                .write_buffer(&index, 0, bytemuck::cast_slice(&index_rows));
            let parts: Vec<(u32, u32)> = chunks(g * k, chunk).collect();
            let mut rows: Vec<StepParams> = (0..parts.len() as u32)
                .map(|c| StepParams {
                    batch_offset: parts[c as usize].0,
                    rng_step: chunk_id + c,
                    ..Default::default()
                })
                .collect();
            rows.resize(max_chunks as usize, StepParams::default());
            rows.push(StepParams {
                batch_offset: first,
                ..Default::default()
            });
            table.write(gpu, 0, &rows)?;
            for &(_, n) in &parts {
                chunk_plans.get(n)?;
            }
            lse_plans.get(g)?;
            let recorded = parts
                .iter()
                .enumerate()
                .map(|(c, &(_, n))| (&chunk_plans.plans[&n], c as u32))
                .chain([(&lse_plans.plans[&g], max_chunks)]);
            gpu.submit_plans("iwae", recorded)?;
            gpu.wait()?;
            chunk_id += parts.len() as u32;
        }
        let est: Vec<f32> = gpu.read(&estimate, 0, images as usize)?;
        Ok(est.into_iter().map(f64::from).collect())
    }
}
