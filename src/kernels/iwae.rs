//! iwae: per-sample importance log-weights and their stable log-mean-exp per image (`shaders/iwae.wgsl`).

use super::accuracy::{FLUSH, U, exp_rel, gamma, log_abs, strided_tree_additions};
use super::contract::{IwaeParams, WG};
use super::loss::bce_term_error;
use super::{IWAE, Reduction, StepTable, check_room};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::gpu::{Access, Dispatch, KernelSpec};

/// The buffers of one chunk of sample rows, as the forward pass leaves them.
pub struct Rows<'a> {
    pub logits: &'a wgpu::Buffer,
    pub x: &'a wgpu::Buffer,
    pub heads: &'a wgpu::Buffer,
    pub z: &'a wgpu::Buffer,
    pub eps: &'a wgpu::Buffer,
}

/// Records log w for `rows` sample rows into `logw[step.batch_offset ..]`, where `batch_offset` comes from the
/// step-table row the dispatch is recorded with (so one dispatch serves every chunk of sample rows). `logw` must
/// hold every offset the table's rows give plus `rows`; the caller that writes the rows checks that.
pub fn iw_log_weights(
    gpu: &Gpu,
    rows_in: &Rows,
    (rows, pixels, latent): (u32, u32, u32),
    logw: &wgpu::Buffer,
    step: &StepTable,
) -> Result<Dispatch> {
    let (r, p, l) = (rows as u64, pixels as u64, latent as u64);
    let label = "iwae.log_weights";
    for (what, buf, elems) in [
        ("logits", rows_in.logits, r * p),
        ("x", rows_in.x, r * p),
        ("heads", rows_in.heads, 2 * r * l),
        ("z", rows_in.z, r * l),
        ("eps", rows_in.eps, r * l),
        ("log-weights", logw, r),
    ] {
        check_room("iwae", label, what, buf, 0, elems)?;
    }
    let spec = KernelSpec {
        module: Reduction::for_gpu(gpu).module(&IWAE),
        entry: "iw_log_weights",
        constants: vec![],
        storage: &[
            Access::Read,
            Access::Read,
            Access::Read,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
        ],
        uses_rows: true,
    };
    let params = IwaeParams {
        pixels,
        latent,
        ..Default::default()
    };
    let buffers = [
        rows_in.logits,
        rows_in.x,
        rows_in.heads,
        rows_in.z,
        rows_in.eps,
        logw,
    ];
    gpu.dispatch(
        label,
        &spec,
        &params,
        &buffers,
        [rows, 1, 1],
        Some(&step.rows),
    )
}

/// Records `estimate[step.batch_offset + i] = log mean exp(logw[i·samples .. (i+1)·samples])` for `images`
/// images, `batch_offset` from the step-table row the dispatch is recorded with.
pub fn iw_logsumexp(
    gpu: &Gpu,
    logw: &wgpu::Buffer,
    (images, samples): (u32, u32),
    estimate: &wgpu::Buffer,
    step: &StepTable,
) -> Result<Dispatch> {
    let label = "iwae.logsumexp";
    let n = images as u64 * samples as u64;
    check_room("iwae", label, "log-weights", logw, 0, n)?;
    check_room("iwae", label, "estimate", estimate, 0, images as u64)?;
    let spec = KernelSpec {
        module: Reduction::for_gpu(gpu).module(&IWAE),
        entry: "iw_logsumexp",
        constants: vec![],
        storage: &[Access::Read, Access::ReadWrite],
        uses_rows: true,
    };
    let params = IwaeParams {
        samples,
        ..Default::default()
    };
    let buffers = [logw, estimate];
    gpu.dispatch(
        label,
        &spec,
        &params,
        &buffers,
        [images, 1, 1],
        Some(&step.rows),
    )
}

/// CPU reference of one log-weight, in f64.
pub fn iw_log_weight_cpu(logits: &[f32], x: &[f32], heads: &[f32], z: &[f32], eps: &[f32]) -> f64 {
    let latent = z.len();
    let bce: f64 = logits
        .iter()
        .zip(x)
        .map(|(&l, &x)| {
            let (l, x) = (l as f64, x as f64);
            l.max(0.0) - l * x + (-l.abs()).exp().ln_1p()
        })
        .sum();
    let lat: f64 = (0..latent)
        .map(|j| 0.5 * ((eps[j] as f64).powi(2) - (z[j] as f64).powi(2) + heads[latent + j] as f64))
        .sum();
    lat - bce
}

/// CPU reference: log mean exp, stable, in f64.
pub fn log_mean_exp_cpu(w: &[f64]) -> f64 {
    let top = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    top + (w.iter().map(|v| (v - top).exp()).sum::<f64>() / w.len() as f64).ln()
}

/// The error WGSL's accuracy rules allow one log-weight as `iw_log_weights` computes it: each pixel's BCE term
/// ([`bce_term_error`]), each latent term ½(ε² − z² + log σ²) (two products and two additions), their sums over
/// the workgroup's strided lanes and tree, and the final subtraction. Arguments as [`iw_log_weight_cpu`]'s.
pub fn log_weight_error(logits: &[f32], x: &[f32], heads: &[f32], z: &[f32], eps: &[f32]) -> f64 {
    let latent = z.len();
    let (mut err, mut sum_abs) = (0f64, 0f64);
    for (&l, &xv) in logits.iter().zip(x) {
        err += bce_term_error(l, xv);
        let (l, xv) = (l as f64, xv as f64);
        sum_abs += l.max(0.0) - l * xv + (-l.abs()).exp().ln_1p();
    }
    for j in 0..latent {
        let (e, zz, lv) = (eps[j] as f64, z[j] as f64, heads[latent + j] as f64);
        err += 0.5 * U * (e * e + zz * zz) + U * (e * e + zz * zz + lv.abs()) + FLUSH;
        sum_abs += 0.5 * (e * e - zz * zz + lv).abs();
    }
    let per_lane = |n: usize| n.div_ceil(WG as usize).max(1);
    let additions = per_lane(logits.len()) + per_lane(latent) - 1 + WG.ilog2() as usize;
    err + gamma(additions) * sum_abs + U * sum_abs
}

/// The error WGSL allows `iw_logsumexp`'s log-mean-exp of `w`: each `exp(w − top)` (the subtraction rounds,
/// exp is within 3 + 2|w − top| ULP), their strided-and-tree sum, both logs, the last two additions.
pub fn log_mean_exp_error(w: &[f64]) -> f64 {
    let top = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let (mut total, mut total_err) = (0f64, 0f64);
    for &v in w {
        let t = (v - top).exp();
        total += t;
        total_err += t * (U * (v - top).abs() + exp_rel(v - top)) + FLUSH;
    }
    let additions = strided_tree_additions(w.len() as u64, WG as u64, WG);
    let rel = total_err / total + gamma(additions);
    let result = top + (total / w.len() as f64).ln();
    rel + log_abs(total) + log_abs(w.len() as f64) + 2.0 * U * (top.abs() + result.abs())
}
