//! Benchmarks: correctness first (each kernel is checked against its CPU reference before it is timed), then
//! warm-up, repetitions and the median. Wall-clock over many back-to-back dispatches in one submission, so
//! per-submit overhead is amortized; `vae profile` has per-kernel GPU timestamps. The matmuls benchmarked are
//! those of the real step plan ([`step_products`]).

use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::matmul::{
    Epilogue, EpilogueKind, Layout, Operand, Tile, error_bound, flops, matmul_cpu, matmul_tiled,
};
use crate::kernels::philox::{Philox, stream};
use crate::model::ModelConfig;
use crate::training::trainer::{TrainConfig, Trainer};

/// One matmul of a training step, as its dispatch describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Product {
    /// The dispatch's label, e.g. `fc1.forward`.
    pub name: String,
    pub layout: Layout,
    pub epilogue: EpilogueKind,
    /// (m, n, k).
    pub shape: (u32, u32, u32),
}

/// The matmuls of the plan of one training step of `rows` examples, in order, read from its dispatches.
pub fn step_products(trainer: &Trainer, rows: u32) -> Vec<Product> {
    trainer
        .step_plan(rows)
        .iter()
        .filter_map(|d| {
            let w = d
                .workload
                .filter(|w| w.family == crate::kernels::MATMUL.name)?;
            Some(Product {
                name: d.label.clone(),
                layout: Layout::from_code(w.codes[0])?,
                epilogue: EpilogueKind::from_code(w.codes[1])?,
                shape: (w.dims[0], w.dims[1], w.dims[2]),
            })
        })
        .collect()
}

/// One timed matmul.
#[derive(Clone, Debug)]
pub struct MatmulRow {
    pub product: Product,
    pub tile: Tile,
    /// Largest |gpu − cpu| divided by its error bound γ_k·Σ|a||b| (≤ 1 passes).
    pub error_ratio: f64,
    pub median_us: f64,
    pub gflops: f64,
}

/// Times `product` with `tile`: checks it against the CPU reference (on a sample of rows for large shapes), then
/// runs `reps` dispatches per submission, `runs` times after one warm-up, and reports the median per dispatch.
pub fn matmul_bench(
    gpu: &Gpu,
    tile: Tile,
    product: &Product,
    reps: u32,
    runs: u32,
) -> Result<MatmulRow> {
    let (m, n, k) = product.shape;
    let (mu, nu, ku) = (m as usize, n as usize, k as usize);
    let name = product.name.as_str();
    let mut rng = Philox::new(42, stream::TEST_INPUT);
    let mut random = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.range(-1.0, 1.0)).collect() };
    let (a, b) = (random(mu * ku), random(ku * nu));
    // The epilogue's operand: a bias of n, or a ReLU mask of m × n (half of it zero).
    let aux = match product.epilogue {
        EpilogueKind::Bias | EpilogueKind::BiasRelu => random(nu),
        EpilogueKind::ReluMask => random(mu * nu),
        EpilogueKind::None | EpilogueKind::BiasGrad => vec![0.0],
    };
    let a_buf = gpu.storage_init(&format!("{name}.a"), &a)?;
    let b_buf = gpu.storage_init(&format!("{name}.b"), &b)?;
    let aux_buf = gpu.storage_init(&format!("{name}.aux"), &aux)?;
    // C, then the bias gradient's m elements after it.
    let c_buf = gpu.storage::<f32>(&format!("{name}.c"), mu * nu + mu)?;
    gpu.fill(&c_buf, f32::NAN);
    let aux_op = Operand::from(&aux_buf);
    let epilogue = match product.epilogue {
        EpilogueKind::None => Epilogue::None,
        EpilogueKind::Bias => Epilogue::Bias(aux_op),
        EpilogueKind::BiasRelu => Epilogue::BiasRelu(aux_op),
        EpilogueKind::ReluMask => Epilogue::ReluMask(aux_op),
        EpilogueKind::BiasGrad => Epilogue::BiasGrad { offset: mu * nu },
    };
    let layout = product.layout;
    let d = matmul_tiled(
        gpu,
        tile,
        name,
        layout,
        (m, n, k),
        (&a_buf).into(),
        (&b_buf).into(),
        (&c_buf).into(),
        epilogue,
    )?;
    gpu.submit_pass(name, |pass| d.record(pass, 0))?;
    let got: Vec<f32> = gpu.read(&c_buf, 0, mu * nu)?;

    // Check a sample of rows (all of them for small shapes): the CPU reference is O(mnk) in f64.
    let rows: Vec<usize> = (0..mu).step_by((mu / 64).max(1)).collect();
    let pick_rows = |v: &[f32], cols: usize, transposed: bool| -> Vec<f32> {
        // The rows of a (rows_of, cols) matrix used by `rows`, in the layout's storage order.
        if transposed {
            (0..cols)
                .flat_map(|kk| rows.iter().map(move |&i| v[kk * mu + i]))
                .collect()
        } else {
            rows.iter()
                .flat_map(|&i| v[i * cols..(i + 1) * cols].iter().copied())
                .collect()
        }
    };
    let a_rows = pick_rows(&a, ku, layout == Layout::TN);
    let mask_rows = pick_rows(&aux, nu, false);
    let cpu_epilogue = match product.epilogue {
        EpilogueKind::Bias => Epilogue::Bias(aux.as_slice()),
        EpilogueKind::BiasRelu => Epilogue::BiasRelu(aux.as_slice()),
        EpilogueKind::ReluMask => Epilogue::ReluMask(mask_rows.as_slice()),
        _ => Epilogue::None,
    };
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let sub = (rows.len(), nu, ku);
    let want = matmul_cpu(layout, sub, &a_rows, &b, cpu_epilogue);
    let bound = matmul_cpu(layout, sub, &abs(&a_rows), &abs(&b), Epilogue::None);
    let gamma = error_bound(ku);
    let bias_abs = |j: usize| match product.epilogue {
        EpilogueKind::Bias | EpilogueKind::BiasRelu => aux[j].abs() as f64,
        _ => 0.0,
    };
    let mut error_ratio = 0f64;
    for (r, &i) in rows.iter().enumerate() {
        for j in 0..nu {
            let g = got[i * nu + j] as f64;
            let tol = gamma * (bound[r * nu + j] as f64 + bias_abs(j));
            let e = (g - want[r * nu + j] as f64).abs() / tol.max(1e-30);
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
        product: product.clone(),
        tile,
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
