//! The step table: the values that change from one training step to the next ([`StepParams`], defined in the
//! contract), one row per step, read by the kernels through a dynamic uniform offset.
//!
//! `queue.write_buffer` lands at the next submit, not between the dispatches of one command buffer, so a
//! step number written by the host could not change between steps recorded together. Instead the host writes a
//! row per step before submitting, and each step's dispatches bind their row (`Plan::record(pass, row)`).
//! `shaders/step.wgsl` binds it as `step`.

use crate::error::Result;
use crate::gpu::{Gpu, RowTable, pipeline::ROW_SIZE};

pub use super::contract::StepParams;

const _: () = assert!(size_of::<StepParams>() == ROW_SIZE);

/// A row table of [`StepParams`].
#[derive(Debug)]
pub struct StepTable {
    pub rows: RowTable,
}

impl StepTable {
    pub fn new(gpu: &Gpu, capacity: u32) -> Result<StepTable> {
        Ok(StepTable {
            rows: RowTable::new(gpu, "step.table", capacity)?,
        })
    }

    pub fn capacity(&self) -> u32 {
        self.rows.capacity
    }

    /// Queues rows `first..first + rows.len()`; they land at the next submit.
    pub fn write(&self, gpu: &Gpu, first: u32, rows: &[StepParams]) -> Result<()> {
        self.rows.write(gpu, first, rows)
    }
}
