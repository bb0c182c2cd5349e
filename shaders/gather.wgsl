// gather: one batch of rows of a u8 dataset resident on the GPU, picked through an index list, scaled to [0, 1].
//
//   data:  (data_rows, cols) bytes, row-major, packed four to a u32 (little-endian)
//   index: the epoch's order of dataset rows (u32); batch row r is dataset row index[step.batch_offset + r]
//   x:     (rows, cols) f32 row-major; x = byte / 255, as torchvision's ToTensor
//
// Dispatch: one invocation per element of x, 256 per workgroup, workgroups on a 2-D grid (`grid` in
// src/kernels/mod.rs). An index past the dataset writes NaN, so a host bug cannot pass for data.

struct Params {
    rows: u32,
    cols: u32,
    data_rows: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> data: array<u32>;
@group(0) @binding(2) var<storage, read> index: array<u32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
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
    x[i] = f32(value) / 255.0;
}
