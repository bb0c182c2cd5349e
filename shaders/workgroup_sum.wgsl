// workgroup_sum: the sum of one f32 per invocation over a workgroup of WG (256), by a tree in workgroup memory (WGSL
// has no f32 atomics). Prepended to the families that reduce (loss, reduce). Every invocation of the workgroup
// must call it (it has barriers); all of them get the total.

var<workgroup> scratch: array<f32, WG>;

fn workgroup_sum(lid: u32, value: f32) -> f32 {
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
