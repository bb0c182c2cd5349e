//! `vae bench` and `vae profile`: the benchmarks' and the profile's tables.

use std::path::Path;

use vae_wgpu::data::mnist::{self, Split};
use vae_wgpu::gpu::{Gpu, GpuOptions};
use vae_wgpu::kernels::contract::Layout;
use vae_wgpu::kernels::matmul::Tile;
use vae_wgpu::kernels::philox::{Philox, stream};
use vae_wgpu::model::ModelConfig;
use vae_wgpu::model::net::Net;
use vae_wgpu::perf::bench::{self, Product};
use vae_wgpu::perf::profile;
use vae_wgpu::training::trainer::Trainer;
use vae_wgpu::{Error, Result};

use super::args::{BenchModel, GpuArgs};

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
fn bench_net(gpu: &Gpu, m: &BenchModel, train: &Split) -> Result<Net> {
    let model = ModelConfig::new(train.pixels() as u32, m.hidden, m.latent)?;
    Net::new(gpu, model, &model.init(1))
}

fn bench_trainer<'g>(gpu: &'g Gpu, net: &'g Net, batch: u32, train: &Split) -> Result<Trainer<'g>> {
    Trainer::new(
        gpu,
        net,
        bench::bench_config(net.config, batch, train.n),
        train,
    )
}

pub fn epoch(
    args: &GpuArgs,
    m: &BenchModel,
    batches: &[u32],
    warmup: u32,
    reps: u32,
) -> Result<()> {
    let gpu = Gpu::new(args.into())?;
    let train = bench_data(m);
    println!(
        "epoch benchmark on {} ({} training examples, {}-{}-{})",
        gpu.info,
        train.n,
        train.pixels(),
        m.hidden,
        m.latent
    );
    println!(
        "{:>6} {:>12} {:>14} {:>6}  runs (ms)",
        "batch", "median ms", "samples/s", "reps"
    );
    let net = bench_net(&gpu, m, &train)?;
    for &b in batches {
        let mut trainer = bench_trainer(&gpu, &net, b, &train)?;
        let row = bench::epoch_bench(&mut trainer, warmup, reps)?;
        let runs: Vec<String> = row.runs.iter().map(|r| format!("{r:.1}")).collect();
        println!(
            "{:>6} {:>12.1} {:>14.0} {:>6}  {}",
            row.batch,
            row.median_ms,
            row.samples_per_second,
            reps,
            runs.join(" ")
        );
    }
    Ok(())
}

/// Every matmul of a training step of `m`'s model at its batch size, each with every tile, and a square.
pub fn matmul(args: &GpuArgs, m: &BenchModel, square: u32, reps: u32, runs: u32) -> Result<()> {
    let gpu = Gpu::new(args.into())?;
    let train = bench_data(&BenchModel {
        train_samples: Some(m.batch_size as usize),
        ..m.clone()
    });
    let net = bench_net(&gpu, m, &train)?;
    let trainer = bench_trainer(&gpu, &net, m.batch_size, &train)?;
    let mut products = bench::step_products(&trainer, m.batch_size);
    if square > 0 {
        products.push(Product {
            name: format!("square{square}"),
            layout: Layout::NT,
            epilogue: vae_wgpu::kernels::contract::EpilogueKind::None,
            shape: (square, square, square),
        });
    }
    println!("matmul on {}", gpu.info);
    println!(
        "the {} products of a batch-{} training step of {}-{}-{}{} (tile * = the one this adapter uses for the shape)",
        products.len() - (square > 0) as usize,
        m.batch_size,
        train.pixels(),
        m.hidden,
        m.latent,
        if square > 0 { ", then a square" } else { "" }
    );
    println!(
        "{:<18} {:<6} {:<6} {:<10} {:>18} {:>10} {:>10} {:>9}",
        "kernel", "tile", "layout", "epilogue", "m×n×k", "median µs", "GFLOP/s", "err/bound"
    );
    for product in &products {
        let (pm, pn, pk) = product.shape;
        let big = pm as u64 * pn as u64 * pk as u64 > 1 << 30;
        for tile in [Tile::T64, Tile::T128] {
            let r = if big { 2 } else { reps };
            let row = bench::matmul_bench(&gpu, tile, product, r, runs)?;
            let chosen = tile == Tile::for_shape(&gpu, pm, pn);
            println!(
                "{:<18} {:<6} {:<6} {:<10} {:>18} {:>10.1} {:>10.2} {:>9.3}",
                product.name,
                format!("{}{}", tile.size(), if chosen { "*" } else { "" }),
                format!("{:?}", product.layout),
                format!("{:?}", product.epilogue),
                format!("{pm}×{pn}×{pk}"),
                row.median_us,
                row.gflops,
                row.error_ratio
            );
        }
    }
    Ok(())
}

pub fn profile(
    args: &GpuArgs,
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
        ..args.into()
    })?;
    let train = bench_data(m);
    let net = bench_net(&gpu, m, &train)?;
    let mut trainer = bench_trainer(&gpu, &net, m.batch_size, &train)?;
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
        println!(
            "{:<20} {:>6} {:>10} {:>10} {:>7} {:>9} {:>8}",
            "kernel", "calls", "mean µs", "median µs", "share", "GFLOP/s", "GB/s"
        );
        for k in &p.kernels {
            let gf = if k.gflops > 0.0 {
                format!("{:.2}", k.gflops)
            } else {
                "-".into()
            };
            println!(
                "{:<20} {:>6} {:>10.1} {:>10.1} {:>6.1}% {:>9} {:>8.2}",
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
    if let Some(g) = p.gpu_step_us {
        println!("GPU time per step (sum of kernels, one timed pass each): {g:.1} µs");
    }
    println!(
        "wall-clock per step (recorded back to back in one pass, as training does): {:.1} µs",
        p.wall_step_us
    );
    Ok(())
}
