// workgroup_sum, with subgroup operations (wgpu's SUBGROUP feature; the module is built only where the device has
// it): each subgroup sums its values with subgroupAdd, one lane per subgroup writes that sum to workgroup memory,
// and after one barrier every invocation adds the subgroups' sums in subgroup order. One barrier instead of
// log2(WG) + 1, and no dependence on how invocations map to subgroups; the result is the same on every run of a
// device (subgroupAdd's internal order is the hardware's, fixed). Subgroup sizes differ (8 on lavapipe, 32 on
// NVIDIA, up to 128 elsewhere): nothing here assumes one.

struct Lane {
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) sg_count: u32,
}

var<workgroup> scratch: array<f32, WG>;

fn workgroup_sum(lane: Lane, value: f32) -> f32 {
    let s = subgroupAdd(value);
    if lane.sg_lane == 0u {
        scratch[lane.sg] = s;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < lane.sg_count; i++) {
        total += scratch[i];
    }
    return total;
}
