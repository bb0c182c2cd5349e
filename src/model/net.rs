//! The network on the GPU: parameters, gradients and Adam state in flat buffers, activations in a workspace, and
//! the dispatch plans of its passes, each a short list in the order the model computes:
//!
//! - [`forward`]: gather, fc1, heads, reparameterization with the KL term (its value, and in training its own part
//!   of ∂heads), fc3, fc4 (logits; in training also ∂logits, the BCE's gradient); [`forward_from`] is the same
//!   from a batch already in one of the workspace's x slots (training gathers the batches of many steps ahead,
//!   in one dispatch of its own);
//! - [`losses`]: BCE of a forward pass, no gradients (evaluation);
//! - [`backward`]: each layer's weight and input gradients in one dispatch, from fc4 down (fc3's input gradient
//!   finishes ∂heads: the reparameterization's backward), then fc1's weight gradient; every gradient lands in the
//!   flat gradient buffer;
//! - [`reduce_losses`]: the loss partials of the steps of a submission to their rows of the loss log.
//!
//! A training step is `forward_from`, `backward`, then Adam with the BCE's value ([`bce_value`]), and a
//! submission of steps ends with `reduce_losses`; an evaluation batch is `forward`, `losses`, `reduce_losses`. Everything here
//! records; nothing waits.

use crate::error::Result;
use crate::gpu::Operand;
use crate::gpu::{Dispatch, Gpu, Plan};
use crate::kernels::adam::BceValue;
use crate::kernels::contract::{LossTerm, MAX_PARTIALS, TERMS};
use crate::kernels::gather::{Binarize, ByteMatrix, gather};
use crate::kernels::loss::{PartialsAt, bce_logits, loss_groups};
use crate::kernels::matmul::{Epilogue, Layout as Mm, Part, matmul, matmul_pair, unpaired};
use crate::kernels::reduce::{PartialsLayout, reduce};
use crate::kernels::reparam::{Decode, ReparamOut, decode_fused, reparam, reparam_decode};
use crate::kernels::{StepTable, strided_groups};
use crate::model::{Layout, Linear, ModelConfig};

/// Parameters, gradients and Adam's moments, each one flat buffer in [`Layout`] order.
pub struct Net {
    pub config: ModelConfig,
    pub layout: Layout,
    pub params: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    pub m: wgpu::Buffer,
    pub v: wgpu::Buffer,
}

impl Net {
    pub fn new(gpu: &Gpu, config: ModelConfig, params: &[f32]) -> Result<Net> {
        let layout = config.layout();
        assert_eq!(params.len(), layout.len, "parameter count");
        let zeros = vec![0f32; layout.len];
        Ok(Net {
            config,
            layout,
            params: gpu.storage_init("params", params)?,
            grads: gpu.storage_init("grads", &zeros)?,
            m: gpu.storage_init("adam.m", &zeros)?,
            v: gpu.storage_init("adam.v", &zeros)?,
        })
    }
}

/// Activations and their gradients for up to `rows` examples.
pub struct Workspace {
    pub rows: u32,
    /// Steps whose loss partials the workspace holds at once: the steps of one submission.
    pub slots: u32,
    /// The input batches: `x_slots` of them, `x_stride` elements apart (see [`Workspace::x_at`]).
    pub x: wgpu::Buffer,
    pub x_slots: u32,
    pub x_stride: u32,
    pub h1: wgpu::Buffer,
    pub heads: wgpu::Buffer,
    pub z: wgpu::Buffer,
    pub eps: wgpu::Buffer,
    pub h3: wgpu::Buffer,
    pub logits: wgpu::Buffer,
    pub dlogits: wgpu::Buffer,
    pub dh3: wgpu::Buffer,
    /// ½·ε·σ, the factor of ∂z in ∂log σ² (training; see `kernels::reparam`).
    pub coef: wgpu::Buffer,
    pub dheads: wgpu::Buffer,
    pub dh1: wgpu::Buffer,
    /// Loss partials: `slots` slots of [`SLOT`] elements, each `MAX_PARTIALS` per term in [`LossTerm`] order.
    pub partials: wgpu::Buffer,
}

/// Elements of one step's slot in a workspace's partials.
pub const SLOT: u32 = TERMS as u32 * MAX_PARTIALS;

