// matmul_split: C = A·B with k split inside the workgroup (layouts, epilogues, loads and the store:
// matmul_common.wgsl). For small outputs with a long k (the batch-128 products, k = 784), where one invocation per
// output would leave the GPU idle: a workgroup of WG invocations computes RM × RN outputs, each by SLICES
// invocations that take every SLICES-th k, and the slices' partial sums meet in a fixed-order tree in workgroup
// memory (no atomics), so the result is the same on every run.
//
// Pipeline constants: RM, RN and SLICES with RM·RN·SLICES = WG, SLICES a power of two; K_FASTEST puts the slices of
// one output on consecutive invocations (consecutive k: coalesced where A and B are contiguous along k, NT) or the
// outputs (consecutive m or n: coalesced along TN's rows). Dispatch: (ceil(n' / RN), ceil(m / RM), 1).
//
// matmul_split_nt4: the same for LAYOUT_NT where k and both offsets are multiples of 4, A and B read as vec4s along
// k (slice s takes the k/4 vec4s s, s + SLICES, …): a quarter of the loads and of the serial loop.

override RM: u32 = 4u;
override RN: u32 = 4u;
override SLICES: u32 = 16u;
override K_FASTEST: bool = true;

var<workgroup> partial: array<f32, WG>;

fn split_slot(o: u32, s: u32) -> u32 {
    if K_FASTEST {
        return o * SLICES + s;
    }
    return s * (RM * RN) + o;
}

@compute @workgroup_size(WG)
fn matmul_split(@builtin(workgroup_id) wg_in: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let wg = enter(wg_in, num, RM);
    let lane = split_lane(lid);
    let o = lane.x;
    let s = lane.y;
    let m = wg.y * RM + o / RN;
    let n = wg.x * RN + o % RN;
    var sum = 0.0;
    if m < p.m && n < output_cols() {
        for (var k = s; k < p.k; k += SLICES) {
            sum = fma(load_a(m, k), load_b_or_one(k, n), sum);
        }
    }
    finish(m, n, o, s, sum);
}

// The slices' partial sums of output o meet in a fixed-order tree; slice 0 stores the output.
fn finish(m: u32, n: u32, o: u32, s: u32, sum: f32) {
    partial[split_slot(o, s)] = sum;
    workgroupBarrier();
    for (var half = SLICES / 2u; half > 0u; half >>= 1u) {
        if s < half {
            partial[split_slot(o, s)] += partial[split_slot(o, s + half)];
        }
        workgroupBarrier();
    }
    if s == 0u {
        store(m, n, partial[split_slot(o, 0u)], part_epilogue() == EPI_BIAS_GRAD && n == p.n);
    }
}

// This invocation's output in the workgroup's RM × RN and its slice of k: (output, slice).
fn split_lane(lid: u32) -> vec2<u32> {
    if K_FASTEST {
        return vec2<u32>(lid / SLICES, lid % SLICES);
    }
    return vec2<u32>(lid % (RM * RN), lid / (RM * RN));
}

@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn matmul_split_nt4(@builtin(workgroup_id) wg_in: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let wg = enter(wg_in, num, RM);
    let lane = split_lane(lid);
    let o = lane.x;
    let s = lane.y;
    let m = wg.y * RM + o / RN;
    let n = wg.x * RN + o % RN;
    var sum = 0.0;
    if m < p.m && n < p.n {
        let ar = (p.a_off + m * p.k) / 4u;
        let br = (p.b_off + n * p.k) / 4u;
        for (var k = s; k < p.k / 4u; k += SLICES) {
            let x = a4[ar + k];
            let y = b4[br + k];
            sum = fma(x.x, y.x, sum);
            sum = fma(x.y, y.y, sum);
            sum = fma(x.z, y.z, sum);
            sum = fma(x.w, y.w, sum);
        }
    }
    finish(m, n, o, s, sum);
}
