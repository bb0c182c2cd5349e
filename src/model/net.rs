//! The network on the GPU: parameters, gradients and Adam state in flat buffers, activations in a workspace, and
//! the dispatches of one forward and backward pass. Everything here records; nothing waits.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::gather::{Binarize, ByteMatrix, gather};
use crate::kernels::loss::{MAX_PARTIALS, PartialsAt, bce_logits, kl_backward, loss_groups};
use crate::kernels::matmul::{Epilogue, Layout as Mm, Operand, matmul};
use crate::kernels::reduce::reduce;
use crate::kernels::reparam::reparam;
use crate::kernels::{Dispatch, StepTable};
use crate::model::{Layout, Linear, ModelConfig};

/// Loss terms in the loss log, per step: BCE then KL.
pub const TERMS: usize = 2;

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
    /// Loss partials: BCE's at 0.., KL's at MAX_PARTIALS...
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

/// The forward pass alone: gather, encoder, reparameterization, decoder, leaving logits in `ws.logits`.
pub fn forward_only(
    gpu: &Gpu,
    net: &Net,
    ws: &Workspace,
    src: &Source,
    rows: u32,
    step: &StepTable,
) -> Result<Vec<Dispatch>> {
    let Layout {
        fc1,
        heads,
        fc3,
        fc4,
        ..
    } = net.layout;
    Ok(vec![
        gather(
            gpu,
            "gather",
            src.data,
            src.index,
            &ws.x,
            rows,
            step,
            src.binarize,
        )?,
        linear_forward(gpu, net, fc1, rows, &ws.x, &ws.h1, true)?,
        linear_forward(gpu, net, heads, rows, &ws.h1, &ws.heads, false)?,
        reparam(
            gpu,
            "reparam.forward",
            &ws.heads,
            &ws.z,
            &ws.eps,
            (rows, net.config.latent),
            src.seed,
            src.stream,
            step,
        )?,
        linear_forward(gpu, net, fc3, rows, &ws.z, &ws.h3, true)?,
        linear_forward(gpu, net, fc4, rows, &ws.h3, &ws.logits, false)?,
    ])
}

/// The forward pass and both loss terms for `rows` examples, their totals reduced into `log` at the step table
/// row's slot. With `grad`, the loss kernels also write ∂logits and ∂heads (the start of the backward pass).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    gpu: &Gpu,
    net: &Net,
    ws: &Workspace,
    src: &Source,
    rows: u32,
    step: &StepTable,
    log: &wgpu::Buffer,
    grad: bool,
) -> Result<Vec<Dispatch>> {
    let Layout {
        fc1,
        heads,
        fc3,
        fc4,
        ..
    } = net.layout;
    let (p, l) = (net.config.pixels, net.config.latent);
    let mut d = forward_only(gpu, net, ws, src, rows, step)?;
    d.extend([bce_logits(
        gpu,
        if grad { "bce.backward" } else { "bce.forward" },
        &ws.logits,
        &ws.x,
        &ws.dlogits,
        PartialsAt {
            buffer: &ws.partials,
            offset: 0,
        },
        (rows, p),
        grad,
    )?]);
    if grad {
        // The decoder's backward comes before the KL kernel, which needs ∂z.
        d.push(linear_weight_grad(
            gpu,
            net,
            fc4,
            rows,
            &ws.dlogits,
            &ws.h3,
        )?);
        d.push(linear_input_grad(
            gpu,
            net,
            fc4,
            rows,
            &ws.dlogits,
            &ws.dh3,
            Some(&ws.h3),
        )?);
        d.push(linear_weight_grad(gpu, net, fc3, rows, &ws.dh3, &ws.z)?);
        d.push(linear_input_grad(
            gpu, net, fc3, rows, &ws.dh3, &ws.dz, None,
        )?);
    }
    d.push(kl_backward(
        gpu,
        if grad { "kl.backward" } else { "kl.forward" },
        &ws.heads,
        &ws.eps,
        &ws.dz,
        &ws.dheads,
        PartialsAt {
            buffer: &ws.partials,
            offset: MAX_PARTIALS,
        },
        (rows, l),
        grad,
        step,
    )?);
    d.push(reduce(
        gpu,
        "loss.reduce",
        &ws.partials,
        MAX_PARTIALS,
        &[
            loss_groups(rows as u64 * p as u64),
            loss_groups(rows as u64 * l as u64),
        ],
        log,
        step,
    )?);
    if grad {
        d.push(linear_weight_grad(
            gpu, net, heads, rows, &ws.dheads, &ws.h1,
        )?);
        d.push(linear_input_grad(
            gpu,
            net,
            heads,
            rows,
            &ws.dheads,
            &ws.dh1,
            Some(&ws.h1),
        )?);
        d.push(linear_weight_grad(gpu, net, fc1, rows, &ws.dh1, &ws.x)?);
    }
    Ok(d)
}

/// Decodes the latent codes in `z` (rows, latent) to logits in `ws.logits`.
pub fn decode(gpu: &Gpu, net: &Net, ws: &Workspace, rows: u32) -> Result<Vec<Dispatch>> {
    Ok(vec![
        linear_forward(gpu, net, net.layout.fc3, rows, &ws.z, &ws.h3, true)?,
        linear_forward(gpu, net, net.layout.fc4, rows, &ws.h3, &ws.logits, false)?,
    ])
}
