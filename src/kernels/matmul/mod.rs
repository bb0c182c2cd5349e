//! matmul: the products of a linear layer's forward and backward passes with fused epilogues
//! (`shaders/matmul.wgsl`). Weights are (out, in), PyTorch's layout.
//!
//! `candidates.rs` holds the kernels (which shader, entry point and constants each is); `epilogue.rs` what follows
//! the product; `choice.rs` the keys of the device's kernel choices; `reference.rs` the CPU reference. This file is
//! the host wrapper: it picks the chosen candidate for a product, checks the shapes against the buffers and builds
//! the dispatch.

mod candidates;
mod choice;
mod epilogue;
mod reference;

pub use super::contract::{EpilogueKind, Layout};
pub use candidates::Kernel;
pub use choice::{EVERY_PRODUCT, Product, UNPAIRED, is_pair_key, pair_key, product_key};
pub use epilogue::Epilogue;
pub use reference::{bias_grad_cpu, error_bound, flops, matmul_cpu};

use super::check_room;
use super::contract::MatmulParams;
use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, Operand, Workload};
use crate::kernels::MATMUL;
use candidates::{REJECTED_BY_TEST_FAULT, fault_armed, vec4_kernel};

/// A part's key in the kernel choices (see [`product_key`]): a batched product's names its model count too, since
/// M models' workgroups fill a GPU differently from one model's.
fn part_key(p: &Part) -> String {
    with_models(product_key(p.layout, p.dims, p.epilogue.kind()), p.models)
}

/// `key` for a product of `models` models: the single model's key, with ` xM` after it for M > 1.
pub fn with_models(key: String, models: u32) -> String {
    match models {
        1 => key,
        m => format!("{key} x{m}"),
    }
}

/// Whether the device's choices run the pair `first`, `second` as two dispatches (tuning found it faster).
pub fn unpaired(gpu: &Gpu, first: &Part, second: &Part) -> bool {
    let key = pair_key(&part_key(first), &part_key(second));
    gpu.choice(&key).as_deref() == Some(UNPAIRED)
}

/// Checks that `elems` elements of `op` fit in its buffer for each of `models` models (the last model's copy
/// starts `model_stride × (models − 1)` elements after the first's).
fn check_fits(label: &str, what: &str, op: Operand, elems: u64, models: u32) -> Result<()> {
    let last = op.offset as u64 + op.model_stride as u64 * (models as u64 - 1);
    if models > 1 {
        let what = format!("{what} of the last of {models} models");
        return check_room("matmul", label, &what, op.buffer, last, elems);
    }
    check_room("matmul", label, what, op.buffer, last, elems)
}

/// One product of a dispatch: C (m, n) = A·B (+ epilogue), A and B stored as `layout` says, for each of
/// `models` models, model i's operands at their offsets plus i × their `model_stride` (see [`Operand`]).
#[derive(Clone, Copy, Debug)]
pub struct Part<'a> {
    pub layout: Layout,
    /// (m, n, k).
    pub dims: (u32, u32, u32),
    pub a: Operand<'a>,
    pub b: Operand<'a>,
    pub c: Operand<'a>,
    pub epilogue: Epilogue<Operand<'a>>,
    /// Models computed by the one dispatch (the grid's third dimension); 1 for a single model.
    pub models: u32,
}

/// Records C (m, n) = A·B (+ epilogue) with the kernel chosen for this product on this device: the device's
/// kernel choices (tuned, cached or from a checkpoint; see [`crate::tune`]), else
/// [`Kernel::default_for`]; where the adapter rejects that (see [`is_rejection`]), the default, then the first
/// other candidate it builds. The plans built before tuning (whose products tuning reads) must build on an
/// adapter that rejects the default, and a checkpoint's kernels on one that rejects a kernel the checkpoint's
/// adapter took (the dispatch names the kernel it has, so a new checkpoint records that one). Where the adapter
/// rejects every candidate, [`Error::NoKernel`] says why each failed. Shapes are checked against the buffers
/// here, once.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    gpu: &Gpu,
    label: &str,
    layout: Layout,
    dims: (u32, u32, u32),
    a: Operand,
    b: Operand,
    c: Operand,
    epilogue: Epilogue<Operand>,
) -> Result<Dispatch> {
    let part = Part {
        layout,
        dims,
        a,
        b,
        c,
        epilogue,
        models: 1,
    };
    matmul_parts(gpu, label, &[part])
}

