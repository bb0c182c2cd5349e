// step: the per-step values of a recorded training step (mirrors `StepParams` in src/kernels/step.rs).
// Prepended to the families that read it. The host writes one row per step before submitting; each step's
// dispatches bind their row through a dynamic uniform offset, so many steps recorded into one command buffer each
// see their own values with no host write in between.

struct Step {
    t: u32,                  // Adam's step number, 1-based
    batch_offset: u32,       // position of this batch's first row in the epoch's index list
    loss_slot: u32,          // row of the loss log for this step's totals
    rng_step: u32,           // Philox counter word 1 for this step's noise
    adam_step_size: f32,     // lr / (1 - beta1^t)
    adam_inv_sqrt_bc2: f32,  // 1 / sqrt(1 - beta2^t)
    kl_weight: f32,          // weight on the KL term
    _pad: u32,
}

@group(1) @binding(0) var<uniform> step: Step;
