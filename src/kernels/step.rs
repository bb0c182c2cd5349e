//! The step table: the values that change from one training step to the next, one row per step, read by the
//! kernels through a dynamic uniform offset.
//!
//! `queue.write_buffer` lands at the next submit, not between the dispatches of one command buffer, so a
//! step number written by the host could not change between steps recorded together. Instead the host writes a
//! row per step before submitting, and each step's dispatches bind their row (`Dispatch::record(pass, slot)`).
//! Mirrors `struct Step` in `shaders/step.wgsl`.

use crate::error::{Error, Result};
use crate::gpu::Gpu;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepParams {
    /// Adam's step number, 1-based.
    pub t: u32,
    /// Position of this batch's first row in the epoch's index list.
    pub batch_offset: u32,
    /// Row of the loss log that this step's loss totals go to.
    pub loss_slot: u32,
    /// Philox counter word 1 for this step's noise (the step number, so a resumed run draws the same noise).
    pub rng_step: u32,
    /// Adam's step size with the first-moment bias correction folded in: lr / (1 − β1ᵗ).
    pub adam_step_size: f32,
    /// Adam's second-moment bias correction: 1 / √(1 − β2ᵗ).
    pub adam_inv_sqrt_bc2: f32,
    /// Weight on the KL term (β of a β-VAE; 1 for the plain ELBO).
    pub kl_weight: f32,
    pub _pad: u32,
}

/// A uniform buffer of `capacity` [`StepParams`] rows spaced by the device's uniform offset alignment.
#[derive(Debug)]
pub struct StepTable {
    pub buffer: wgpu::Buffer,
    pub(crate) bind_group: wgpu::BindGroup,
    pub(crate) stride: u32,
    pub capacity: u32,
}

impl StepTable {
    pub fn new(gpu: &Gpu, capacity: u32) -> Result<StepTable> {
        let capacity = capacity.max(1);
        let stride = gpu
            .device
            .limits()
            .min_uniform_buffer_offset_alignment
            .max(size_of::<StepParams>() as u32);
        let buffer = gpu.buffer(
            "step.table",
            stride as u64 * capacity as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        )?;
        let layout = gpu.step_layout();
        let bind_group = gpu.scoped("binding the step table", || {
            gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("step.table"),
                layout: &layout,
                entries: &[wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &buffer,
                        offset: 0,
                        size: wgpu::BufferSize::new(size_of::<StepParams>() as u64),
                    }),
                }],
            })
        })?;
        Ok(StepTable {
            buffer,
            bind_group,
            stride,
            capacity,
        })
    }

    /// Queues rows `first..first + rows.len()`; they land at the next submit.
    pub fn write(&self, gpu: &Gpu, first: u32, rows: &[StepParams]) -> Result<()> {
        if first as usize + rows.len() > self.capacity as usize {
            return Err(Error::shape(
                "step table",
                format!(
                    "rows {first}..{} do not fit in a table of {} rows",
                    first as usize + rows.len(),
                    self.capacity
                ),
            ));
        }
        let mut bytes = vec![0u8; rows.len() * self.stride as usize];
        for (i, row) in rows.iter().enumerate() {
            let at = i * self.stride as usize;
            bytes[at..at + size_of::<StepParams>()].copy_from_slice(bytemuck::bytes_of(row));
        }
        gpu.queue
            .write_buffer(&self.buffer, first as u64 * self.stride as u64, &bytes);
        Ok(())
    }
}
