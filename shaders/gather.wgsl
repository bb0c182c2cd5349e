// gather: one batch of rows of a u8 dataset resident on the GPU, picked through an index list, scaled to [0, 1].
//
//   data:  (data_rows, cols) bytes, row-major, packed four to a u32 (little-endian)
//   index: the epoch's order of dataset rows (u32); batch row r is dataset row index[step.batch_offset + r]
//   x:     (rows, cols) f32 row-major; x = byte / 255, as torchvision's ToTensor
//
// With the pipeline constant BINARIZE (dynamic binarization, the standard setup of the log-likelihood literature),
// x = 1 where a Philox uniform u < byte / 255, else 0: element i draws from counter (i, step.rng_step, p.stream, 0)
// under key (p.key_lo, p.key_hi), so every step sees a fresh binarization that the CPU can repeat.
//
// Dispatch: one invocation per element of x, WG (256) per workgroup, workgroups on a 2-D grid (`grid` in
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
    let i = gid.x + gid.y * groups.x * WG;
    if i >= p.rows * p.cols {
        return;
    }
    let r = i / p.cols;
    let c = i - r * p.cols;
    let row = index[step.batch_offset + r];
    if row >= p.data_rows {
        x[i] = bitcast<f32>(0x7fc00000u);
        return;
    }
    let byte = row * p.cols + c;
    let value = (data[byte >> 2u] >> ((byte & 3u) * 8u)) & 0xffu;
    let scaled = byte_to_unit(value);
    if BINARIZE {
        let u = philox_uniform(philox4x32_10(vec4<u32>(i, step.rng_step, p.stream, 0u), vec2<u32>(p.key_lo, p.key_hi)).x);
        x[i] = select(0.0, 1.0, u < scaled);
    } else {
        x[i] = scaled;
    }
}
