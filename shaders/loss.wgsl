// loss: the reconstruction term of the negative ELBO fused with its gradient, summed (not averaged) over the batch.
// (The KL term is computed with the reparameterization, reparam.wgsl, whose backward is fused with it.)
//
// bce_logits — Bernoulli reconstruction loss on the decoder's logits l against the image x in [0, 1]:
//   logits, x, dlogits: (rows, cols) f32; x starts at target_x[p.x_off] (a training step's x slot)
//   loss  = Σ max(l, 0) − l·x + log(1 + exp(−|l|))      (stable for any l: bce_term in logistic.wgsl)
//   dlogits = σ(l) − x                                   (the gradient of the summed loss)
//
// It writes one loss partial per workgroup to partials[step.partial_slot · p.slot_stride + p.partial_off +
// workgroup] (WGSL has no f32 atomics): each step of a submission has its own slot, and one `reduce` at the log
// point sums them all. With the pipeline constant GRAD = false it computes the loss only (evaluation).
// Several models at once (a batched step, p.models): model k is the grid's z; its logits and ∂logits start at
// k·p.logits_stride, its images at k·p.x_stride past p.x_off (0: every model's the same), its partials take slot
// step.partial_slot·p.models + k.
// Dispatch: (groups, 1, models) workgroups of WG with groups = min(ceil(n / WG), MAX_PARTIALS) (`loss_groups`) for the
// workspace's largest batch; each
// invocation strides over the n elements by WG·groups, then the workgroup sums its values in workgroup memory.

override GRAD: bool = true;

@group(0) @binding(0) var<uniform> p: LossParams;

@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> target_x: array<f32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> bce_partials: array<f32>;

@compute @workgroup_size(WG)
fn bce_logits(
    lane: Lane,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let lid = lane.index;
    let k = wg.z;
    let n = p.rows * p.cols;
    let l_at = k * p.logits_stride;
    let x_at = p.x_off + k * p.x_stride;
    var sum = 0.0;
    for (var i = wg.x * WG + lid; i < n; i += groups.x * WG) {
        let l = logits[l_at + i];
        let x = target_x[x_at + i];
        sum += bce_term(l, x);
        if GRAD {
            dlogits[l_at + i] = sigmoid(l) - x;
        }
    }
    let total = workgroup_sum(lane, sum);
    if lid == 0u {
        bce_partials[(step.partial_slot * p.models + k) * p.slot_stride + p.partial_off + wg.x] = total;
    }
}
