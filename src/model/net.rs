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
use crate::kernels::loss::{PartialsAt, bce_logits_models, loss_groups};
use crate::kernels::matmul::{Epilogue, Layout as Mm, Part, matmul_pair, matmul_part, unpaired};
use crate::kernels::reduce::{PartialsLayout, reduce};
use crate::kernels::reparam::{Decode, ReparamOut, decode_fused, reparam_models};
use crate::kernels::{Models, StepTable, strided_groups};
use crate::model::{Layout, Linear, ModelConfig};

/// Parameters, gradients and Adam's moments, each one flat buffer in [`Layout`] order; for several models of one
/// shape trained together (a sweep), each buffer holds every model's copy, model k's at `k × stride`.
pub struct Net {
    pub config: ModelConfig,
    pub layout: Layout,
    pub params: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    pub m: wgpu::Buffer,
    pub v: wgpu::Buffer,
    /// Models in the buffers (1 but for a sweep).
    pub models: u32,
    /// Elements between two models' copies: the layout's length, rounded up to 64 (256 bytes) where there are
    /// several, so every model's tensors align as model 0's do (and take the same kernels).
    pub stride: usize,
}

/// Elements between two copies of `len` elements of different models in one buffer: 64-element (256-byte)
/// aligned, so that each model's copies are aligned for vec4 loads and storage offsets exactly where model 0's
/// are, and every model takes the kernels model 0 takes.
pub fn model_stride(len: usize) -> usize {
    len.next_multiple_of(64)
}

impl Net {
    pub fn new(gpu: &Gpu, config: ModelConfig, params: &[f32]) -> Result<Net> {
        Net::batched(gpu, config, &[params])
    }

    /// Several models of one shape, model k's parameters `params[k]`, trained by one batched step.
    pub fn batched(gpu: &Gpu, config: ModelConfig, params: &[&[f32]]) -> Result<Net> {
        let layout = config.layout();
        assert!(!params.is_empty(), "a net of no models");
        let models = params.len();
        let stride = if models == 1 {
            layout.len
        } else {
            model_stride(layout.len)
        };
        let mut all = vec![0f32; models * stride];
        for (k, p) in params.iter().enumerate() {
            assert_eq!(p.len(), layout.len, "parameter count");
            all[k * stride..k * stride + layout.len].copy_from_slice(p);
        }
        let zeros = vec![0f32; all.len()];
        Ok(Net {
            config,
            layout,
            params: gpu.storage_init("params", &all)?,
            grads: gpu.storage_init("grads", &zeros)?,
            m: gpu.storage_init("adam.m", &zeros)?,
            v: gpu.storage_init("adam.v", &zeros)?,
            models: models as u32,
            stride,
        })
    }

    /// Where model `k`'s copy starts in each of the buffers.
    pub fn model_offset(&self, k: u32) -> usize {
        k as usize * self.stride
    }

