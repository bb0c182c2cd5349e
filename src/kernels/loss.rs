//! loss: BCE-with-logits fused with its gradient (`shaders/loss.wgsl`), summed over the batch into per-workgroup
//! partials for [`super::reduce`]; the KL term's CPU reference and the error bounds of both terms. (The KL term
//! itself is computed by the reparameterization, `shaders/reparam.wgsl`, and fc3's input-gradient epilogue.)

use super::accuracy::{DIV, FLUSH, U, exp_rel, log_abs, strided_tree_additions, sum_error};
use super::contract::{LossParams, MAX_PARTIALS};
use super::{LOSS, Models, Reduction, StepTable, WG, check_room};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::Operand;
use crate::gpu::{Access, Dispatch, KernelSpec};

/// Workgroups (so partials) a loss kernel uses for `n` elements.
pub fn loss_groups(n: u64) -> u32 {
    n.div_ceil(WG as u64).clamp(1, MAX_PARTIALS as u64) as u32
}

/// Where a loss kernel writes its partials: `groups` of them (one per workgroup) at
/// `buffer[step.partial_slot · slot_stride + offset ..]`, the step table's row picking the slot. `groups` is
/// fixed for a workspace (`loss_groups` of its largest batch), so a smaller batch writes the same partials, the
/// extra ones zero, and one reduction fits every batch size.
#[derive(Clone, Copy, Debug)]
pub struct PartialsAt<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u32,
    pub slot_stride: u32,
    pub slots: u32,
    pub groups: u32,
}

impl PartialsAt<'_> {
    /// Fails unless every slot has room for the partials; returns how many there are (the kernel's workgroups).
    pub fn check(&self, label: &str) -> Result<u32> {
        self.check_models(label, 1)
    }

    /// [`PartialsAt::check`] for a batched dispatch of `models` models: step slot s's model k takes slot
    /// s·models + k, so the buffer must hold `slots × models` slots.
    pub fn check_models(&self, label: &str, models: u32) -> Result<u32> {
        let groups = self.groups;
        if groups == 0 || groups > MAX_PARTIALS || self.slots == 0 {
            return Err(Error::shape(
                "loss",
                format!(
                    "{label}: {groups} partials in {} slots; 1 to {MAX_PARTIALS} in at least one",
                    self.slots
                ),
            ));
        }
        let last_slot = (self.slots as u64 * models.max(1) as u64 - 1) * self.slot_stride as u64;
        let first = last_slot + self.offset as u64;
        check_room("loss", label, "partials", self.buffer, first, groups as u64)?;
        Ok(groups)
    }
}

/// Records BCE-with-logits of `logits` against `x` (both (rows, cols), x from its operand's offset); with `grad`,
/// also writes ∂L/∂logits = σ(l) − x to `dlogits` (which must be bound either way). The step table's row picks
/// the partials' slot.
#[allow(clippy::too_many_arguments)]
pub fn bce_logits<'a>(
    gpu: &Gpu,
    label: &str,
    logits: &wgpu::Buffer,
    x: impl Into<Operand<'a>>,
    dlogits: &wgpu::Buffer,
    partials: PartialsAt,
    shape: (u32, u32),
    grad: bool,
    step: &StepTable,
) -> Result<Dispatch> {
    let inputs = (logits, x.into(), dlogits);
    bce_logits_models(
        gpu,
        label,
        inputs,
        partials,
        (shape, grad),
        step,
        Models::ONE,
    )
}

