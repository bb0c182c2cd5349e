//! The network on the GPU: parameters, gradients and Adam state in flat buffers, activations in a workspace, and
//! the dispatch plans of its passes, each a short list in the order the model computes:
//!
//! - [`forward`]: gather, fc1, heads, reparameterization, fc3, fc4 (logits);
//! - [`losses`]: BCE and KL of a forward pass, no gradients (evaluation);
//! - [`backward`]: BCE with ∂logits, the decoder's backward, KL fused with the reparameterization's backward
//!   (∂heads), the encoder's backward; every gradient lands in the flat gradient buffer;
//! - [`reduce_losses`]: the loss partials of either to one row of the loss log.
//!
//! A training step is `forward`, `backward`, `reduce_losses`, then Adam; an evaluation batch is `forward`,
//! `losses`, `reduce_losses`. Everything here records; nothing waits.

use crate::error::Result;
use crate::gpu::{Dispatch, Gpu, Plan};
use crate::kernels::StepTable;
use crate::kernels::contract::{LossTerm, MAX_PARTIALS, TERMS};
use crate::kernels::gather::{Binarize, ByteMatrix, gather};
use crate::kernels::loss::{PartialsAt, bce_logits, kl_backward, loss_groups};
use crate::kernels::matmul::{Epilogue, Layout as Mm, Operand, matmul};
use crate::kernels::reduce::reduce;
use crate::kernels::reparam::reparam;
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
    pub x: wgpu::Buffer,
    pub h1: wgpu::Buffer,
    pub heads: wgpu::Buffer,
    pub z: wgpu::Buffer,
    pub eps: wgpu::Buffer,
    pub h3: wgpu::Buffer,
    pub logits: wgpu::Buffer,
    pub dlogits: wgpu::Buffer,
    pub dh3: wgpu::Buffer,
    pub dz: wgpu::Buffer,
    pub dheads: wgpu::Buffer,
    pub dh1: wgpu::Buffer,
    /// Loss partials, `MAX_PARTIALS` per term, in [`LossTerm`] order.
    pub partials: wgpu::Buffer,
}

impl Workspace {
    pub fn new(gpu: &Gpu, name: &str, config: ModelConfig, rows: u32) -> Result<Workspace> {
        let (r, p, h, l) = (
            rows as usize,
            config.pixels as usize,
            config.hidden as usize,
            config.latent as usize,
        );
        let buf = |what: &str, len: usize| gpu.storage::<f32>(&format!("{name}.{what}"), len);
        Ok(Workspace {
            rows,
            x: buf("x", r * p)?,
            h1: buf("h1", r * h)?,
            heads: buf("heads", r * 2 * l)?,
            z: buf("z", r * l)?,
            eps: buf("eps", r * l)?,
            h3: buf("h3", r * h)?,
            logits: buf("logits", r * p)?,
            dlogits: buf("dlogits", r * p)?,
            dh3: buf("dh3", r * h)?,
            dz: buf("dz", r * l)?,
            dheads: buf("dheads", r * 2 * l)?,
            dh1: buf("dh1", r * h)?,
            partials: buf("partials", TERMS * MAX_PARTIALS as usize)?,
        })
    }
}

fn weight(net: &Net, l: Linear) -> Operand<'_> {
    Operand {
        buffer: &net.params,
        offset: l.weight,
    }
}

fn bias(net: &Net, l: Linear) -> Operand<'_> {
    Operand {
        buffer: &net.params,
        offset: l.bias(),
    }
}

/// Y (rows, out) = X·Wᵀ (+ epilogue) for layer `l`.
fn linear_forward(
    gpu: &Gpu,
    net: &Net,
    l: Linear,
    rows: u32,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    relu: bool,
) -> Result<Dispatch> {
    let epi = if relu {
        Epilogue::BiasRelu(bias(net, l))
    } else {
        Epilogue::Bias(bias(net, l))
    };
    matmul(
        gpu,
        &format!("{}.forward", l.name),
        Mm::NT,
        (rows, l.out, l.inp),
        x.into(),
        weight(net, l),
        y.into(),
        epi,
    )
}

/// ∂W (out, in) = ∂Yᵀ·X and ∂b, into the gradient buffer at the layer's offsets.
fn linear_weight_grad(
    gpu: &Gpu,
    net: &Net,
    l: Linear,
    rows: u32,
    dy: &wgpu::Buffer,
    x: &wgpu::Buffer,
) -> Result<Dispatch> {
    matmul(
        gpu,
        &format!("{}.weight_grad", l.name),
        Mm::TN,
        (l.out, l.inp, rows),
        dy.into(),
        x.into(),
        Operand {
            buffer: &net.grads,
            offset: l.weight,
        },
        Epilogue::BiasGrad { offset: l.bias() },
    )
}