    /// The model stride of a parameter operand: 0 for one model (one copy).
    fn per_model(&self) -> usize {
        if self.models > 1 { self.stride } else { 0 }
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
    /// Elements between two models' input batches where each model has its own (a sweep whose models differ in
    /// their binarization); 0: one batch for every model.
    pub x_model_stride: u32,
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
    /// Loss partials: `slots` slots of [`SLOT`] elements, each `MAX_PARTIALS` per term in [`LossTerm`] order
    /// (several models: `slots × models`, model k of step slot s in slot s·models + k).
    pub partials: wgpu::Buffer,
    /// Models whose activations the workspace holds (every one's batch of images the same, in `x`), and the
    /// elements between two models' copies of each kind of activation (see [`Models`]; `params` unused here).
    pub models: Models,
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

    /// [`Workspace::with_inputs`] for `models` models trained together (a sweep): each model's own activations,
    /// and one input batch per step for all of them, or with `x_per_model` one for each (`x_len` elements in
    /// all, shared between them).
    pub fn batched(
        gpu: &Gpu,
        name: &str,
        config: ModelConfig,
        (rows, slots): (u32, u32),
        (x_len, x_per_model): (u64, bool),
        models: u32,
    ) -> Result<Workspace> {
        let count = models.max(1);
        if !(x_per_model && count > 1) {
            return Workspace::build(gpu, name, config, (rows, slots), x_len, count);
        }
        // Each model's batches in its share of the room, at least one batch each.
        let mut ws = Workspace::build(
            gpu,
            name,
            config,
            (rows, slots),
            x_len / count as u64,
            count,
        )?;
        let stride = ws.x_slots as u64 * ws.x_stride as u64;
        ws.x = gpu.storage::<f32>(&format!("{name}.x"), (stride * count as u64) as usize)?;
        ws.x_model_stride = u32::try_from(stride).map_err(|_| {
            crate::error::Error::Invalid(format!(
                "{count} models' input batches of {stride} elements each"
            ))
        })?;
        Ok(ws)
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
        Workspace::build(gpu, name, config, (rows, slots), x_len, 1)
    }

    fn build(
        gpu: &Gpu,
        name: &str,
        config: ModelConfig,
        (rows, slots): (u32, u32),
        x_len: u64,
        count: u32,
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
        // One model: each buffer exactly its size. Several: each model's copy 64-aligned as model 0's.
        let (m, per) = (count as usize, |len: usize| match count {
            1 => len,
            _ => model_stride(len),
        });
        let (hs, zs, ps) = (per(r * h), per(r * l), per(r * p));
        let u = |v: usize| {
            u32::try_from(v).map_err(|_| {
                crate::error::Error::Invalid(format!(
                    "an activation of {v} elements per model is past what a kernel addresses (2³² elements); \
                     use a smaller batch"
                ))
            })
        };
        let models = Models {
            count,
            per_model: count > 1,
            params: 0,
            h: u(hs)?,
            z: u(zs)?,
            px: u(ps)?,
        };
        Ok(Workspace {
            rows,
            slots,
            x: buf("x", x_len as usize)?,
            x_slots,
            x_stride,
            x_model_stride: 0,
            h1: buf("h1", m * hs)?,
            heads: buf("heads", m * 2 * zs)?,
            z: buf("z", m * zs)?,
            eps: buf("eps", m * zs)?,
            h3: buf("h3", m * hs)?,
            logits: buf("logits", m * ps)?,
            dlogits: buf("dlogits", m * ps)?,
            dh3: buf("dh3", m * hs)?,
            coef: buf("coef", m * zs)?,
            dheads: buf("dheads", m * 2 * zs)?,
            dh1: buf("dh1", m * hs)?,
            partials: buf("partials", slots as usize * m * SLOT as usize)?,
            models,
        })
    }
}

impl Workspace {
    /// The input batch in x slot `slot` (training gathers several steps' batches ahead; slot 0 otherwise).
    pub fn x_at(&self, slot: u32) -> Operand<'_> {
        assert!(slot < self.x_slots, "x slot {slot} of {}", self.x_slots);
        Operand::at(&self.x, slot as usize * self.x_stride as usize)
            .per_model(self.x_model_stride as usize)
    }
}

fn weight(net: &Net, l: Linear) -> Operand<'_> {
    Operand::at(&net.params, l.weight).per_model(net.per_model())
}

fn bias(net: &Net, l: Linear) -> Operand<'_> {
    Operand::at(&net.params, l.bias()).per_model(net.per_model())
}

/// Which kind of activation a workspace buffer holds, for its model stride.
#[derive(Clone, Copy)]
enum Act {
    /// A hidden layer's (rows, hidden).
    Hidden,
    /// The heads' (rows, 2·latent).
    Heads,
    /// The latent (rows, latent).
    Latent,
    /// The pixels' (rows, pixels).
    Pixels,
}

impl Workspace {
    /// An activation buffer of this workspace as an operand, each model's copy at its stride.
    fn act<'a>(&self, buffer: &'a wgpu::Buffer, kind: Act) -> Operand<'a> {
        let m = &self.models;
        let stride = match (m.count, kind) {
            (1, _) => 0,
            (_, Act::Hidden) => m.h,
            (_, Act::Heads) => 2 * m.z,
            (_, Act::Latent) => m.z,
            (_, Act::Pixels) => m.px,
        };
        Operand::at(buffer, 0).per_model(stride as usize)
    }
}

