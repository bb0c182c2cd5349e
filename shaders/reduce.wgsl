// reduce: the loss kernels' per-workgroup partials to one total per loss term and step, written to the loss log.
//
//   partials: step s's term t's partials are partials[s·p.slot_stride + t·p.stride ..][..p.counts[t]]   (f32)
//   loss_log: loss_log[(step.loss_slot − step.partial_slot + s) · p.terms + t] = Σ of those partials      (f32)
//
// Each step of a submission leaves its partials in its own slot (the step table's `partial_slot`), so the step
// itself reduces nothing: this kernel runs once per submission, after its last step and with that step's row, and
// turns slots 0..=partial_slot into that many rows of the loss log. The loss log keeps one row per step, read back
// once per log interval (and summed in f64). Dispatch: (terms, slots, 1) workgroups of WG; workgroup (t, s) sums
// term t of slot s with a strided loop and a tree in workgroup memory (WGSL has no f32 atomics); slots past the
// step's `partial_slot` belong to no step of this submission and write nothing.
//
// A batched step of p.models models: model k of step slot s has partial slot s·p.models + k (the loss kernels
// put it there), the grid's y counts those (terms, slots·models, 1), and its totals go to the loss log's entries
// ((step.loss_slot − step.partial_slot)·p.models + y)·p.terms + t: each step's row holds every model's terms.

@group(0) @binding(0) var<uniform> p: ReduceParams;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> loss_log: array<f32>;

@compute @workgroup_size(WG)
fn reduce_partials(lane: Lane, @builtin(workgroup_id) wg: vec3<u32>) {
    let lid = lane.index;
    let term = wg.x;
    let slot = wg.y;
    if slot >= (step.partial_slot + 1u) * p.models {
        return;
    }
    let count = p.counts[term];
    let first = slot * p.slot_stride + term * p.stride;
    var sum = 0.0;
    for (var i = lid; i < count; i += WG) {
        sum += partials[first + i];
    }
    let total = workgroup_sum(lane, sum);
    if lid == 0u {
        loss_log[((step.loss_slot - step.partial_slot) * p.models + slot) * p.terms + term] = total;
    }
}
