//! reduce: loss partials to one total per term, into the step's row of the loss log (`shaders/reduce.wgsl`).

use super::contract::{MAX_PARTIALS, MAX_TERMS, ReduceParams};
use super::{REDUCE, Reduction, StepTable, check_room};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::{Access, Dispatch, KernelSpec};

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
    if log.size() < step.capacity() as u64 * terms as u64 * 4 {
        return Err(Error::shape(
            "reduce",
            format!("{label}: the loss log needs {terms} floats per step-table row"),
        ));
    }
    let mut c = [0u32; 4];
    c[..terms].copy_from_slice(counts);
    let params = ReduceParams {
        terms: terms as u32,
        stride,
        counts: c,
        ..Default::default()
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
        [terms as u32, 1, 1],
        Some(&step.rows),
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