/// [`bce_logits`] for each of `models` models in one dispatch, the grid's z the model: model k's logits and
/// ∂logits `k × models.px` elements on, its images at `x`'s operand (its model stride: 0 where every model reads
/// the same batch), its partials in its own slot of the step's.
pub fn bce_logits_models(
    gpu: &Gpu,
    label: &str,
    (logits, x, dlogits): (&wgpu::Buffer, Operand, &wgpu::Buffer),
    partials: PartialsAt,
    ((rows, cols), grad): ((u32, u32), bool),
    step: &StepTable,
    models: Models,
) -> Result<Dispatch> {
    let n = rows as u64 * cols as u64;
    if n == 0 {
        return Err(Error::shape(
            "loss",
            format!("{label}: empty ({rows}×{cols})"),
        ));
    }
    if models.count == 0 {
        return Err(Error::shape("loss", format!("{label}: zero models")));
    }
    let last = models.count as u64 - 1;
    let (px, xs) = (models.px as u64, x.model_stride as u64);
    if last > 0 && px < n {
        return Err(Error::shape(
            "loss",
            format!("{label}: models {px} elements apart cannot each hold {n} logits"),
        ));
    }
    let x_last = x.offset as u64 + last * xs;
    check_room("loss", label, "logits", logits, last * px, n)?;
    check_room("loss", label, "x", x.buffer, x_last, n)?;
    check_room("loss", label, "dlogits", dlogits, last * px, n)?;
    let groups = partials.check_models(label, models.count)?;
    let spec = KernelSpec {
        module: Reduction::for_gpu(gpu).module(&LOSS),
        entry: "bce_logits",
        constants: vec![("GRAD", grad as u8 as f64)],
        storage: &[
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::ReadWrite,
        ],
        uses_rows: true,
    };
    let u32_of = |what: &str, v: u64| {
        u32::try_from(v).map_err(|_| Error::shape("loss", format!("{label}: {what} {v}")))
    };
    let params = LossParams {
        rows,
        cols,
        partial_off: partials.offset,
        slot_stride: partials.slot_stride,
        x_off: u32_of("x at element", x.offset as u64)?,
        models: models.count,
        logits_stride: u32_of("the logits' model stride", px)?,
        x_stride: u32_of("the images' model stride", xs)?,
    };
    gpu.dispatch(
        label,
        &spec,
        &params,
        &[logits, x.buffer, dlogits, partials.buffer],
        [groups, 1, models.count],
        Some(&step.rows),
    )
    .map(|d| {
        let m = models.count as f64;
        d.with_work(m * 10.0 * n as f64, m * 12.0 * n as f64)
    })
}

/// CPU reference for [`bce_logits`]: the summed loss (f64) and σ(l) − x.
pub fn bce_logits_cpu(logits: &[f32], x: &[f32]) -> (f64, Vec<f32>) {
    let mut loss = 0f64;
    let mut grad = Vec::with_capacity(logits.len());
    for (&l, &x) in logits.iter().zip(x) {
        let (l, x) = (l as f64, x as f64);
        loss += l.max(0.0) - l * x + (-l.abs()).exp().ln_1p();
        grad.push((1.0 / (1.0 + (-l).exp()) - x) as f32);
    }
    (loss, grad)
}

/// CPU reference, the specification of the KL term in a training step: the KL (f64) and the heads' gradients
/// (rows, 2·latent), ∂μ = ∂z + w·μ and ∂log σ² = ½·∂z·ε·σ + w·½·(σ² − 1). On the GPU the reparameterization
/// computes the KL and its own part of the gradient, and fc3's input gradient adds ∂z's part in its epilogue.
pub fn kl_backward_cpu(
    heads: &[f32],
    eps: &[f32],
    dz: &[f32],
    (rows, latent): (usize, usize),
    kl_weight: f32,
) -> (f64, Vec<f32>) {
    let w = kl_weight as f64;
    let mut kl = 0f64;
    let mut dheads = vec![0f32; rows * 2 * latent];
    for r in 0..rows {
        for j in 0..latent {
            let i = r * latent + j;
            let mu_at = r * 2 * latent + j;
            let lv_at = mu_at + latent;
            let (mu, lv) = (heads[mu_at] as f64, heads[lv_at] as f64);
            let var = lv.exp();
            kl += 0.5 * (mu * mu + var - 1.0 - lv);
            let g = dz[i] as f64;
            dheads[mu_at] = (g + w * mu) as f32;
            dheads[lv_at] = (0.5 * g * eps[i] as f64 * var.sqrt() + w * 0.5 * (var - 1.0)) as f32;
        }
    }
    (kl, dheads)
}

