// workgroup_sum: the sum of one f32 per invocation over a workgroup of WG (256), by a tree in workgroup memory (WGSL
// has no f32 atomics). Prepended to the families that reduce (loss, reduce, iwae); workgroup_sum_subgroup.wgsl is
// the same function with subgroup operations, for devices that have them. Every invocation of the workgroup must
// call it (it has barriers); all of them get the total, the same on every run.
//
// The kernels take their invocation's builtins as a `Lane` (its fields differ between the two versions).

struct Lane {
    @builtin(local_invocation_index) index: u32,
}

var<workgroup> scratch: array<f32, WG>;

fn workgroup_sum(lane: Lane, value: f32) -> f32 {
    let lid = lane.index;
    scratch[lid] = value;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half >>= 1u) {
        if lid < half {
            scratch[lid] += scratch[lid + half];
        }
        workgroupBarrier();
    }
    return scratch[0];
}
