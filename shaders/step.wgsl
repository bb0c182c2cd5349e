// step: the per-step values of a recorded training step (`StepParams`, generated into the prelude from
// src/kernels/contract.rs). Prepended to the families that read it. The host writes one row per step before
// submitting; each step's dispatches bind their row through a dynamic uniform offset, so many steps recorded into
// one command buffer each see their own values with no host write in between.

@group(1) @binding(0) var<uniform> step: StepParams;

// A batched step's values per model (`ModelStep`): model k's at step_models[k], the window beside the step's row
// (its own dynamic offset). Only the rows of the step's models are written; a single model's dispatches read none.
@group(1) @binding(1) var<uniform> step_models: array<ModelStep, MAX_MODELS>;
