//! adam: bias-corrected Adam over one flat parameter buffer in one dispatch (`shaders/adam.wgsl`).

use super::contract::AdamParams;
use super::loss::PartialsAt;
use super::{ADAM, Models, Reduction, StepParams, StepTable, WG, check_room, grid};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::Operand;
use crate::gpu::{Access, Dispatch, KernelSpec};

/// Adam's hyperparameters (PyTorch's defaults with `Default`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

impl AdamConfig {
    /// The step table's Adam fields for 1-based step `t`: lr / (1 − β1ᵗ) and 1 / √(1 − β2ᵗ), computed in f64.
    pub fn step_fields(&self, t: u32) -> (f32, f32) {
        let bc1 = 1.0 - (self.beta1 as f64).powi(t as i32);
        let bc2 = 1.0 - (self.beta2 as f64).powi(t as i32);
        ((self.lr as f64 / bc1) as f32, (1.0 / bc2.sqrt()) as f32)
    }

    /// Fills a step-table row's Adam fields for step `t`.
    pub fn fill(&self, row: &mut StepParams, t: u32) {
        row.t = t;
        (row.adam_step_size, row.adam_inv_sqrt_bc2) = self.step_fields(t);
    }
}

/// Records one Adam step over the first `n` elements of `param`, `grad`, `m` and `v`; the step number comes
/// from the step table row the dispatch is recorded with.
#[allow(clippy::too_many_arguments)]
pub fn adam(
    gpu: &Gpu,
    label: &str,
    config: &AdamConfig,
    param: &wgpu::Buffer,
    grad: &wgpu::Buffer,
    m: &wgpu::Buffer,
    v: &wgpu::Buffer,
    n: u32,
    step: &StepTable,
) -> Result<Dispatch> {
    let state = [param, grad, m, v];
    adam_models(gpu, label, config, (state, n), None, step, Models::ONE)
}

/// Parameters each Adam invocation updates on a GPU, a grid's invocations apart: 137k invocations for the model's
/// 1.1M parameters, about what an H200 holds resident (132 SMs × 2048), each with eight independent loads. On
/// CPU adapters `adam_with_bce`'s grid is [`super::software_grid`] instead, each invocation taking as many as
/// that needs.
pub const ADAM_PER: u32 = 8;

/// The key of the choice between [`adam_with_bce`] ("fused") and Adam and the BCE's value as two dispatches
/// ("apart"); see [`super::fused`].
pub const ADAM_BCE_KEY: &str = "adam+bce";

/// Whether the step's last dispatch also sums the BCE's value ([`super::fused`]): on the H200 8.2 µs fused
/// against 7.8 (adam) + 6.1 (bce) apart (one parameter per invocation). On lavapipe fused is slower, the BCE's
/// workgroup tree being a barrier that llvmpipe makes every workgroup pay for, Adam's too: 36.6 ms against
/// 16.3 + 5.9 apart with one parameter per invocation; on few workgroups ([`super::software_grid`]) 22–33 ms
/// at batch 128 and 28–31 at batch 1, against 15.5 + 11 and 15.5 + 0.3 apart (BENCHMARKS.md).
pub fn adam_bce_fused(gpu: &Gpu) -> bool {
    super::fused(gpu, ADAM_BCE_KEY)
}

/// The step's reconstruction loss as [`adam_with_bce`] sums it: the logits and images (rows, cols) that
/// fc4.forward left (the images at their operand's offset: the step's x slot), and where its partials go.
#[derive(Clone, Copy, Debug)]
pub struct BceValue<'a> {
    pub logits: &'a wgpu::Buffer,
    pub x: Operand<'a>,
    pub shape: (u32, u32),
    pub partials: PartialsAt<'a>,
}

/// [`adam`], and in the same dispatch the BCE of the step's logits against its images: the partials of
/// `bce_logits` (the same loop and tree, so the same value to the bit) at `bce.partials`, in the step's slot. The
/// training step's last dispatch; the BCE's gradient was taken in fc4.forward's epilogue.
#[allow(clippy::too_many_arguments)]
pub fn adam_with_bce(
    gpu: &Gpu,
    label: &str,
    config: &AdamConfig,
    (param, grad, m, v): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
    n: u32,
    bce: BceValue,
    step: &StepTable,
) -> Result<Dispatch> {
    let state = [param, grad, m, v];
    adam_models(gpu, label, config, (state, n), Some(bce), step, Models::ONE)
}

