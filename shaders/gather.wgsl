// gather: batches of rows of a u8 dataset resident on the GPU, picked through an index list, scaled to [0, 1].
//
//   data:  (data_rows, cols) bytes, row-major, packed four to a u32 (little-endian)
//   index: the epoch's order of dataset rows (u32, index_len of them)
//   x:     p.steps batches of (rows, cols) f32 row-major, batch g at x[g · p.stride]; x = byte / 255, as
//          torchvision's ToTensor
//
// Batch g is that of the step g steps after the one whose step-table row the dispatch is recorded with: its row r
// is dataset row index[step.batch_offset + g · rows + r]. So one dispatch gathers the batches of several training
// steps ahead of them (the trainer's x slots), and a step itself records no gather. A row at or past index_len (the
// epoch ended inside the last batches) is not written.
//
// With the pipeline constant BINARIZE (dynamic binarization, the standard setup of the log-likelihood literature),
// x = 1 where a Philox uniform u < byte / 255, else 0: element i of batch g draws from counter
// (i, step.rng_step + g, p.stream, 0) under key (p.key_lo, p.key_hi), so every step sees a fresh binarization that
// the CPU can repeat, whichever dispatch gathered it.
//
// A sweep whose models differ in their binarization (p.models > 0) gathers each model's own batches: model k is
// the grid's z, its batches start at k · p.model_stride, and it is binarized where step_models[k].binarize says
// (the same noise for every model that is, keyed by the data's seed). Otherwise one batch serves every model.
//
// Dispatch: one invocation per element of the batches, WG (256) per workgroup, workgroups on a 2-D grid (`grid` in
// src/kernels/mod.rs). An index past the dataset writes NaN, so a host bug cannot pass for data.

override BINARIZE: bool = false;

// byte / 255 correctly rounded to f32, from integer arithmetic only. WGSL allows f32 division 2.5 ULP, and drivers
// differ in the last bit (3 / 255 is 0.011764707 on SwiftShader and NVIDIA, 0.011764706 on lavapipe); integer
// division and bitcast are exact everywhere, so every conformant implementation returns these same bits.
//
// For 1 <= v <= 255, with b = firstLeadingBit(v): n = v << (31 - b) lies in [2^31, 2^32) and v / 255 =
// (n / 255) · 2^-s with s = 31 - b. If n >= 255 · 2^24 (only v = 255), halve n (its low 24 bits are zero, so
// exactly) and decrement s: then n / 255 lies in [2^23, 2^24), a 24-bit significand. q = n / 255 rounded to
// nearest (the remainder r is never 255 / 2, since 255 is odd: no ties); should q round up to 2^24, it becomes
// 2^23 with s decremented. The result q · 2^-s has biased exponent 127 + 23 - s and mantissa q - 2^23.
fn byte_to_unit(v: u32) -> f32 {
    if v == 0u {
        return 0.0;
    }
    let b = firstLeadingBit(v);
    var n = v << (31u - b);
    var s = 31u - b;
    if n >= 255u << 24u {
        n = n >> 1u;
        s = s - 1u;
    }
    var q = n / 255u;
    let r = n % 255u;
    if 2u * r > 255u {
        q = q + 1u;
    }
    if q == 1u << 24u {
        q = 1u << 23u;
        s = s - 1u;
    }
    return bitcast<f32>(((127u + 23u - s) << 23u) | (q - (1u << 23u)));
}

@group(0) @binding(0) var<uniform> p: GatherParams;
@group(0) @binding(1) var<storage, read> data: array<u32>;
@group(0) @binding(2) var<storage, read> index: array<u32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(WG)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let all = gid.x + gid.y * groups.x * WG;
    let batch = p.rows * p.cols;
    if all >= p.steps * batch {
        return;
    }
    let g = all / batch;
    let i = all - g * batch;
    let r = i / p.cols;
    let c = i - r * p.cols;
    let at = step.batch_offset + g * p.rows + r;
    if at >= p.index_len {
        return;
    }
    let out = gid.z * p.model_stride + g * p.stride + i;
    let row = index[at];
    if row >= p.data_rows {
        // A quiet NaN from a runtime value: WGSL makes a NaN in a constant expression a shader-creation error
        // (Tint, in the browsers, enforces that; naga accepts it).
        var nan_bits = 0x7fc00000u;
        x[out] = bitcast<f32>(nan_bits);
        return;
    }
    let byte = row * p.cols + c;
    let value = (data[byte >> 2u] >> ((byte & 3u) * 8u)) & 0xffu;
    let scaled = byte_to_unit(value);
    var binarize = BINARIZE;
    if p.models > 0u {
        binarize = step_models[gid.z].binarize != 0u;
    }
    if binarize {
        let counter = vec4<u32>(i, step.rng_step + g, p.stream, 0u);
        let u = philox_uniform(philox4x32_10(counter, vec2<u32>(p.key_lo, p.key_hi)).x);
        x[out] = select(0.0, 1.0, u < scaled);
    } else {
        x[out] = scaled;
    }
}