/// Records a layer's two backward products in one dispatch: `first` (the weight gradient) and `second` (the input
/// gradient), which read the same A (∂Y) and are independent. The kernel is the one chosen for `first` (as
/// [`matmul`] chooses it); its workgroups compute `first`, then `second` (see matmul_common.wgsl).
pub fn matmul_pair(gpu: &Gpu, label: &str, first: Part, second: Part) -> Result<Dispatch> {
    matmul_parts(gpu, label, &[first, second])
}

/// Records one product, for each of its `models` models, in one dispatch, with the kernel chosen as [`matmul`]
/// chooses it (under the product's key with its model count).
pub fn matmul_part(gpu: &Gpu, label: &str, part: Part) -> Result<Dispatch> {
    matmul_parts(gpu, label, &[part])
}

/// [`matmul_part`] with an explicit kernel.
pub fn matmul_part_with(gpu: &Gpu, kernel: Kernel, label: &str, part: Part) -> Result<Dispatch> {
    matmul_parts_with(gpu, kernel, label, &[part])
}

fn matmul_parts(gpu: &Gpu, label: &str, parts: &[Part]) -> Result<Dispatch> {
    let first = parts[0];
    // A pair's own choice, else its first product's.
    let pair = match parts {
        [w, i] => gpu
            .choice(&pair_key(&part_key(w), &part_key(i)))
            .filter(|c| c != UNPAIRED),
        _ => None,
    };
    let chosen = pair
        .or_else(|| gpu.choice(&part_key(&first)))
        .or_else(|| gpu.choice(EVERY_PRODUCT));
    let cols = first.dims.1 + matches!(first.epilogue, Epilogue::BiasGrad { .. }) as u32;
    let default = Kernel::default_for(gpu, first.dims.0, cols);
    // The chosen kernel, the default, then every other candidate, each once.
    let mut order: Vec<Kernel> = chosen
        .and_then(|name| Kernel::parse(&name))
        .into_iter()
        .collect();
    order.push(default);
    order.extend(Kernel::CANDIDATES);
    let mut reasons: Vec<(Kernel, String)> = Vec::new();
    for kernel in order {
        if reasons.iter().any(|(k, _)| *k == kernel) {
            continue;
        }
        match matmul_parts_with(gpu, kernel, label, parts) {
            // The first kernel tried fails for the operands or the device, not itself, unless it is rejected;
            // a fallback may also not fit (e.g. too many workgroups for its small tile).
            Err(e) if is_rejection(&e) || (!reasons.is_empty() && !is_device_fault(&e)) => {
                reasons.push((kernel, unavailable(&e)))
            }
            other => return other,
        }
    }
    let products: Vec<String> = parts
        .iter()
        .map(|p| describe(label, p.layout, p.dims, p.epilogue.kind()))
        .collect();
    Err(no_kernel(gpu, &products.join(" with "), &reasons))
}

/// Whether `e` is the adapter refusing a kernel (a validation or internal error from building its shader module,
/// pipeline or bindings), not a problem with the operands or the device.
pub fn is_rejection(e: &Error) -> bool {
    matches!(e, Error::Validation { .. } | Error::Internal { .. })
}

/// Whether `e` is the device failing (lost, hung): no other kernel would fare better.
pub fn is_device_fault(e: &Error) -> bool {
    matches!(e, Error::DeviceLost { .. } | Error::GpuTimeout { .. })
}

/// Why a candidate is unavailable, in one line for the tables: that the adapter rejected it (while doing what,
/// and the root cause: the last line of wgpu's multi-line report, or the first of naga's with its last note),
/// that it computed wrong numbers, or the error's message.
pub fn unavailable(e: &Error) -> String {
    match e {
        Error::Validation { context, message } | Error::Internal { context, message } => {
            let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
            let cause = if message.contains("Caused by:") {
                lines.next_back().map(String::from)
            } else {
                // naga: `file:line: error: what`, the source excerpt, then notes (`= why`), the last the deepest.
                let first = lines.next();
                let note = lines.filter_map(|l| l.strip_prefix("= ")).next_back();
                first.map(|f| match note {
                    Some(n) => format!("{f} ({n})"),
                    None => f.to_string(),
                })
            };
            format!(
                "rejected while {context}: {}",
                cause.as_deref().unwrap_or("no reason given")
            )
        }
        Error::Mismatch { ratio, .. } => {
            format!("wrong results ({})", crate::error::times_the_bound(*ratio))
        }
        other => other.to_string(),
    }
}