/// Elements between two input batches of `rows` × `pixels` in a workspace: rounded up to 64 (256 bytes), so
/// every batch starts where a vec4 load and a storage binding may start.
pub fn x_stride(rows: u32, pixels: u32) -> u32 {
    (rows.max(1) * pixels).next_multiple_of(64)
}

impl Workspace {
    /// A workspace for batches of up to `rows` examples, keeping the loss partials of `slots` steps and one
    /// input batch.
    pub fn new(
        gpu: &Gpu,
        name: &str,
        config: ModelConfig,
        rows: u32,
        slots: u32,
    ) -> Result<Workspace> {
        Workspace::with_inputs(gpu, name, config, rows, slots, 0)
    }

    /// [`Workspace::new`] with `x_len` elements for input batches, as many as fit (at least one): the batches of
    /// several steps, gathered ahead of them in one dispatch (training).
    pub fn with_inputs(
        gpu: &Gpu,
        name: &str,
        config: ModelConfig,
        rows: u32,
        slots: u32,
        x_len: u64,
    ) -> Result<Workspace> {
        let slots = slots.max(1);
        let x_stride = x_stride(rows, config.pixels);
        let x_len = x_len.max(x_stride as u64);
        let x_slots = (x_len / x_stride as u64).min(u32::MAX as u64) as u32;
        let (r, p, h, l) = (
            rows as usize,
            config.pixels as usize,
            config.hidden as usize,
            config.latent as usize,
        );
        let buf = |what: &str, len: usize| gpu.storage::<f32>(&format!("{name}.{what}"), len);
        Ok(Workspace {
            rows,
            slots,
            x: buf("x", x_len as usize)?,
            x_slots,
            x_stride,
            h1: buf("h1", r * h)?,
            heads: buf("heads", r * 2 * l)?,
            z: buf("z", r * l)?,
            eps: buf("eps", r * l)?,
            h3: buf("h3", r * h)?,
            logits: buf("logits", r * p)?,
            dlogits: buf("dlogits", r * p)?,
            dh3: buf("dh3", r * h)?,
            coef: buf("coef", r * l)?,
            dheads: buf("dheads", r * 2 * l)?,
            dh1: buf("dh1", r * h)?,
            partials: buf("partials", slots as usize * SLOT as usize)?,
        })
    }
}

impl Workspace {
    /// The input batch in x slot `slot` (training gathers several steps' batches ahead; slot 0 otherwise).
    pub fn x_at(&self, slot: u32) -> Operand<'_> {
        assert!(slot < self.x_slots, "x slot {slot} of {}", self.x_slots);
        Operand::at(&self.x, slot as usize * self.x_stride as usize)
    }
}

fn weight(net: &Net, l: Linear) -> Operand<'_> {
    Operand::at(&net.params, l.weight)
}

fn bias(net: &Net, l: Linear) -> Operand<'_> {
    Operand::at(&net.params, l.bias())
}

/// Y (rows, out) = X·Wᵀ (+ epilogue) for layer `l`.
fn linear_forward(
    gpu: &Gpu,
    net: &Net,
    l: Linear,
    rows: u32,
    x: Operand,
    y: &wgpu::Buffer,
    relu: bool,
) -> Result<Dispatch> {
    let epi = if relu {
        Epilogue::BiasRelu(bias(net, l))
    } else {
        Epilogue::Bias(bias(net, l))
    };
    linear_forward_with(gpu, net, l, rows, (x, y), epi)
}

/// Y (rows, out) = X·Wᵀ with the epilogue `epi` for layer `l`.
fn linear_forward_with(
    gpu: &Gpu,
    net: &Net,
    l: Linear,
    rows: u32,
    (x, y): (Operand, &wgpu::Buffer),
    epi: Epilogue<Operand>,
) -> Result<Dispatch> {
    matmul(
        gpu,
        &format!("{}.forward", l.name),
        Mm::NT,
        (rows, l.out, l.inp),
        x,
        weight(net, l),
        y.into(),
        epi,
    )
}

/// ∂W (out, in) = ∂Yᵀ·X and ∂b, into the gradient buffer at the layer's offsets.
fn weight_grad<'a>(
    net: &'a Net,
    l: Linear,
    rows: u32,
    dy: &'a wgpu::Buffer,
    x: Operand<'a>,
) -> Part<'a> {
    Part {
        layout: Mm::TN,
        dims: (l.out, l.inp, rows),
        a: dy.into(),
        b: x,
        c: Operand::at(&net.grads, l.weight),
        epilogue: Epilogue::BiasGrad { offset: l.bias() },
        models: 1,
    }
}