/// ∂X (rows, in) = ∂Y·W, masked by the ReLU that produced X when `mask` is given.
fn linear_input_grad(
    gpu: &Gpu,
    net: &Net,
    l: Linear,
    rows: u32,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    mask: Option<&wgpu::Buffer>,
) -> Result<Dispatch> {
    matmul(
        gpu,
        &format!("{}.input_grad", l.name),
        Mm::NN,
        (rows, l.inp, l.out),
        dy.into(),
        weight(net, l),
        dx.into(),
        mask.map_or(Epilogue::None, |m| Epilogue::ReluMask(m.into())),
    )
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

/// The forward pass: gather, encoder, reparameterization, decoder, leaving logits in `ws.logits`.
pub fn forward(
    gpu: &Gpu,
    net: &Net,
    ws: &Workspace,
    src: &Source,
    rows: u32,
    step: &StepTable,
) -> Result<Plan> {
    let Layout {
        fc1,
        heads,
        fc3,
        fc4,
        ..
    } = net.layout;
    let (x, latent) = (&ws.x, net.config.latent);
    let noise = (src.seed, src.stream);
    Ok(Plan::from(vec![
        gather(
            gpu,
            "gather",
            src.data,
            src.index,
            x,
            rows,
            step,
            src.binarize,
        )?,
        linear_forward(gpu, net, fc1, rows, x, &ws.h1, true)?,
        linear_forward(gpu, net, heads, rows, &ws.h1, &ws.heads, false)?,
        reparam_forward(gpu, ws, (rows, latent), noise, step)?,
        linear_forward(gpu, net, fc3, rows, &ws.z, &ws.h3, true)?,
        linear_forward(gpu, net, fc4, rows, &ws.h3, &ws.logits, false)?,
    ]))
}

fn reparam_forward(
    gpu: &Gpu,
    ws: &Workspace,
    shape: (u32, u32),
    (seed, stream): (u64, u32),
    step: &StepTable,
) -> Result<Dispatch> {
    let (heads, z, eps) = (&ws.heads, &ws.z, &ws.eps);
    reparam(
        gpu,
        "reparam.forward",
        heads,
        z,
        eps,
        shape,
        seed,
        stream,
        step,
    )
}

/// Where a loss term's partials go in the workspace.
fn partials(ws: &Workspace, term: LossTerm) -> PartialsAt<'_> {
    PartialsAt {
        buffer: &ws.partials,
        offset: term.partials_offset(),
    }
}

/// BCE-with-logits of the reconstruction; with `grad`, also ∂logits (the first step of the backward pass).
fn bce(gpu: &Gpu, net: &Net, ws: &Workspace, rows: u32, grad: bool) -> Result<Dispatch> {
    let label = if grad { "bce.backward" } else { "bce.forward" };
    let at = partials(ws, LossTerm::Bce);
    let shape = (rows, net.config.pixels);
    bce_logits(gpu, label, &ws.logits, &ws.x, &ws.dlogits, at, shape, grad)
}

/// The KL term; with `grad`, fused with the reparameterization's backward: ∂heads from ∂z (which must exist).
fn kl(
    gpu: &Gpu,
    net: &Net,
    ws: &Workspace,
    rows: u32,
    step: &StepTable,
    grad: bool,
) -> Result<Dispatch> {
    let label = if grad { "kl.backward" } else { "kl.forward" };
    let at = partials(ws, LossTerm::Kl);
    let shape = (rows, net.config.latent);
    let (heads, eps, dz, dheads) = (&ws.heads, &ws.eps, &ws.dz, &ws.dheads);
    kl_backward(gpu, label, heads, eps, dz, dheads, at, shape, grad, step)
}

/// Both loss terms of a forward pass, without gradients (evaluation).
pub fn losses(gpu: &Gpu, net: &Net, ws: &Workspace, rows: u32, step: &StepTable) -> Result<Plan> {
    Ok(Plan::from(vec![
        bce(gpu, net, ws, rows, false)?,
        kl(gpu, net, ws, rows, step, false)?,
    ]))
}

/// The backward pass after [`forward`]: every parameter's gradient into `net.grads`, computing both loss terms
/// on the way (BCE with ∂logits first; KL where ∂z is known, since its kernel is also the reparameterization's
/// backward).
pub fn backward(gpu: &Gpu, net: &Net, ws: &Workspace, rows: u32, step: &StepTable) -> Result<Plan> {
    let Layout {
        fc1,
        heads,
        fc3,
        fc4,
        ..
    } = net.layout;
    Ok(Plan::from(vec![
        bce(gpu, net, ws, rows, true)?,
        linear_weight_grad(gpu, net, fc4, rows, &ws.dlogits, &ws.h3)?,
        linear_input_grad(gpu, net, fc4, rows, &ws.dlogits, &ws.dh3, Some(&ws.h3))?,
        linear_weight_grad(gpu, net, fc3, rows, &ws.dh3, &ws.z)?,
        linear_input_grad(gpu, net, fc3, rows, &ws.dh3, &ws.dz, None)?,
        kl(gpu, net, ws, rows, step, true)?,
        linear_weight_grad(gpu, net, heads, rows, &ws.dheads, &ws.h1)?,
        linear_input_grad(gpu, net, heads, rows, &ws.dheads, &ws.dh1, Some(&ws.h1))?,
        linear_weight_grad(gpu, net, fc1, rows, &ws.dh1, &ws.x)?,
    ]))
}

/// The loss partials of [`losses`] or [`backward`] to one total per term, in the loss log's row for the step.
pub fn reduce_losses(
    gpu: &Gpu,
    net: &Net,
    ws: &Workspace,
    rows: u32,
    step: &StepTable,
    log: &wgpu::Buffer,
) -> Result<Plan> {
    let elements = |term| match term {
        LossTerm::Bce => rows as u64 * net.config.pixels as u64,
        LossTerm::Kl => rows as u64 * net.config.latent as u64,
    };
    let counts = LossTerm::ALL.map(|t| loss_groups(elements(t)));
    let reduce = reduce(
        gpu,
        "loss.reduce",
        &ws.partials,
        MAX_PARTIALS,
        &counts,
        log,
        step,
    )?;
    Ok(Plan::from(vec![reduce]))
}

/// Decodes the latent codes in `z` (rows, latent) to logits in `ws.logits`.
pub fn decode(gpu: &Gpu, net: &Net, ws: &Workspace, rows: u32) -> Result<Plan> {
    let Layout { fc3, fc4, .. } = net.layout;
    Ok(Plan::from(vec![
        linear_forward(gpu, net, fc3, rows, &ws.z, &ws.h3, true)?,
        linear_forward(gpu, net, fc4, rows, &ws.h3, &ws.logits, false)?,
    ]))
}
