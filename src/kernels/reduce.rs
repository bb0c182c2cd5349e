//! reduce: loss partials to one total per term, into the step's row of the loss log (`shaders/reduce.wgsl`).

use super::contract::{MAX_PARTIALS, MAX_TERMS, ReduceParams};
use super::{REDUCE, Reduction, StepTable, check_room};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::{Access, Dispatch, KernelSpec};

/// Where the partials of a submission's steps are: `slots` slots `slot_stride` elements apart, each holding one
/// block of partials per term, `stride` apart, `counts[t]` of them for term t. A batched step of `models` models
/// has `models` slots per step slot (model k of step slot s in slot s·models + k), and every step's row of the
/// loss log holds each model's terms in turn.
#[derive(Clone, Copy, Debug)]
pub struct PartialsLayout<'a> {
    pub slots: u32,
    pub slot_stride: u32,
    pub stride: u32,
    pub counts: &'a [u32],
    pub models: u32,
}

/// Records, for each slot s up to the step row's `partial_slot` and each term t (one model),
/// `log[(step.loss_slot − step.partial_slot + s) · terms + t] = Σ partials[s·slot_stride + t·stride ..][..counts[t]]`
/// (several: see [`PartialsLayout`]):
/// one dispatch at the end of a submission, recorded with its last step's row, turns every step's partials into
/// its row of the loss log.
pub fn reduce(
    gpu: &Gpu,
    label: &str,
    partials: &wgpu::Buffer,
    at: PartialsLayout,
    log: &wgpu::Buffer,
    step: &StepTable,
) -> Result<Dispatch> {
    let PartialsLayout {
        slots,
        slot_stride,
        stride,
        counts,
        models,
    } = at;
    let terms = counts.len();
    if models == 0 {
        return Err(Error::shape("reduce", format!("{label}: zero models")));
    }
    // Model slots: each step slot's models in turn.
    let slots = slots.saturating_mul(models);
    if terms == 0 || terms > MAX_TERMS {
        return Err(Error::shape(
            "reduce",
            format!("{label}: {terms} terms; between 1 and {MAX_TERMS} are supported"),
        ));
    }
    if counts.iter().any(|&c| c > stride || c > MAX_PARTIALS * 64) {
        return Err(Error::shape(
            "reduce",
            format!("{label}: counts {counts:?} exceed the stride {stride}"),
        ));
    }
    if slots == 0 || (slots > 1 && slot_stride < stride * terms as u32) {
        return Err(Error::shape(
            "reduce",
            format!(
                "{label}: {slots} slots {slot_stride} apart cannot hold {terms} terms {stride} apart"
            ),
        ));
    }
    check_room(
        "reduce",
        label,
        "partials",
        partials,
        0,
        (slots as u64 - 1) * slot_stride as u64 + stride as u64 * terms as u64,
    )?;
    if log.size() < step.capacity() as u64 * models as u64 * terms as u64 * 4 {
        return Err(Error::shape(
            "reduce",
            format!("{label}: the loss log needs {terms} floats per model and step-table row"),
        ));
    }
    let mut c = [0u32; 4];
    c[..terms].copy_from_slice(counts);
    let params = ReduceParams {
        terms: terms as u32,
        stride,
        slot_stride,
        models,
        counts: c,
    };
    let spec = KernelSpec {
        module: Reduction::for_gpu(gpu).module(&REDUCE),
        entry: "reduce_partials",
        constants: vec![],
        storage: &[Access::Read, Access::ReadWrite],
        uses_rows: true,
    };
    gpu.dispatch(
        label,
        &spec,
        &params,
        &[partials, log],
        [terms as u32, slots, 1],
        Some(&step.rows),
    )
    .map(|d| d.with_work(0.0, 4.0 * slots as f64 * counts.iter().sum::<u32>() as f64))
}

/// CPU reference: each term's partials summed in f64.
pub fn reduce_cpu(partials: &[f32], stride: usize, counts: &[u32]) -> Vec<f64> {
    counts
        .iter()
        .enumerate()
        .map(|(t, &c)| {
            partials[t * stride..t * stride + c as usize]
                .iter()
                .map(|&v| v as f64)
                .sum()
        })
        .collect()
}