/// A product as messages name it: `fc1.forward (NT 128×400×784 BiasRelu)`.
pub fn describe(
    label: &str,
    layout: Layout,
    (m, n, k): (u32, u32, u32),
    epilogue: EpilogueKind,
) -> String {
    format!("{label} ({layout:?} {m}×{n}×{k} {epilogue:?})")
}

/// The error for a product that no candidate computes on this adapter, with each candidate's reason.
pub fn no_kernel(gpu: &Gpu, product: &str, reasons: &[(Kernel, String)]) -> Error {
    let reasons: Vec<String> = reasons
        .iter()
        .map(|(k, why)| format!("{}: {why}", k.name()))
        .collect();
    Error::NoKernel {
        product: product.to_string(),
        adapter: gpu.info.name.clone(),
        reasons: reasons.join("; "),
    }
}

/// [`matmul`] with an explicit kernel.
#[allow(clippy::too_many_arguments)]
pub fn matmul_with(
    gpu: &Gpu,
    kernel: Kernel,
    label: &str,
    layout: Layout,
    dims: (u32, u32, u32),
    a: Operand,
    b: Operand,
    c: Operand,
    epilogue: Epilogue<Operand>,
) -> Result<Dispatch> {
    let part = Part {
        layout,
        dims,
        a,
        b,
        c,
        epilogue,
        models: 1,
    };
    matmul_parts_with(gpu, kernel, label, &[part])
}

/// [`matmul_pair`] with an explicit kernel.
pub fn matmul_pair_with(
    gpu: &Gpu,
    kernel: Kernel,
    label: &str,
    first: Part,
    second: Part,
) -> Result<Dispatch> {
    matmul_parts_with(gpu, kernel, label, &[first, second])
}

/// One part's uniform params and epilogue operand, after checking its shapes against its buffers.
fn part_params<'a>(
    label: &str,
    kernel: Kernel,
    part: &Part<'a>,
) -> Result<(MatmulParams, Operand<'a>)> {
    let Part {
        dims: (m, n, k),
        a,
        b,
        c,
        epilogue,
        models,
        ..
    } = *part;
    if m == 0 || n == 0 || k == 0 {
        return Err(Error::shape(
            "matmul",
            format!("{label}: sizes must be positive, got m={m} n={n} k={k}"),
        ));
    }
    if models == 0 {
        return Err(Error::shape(
            "matmul",
            format!("{label}: a dispatch computes at least one model, got 0"),
        ));
    }
    let (m64, n64, k64) = (m as u64, n as u64, k as u64);
    let fits = |what: &str, op: Operand, elems: u64| check_fits(label, what, op, elems, models);
    fits("A", a, m64 * k64)?;
    fits("B", b, k64 * n64)?;
    fits("C", c, m64 * n64)?;
    // The elements of C's buffer that one model writes, from its C's offset: each model's must not overlap the
    // next's (the bias gradient and the heads' gradient lie past C's own m·n).
    let mut written = m64 * n64;
    let (aux, bias_off) = match epilogue {
        Epilogue::None => (Operand::at(a.buffer, 0), 0),
        Epilogue::Bias(bias) | Epilogue::BiasRelu(bias) => {
            fits("bias", bias, n64)?;
            (bias, 0)
        }
        Epilogue::BiasBce { bias, x, grad } => {
            fits("bias", bias, n64)?;
            fits("x", x, m64 * n64)?;
            fits("the BCE's gradient", grad, m64 * n64)?;
            check_apart(label, "the BCE's gradient", grad, m64 * n64, models)?;
            (bias, 0)
        }
        Epilogue::ReluMask(mask) => {
            fits("mask", mask, m64 * n64)?;
            (mask, 0)
        }
        Epilogue::KlGrad(coef) => {
            fits("½·ε·σ", coef, m64 * n64)?;
            fits("the heads' gradient", c, 2 * m64 * n64)?;
            written = 2 * m64 * n64;
            (coef, 0)
        }
        Epilogue::BiasGrad { offset } => {
            fits("bias gradient", Operand { offset, ..c }, m64)?;
            if offset < c.offset {
                return Err(Error::shape(
                    "matmul",
                    format!("{label}: the bias gradient goes after C in its buffer, not before it"),
                ));
            }
            written = written.max((offset - c.offset) as u64 + m64);
            (Operand::at(a.buffer, 0), offset)
        }
    };
    check_apart(label, "C", c, written, models)?;
    let last = |o: Operand| o.offset as u64 + o.model_stride as u64 * (models as u64 - 1);
    let ends = [
        last(a),
        last(b),
        last(c),
        last(aux),
        bias_off as u64 + last(c) - c.offset as u64,
    ];
    if ends.iter().any(|&o| o > u32::MAX as u64) {
        return Err(Error::shape(
            "matmul",
            format!("{label}: element offsets (every model's) must fit in 32 bits"),
        ));
    }
    // Test-only (`wrong:<kernel>`): A read from four elements past its start (one vec4, so the vec4 kernels are
    // off too), as a miscompiled kernel would: every output wrong but finite (WGSL keeps reads past the end
    // inside the buffer or zero), so only a check against a reference catches it.
    let a_shift = if fault_armed("wrong:", kernel) { 4 } else { 0 };
    let params = MatmulParams {
        m,
        n,
        k,
        a_off: (a.offset + a_shift) as u32,
        b_off: b.offset as u32,
        c_off: c.offset as u32,
        aux_off: aux.offset as u32,
        bias_off: bias_off as u32,
        a_stride: a.model_stride as u32,
        b_stride: b.model_stride as u32,
        c_stride: c.model_stride as u32,
        aux_stride: aux.model_stride as u32,
        ..Default::default()
    };
    Ok((params, aux))
}

