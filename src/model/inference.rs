//! Using a trained model: encoding images to latent means, decoding latent codes, and the importance-weighted
//! estimate of log p(x). These wait for the GPU (they are tools, not a training step).

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::gather::ByteMatrix;
use crate::kernels::iwae::{Rows, iw_log_weights, iw_logsumexp};
use crate::kernels::philox::stream;
use crate::kernels::{Dispatch, StepParams, StepTable};
use crate::model::ModelConfig;
use crate::model::net::{self, Net, Source, Workspace};

/// A model on the GPU with a workspace of `rows` rows.
pub struct Inference<'g> {
    pub gpu: &'g Gpu,
    pub net: Net,
    pub ws: Workspace,
    pub seed: u64,
}

fn sigmoid(l: f32) -> f32 {
    1.0 / (1.0 + (-l).exp())
}

impl<'g> Inference<'g> {
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
            ws: Workspace::new(gpu, "infer", model, rows.max(1))?,
            seed,
        })
    }

    fn submit(&self, label: &str, dispatches: &[Dispatch], slot: u32) -> Result<()> {
        self.gpu.submit_pass(label, |pass| {
            for d in dispatches {
                d.record(pass, slot);
            }
        })?;
        Ok(())
    }

    /// μ and log σ² of q(z|x) for images `indices` of `data`, each (n, latent); also the decoded Bernoulli means
    /// of a sampled z (reconstructions, (n, pixels)).
    pub fn encode(
        &self,
        data: &ByteMatrix,
        indices: &[u32],
    ) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let l = self.net.config.latent as usize;
        let p = self.net.config.pixels as usize;
        let (mut mu, mut log_var, mut recon) = (Vec::new(), Vec::new(), Vec::new());
        let index = self.gpu.storage_init("infer.index", indices)?;
        let chunk = self.ws.rows as usize;
        let chunks = indices.len().div_ceil(chunk);
        let table = StepTable::new(self.gpu, chunks as u32)?;
        let rows: Vec<StepParams> = (0..chunks)
            .map(|c| StepParams {
                batch_offset: (c * chunk) as u32,
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
        for c in 0..chunks {
            let n = chunk.min(indices.len() - c * chunk);
            let d = net::forward_only(self.gpu, &self.net, &self.ws, &src, n as u32, &table)?;
            self.submit("encode", &d, c as u32)?;
            let heads: Vec<f32> = self.gpu.read(&self.ws.heads, 0, n * 2 * l)?;
            for r in 0..n {
                mu.extend_from_slice(&heads[r * 2 * l..r * 2 * l + l]);
                log_var.extend_from_slice(&heads[r * 2 * l + l..(r + 1) * 2 * l]);
            }
            let logits: Vec<f32> = self.gpu.read(&self.ws.logits, 0, n * p)?;
            recon.extend(logits.iter().map(|&v| sigmoid(v)));
        }
        Ok((mu, log_var, recon))
    }

    /// Bernoulli means p(x|z) of latent codes `z` (n, latent), as (n, pixels).
    pub fn decode(&self, z: &[f32]) -> Result<Vec<f32>> {
        let l = self.net.config.latent as usize;
        let p = self.net.config.pixels as usize;
        let chunk = self.ws.rows as usize * l;
        let mut out = Vec::new();
        for part in z.chunks(chunk) {
            let n = part.len() / l;
            self.gpu
                .queue
                .write_buffer(&self.ws.z, 0, bytemuck::cast_slice(part));
            let d = net::decode(self.gpu, &self.net, &self.ws, n as u32)?;
            self.submit("decode", &d, 0)?;
            let logits: Vec<f32> = self.gpu.read(&self.ws.logits, 0, n * p)?;
            out.extend(logits.iter().map(|&v| sigmoid(v)));
        }
        Ok(out)
    }

    /// log p(x) of each of the first `images` rows of `data`, estimated with `k` importance samples from q(z|x)
    /// (IWAE bound; ≥ the ELBO, and tight as k grows). Sample rows are processed in chunks of the workspace's
    /// size, so any k fits the device; the noise of chunk c is Philox counter (element, c, IW_NOISE).
    pub fn log_likelihood(&self, data: &ByteMatrix, images: u32, k: u32) -> Result<Vec<f64>> {
        if k == 0 {
            return Err(Error::Invalid(
                "--iw-samples 0: use at least 1 sample".into(),
            ));
        }
        let (p, l) = (self.net.config.pixels, self.net.config.latent);
        let chunk = self.ws.rows;
        // Images per submission: about 64K sample rows (at least one image), so a submission stays a few
        // thousand dispatches and the log-weights a few hundred KiB.
        let group = ((1u32 << 16) / k).clamp(1, images.max(1));
        let logw = self.gpu.storage::<f32>("iwae.logw", (group * k) as usize)?;
        let estimate = self.gpu.storage::<f32>("iwae.estimate", images as usize)?;
        let mut chunk_id = 0u32;
        for first in (0..images).step_by(group as usize) {
            let g = group.min(images - first);
            let rows = g * k;
            let index: Vec<u32> = (0..rows).map(|r| first + r / k).collect();
            let index = self.gpu.storage_init("iwae.index", &index)?;
            let chunks = rows.div_ceil(chunk);
            let table = StepTable::new(self.gpu, chunks)?;
            let steps: Vec<StepParams> = (0..chunks)
                .map(|c| StepParams {
                    batch_offset: c * chunk,
                    rng_step: chunk_id + c,
                    ..Default::default()
                })
                .collect();
            table.write(self.gpu, 0, &steps)?;
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
            let mut recorded = Vec::new();
            for c in 0..chunks {
                let n = chunk.min(rows - c * chunk);
                let mut d = net::forward_only(self.gpu, &self.net, ws, &src, n, &table)?;
                d.push(iw_log_weights(
                    self.gpu,
                    &rows_in,
                    (n, p, l),
                    &logw,
                    c * chunk,
                )?);
                recorded.push((c, d));
            }
            let lse = iw_logsumexp(self.gpu, &logw, (g, k), &estimate, first)?;
            self.gpu.submit_pass("iwae", |pass| {
                for (c, d) in &recorded {
                    for k in d {
                        k.record(pass, *c);
                    }
                }
                lse.record(pass, 0);
            })?;
            self.gpu.wait()?;
            chunk_id += chunks;
        }
        let est: Vec<f32> = self.gpu.read(&estimate, 0, images as usize)?;
        Ok(est.into_iter().map(f64::from).collect())
    }
}