/// ∂X (rows, in) = ∂Y·W, with the epilogue `epi` (the ReLU's mask, or the reparameterization's backward).
fn input_grad<'a>(
    net: &'a Net,
    l: Linear,
    rows: u32,
    dy: &'a wgpu::Buffer,
    dx: &'a wgpu::Buffer,
    epi: Epilogue<Operand<'a>>,
) -> Part<'a> {
    Part {
        layout: Mm::NN,
        dims: (rows, l.inp, l.out),
        a: dy.into(),
        b: weight(net, l),
        c: dx.into(),
        epilogue: epi,
        models: 1,
    }
}

/// The ReLU backward's epilogue: keep ∂X where the layer's forward output `x` is positive.
fn mask(x: &wgpu::Buffer) -> Epilogue<Operand<'_>> {
    Epilogue::ReluMask(x.into())
}

/// One product as its own dispatch.
fn one(gpu: &Gpu, label: &str, p: Part) -> Result<Dispatch> {
    matmul(gpu, label, p.layout, p.dims, p.a, p.b, p.c, p.epilogue)
}

/// A layer's whole backward pass in one dispatch: its weight gradient (from ∂Y and its input X) and its input
/// gradient (∂Y·W with `epi`), independent products of the same ∂Y. Two dispatches where tuning found the pair
/// slower than its products apart (see [`crate::tune::tune`]).
#[allow(clippy::too_many_arguments)]
fn layer_backward<'a>(
    gpu: &Gpu,
    net: &'a Net,
    l: Linear,
    rows: u32,
    dy: &'a wgpu::Buffer,
    (x, dx): (&'a wgpu::Buffer, &'a wgpu::Buffer),
    epi: Epilogue<Operand<'a>>,
) -> Result<Vec<Dispatch>> {
    let first = weight_grad(net, l, rows, dy, x.into());
    let second = input_grad(net, l, rows, dy, dx, epi);
    if unpaired(gpu, &first, &second) {
        return Ok(vec![
            one(gpu, &format!("{}.weight_grad", l.name), first)?,
            one(gpu, &format!("{}.input_grad", l.name), second)?,
        ]);
    }
    let label = format!("{}.weight_grad+input_grad", l.name);
    Ok(vec![matmul_pair(gpu, &label, first, second)?])
}

/// Where a pass's data and noise come from.
pub struct Source<'a> {
    pub data: &'a ByteMatrix,
    pub index: &'a wgpu::Buffer,
    pub seed: u64,
    pub stream: u32,
    /// Dynamic binarization of the inputs, when asked for.
    pub binarize: Option<Binarize>,
}

/// The forward pass: gather, encoder, reparameterization (and the KL term), decoder, leaving logits in
/// `ws.logits`. With `grad` (training), the reparameterization also leaves the KL's part of ∂heads for
/// [`backward`].
pub fn forward(
    gpu: &Gpu,
    net: &Net,
    ws: &Workspace,
    src: &Source,
    (rows, grad): (u32, bool),
    step: &StepTable,
) -> Result<Plan> {
    let gather = gather(
        gpu,
        "gather",
        src.data,
        src.index,
        &ws.x,
        rows,
        step,
        src.binarize,
    )?;
    Ok(Plan::from(vec![gather]).then(forward_from(
        gpu,
        net,
        ws,
        src,
        ws.x_at(0),
        (rows, grad),
        step,
    )?))
}