/// Checks that the models' copies of an output (`written` elements from its offset, for each model) do not
/// overlap: two models writing one element would race.
fn check_apart(label: &str, what: &str, out: Operand, written: u64, models: u32) -> Result<()> {
    if models > 1 && (out.model_stride as u64) < written {
        return Err(Error::shape(
            "matmul",
            format!(
                "{label}: {what} is written by each of {models} models, so each needs its own {written} elements; \
                 its model stride is {} (give each model its own copy)",
                out.model_stride
            ),
        ));
    }
    Ok(())
}

fn matmul_parts_with(gpu: &Gpu, kernel: Kernel, label: &str, parts: &[Part]) -> Result<Dispatch> {
    let checked = parts
        .iter()
        .map(|part| part_params(label, kernel, part))
        .collect::<Result<Vec<_>>>()?;
    let first = &parts[0];
    let second = parts.get(1);
    let bce = parts.iter().find_map(|p| match p.epilogue {
        Epilogue::BiasBce { x, grad, .. } => Some((x, grad)),
        _ => None,
    });
    if bce.is_some() && parts.len() > 1 {
        return Err(Error::shape(
            "matmul",
            format!("{label}: the BCE epilogue is not for a pair"),
        ));
    }
    if let Some(s) = second
        && s.models != first.models
    {
        return Err(Error::shape(
            "matmul",
            format!(
                "{label}: the two products of a pair must be for the same models, got {} and {}",
                first.models, s.models
            ),
        ));
    }
    let models = first.models;
    let max_dim = gpu.device.limits().max_compute_workgroups_per_dimension;
    if models > max_dim {
        return Err(Error::shape(
            "matmul",
            format!(
                "{label}: {models} models is more than this device's {max_dim} workgroups in a dimension"
            ),
        ));
    }
    if let Some(s) = second
        && (s.a.buffer != first.a.buffer
            || s.a.offset != first.a.offset
            || s.a.model_stride != first.a.model_stride)
    {
        return Err(Error::shape(
            "matmul",
            format!("{label}: the two products of a pair must read the same A"),
        ));
    }
    // The vec4 kernels read A and B in vec4s: every model's copies must start on a multiple of 4.
    let vec4 = |p: &Part| {
        vec4_kernel(
            kernel,
            p.layout,
            p.dims,
            p.a.offset | p.a.model_stride,
            p.b.offset | p.b.model_stride,
            matches!(p.epilogue, Epilogue::BiasGrad { .. }),
        )
    };
    let entry_vec4 = match second {
        None => vec4(first),
        Some(s) => (vec4(first) == Some("matmul_tn4") && vec4(s) == Some("matmul_nn4"))
            .then_some("matmul_pair4"),
    };
    let (module, entry, mut constants) = kernel.pipeline();
    constants.push(("LAYOUT", first.layout.code() as f64));
    constants.push(("EPILOGUE", first.epilogue.kind().code() as f64));
    if let Some(s) = second {
        constants.push(("PAIRED", 1.0));
        constants.push(("LAYOUT2", s.layout.code() as f64));
        constants.push(("EPILOGUE2", s.epilogue.kind().code() as f64));
    }
    if fault_armed("reject:", kernel) {
        // Test-only (`reject:<kernel>`): a constant the shader does not declare, so creating the pipeline fails
        // inside wgpu, caught by its error scope, as a driver's rejection would be.
        constants.push((REJECTED_BY_TEST_FAULT, 1.0));
    }
    let spec = KernelSpec {
        module,
        entry: entry_vec4.unwrap_or(entry),
        constants,
        storage: &[
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::Read,
        ],
        uses_rows: false,
    };
    // Workgroups: the parts' rows of tiles one after the other, as wide as the wider part. The vec4 kernels
    // compute the bias gradient without the extra column.
    let (tile_m, tile_n) = kernel.tile();
    let cols = |p: &Part| {
        p.dims.1 + (matches!(p.epilogue, Epilogue::BiasGrad { .. }) && entry_vec4.is_none()) as u32
    };
    let mut params = [MatmulParams::default(); 2];
    for ((slot, (p, _)), part) in params.iter_mut().zip(&checked).zip(parts) {
        *slot = *p;
        slot.groups_x = cols(part).div_ceil(tile_n);
    }
    let per_part: Vec<u64> = parts
        .iter()
        .map(|p| cols(p).div_ceil(tile_n) as u64 * p.dims.0.div_ceil(tile_m) as u64)
        .collect();
    let workgroups = if second.is_some() {
        // One grid for both, the second's workgroups spread evenly through it (see `pair_part` in
        // matmul_common.wgsl), numbered row by row over at most the per-dimension limit.
        let total = per_part.iter().sum::<u64>();
        params[0].pair_count = per_part[1] as u32;
        params[0].pair_stride = (total / per_part[1]) as u32;
        let max = max_dim as u64;
        let x = total.min(max);
        [x as u32, total.div_ceil(x) as u32, models]
    } else {
        let x = cols(first).div_ceil(tile_n);
        [x, first.dims.0.div_ceil(tile_m), models]
    };
    // Unpaired, the second product's bindings repeat the first's read-only ones (the shader never reads them),
    // and its output is a buffer of its own (WebGPU forbids writable bindings that overlap), except under the BCE
    // epilogue: the gradient and x, at params[1]'s c_off and aux_off.
    let (p1, aux1) = (
        second.unwrap_or(first),
        checked.last().map(|c| c.1).unwrap_or(checked[0].1),
    );
    let (c2, aux2) = match bce {
        Some((x, grad)) => {
            params[1].c_off = grad.offset as u32;
            params[1].aux_off = x.offset as u32;
            params[1].c_stride = grad.model_stride as u32;
            params[1].aux_stride = x.model_stride as u32;
            (grad.buffer, x.buffer)
        }
        None if second.is_some() => (p1.c.buffer, aux1.buffer),
        None => (gpu.unused_storage()?, aux1.buffer),
    };
    let buffers = [
        first.a.buffer,
        first.b.buffer,
        first.c.buffer,
        checked[0].1.buffer,
        p1.b.buffer,
        c2,
        aux2,
    ];
    let work = |p: &Part| {
        let (m, n, k) = (p.dims.0 as u64, p.dims.1 as u64, p.dims.2 as u64);
        (
            flops(p.dims.0, p.dims.1, p.dims.2),
            4.0 * (m * k + k * n + m * n) as f64,
        )
    };
    let (flop, bytes) = parts
        .iter()
        .map(work)
        .fold((0.0, 0.0), |(f, b), (f2, b2)| (f + f2, b + b2));
    let (flop, bytes) = (flop * models as f64, bytes * models as f64);
    let workload = |p: &Part| Workload {
        family: MATMUL.name,
        dims: [p.dims.0, p.dims.1, p.dims.2],
        codes: [p.layout.code(), p.epilogue.kind().code()],
        models: p.models,
    };
    let d = gpu.dispatch(label, &spec, &params, &buffers, workgroups, None)?;
    let mut d = d
        .with_work(flop, bytes)
        .with_workload(workload(first), kernel.name());
    if let Some(s) = second {
        d = d.with_pair(workload(s));
    }
    Ok(d)
}