/// How the dispatches of `net` and `ws` lie over their models: the workspace's activation strides, the net's
/// parameter stride, and whether each model's step values come from the step table's model rows (where it has
/// them: training; an evaluation's one model reads its step row).
pub fn models(net: &Net, ws: &Workspace, step: &StepTable) -> Models {
    assert_eq!(
        net.models, ws.models.count,
        "a net and a workspace of different model counts"
    );
    Models {
        params: net.per_model() as u32,
        per_model: step.models > 0,
        ..ws.models
    }
}

/// Y (rows, out) = X·Wᵀ (+ epilogue) for layer `l`, for each of the net's models.
fn linear_forward<'a>(
    gpu: &Gpu,
    net: &'a Net,
    l: Linear,
    rows: u32,
    (x, y): (Operand<'a>, Operand<'a>),
    relu: bool,
) -> Result<Dispatch> {
    let epi = if relu {
        Epilogue::BiasRelu(bias(net, l))
    } else {
        Epilogue::Bias(bias(net, l))
    };
    linear_forward_with(gpu, net, l, rows, (x, y), epi)
}

/// Y (rows, out) = X·Wᵀ with the epilogue `epi` for layer `l`, for each of the net's models.
fn linear_forward_with<'a>(
    gpu: &Gpu,
    net: &'a Net,
    l: Linear,
    rows: u32,
    (x, y): (Operand<'a>, Operand<'a>),
    epi: Epilogue<Operand<'a>>,
) -> Result<Dispatch> {
    let part = Part {
        layout: Mm::NT,
        dims: (rows, l.out, l.inp),
        a: x,
        b: weight(net, l),
        c: y,
        epilogue: epi,
        models: net.models,
    };
    one(gpu, &format!("{}.forward", l.name), part)
}

/// ∂W (out, in) = ∂Yᵀ·X and ∂b, into the gradient buffer at the layer's offsets.
fn weight_grad<'a>(
    net: &'a Net,
    l: Linear,
    rows: u32,
    dy: Operand<'a>,
    x: Operand<'a>,
) -> Part<'a> {
    Part {
        layout: Mm::TN,
        dims: (l.out, l.inp, rows),
        a: dy,
        b: x,
        c: Operand::at(&net.grads, l.weight).per_model(net.per_model()),
        epilogue: Epilogue::BiasGrad { offset: l.bias() },
        models: net.models,
    }
}

/// ∂X (rows, in) = ∂Y·W, with the epilogue `epi` (the ReLU's mask, or the reparameterization's backward).
fn input_grad<'a>(
    net: &'a Net,
    l: Linear,
    rows: u32,
    (dy, dx): (Operand<'a>, Operand<'a>),
    epi: Epilogue<Operand<'a>>,
) -> Part<'a> {
    Part {
        layout: Mm::NN,
        dims: (rows, l.inp, l.out),
        a: dy,
        b: weight(net, l),
        c: dx,
        epilogue: epi,
        models: net.models,
    }
}

/// One product (for each of its models) as its own dispatch.
fn one(gpu: &Gpu, label: &str, p: Part) -> Result<Dispatch> {
    matmul_part(gpu, label, p)
}