/// [`forward`] from a batch already in the workspace at `x` (training: a dispatch gathered it ahead, with the
/// batches of the next steps); `src` gives the noise.
pub fn forward_from(
    gpu: &Gpu,
    net: &Net,
    ws: &Workspace,
    src: &Source,
    x: Operand,
    (rows, grad): (u32, bool),
    step: &StepTable,
) -> Result<Plan> {
    let Layout {
        fc1, heads, fc4, ..
    } = net.layout;
    let latent = net.config.latent;
    let noise = (src.seed, src.stream);
    let mut dispatches = vec![
        linear_forward(gpu, net, fc1, rows, x, &ws.h1, true)?,
        linear_forward(gpu, net, heads, rows, (&ws.h1).into(), &ws.heads, false)?,
    ];
    if decode_fused(gpu) {
        dispatches.push(reparam_and_fc3(
            gpu,
            net,
            ws,
            (rows, latent),
            noise,
            step,
            grad,
        )?);
    } else {
        dispatches.push(reparam_forward(
            gpu,
            net,
            ws,
            (rows, latent),
            noise,
            step,
            grad,
        )?);
        dispatches.push(linear_forward(
            gpu,
            net,
            net.layout.fc3,
            rows,
            (&ws.z).into(),
            &ws.h3,
            true,
        )?);
    }
    let h3 = (&ws.h3).into();
    dispatches.push(if grad {
        // Training: the logits and, in the same epilogue, the BCE's gradient (its value is summed in
        // the step's last dispatch, `adam_with_bce`).
        let epi = Epilogue::BiasBce {
            bias: bias(net, fc4),
            x,
            grad: (&ws.dlogits).into(),
        };
        linear_forward_with(gpu, net, fc4, rows, (h3, &ws.logits), epi)?
    } else {
        linear_forward(gpu, net, fc4, rows, h3, &ws.logits, false)?
    });
    Ok(Plan::from(dispatches))
}

/// Where the training step's BCE value comes from: the logits and images (`x`) of the forward pass, its
/// partials in the step's slot (summed by `adam_with_bce`, the step's last dispatch).
pub fn bce_value<'a>(
    gpu: &Gpu,
    net: &Net,
    ws: &'a Workspace,
    x: Operand<'a>,
    rows: u32,
) -> BceValue<'a> {
    BceValue {
        logits: &ws.logits,
        x,
        shape: (rows, net.config.pixels),
        partials: partials(gpu, ws, net.config, LossTerm::Bce),
    }
}

/// [`reparam_forward`] and fc3's forward pass h3 = max(z·W3ᵀ + b3, 0) in one dispatch.
fn reparam_and_fc3(
    gpu: &Gpu,
    net: &Net,
    ws: &Workspace,
    shape: (u32, u32),
    noise: (u64, u32),
    step: &StepTable,
    grad: bool,
) -> Result<Dispatch> {
    let fc3 = net.layout.fc3;
    let decode = Decode {
        params: &net.params,
        weight: fc3.weight,
        bias: fc3.bias(),
        hidden: fc3.out,
        h: &ws.h3,
    };
    let label = if grad {
        "reparam.kl.backward+fc3.forward"
    } else {
        "reparam.kl+fc3.forward"
    };
    let kl = partials(gpu, ws, net.config, LossTerm::Kl);
    reparam_decode(
        gpu,
        label,
        &ws.heads,
        reparam_out(ws),
        kl,
        grad,
        shape,
        noise,
        step,
        decode,
    )
}

fn reparam_out(ws: &Workspace) -> ReparamOut<'_> {
    ReparamOut {
        z: &ws.z,
        eps: &ws.eps,
        dheads: &ws.dheads,
        coef: &ws.coef,
    }
}

/// z = μ + ε·σ for `shape` = (rows, latent) with the noise of `noise` = (seed, stream), the KL's partials, and
/// with `grad` the KL's part of ∂heads.
pub fn reparam_forward(
    gpu: &Gpu,
    net: &Net,
    ws: &Workspace,
    shape: (u32, u32),
    noise: (u64, u32),
    step: &StepTable,
    grad: bool,
) -> Result<Dispatch> {
    let out = reparam_out(ws);
    let kl = partials(gpu, ws, net.config, LossTerm::Kl);
    let label = if grad {
        "reparam.kl.backward"
    } else {
        "reparam.kl"
    };
    reparam(gpu, label, &ws.heads, out, kl, grad, shape, noise, step)
}

/// Where a loss term's partials go in the workspace: as many as the largest batch needs, in the step's slot.
fn partials<'a>(
    gpu: &Gpu,
    ws: &'a Workspace,
    config: ModelConfig,
    term: LossTerm,
) -> PartialsAt<'a> {
    let kl_elements = ws.rows as u64 * config.latent as u64;
    PartialsAt {
        buffer: &ws.partials,
        offset: term.partials_offset(),
        slot_stride: SLOT,
        slots: ws.slots,
        groups: match term {
            LossTerm::Bce => {
                strided_groups(gpu, loss_groups(ws.rows as u64 * config.pixels as u64))
            }
            // Up to one workgroup per row where `reparam_decode` gives each workgroup whole rows.
            LossTerm::Kl if decode_fused(gpu) => ws.rows.clamp(1, MAX_PARTIALS),
            LossTerm::Kl => strided_groups(gpu, loss_groups(kl_elements)),
        },
    }
}

