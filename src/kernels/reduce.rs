//! reduce: loss partials to one total per term, into the step's row of the loss log (`shaders/reduce.wgsl`).

use super::loss::MAX_PARTIALS;
use super::{Access, Dispatch, KernelSpec, REDUCE, StepTable, check_room};
use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// The most loss terms one reduction handles.
pub const MAX_TERMS: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    terms: u32,
    stride: u32,
    _pad: [u32; 2],
    counts: [u32; 4],
}

/// Records `log[step.loss_slot · terms + t] = Σ partials[t·stride .. t·stride + counts[t]]` for each term t.
pub fn reduce(
    gpu: &Gpu,
    label: &str,
    partials: &wgpu::Buffer,
    stride: u32,
    counts: &[u32],
    log: &wgpu::Buffer,
    step: &StepTable,
) -> Result<Dispatch> {
    let terms = counts.len();
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
    check_room(
        "reduce",
        label,
        "partials",
        partials,
        0,
        stride as u64 * terms as u64,
    )?;
    if log.size() < step.capacity as u64 * terms as u64 * 4 {
        return Err(Error::shape(
            "reduce",
            format!("{label}: the loss log needs {terms} floats per step-table row"),
        ));
    }
    let mut c = [0u32; 4];
    c[..terms].copy_from_slice(counts);
    let params = Params {
        terms: terms as u32,
        stride,
        _pad: [0; 2],
        counts: c,
    };
    let spec = KernelSpec {
        family: &REDUCE,
        entry: "reduce_partials",
        constants: vec![],
        storage: &[Access::Read, Access::ReadWrite],
        uses_step: true,
    };
    gpu.dispatch(
        label,
        &spec,
        &params,
        &[partials, log],
        [terms as u32, 1, 1],
        Some(step),
    )
    .map(|d| d.with_work(0.0, 4.0 * counts.iter().sum::<u32>() as f64))
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
