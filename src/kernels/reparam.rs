//! reparameterization: z = μ + ε·exp(½·log σ²) with ε from Philox, fused with the KL term's value and its own
//! part of the heads' gradient (`shaders/reparam.wgsl`), and the raw generator for tests
//! (`shaders/philox_words.wgsl`). ∂z's part of the heads' gradient is added by the fc3 input gradient's epilogue
//! ([`super::matmul::Epilogue::KlGrad`]); together they compute what [`super::loss::kl_backward_cpu`] specifies.

use super::accuracy::{COS_ABS, FLUSH, SQRT, U, log_abs};
use super::contract::{PhiloxWordsParams, ReparamParams};
use super::loss::PartialsAt;
use super::{Models, PHILOX, REPARAM, Reduction, StepTable, WG, check_room};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::{Access, Dispatch, KernelSpec};
use crate::kernels::philox;

/// What the reparameterization writes: z and ε (rows, latent); in training also the KL's part of the heads'
/// gradient `dheads` (rows, 2·latent) and ½·ε·σ in `coef` (rows, latent), bound either way.
#[derive(Clone, Copy, Debug)]
pub struct ReparamOut<'a> {
    pub z: &'a wgpu::Buffer,
    pub eps: &'a wgpu::Buffer,
    pub dheads: &'a wgpu::Buffer,
    pub coef: &'a wgpu::Buffer,
}

/// Records z = μ + ε·σ for `rows` rows of `latent` dimensions, and the KL term's partials at `kl`. `heads` holds
/// μ | log σ² side by side per row; ε is drawn from counter (i, step.rng_step, `stream`, 0) under the key of
/// `seed` for element i. With `grad`, also the KL's gradient w·μ | w·½·(σ² − 1) (w = the step's `kl_weight`) and
/// ½·ε·σ, for the fc3 input gradient's [`super::matmul::Epilogue::KlGrad`] to finish.
#[allow(clippy::too_many_arguments)]
pub fn reparam(
    gpu: &Gpu,
    label: &str,
    heads: &wgpu::Buffer,
    out: ReparamOut,
    kl: PartialsAt,
    grad: bool,
    shape: (u32, u32),
    noise: (u64, u32),
    step: &StepTable,
) -> Result<Dispatch> {
    reparam_models(
        gpu,
        label,
        (heads, out),
        kl,
        (grad, shape, noise),
        step,
        None,
        Models::ONE,
    )
}

/// The key of the choice between [`reparam_decode`] ("fused") and the reparameterization and fc3's forward pass
/// as two dispatches ("apart") in the device's kernel choices (see [`super::fused`]).
pub const DECODE_KEY: &str = "reparam+fc3";

/// Whether the step computes fc3's forward pass in the reparameterization's dispatch ([`super::fused`]): on the
/// H200 11.1 µs fused against 6.9 + 6.2 apart; on lavapipe 13.9 ms against 2.3 ms, the fused kernel's per-output
/// loop gathering W3 along rows where the 128-tile matmul reuses every load (BENCHMARKS.md).
pub fn decode_fused(gpu: &Gpu) -> bool {
    super::fused(gpu, DECODE_KEY)
}

/// The decoder's first layer as [`reparam_decode`] computes it: h (rows, hidden) = max(z·Wᵀ + b, 0) with W
/// (hidden, latent) at element `weight` of `params` and b (hidden) at `bias`.
#[derive(Clone, Copy, Debug)]
pub struct Decode<'a> {
    pub params: &'a wgpu::Buffer,
    pub weight: usize,
    pub bias: usize,
    pub hidden: u32,
    pub h: &'a wgpu::Buffer,
}

/// [`reparam`] and the decoder's first layer in one dispatch: each workgroup draws whole rows of z, then computes
/// those rows of `decode.h` = max(z·Wᵀ + b, 0) (fc3.forward, specified by [`super::matmul::matmul_cpu`] with
/// the NT layout and a bias-and-ReLU epilogue). `kl.groups` workgroups take the rows in turn: up to one per row.
#[allow(clippy::too_many_arguments)]
pub fn reparam_decode(
    gpu: &Gpu,
    label: &str,
    heads: &wgpu::Buffer,
    out: ReparamOut,
    kl: PartialsAt,
    grad: bool,
    shape: (u32, u32),
    noise: (u64, u32),
    step: &StepTable,
    decode: Decode,
) -> Result<Dispatch> {
    reparam_models(
        gpu,
        label,
        (heads, out),
        kl,
        (grad, shape, noise),
        step,
        Some(decode),
        Models::ONE,
    )
}

