//! reparameterization: z = μ + ε·exp(½·log σ²) with ε from Philox (`shaders/reparam.wgsl`), and the raw
//! generator for tests (`shaders/philox_words.wgsl`). The backward is fused with the KL term: see
//! [`super::loss::kl_backward`].

use super::accuracy::{COS_ABS, FLUSH, SQRT, U, log_abs};
use super::contract::{PhiloxWordsParams, ReparamParams};
use super::{PHILOX, REPARAM, StepTable, WG, check_room, grid};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::{Access, Dispatch, KernelSpec};
use crate::kernels::philox;

/// Records z = μ + ε·σ for `rows` rows of `latent` dimensions. `heads` holds μ | log σ² side by side per row;
/// ε is written to `eps` for the backward pass. ε of element i is drawn from counter
/// (i, step.rng_step, `stream`, 0) under the key of `seed`.
#[allow(clippy::too_many_arguments)]
pub fn reparam(
    gpu: &Gpu,
    label: &str,
    heads: &wgpu::Buffer,
    z: &wgpu::Buffer,
    eps: &wgpu::Buffer,
    (rows, latent): (u32, u32),
    seed: u64,
    stream: u32,
    step: &StepTable,
) -> Result<Dispatch> {
    let n = rows as u64 * latent as u64;
    if n == 0 {
        return Err(Error::shape(
            "reparam",
            format!("{label}: empty ({rows}×{latent})"),
        ));
    }
    for (what, buf, elems) in [("heads", heads, 2 * n), ("z", z, n), ("eps", eps, n)] {
        check_room("reparam", label, what, buf, 0, elems)?;
    }
    let [key_lo, key_hi] = philox::key(seed);
    let spec = KernelSpec {
        module: &REPARAM,
        entry: "reparam_forward",
        constants: vec![],
        storage: &[Access::Read, Access::ReadWrite, Access::ReadWrite],
        uses_rows: true,
    };
    let params = ReparamParams {
        rows,
        latent,
        key_lo,
        key_hi,
        stream,
        ..Default::default()
    };
    gpu.dispatch(
        label,
        &spec,
        &params,
        &[heads, z, eps],
        grid(n, WG),
        Some(&step.rows),
    )
    .map(|d| d.with_work(4.0 * n as f64, 16.0 * n as f64))
}

/// CPU reference: (z, ε) for the same counters, ε in f64 rounded once, z = μ + ε·exp(½·log σ²) in f64.
pub fn reparam_cpu(
    heads: &[f32],
    (rows, latent): (usize, usize),
    seed: u64,
    rng_step: u32,
    stream: u32,
) -> (Vec<f32>, Vec<f32>) {
    let key = philox::key(seed);
    let mut z = Vec::with_capacity(rows * latent);
    let mut eps = Vec::with_capacity(rows * latent);
    for r in 0..rows {
        for j in 0..latent {
            let i = (r * latent + j) as u32;
            let e = philox::normal_at(key, i, rng_step, stream);
            let mu = heads[r * 2 * latent + j] as f64;
            let log_var = heads[r * 2 * latent + latent + j] as f64;
            z.push((mu + e * (0.5 * log_var).exp()) as f32);
            eps.push(e as f32);
        }
    }
    (z, eps)
}

/// Records the raw generator on `n` counters (4 u32 each): 8 words per counter into `words`, the four outputs
/// then the bits of their uniforms. For tests that compare the GPU with [`crate::kernels::philox`] bit for bit.
pub fn philox_words(
    gpu: &Gpu,
    counters: &wgpu::Buffer,
    words: &wgpu::Buffer,
    n: u32,
    key: [u32; 2],
) -> Result<Dispatch> {
    // In 4-byte words: 4 per counter in, 8 per counter out.
    check_room(
        "philox_words",
        "philox_words",
        "counters",
        counters,
        0,
        4 * n as u64,
    )?;
    check_room(
        "philox_words",
        "philox_words",
        "words",
        words,
        0,
        8 * n as u64,
    )?;
    let spec = KernelSpec {
        module: &PHILOX,
        entry: "philox_words",
        constants: vec![],
        storage: &[Access::Read, Access::ReadWrite],
        uses_rows: false,
    };
    let params = PhiloxWordsParams {
        n,
        key_lo: key[0],
        key_hi: key[1],
        ..Default::default()
    };
    gpu.dispatch(
        "philox_words",
        &spec,
        &params,
        &[counters, words],
        [n.div_ceil(WG).max(1), 1, 1],
        None,
    )
}

/// The error WGSL's accuracy rules allow a Box–Muller normal `philox_normal(w0, w1)` (philox.wgsl), computed
/// from the exact uniforms of the two words: log (3 ULP, or 2⁻²¹ absolute near 1) and the ×−2 give the radius
/// √(−2 ln u0) (sqrt inherits 1 / inverseSqrt's error and halves the radicand's); the angle π·(2u1 − 1) carries
/// π's f32 rounding and one product; cos is within 2⁻¹¹ absolute on [−π, π]; the last product rounds.
pub fn normal_error(w0: u32, w1: u32) -> f64 {
    let (u0, u1) = (philox::uniform(w0) as f64, philox::uniform(w1) as f64);
    let radicand = -2.0 * u0.ln();
    let radius = radicand.sqrt();
    let radius_rel = 0.5 * (log_abs(u0) / u0.ln().abs() + U) + SQRT;
    let pi_f32 = std::f32::consts::PI as f64;
    let angle = std::f64::consts::PI * (2.0 * u1 - 1.0);
    let angle_err =
        (pi_f32 - std::f64::consts::PI).abs() * (2.0 * u1 - 1.0).abs() + U * angle.abs();
    let c = angle.cos();
    radius * (COS_ABS + angle_err) + c.abs() * radius * radius_rel + U * (radius * c).abs() + FLUSH
}
