//! Benchmarks: correctness first (each kernel is checked against its CPU reference before it is timed), then
//! warm-up, repetitions and the median. Wall-clock over many back-to-back dispatches in one submission, so
//! per-submit overhead is amortized; `vae profile` has per-kernel GPU timestamps. The matmuls benchmarked are
//! those of the real step plan ([`step_products`]).

use std::time::Instant;

use crate::error::Result;

use crate::kernels::matmul::Product;
use crate::model::ModelConfig;
use crate::training::plans::products;
use crate::training::trainer::{TrainConfig, Trainer};
use crate::tune::median;

/// The matmuls of the plan of one training step of `rows` examples, in order, read from its dispatches.
pub fn step_products(trainer: &Trainer, rows: u32) -> Vec<Product> {
    products(trainer.step_plan(rows)).map(|(p, _)| p).collect()
}

/// One row of the epoch benchmark.
#[derive(Clone, Debug)]
pub struct EpochRow {
    pub batch: u32,
    pub samples: u32,
    pub median_ms: f64,
    pub samples_per_second: f64,
    pub runs: Vec<f64>,
    /// The first epoch's time (a warm-up where there is one: first-use pipeline work included).
    pub first_ms: f64,
}

/// The trainer configuration benchmarks and profiles use: the run defaults with the given model and batch, and
/// one loss readback per epoch (as a training run with a long log interval).
pub fn bench_config(model: ModelConfig, batch: u32, n_train: usize) -> TrainConfig {
    let mut config = TrainConfig::new(model, &crate::training::settings::Settings::DEFAULT, 1);
    config.batch = batch;
    config.log_interval = n_train.div_ceil(batch as usize) as u32;
    config
}

/// Times whole training epochs (as `vae train` runs them, losses read back once per epoch): `warmup` untimed
/// epochs, then `reps` timed ones; reports the median.
pub fn epoch_bench(trainer: &mut Trainer, warmup: u32, reps: u32) -> Result<EpochRow> {
    let mut all = Vec::new();
    for e in 0..warmup + reps {
        let start = Instant::now();
        trainer.train_epoch(e + 1, |_, _| {})?.finished()?;
        trainer.gpu.wait()?;
        all.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let runs = all[warmup as usize..].to_vec();
    let mut sorted = runs.clone();
    let median_ms = median(&mut sorted);
    Ok(EpochRow {
        batch: trainer.config.batch,
        samples: trainer.n_train(),
        median_ms,
        samples_per_second: trainer.n_train() as f64 / (median_ms / 1e3),
        runs,
        first_ms: all.first().copied().unwrap_or(f64::NAN),
    })
}