/// A layer's whole backward pass in one dispatch: its weight gradient (from ∂Y and its input X) and its input
/// gradient (∂Y·W with `epi`), independent products of the same ∂Y. Two dispatches where tuning found the pair
/// slower than its products apart (see [`crate::tune::tune`]).
fn layer_backward<'a>(
    gpu: &Gpu,
    net: &'a Net,
    l: Linear,
    rows: u32,
    dy: Operand<'a>,
    (x, dx): (Operand<'a>, Operand<'a>),
    epi: Epilogue<Operand<'a>>,
) -> Result<Vec<Dispatch>> {
    let first = weight_grad(net, l, rows, dy, x);
    let second = input_grad(net, l, rows, (dy, dx), epi);
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
    let (h1, hd) = (ws.act(&ws.h1, Act::Hidden), ws.act(&ws.heads, Act::Heads));
    let mut dispatches = vec![
        linear_forward(gpu, net, fc1, rows, (x, h1), true)?,
        linear_forward(gpu, net, heads, rows, (h1, hd), false)?,
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
        let z = ws.act(&ws.z, Act::Latent);
        let h3 = ws.act(&ws.h3, Act::Hidden);
        dispatches.push(linear_forward(
            gpu,
            net,
            net.layout.fc3,
            rows,
            (z, h3),
            true,
        )?);
    }
    let h3 = ws.act(&ws.h3, Act::Hidden);
    let logits = ws.act(&ws.logits, Act::Pixels);
    dispatches.push(if grad {
        // Training: the logits and, in the same epilogue, the BCE's gradient (its value is summed in
        // the step's last dispatch, `adam_with_bce`).
        let epi = Epilogue::BiasBce {
            bias: bias(net, fc4),
            x,
            grad: ws.act(&ws.dlogits, Act::Pixels),
        };
        linear_forward_with(gpu, net, fc4, rows, (h3, logits), epi)?
    } else {
        linear_forward(gpu, net, fc4, rows, (h3, logits), false)?
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
    let out = (&ws.heads, reparam_out(ws));
    let batch = models(net, ws, step);
    reparam_models(
        gpu,
        label,
        out,
        kl,
        (grad, shape, noise),
        step,
        Some(decode),
        batch,
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
    let batch = models(net, ws, step);
    let at = (&ws.heads, out);
    reparam_models(gpu, label, at, kl, (grad, shape, noise), step, None, batch)
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
    let inputs = (&ws.logits, x, &ws.dlogits);
    let batch = models(net, ws, step);
    let bce = bce_logits_models(gpu, "bce.forward", inputs, at, (shape, false), step, batch)?;
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
    let (h1, h3) = (ws.act(&ws.h1, Act::Hidden), ws.act(&ws.h3, Act::Hidden));
    let (dh1, dh3) = (ws.act(&ws.dh1, Act::Hidden), ws.act(&ws.dh3, Act::Hidden));
    let (z, dheads) = (ws.act(&ws.z, Act::Latent), ws.act(&ws.dheads, Act::Heads));
    let dlogits = ws.act(&ws.dlogits, Act::Pixels);
    let kl_grad = Epilogue::KlGrad(ws.act(&ws.coef, Act::Latent));
    let fc1_grad = weight_grad(net, fc1, rows, dh1, x);
    let relu_mask = Epilogue::ReluMask;
    let mut dispatches = layer_backward(gpu, net, fc4, rows, dlogits, (h3, dh3), relu_mask(h3))?;
    dispatches.extend(layer_backward(
        gpu,
        net,
        fc3,
        rows,
        dh3,
        (z, dheads),
        kl_grad,
    )?);
    dispatches.extend(layer_backward(
        gpu,
        net,
        heads,
        rows,
        dheads,
        (h1, dh1),
        relu_mask(h1),
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
        models: net.models,
    };
    let reduce = reduce(gpu, "loss.reduce", &ws.partials, at, log, step)?;
    Ok(Plan::from(vec![reduce]))
}

/// Decodes the latent codes in `z` (rows, latent) to logits in `ws.logits`.
pub fn decode(gpu: &Gpu, net: &Net, ws: &Workspace, rows: u32) -> Result<Plan> {
    let Layout { fc3, fc4, .. } = net.layout;
    let (z, h3) = (ws.act(&ws.z, Act::Latent), ws.act(&ws.h3, Act::Hidden));
    let logits = ws.act(&ws.logits, Act::Pixels);
    Ok(Plan::from(vec![
        linear_forward(gpu, net, fc3, rows, (z, h3), true)?,
        linear_forward(gpu, net, fc4, rows, (h3, logits), false)?,
    ]))
}