/// The reconstruction term of a forward pass from the images `x`, without gradients (the forward pass has the
/// KL): BCE-with-logits for evaluation, and for the training step where BCE and Adam run apart (training
/// otherwise takes the gradient in fc4's epilogue and the value in the step's last dispatch).
pub fn losses(
    gpu: &Gpu,
    net: &Net,
    ws: &Workspace,
    x: Operand,
    rows: u32,
    step: &StepTable,
) -> Result<Plan> {
    let at = partials(gpu, ws, net.config, LossTerm::Bce);
    let shape = (rows, net.config.pixels);
    let (logits, dlogits) = (&ws.logits, &ws.dlogits);
    let bce = bce_logits(
        gpu,
        "bce.forward",
        logits,
        x,
        dlogits,
        at,
        shape,
        false,
        step,
    )?;
    Ok(Plan::from(vec![bce]))
}

/// The backward pass after a training [`forward`] (which left ∂logits): every parameter's gradient into
/// `net.grads`, each layer's weight and input gradients in one dispatch. fc3's input gradient ∂z goes straight
/// into ∂heads, on top of the KL's own part that the forward pass left there: the reparameterization's backward,
/// with no dispatch of its own. `x` is the forward pass's input batch (fc1's weight gradient reads it).
pub fn backward(gpu: &Gpu, net: &Net, ws: &Workspace, x: Operand, rows: u32) -> Result<Plan> {
    let Layout {
        fc1,
        heads,
        fc3,
        fc4,
        ..
    } = net.layout;
    let kl_grad = Epilogue::KlGrad((&ws.coef).into());
    let fc1_grad = weight_grad(net, fc1, rows, &ws.dh1, x);
    let mut dispatches = layer_backward(
        gpu,
        net,
        fc4,
        rows,
        &ws.dlogits,
        (&ws.h3, &ws.dh3),
        mask(&ws.h3),
    )?;
    dispatches.extend(layer_backward(
        gpu,
        net,
        fc3,
        rows,
        &ws.dh3,
        (&ws.z, &ws.dheads),
        kl_grad,
    )?);
    dispatches.extend(layer_backward(
        gpu,
        net,
        heads,
        rows,
        &ws.dheads,
        (&ws.h1, &ws.dh1),
        mask(&ws.h1),
    )?);
    dispatches.push(one(gpu, "fc1.weight_grad", fc1_grad)?);
    Ok(Plan::from(dispatches))
}

/// The loss partials that [`losses`] or [`backward`] left in the workspace's slots to one total per term and
/// step, in the loss log's rows of those steps: recorded once, after the last step of a submission, with that
/// step's row (whose `partial_slot` says how many slots are filled).
pub fn reduce_losses(
    gpu: &Gpu,
    net: &Net,
    ws: &Workspace,
    step: &StepTable,
    log: &wgpu::Buffer,
) -> Result<Plan> {
    let counts = LossTerm::ALL.map(|t| partials(gpu, ws, net.config, t).groups);
    let at = PartialsLayout {
        slots: ws.slots,
        slot_stride: SLOT,
        stride: MAX_PARTIALS,
        counts: &counts,
    };
    let reduce = reduce(gpu, "loss.reduce", &ws.partials, at, log, step)?;
    Ok(Plan::from(vec![reduce]))
}

/// Decodes the latent codes in `z` (rows, latent) to logits in `ws.logits`.
pub fn decode(gpu: &Gpu, net: &Net, ws: &Workspace, rows: u32) -> Result<Plan> {
    let Layout { fc3, fc4, .. } = net.layout;
    Ok(Plan::from(vec![
        linear_forward(gpu, net, fc3, rows, (&ws.z).into(), &ws.h3, true)?,
        linear_forward(gpu, net, fc4, rows, (&ws.h3).into(), &ws.logits, false)?,
    ]))
}
