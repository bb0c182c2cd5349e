//! The step table: the values that change from one training step to the next ([`StepParams`], defined in the
//! contract), one row per step, read by the kernels through a dynamic uniform offset; and for a batched run of
//! several models, the values that also differ between the models ([`ModelStep`]), one row per step and model.
//!
//! `queue.write_buffer` lands at the next submit, not between the dispatches of one command buffer, so a
//! step number written by the host could not change between steps recorded together. Instead the host writes a
//! row per step before submitting, and each step's dispatches bind their row (`Plan::record(pass, row)`).
//! `shaders/step.wgsl` binds it as `step`.
//!
//! A batched dispatch computes every model at once, so it cannot bind one row per model: each step row has a
//! window of model rows beside it ([`ModelStep`], model k's at `step_models[k]` in the shaders, bound with a
//! second dynamic offset), holding what differs by model (Adam's step size for its learning rate, its KL weight,
//! its noise key). Each model's values are the ones a run of that model alone puts there, to the bit, so a model
//! computes in a batch what it computes alone.

use super::contract::MAX_MODELS;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, RowTable, pipeline::ROW_SIZE, pipeline::WINDOW_SIZE};

pub use super::contract::{ModelStep, StepParams};

const _: () = assert!(size_of::<StepParams>() == ROW_SIZE);
const _: () = assert!(size_of::<ModelStep>() * MAX_MODELS as usize == WINDOW_SIZE);

/// A row table of [`StepParams`], and each row's model rows.
#[derive(Debug)]
pub struct StepTable {
    pub rows: RowTable,
    /// Models per step in the rows' windows; 0: none (the table's dispatches read only their step row).
    pub models: u32,
}

impl StepTable {
    /// A step table of `capacity` rows for one model.
    pub fn new(gpu: &Gpu, capacity: u32) -> Result<StepTable> {
        StepTable::with_models(gpu, capacity, 0)
    }

    /// A step table with model rows for `models` models at each of its `capacity` steps (0: none), at most
    /// [`MAX_MODELS`].
    pub fn with_models(gpu: &Gpu, capacity: u32, models: u32) -> Result<StepTable> {
        if models > MAX_MODELS {
            return Err(Error::Invalid(format!(
                "{models} models in one step; at most {MAX_MODELS}"
            )));
        }
        let window = models * size_of::<ModelStep>() as u32;
        Ok(StepTable {
            rows: RowTable::new(gpu, "step.table", capacity, window)?,
            models,
        })
    }

    pub fn capacity(&self) -> u32 {
        self.rows.capacity
    }

    /// Queues rows `first..first + rows.len()`; they land at the next submit.
    pub fn write(&self, gpu: &Gpu, first: u32, rows: &[StepParams]) -> Result<()> {
        self.rows.write(gpu, first, rows)
    }

    /// Queues the model rows of steps `first..`: `rows` holds each step's models in turn (`models` per step);
    /// they land at the next submit.
    pub fn write_models(&self, gpu: &Gpu, first: u32, rows: &[ModelStep]) -> Result<()> {
        if self.models == 0 {
            return Err(Error::Invalid(
                "this step table has no model rows (StepTable::with_models makes one)".into(),
            ));
        }
        self.rows
            .write_windows(gpu, first, bytemuck::cast_slice(rows))
    }
}
