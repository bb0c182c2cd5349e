// hang (test-only, the `hang-after-step` fault in src/fault.rs): work that takes hours on any GPU or CPU,
// standing in for a driver that never finishes. Each of 65535 × 16 workgroups of one invocation runs a dependent chain
// of p.iterations² integer steps. The chain's end is stored, so no compiler can drop the loop, and a xorshift chain
// has no closed form it could use.
//
//   out: (65535 × 16) u32, written

@group(0) @binding(0) var<uniform> p: HangParams;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(1)
fn hang(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let at = wg.y * groups.x + wg.x;
    var x = out[at] | 1u;
    // llvmpipe ends an invocation's loops after 65535 trips in all (its guard against infinite loops), so there
    // the length comes from the number of workgroups; elsewhere from the loops.
    for (var i = 0u; i < p.iterations; i++) {
        for (var j = 0u; j < p.iterations; j++) {
            x ^= x << 13u;
            x ^= x >> 17u;
            x ^= x << 5u;
        }
    }
    out[at] = x;
}