/// [`reparam`] (`decode` None) or [`reparam_decode`] for each of `models` models in one dispatch, the grid's z
/// the model: model k's heads, outputs, decoder weights and decoder output at its offsets ([`Models`]), its
/// partials in its own slot of the step's, and with `models.per_model` its KL weight and noise key from the step
/// table's model rows (`noise`'s seed is then unused).
#[allow(clippy::too_many_arguments)]
pub fn reparam_models(
    gpu: &Gpu,
    label: &str,
    (heads, out): (&wgpu::Buffer, ReparamOut),
    kl: PartialsAt,
    (grad, (rows, latent), (seed, stream)): (bool, (u32, u32), (u64, u32)),
    step: &StepTable,
    decode: Option<Decode>,
    models: Models,
) -> Result<Dispatch> {
    models.check("reparam", label, step)?;
    let n = rows as u64 * latent as u64;
    if n == 0 {
        return Err(Error::shape(
            "reparam",
            format!("{label}: empty ({rows}×{latent})"),
        ));
    }
    let ReparamOut {
        z,
        eps,
        dheads,
        coef,
    } = out;
    let grad_n = if grad { n } else { 0 };
    // The last model's copies, `last × stride` past the first's; each model's must not run into the next's.
    let last = models.count as u64 - 1;
    let (zs, hs, ps) = (models.z as u64, models.h as u64, models.params as u64);
    if last > 0 && zs < n {
        return Err(Error::shape(
            "reparam",
            format!("{label}: models {zs} elements apart cannot each hold {n} of z"),
        ));
    }
    for (what, buf, first, elems) in [
        ("heads", heads, 2 * last * zs, 2 * n),
        ("z", z, last * zs, n),
        ("eps", eps, last * zs, n),
        ("heads' gradient", dheads, 2 * last * zs, 2 * grad_n),
        ("½·ε·σ", coef, last * zs, grad_n),
    ] {
        check_room("reparam", label, what, buf, first, elems)?;
    }
    let hidden = decode.map_or(0, |d| d.hidden);
    if let Some(d) = decode {
        let (h, w) = (hidden as u64, latent as u64);
        check_room(
            "reparam",
            label,
            "decoder weight",
            d.params,
            d.weight as u64 + last * ps,
            h * w,
        )?;
        let bias = d.bias as u64 + last * ps;
        check_room("reparam", label, "decoder bias", d.params, bias, h)?;
        let out = rows as u64 * h;
        if last > 0 && hs < out {
            return Err(Error::shape(
                "reparam",
                format!("{label}: models {hs} elements apart cannot each hold {out} of h3"),
            ));
        }
        check_room("reparam", label, "decoder output", d.h, last * hs, out)?;
        if hidden == 0 {
            return Err(Error::shape(
                "reparam",
                format!("{label}: the decoder layer has no outputs"),
            ));
        }
    }
    let groups = kl.check_models(label, models.count)?;
    let [key_lo, key_hi] = philox::key(seed);
    let spec = KernelSpec {
        module: Reduction::for_gpu(gpu).module(&REPARAM),
        entry: if decode.is_some() {
            "reparam_decode"
        } else {
            "reparam_forward"
        },
        constants: vec![("GRAD", grad as u8 as f64)],
        storage: &[
            Access::Read,
            Access::ReadWrite,
            Access::ReadWrite,
            Access::ReadWrite,
            Access::ReadWrite,
            Access::ReadWrite,
            Access::Read,
            Access::ReadWrite,
        ],
        uses_rows: true,
    };
    let u32_of = |what: &str, v: u64| {
        u32::try_from(v).map_err(|_| Error::shape("reparam", format!("{label}: {what} {v}")))
    };
    let params = ReparamParams {
        rows,
        latent,
        key_lo,
        key_hi,
        stream,
        partial_off: kl.offset,
        slot_stride: kl.slot_stride,
        hidden,
        w_off: decode.map_or(0, |d| d.weight as u32),
        b_off: decode.map_or(0, |d| d.bias as u32),
        models: models.count,
        per_model: models.per_model as u32,
        z_stride: u32_of("z's model stride", zs)?,
        h_stride: u32_of("h3's model stride", hs)?,
        param_stride: u32_of("the parameters' model stride", ps)?,
        ..Default::default()
    };
    // Without the decoder, its weights are heads again (never read), and its output a buffer of its own (never
    // written): WebGPU forbids writable bindings that overlap, so it cannot be z again.
    let (weights, h) = match decode {
        Some(d) => (d.params, d.h),
        None => (heads, gpu.unused_storage()?),
    };
    let h_elems = rows as f64 * hidden as f64;
    gpu.dispatch(
        label,
        &spec,
        &params,
        &[heads, z, eps, dheads, coef, kl.buffer, weights, h],
        [groups, 1, models.count],
        Some(&step.rows),
    )
    .map(|d| {
        let m = models.count as f64;
        d.with_work(
            m * (40.0 * n as f64 + 2.0 * h_elems * latent as f64),
            m * ((16.0 + 16.0 * grad_n as f64 / n as f64) * n as f64 + 4.0 * h_elems),
        )
    })
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