/// [`adam`] (`bce` None) or [`adam_with_bce`] for each of `models` models in one dispatch: their states one
/// after another in each buffer, model k's `n` elements at `k × models.params` (the elements between two models'
/// are padding, which Adam leaves as it is while its gradient is 0), and with `models.per_model` each model's
/// step size from the step table's model rows. The BCE takes its workgroups per model: model k's logits at
/// `k × models.px`, its images at `bce.x`'s model stride.
pub fn adam_models(
    gpu: &Gpu,
    label: &str,
    config: &AdamConfig,
    (state, n): ([&wgpu::Buffer; 4], u32),
    bce: Option<BceValue>,
    step: &StepTable,
    models: Models,
) -> Result<Dispatch> {
    models.check("adam", label, step)?;
    let n_stride = if models.count > 1 { models.params } else { n };
    if n_stride < n {
        return Err(Error::shape(
            "adam",
            format!("{label}: models {n_stride} elements apart cannot each hold {n} parameters"),
        ));
    }
    let total = models.count as u64 * n_stride as u64;
    for (what, b) in ["param", "grad", "m", "v"].into_iter().zip(state) {
        check_room("adam", label, what, b, 0, total)?;
    }
    let mut params = AdamParams {
        n,
        beta1: config.beta1,
        beta2: config.beta2,
        eps: config.eps,
        models: models.count,
        n_stride,
        per_model: models.per_model as u32,
        ..Default::default()
    };
    let mut buffers = state.to_vec();
    // The BCE's workgroups, each one partial, for every model: the grid has at least these.
    let bce_groups = match &bce {
        Some(b) => b.partials.check_models(label, models.count)?,
        None => 0,
    };
    let all_bce_groups = bce_groups * models.count;
    // Few workgroups only where the kernel has a barrier (the BCE's tree): plain Adam on few workgroups of a CPU
    // adapter measured slower (20–31 ms against 15.5 on many).
    params.per = match super::software_grid(gpu).filter(|_| bce.is_some()) {
        Some(g) => total.div_ceil(g.max(all_bce_groups) as u64 * WG as u64) as u32,
        None => ADAM_PER,
    }
    .max(1);
    let invocations = total
        .div_ceil(params.per as u64)
        .max(all_bce_groups as u64 * WG as u64);
    let m = models.count as f64;
    let (mut flops, mut bytes) = (m * 12.0 * n as f64, m * 28.0 * n as f64);
    let u32_of = |what: &str, v: u64| {
        u32::try_from(v).map_err(|_| Error::shape("adam", format!("{label}: {what} {v}")))
    };
    if let Some(b) = bce {
        let (rows, cols) = b.shape;
        let elems = rows as u64 * cols as u64;
        let last = models.count as u64 - 1;
        let (px, xs) = (models.px as u64, b.x.model_stride as u64);
        if last > 0 && px < elems {
            return Err(Error::shape(
                "adam",
                format!("{label}: models {px} elements apart cannot each hold {elems} logits"),
            ));
        }
        check_room("adam", label, "logits", b.logits, last * px, elems)?;
        let x_last = b.x.offset as u64 + last * xs;
        check_room("adam", label, "x", b.x.buffer, x_last, elems)?;
        params.bce_rows = rows;
        params.bce_cols = cols;
        params.bce_groups = bce_groups;
        params.partial_off = b.partials.offset;
        params.slot_stride = b.partials.slot_stride;
        params.x_off = u32_of("x at element", b.x.offset as u64)?;
        params.logits_stride = u32_of("the logits' model stride", px)?;
        params.x_stride = u32_of("the images' model stride", xs)?;
        buffers.extend([b.logits, b.x.buffer, b.partials.buffer]);
        flops += m * 10.0 * elems as f64;
        bytes += m * 8.0 * elems as f64;
    }
    let spec = KernelSpec {
        module: Reduction::for_gpu(gpu).module(&ADAM),
        entry: if bce.is_some() {
            "adam_with_bce"
        } else {
            "adam"
        },
        constants: vec![],
        storage: if bce.is_some() {
            &[
                Access::ReadWrite,
                Access::Read,
                Access::ReadWrite,
                Access::ReadWrite,
                Access::Read,
                Access::Read,
                Access::ReadWrite,
            ]
        } else {
            &[
                Access::ReadWrite,
                Access::Read,
                Access::ReadWrite,
                Access::ReadWrite,
            ]
        },
        uses_rows: true,
    };
    gpu.dispatch(
        label,
        &spec,
        &params,
        &buffers,
        grid(invocations, WG),
        Some(&step.rows),
    )
    .map(|d| d.with_work(flops, bytes))
}

/// CPU reference: one Adam step at 1-based step `t`, in f64 from the f32 state, as torch.optim.Adam.
pub fn adam_cpu(
    config: &AdamConfig,
    t: u32,
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let (b1, b2, eps) = (config.beta1 as f64, config.beta2 as f64, config.eps as f64);
    let bc1 = 1.0 - b1.powi(t as i32);
    let bc2 = 1.0 - b2.powi(t as i32);
    for i in 0..param.len() {
        let g = grad[i] as f64;
        let m1 = b1 * m[i] as f64 + (1.0 - b1) * g;
        let v1 = b2 * v[i] as f64 + (1.0 - b2) * g * g;
        m[i] = m1 as f32;
        v[i] = v1 as f32;
        let denom = (v1.sqrt() / bc2.sqrt()) + eps;
        param[i] = (param[i] as f64 - config.lr as f64 / bc1 * m1 / denom) as f32;
    }
}