/// The error WGSL's accuracy rules allow one pixel's BCE term as `bce_term` (logistic.wgsl) computes it,
/// `max(l, 0) − l·x + log1p_small(exp(−|l|))`: two roundings of the linear part, exp's 3 + 2|l| ULP carried
/// through log1p (slope ≤ 1), the series (eleven roundings of terms ≤ e, truncation below u·e) or `log(1 + e)`
/// (1 + e rounds: u; log: 2⁻²¹ absolute), and the final addition.
///
/// Where x is exactly 0 or 1 (the dataset's black and white pixels, every binarized one) the linear part is
/// exact, fused or not: l·x is 0 or l, so max(l, 0) − l·x is max(l, 0), |l| or 0 with no rounding, and only the
/// final addition rounds (u of a result that is max(l, 0) − l·x + log(1 + e), both parts ≥ 0). What is left is
/// the log1p term's own error, a few u relative to itself in the series branch: this is what lets a test see a
/// wrong series coefficient where the loss is tiny.
pub fn bce_term_error(l: f32, x: f32) -> f64 {
    let (l, x) = (l as f64, x as f64);
    let e = (-l.abs()).exp();
    let (linear, linear_err) = if x == 0.0 || x == 1.0 {
        (l.max(0.0) - l * x, 0.0)
    } else {
        let bound = l.max(0.0) + (l * x).abs();
        (bound, 2.0 * U * bound)
    };
    // The branch is chosen on the computed e, within exp's error of the true one: the series' bound only where
    // every e exp may return is below 1/64; at the edge the log's (the larger) covers either.
    let log1p = if e * (1.0 + exp_rel(l)) < 1.0 / 64.0 {
        11.0 * U * e
    } else {
        U + log_abs(1.0 + e)
    };
    linear_err + exp_rel(l) * e + log1p + U * (linear + e.ln_1p()) + FLUSH
}

/// The error WGSL allows ∂ = σ(l) − x as `bce_logits` computes it: σ from exp (3 + 2|l| ULP), one rounding of
/// 1 + e and a division (2.5 ULP), then the subtraction.
pub fn bce_grad_error(l: f32, x: f32) -> f64 {
    let l = l as f64;
    let e = (-l.abs()).exp();
    let sigma = 1.0 / (1.0 + (-l).exp());
    // For l < 0 σ = e / (1 + e): e's error reaches the numerator too.
    let numerator = if l < 0.0 { exp_rel(l) } else { 0.0 };
    let rel = numerator + exp_rel(l) * e / (1.0 + e) + U + DIV;
    sigma * rel + U * (sigma - x as f64).abs() + FLUSH
}

/// The error WGSL allows one KL term `½(μ² + σ² − 1 − log σ²)` as `reparam_forward` computes it: μ² rounds, σ² = exp
/// (3 + 2|log σ²| ULP), three additions of terms at most μ² + σ² + 1 + |log σ²|.
pub fn kl_term_error(mu: f32, log_var: f32) -> f64 {
    let (mu, lv) = (mu as f64, log_var as f64);
    let var = lv.exp();
    0.5 * (U * mu * mu + exp_rel(lv) * var + 3.0 * U * (mu * mu + var + 1.0 + lv.abs())) + FLUSH
}

/// The error WGSL allows the two head gradients of one latent dimension as the training step computes them, given
/// ∂z with its own error `dz_err`: the reparameterization writes w·μ and w·½·(σ² − 1) (σ² = exp, 3 + 2|log σ²|
/// ULP; each product and σ² − 1 round) and ½·ε·σ (σ = exp(½·log σ²), 3 + |log σ²| ULP; two products round), then
/// the fc3 input gradient's epilogue adds ∂z (one rounding) and ∂z·½·ε·σ (two roundings).
pub fn kl_grad_fused_error(
    mu: f32,
    log_var: f32,
    eps: f32,
    dz: f32,
    dz_err: f64,
    w: f32,
) -> (f64, f64) {
    let (mu, lv, eps, dz, w) = (mu as f64, log_var as f64, eps as f64, dz as f64, w as f64);
    let var = lv.exp();
    let sigma = (0.5 * lv).exp();
    let d_mu = U * (w * mu).abs() + dz_err + U * (dz + w * mu).abs();
    let coef = 0.5 * eps * sigma;
    let a = dz * coef;
    let b = 0.5 * w * (var - 1.0);
    let a_err = a.abs() * (exp_rel(0.5 * lv) + 3.0 * U) + dz_err * coef.abs();
    let b_err = 0.5 * w.abs() * (exp_rel(lv) * var + U * (var - 1.0).abs()) + U * b.abs();
    (d_mu + FLUSH, a_err + b_err + U * (a + b).abs() + FLUSH)
}

/// The error of a loss kernel's partials summed over `n` terms of total magnitude `sum_abs` by `groups`
/// workgroups (each strides its invocations over the terms, then sums a tree of `WG`), on top of the terms' own
/// errors.
pub fn partials_sum_error(n: u64, groups: u32, sum_abs: f64) -> f64 {
    let lanes = WG as u64 * groups as u64;
    sum_error(strided_tree_additions(n, lanes, WG), sum_abs)
}
