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
    let scaled = f32(value) / 255.0;
    if BINARIZE {
        let u = philox_uniform(philox4x32_10(vec4<u32>(i, step.rng_step, p.stream, 0u), vec2<u32>(p.key_lo, p.key_hi)).x);
        x[i] = select(0.0, 1.0, u < scaled);
    } else {
        x[i] = scaled;
    }
}
