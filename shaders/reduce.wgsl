// reduce: the loss kernels' per-workgroup partials to one total per loss term, written to the loss log.
//
//   partials: term t's partials are partials[t·p.stride .. t·p.stride + p.counts[t]]   (f32)
//   loss_log: loss_log[step.loss_slot · p.terms + t] = Σ of term t's partials               (f32)
//
// The loss log keeps one row per step, so many recorded steps leave their totals side by side on the GPU and the
// host reads them back once per log interval (and sums them in f64). Dispatch: (terms, 1, 1) workgroups of WG;
// workgroup t sums term t with a strided loop and a tree in workgroup memory (WGSL has no f32 atomics).

@group(0) @binding(0) var<uniform> p: ReduceParams;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> loss_log: array<f32>;

@compute @workgroup_size(WG)
fn reduce_partials(lane: Lane, @builtin(workgroup_id) wg: vec3<u32>) {
    let lid = lane.index;
    let term = wg.x;
    let count = p.counts[term];
    var sum = 0.0;
    for (var i = lid; i < count; i += WG) {
        sum += partials[term * p.stride + i];
    }
    let total = workgroup_sum(lane, sum);
    if lid == 0u {
        loss_log[step.loss_slot * p.terms + term] = total;
    }
}
