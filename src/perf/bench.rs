//! Benchmarks: correctness first (each kernel is checked against its CPU reference before it is timed), then
//! warm-up, repetitions and the median. Wall-clock over many back-to-back dispatches in one submission, so
//! per-submit overhead is amortized; `vae profile` has per-kernel GPU timestamps.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::matmul::{
    Epilogue, EpilogueCpu, Layout, Tile, flops, matmul_cpu, matmul_tiled,
};
use crate::kernels::philox::{Philox, stream};

/// One timed matmul shape.
#[derive(Clone, Debug)]
pub struct MatmulRow {
    pub name: String,
    pub tile: Tile,
    pub layout: Layout,
    pub shape: (u32, u32, u32),
    /// Largest |gpu − cpu| divided by its error bound γ_k·Σ|a||b| (≤ 1 passes).
    pub error_ratio: f64,
    pub median_us: f64,
    pub gflops: f64,
}

/// The products of one training step of the 784-`hidden`-`latent` model at batch `batch`, and a large square.
pub fn model_shapes(
    batch: u32,
    hidden: u32,
    latent: u32,
    pixels: u32,
) -> Vec<(String, Layout, (u32, u32, u32))> {
    vec![
        ("fc1.forward".into(), Layout::NT, (batch, hidden, pixels)),
        (
            "fc1.weight_grad".into(),
            Layout::TN,
            (hidden, pixels, batch),
        ),
        (
            "heads.forward".into(),
            Layout::NT,
            (batch, 2 * latent, hidden),
        ),
        (
            "heads.input_grad".into(),
            Layout::NN,
            (batch, hidden, 2 * latent),
        ),
        ("fc3.forward".into(), Layout::NT, (batch, hidden, latent)),
        ("fc4.forward".into(), Layout::NT, (batch, pixels, hidden)),
        ("fc4.input_grad".into(), Layout::NN, (batch, hidden, pixels)),
        (
            "fc4.weight_grad".into(),
            Layout::TN,
            (pixels, hidden, batch),
        ),
    ]
}

/// Times C = A·B at `shape`: checks it against the CPU reference (on a sample of rows for large shapes), then
/// runs `reps` dispatches per submission, `runs` times after one warm-up, and reports the median per dispatch.
pub fn matmul_bench(
    gpu: &Gpu,
    tile: Tile,
    name: &str,
    layout: Layout,
    (m, n, k): (u32, u32, u32),
    reps: u32,
    runs: u32,
) -> Result<MatmulRow> {
    let (mu, nu, ku) = (m as usize, n as usize, k as usize);
    let mut rng = Philox::new(42, stream::TEST_INPUT);
    let a: Vec<f32> = (0..mu * ku).map(|_| rng.range(-1.0, 1.0)).collect();
    let b: Vec<f32> = (0..ku * nu).map(|_| rng.range(-1.0, 1.0)).collect();
    let a_buf = gpu.storage_init(&format!("{name}.a"), &a)?;
    let b_buf = gpu.storage_init(&format!("{name}.b"), &b)?;
    let c_buf = gpu.storage::<f32>(&format!("{name}.c"), mu * nu)?;
    gpu.fill(&c_buf, f32::NAN);
    let d = matmul_tiled(
        gpu,
        tile,
        name,
        layout,
        (m, n, k),
        (&a_buf).into(),
        (&b_buf).into(),
        (&c_buf).into(),
        Epilogue::None,
    )?;
    gpu.submit_pass(name, |pass| d.record(pass, 0))?;
    let got: Vec<f32> = gpu.read(&c_buf, 0, mu * nu)?;

    // Check a sample of rows (all of them for small shapes): the CPU reference is O(mnk) in f64.
    let rows: Vec<usize> = (0..mu).step_by((mu / 64).max(1)).collect();
    let pick = |v: &[f32], rows_of: usize, cols: usize, tr: bool| -> Vec<f32> {
        // The rows of A used by `rows`, in the layout's storage order.
        if tr {
            (0..cols)
                .flat_map(|kk| rows.iter().map(move |&i| v[kk * rows_of + i]))
                .collect()
        } else {
            rows.iter()
                .flat_map(|&i| v[i * cols..(i + 1) * cols].iter().copied())
                .collect()
        }
    };
    let a_rows = pick(&a, mu, ku, layout == Layout::TN);
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let sub = (rows.len(), nu, ku);
    let want = matmul_cpu(layout, sub, &a_rows, &b, EpilogueCpu::None);
    let bound = matmul_cpu(layout, sub, &abs(&a_rows), &abs(&b), EpilogueCpu::None);
    let u = 1.0 / 16_777_216.0;
    let gamma = ku as f64 * u / (1.0 - ku as f64 * u) + 2.0 * u;
    let mut error_ratio = 0f64;
    for (r, &i) in rows.iter().enumerate() {
        for j in 0..nu {
            let g = got[i * nu + j] as f64;
            let e =
                (g - want[r * nu + j] as f64).abs() / (gamma * bound[r * nu + j] as f64).max(1e-30);
            error_ratio = error_ratio.max(if g.is_nan() { f64::INFINITY } else { e });
        }
    }
    if error_ratio > 1.0 {
        return Err(Error::shape(
            "matmul benchmark",
            format!(
                "{name}: GPU result differs from the CPU reference ({error_ratio:.1}× the error bound); not timing a wrong kernel"
            ),
        ));
    }

    let mut times = Vec::new();
    for run in 0..=runs {
        let start = Instant::now();
        gpu.submit_pass(name, |pass| {
            for _ in 0..reps {
                d.record(pass, 0);
            }
        })?;
        gpu.wait()?;
        if run > 0 {
            times.push(start.elapsed().as_secs_f64() / reps as f64);
        }
    }
    let median = median(&mut times);
    Ok(MatmulRow {
        name: name.into(),
        tile,
        layout,
        shape: (m, n, k),
        error_ratio,
        median_us: median * 1e6,
        gflops: flops(m, n, k) / median / 1e9,
    })
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// One row of the epoch benchmark.
#[derive(Clone, Debug)]
pub struct EpochRow {
    pub batch: u32,
    pub samples: u32,
    pub median_ms: f64,
    pub samples_per_second: f64,
    pub runs: Vec<f64>,
}

/// Times whole training epochs (as `vae train` runs them, losses read back once per epoch): `warmup` untimed
/// epochs, then `reps` timed ones; reports the median.
pub fn epoch_bench(
    trainer: &mut crate::training::trainer::Trainer,
    warmup: u32,
    reps: u32,
) -> Result<EpochRow> {
    let mut runs = Vec::new();
    for e in 0..warmup + reps {
        let start = Instant::now();
        trainer.train_epoch(e + 1, |_, _| {})?;
        trainer.gpu.wait()?;
        if e >= warmup {
            runs.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut sorted = runs.clone();
    let median_ms = median(&mut sorted);
    Ok(EpochRow {
        batch: trainer.config.batch,
        samples: trainer.n_train(),
        median_ms,
        samples_per_second: trainer.n_train() as f64 / (median_ms / 1e3),
        runs,
    })
}
