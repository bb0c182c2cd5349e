// matmul: register-tiled kernels (layouts, epilogues, bindings, loads and the store: matmul_common.wgsl).
//
// Register tiling: a workgroup of 16×16 invocations computes a 64×64 tile of C, each invocation a 4×4 block of
// rows lid.y + 16·i and columns lid.x + 16·j (strided, so neighbouring invocations touch neighbouring columns).
// Each step of k loads 4 values of A and 4 of B into registers and does 16 multiply-adds; no workgroup memory
// and no barriers, which is what software rasterizers (lavapipe) run best.
// Dispatch: (ceil(n' / 64), ceil(m / 64), 1) workgroups, where n' = n + 1 for EPI_BIAS_GRAD, else n.
// Entry points: matmul (64×64 tile, GPUs), matmul_big (128×128, CPU rasterizers), and the 128 tile's vec4
// variants matmul_nt4 / matmul_nn4 / matmul_tn4 (below).

const WX: u32 = MATMUL_SIDE;                      // invocations per row of the workgroup
const WY: u32 = MATMUL_SIDE;                      // invocations per column
const TM: u32 = MATMUL_TILE / MATMUL_SIDE;        // rows per invocation of `matmul` (4)
const TN: u32 = MATMUL_TILE / MATMUL_SIDE;        // columns per invocation of `matmul` (4)
const BIG: u32 = MATMUL_TILE_BIG / MATMUL_SIDE;   // rows and columns per invocation of the 128 tile (8)
const HALF_BIG: u32 = MATMUL_TILE_BIG / 2u;       // the 128 tile's second run of rows and columns (64)

// B(k, n) for the four columns of this invocation; the virtual ones column (EPI_BIAS_GRAD) reads as 1.
fn load_b4(k: u32, cols: vec4<u32>, ones: vec4<bool>) -> vec4<f32> {
    let b = vec4<f32>(load_b(k, cols.x), load_b(k, cols.y), load_b(k, cols.z), load_b(k, cols.w));
    if part_epilogue() == EPI_BIAS_GRAD {
        return select(b, vec4<f32>(1.0), ones);
    }
    return b;
}

@compute @workgroup_size(MATMUL_SIDE, MATMUL_SIDE)
fn matmul(@builtin(workgroup_id) wg_in: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let wg = enter(wg_in, num, MATMUL_TILE);
    // This invocation's rows and columns (strided by the workgroup's size, so neighbours touch neighbours).
    let row0 = wg.y * WY * TM + lid.y;
    let col0 = wg.x * WX * TN + lid.x;
    let rows = vec4<u32>(row0, row0 + WY, row0 + 2u * WY, row0 + 3u * WY);
    let cols = vec4<u32>(col0, col0 + WX, col0 + 2u * WX, col0 + 3u * WX);
    // Loads use clamped indices so the k loop has no bounds branches; out-of-range results are not stored.
    let rc = min(rows, vec4<u32>(p.m - 1u));
    let cc = min(cols, vec4<u32>(p.n - 1u));
    let ones = (cols == vec4<u32>(p.n)) & vec4<bool>(part_epilogue() == EPI_BIAS_GRAD);

    // The 4×4 block lives in four vec4 accumulators (one per row), straight-line code with no private arrays:
    // dynamically indexed arrays would live in memory on some drivers.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k = 0u; k < p.k; k++) {
        let b = load_b4(k, cc, ones);
        acc0 = fma(vec4<f32>(load_a(rc.x, k)), b, acc0);
        acc1 = fma(vec4<f32>(load_a(rc.y, k)), b, acc1);
        acc2 = fma(vec4<f32>(load_a(rc.z, k)), b, acc2);
        acc3 = fma(vec4<f32>(load_a(rc.w, k)), b, acc3);
    }
    store_row(rows.x, cols, acc0, ones);
    store_row(rows.y, cols, acc1, ones);
    store_row(rows.z, cols, acc2, ones);
    store_row(rows.w, cols, acc3, ones);
}

// matmul_big: 8×8 outputs per invocation, a 128×128 tile per workgroup: 16 loads per 64 multiply-adds instead of
// 8 per 16. For software rasterizers (lavapipe): there every load of a lane-varying address is a gather, so loads,
// not arithmetic, bound the kernel, and the accumulators' spills to the stack cost less than the gathers they
// save (1.7× faster than `matmul` at the model's shapes, BENCHMARKS.md). On a GPU a 128-row tile would leave
// most of the chip idle at batch 128, so the host picks `matmul` there.
// Dispatch: (ceil(n' / 128), ceil(m / 128), 1).
@compute @workgroup_size(MATMUL_SIDE, MATMUL_SIDE)
fn matmul_big(@builtin(workgroup_id) wg_in: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let wg = enter(wg_in, num, MATMUL_TILE_BIG);
    let row0 = wg.y * WY * BIG + lid.y;
    let col0 = wg.x * WX * BIG + lid.x;
    let rows_lo = vec4<u32>(row0, row0 + WY, row0 + 2u * WY, row0 + 3u * WY);
    let rows_hi = rows_lo + vec4<u32>(4u * WY);
    let cols_lo = vec4<u32>(col0, col0 + WX, col0 + 2u * WX, col0 + 3u * WX);
    let cols_hi = cols_lo + vec4<u32>(4u * WX);
    let last = vec4<u32>(p.m - 1u);
    let rl = min(rows_lo, last);
    let rh = min(rows_hi, last);
    let cl = min(cols_lo, vec4<u32>(p.n - 1u));
    let ch = min(cols_hi, vec4<u32>(p.n - 1u));
    let ones_lo = (cols_lo == vec4<u32>(p.n)) & vec4<bool>(part_epilogue() == EPI_BIAS_GRAD);
    let ones_hi = (cols_hi == vec4<u32>(p.n)) & vec4<bool>(part_epilogue() == EPI_BIAS_GRAD);
    var a0 = vec4<f32>(0.0); var b0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0); var b1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0); var b2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0); var b3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0); var b4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0); var b5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0); var b6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0); var b7 = vec4<f32>(0.0);
    for (var k = 0u; k < p.k; k++) {
        let x = load_b4(k, cl, ones_lo);
        let y = load_b4(k, ch, ones_hi);
        var s = vec4<f32>(load_a(rl.x, k)); a0 = fma(s, x, a0); b0 = fma(s, y, b0);
        s = vec4<f32>(load_a(rl.y, k)); a1 = fma(s, x, a1); b1 = fma(s, y, b1);
        s = vec4<f32>(load_a(rl.z, k)); a2 = fma(s, x, a2); b2 = fma(s, y, b2);
        s = vec4<f32>(load_a(rl.w, k)); a3 = fma(s, x, a3); b3 = fma(s, y, b3);
        s = vec4<f32>(load_a(rh.x, k)); a4 = fma(s, x, a4); b4 = fma(s, y, b4);
        s = vec4<f32>(load_a(rh.y, k)); a5 = fma(s, x, a5); b5 = fma(s, y, b5);
        s = vec4<f32>(load_a(rh.z, k)); a6 = fma(s, x, a6); b6 = fma(s, y, b6);
        s = vec4<f32>(load_a(rh.w, k)); a7 = fma(s, x, a7); b7 = fma(s, y, b7);
    }
    store_row(rows_lo.x, cols_lo, a0, ones_lo); store_row(rows_lo.x, cols_hi, b0, ones_hi);
    store_row(rows_lo.y, cols_lo, a1, ones_lo); store_row(rows_lo.y, cols_hi, b1, ones_hi);
    store_row(rows_lo.z, cols_lo, a2, ones_lo); store_row(rows_lo.z, cols_hi, b2, ones_hi);
    store_row(rows_lo.w, cols_lo, a3, ones_lo); store_row(rows_lo.w, cols_hi, b3, ones_hi);
    store_row(rows_hi.x, cols_lo, a4, ones_lo); store_row(rows_hi.x, cols_hi, b4, ones_hi);
    store_row(rows_hi.y, cols_lo, a5, ones_lo); store_row(rows_hi.y, cols_hi, b5, ones_hi);
    store_row(rows_hi.z, cols_lo, a6, ones_lo); store_row(rows_hi.z, cols_hi, b6, ones_hi);
    store_row(rows_hi.w, cols_lo, a7, ones_lo); store_row(rows_hi.w, cols_hi, b7, ones_hi);
}

// matmul_nt4, matmul_nn4, matmul_tn4: the 128×128 tile (8×8 outputs per invocation) reading its operands as vec4s
// along their contiguous dimension: NT both along k, NN A along k and B along n, TN both along their rows (m, n).
// On lavapipe a vec4 load per lane costs about what a scalar gather does, so these move four times the data per
// load (about 2× the scalar `matmul_big`). The host picks them only when the contiguous sizes and the operand
// offsets are multiples of 4 (`vec4_kernel` in src/kernels/matmul.rs); A and B are the same buffers, bound here
// as vec4 arrays. NT and NN rows are strided by 16 as in `matmul_big`; NN and TN columns (and TN rows) come in
// two runs of 4 contiguous, 64 apart. tn4 writes the bias gradient itself (row sums of A, kept while looping), so
// it needs no extra column. Dispatch: (ceil(n / 128), ceil(m / 128), 1).
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> b4_2: array<vec4<f32>>;

// B's vec4 i: from the second product's B in a pair's second part.
fn bv(i: u32) -> vec4<f32> {
    if PAIRED && second {
        return b4_2[i];
    }
    return b4[i];
}

fn dots(x: vec4<f32>, y0: vec4<f32>, y1: vec4<f32>, y2: vec4<f32>, y3: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(x, y0), dot(x, y1), dot(x, y2), dot(x, y3));
}

@compute @workgroup_size(MATMUL_SIDE, MATMUL_SIDE)
fn matmul_nt4(@builtin(workgroup_id) wg_in: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let wg = enter(wg_in, num, MATMUL_TILE_BIG);
    let row0 = wg.y * WY * BIG + lid.y;
    let col0 = wg.x * WX * BIG + lid.x;
    let rows_lo = vec4<u32>(row0, row0 + WY, row0 + 2u * WY, row0 + 3u * WY);
    let rows_hi = rows_lo + vec4<u32>(4u * WY);
    let cols_lo = vec4<u32>(col0, col0 + WX, col0 + 2u * WX, col0 + 3u * WX);
    let cols_hi = cols_lo + vec4<u32>(4u * WX);
    let k4 = p.k / 4u;
    let ra = min(rows_lo, vec4<u32>(p.m - 1u)) * k4 + vec4<u32>(p.a_off / 4u);
    let rb = min(rows_hi, vec4<u32>(p.m - 1u)) * k4 + vec4<u32>(p.a_off / 4u);
    let ca = min(cols_lo, vec4<u32>(p.n - 1u)) * k4 + vec4<u32>(p.b_off / 4u);
    let cb = min(cols_hi, vec4<u32>(p.n - 1u)) * k4 + vec4<u32>(p.b_off / 4u);
    var a0 = vec4<f32>(0.0); var b0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0); var b1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0); var b2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0); var b3 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0); var b5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0); var b6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0); var b7 = vec4<f32>(0.0);
    var a8 = vec4<f32>(0.0); var b8 = vec4<f32>(0.0);
    for (var k = 0u; k < k4; k++) {
        let w0 = bv(ca.x + k); let w1 = bv(ca.y + k); let w2 = bv(ca.z + k); let w3 = bv(ca.w + k);
        let w4 = bv(cb.x + k); let w5 = bv(cb.y + k); let w6 = bv(cb.z + k); let w7 = bv(cb.w + k);
        var x = a4[ra.x + k]; a0 += dots(x, w0, w1, w2, w3); b0 += dots(x, w4, w5, w6, w7);
        x = a4[ra.y + k]; a1 += dots(x, w0, w1, w2, w3); b1 += dots(x, w4, w5, w6, w7);
        x = a4[ra.z + k]; a2 += dots(x, w0, w1, w2, w3); b2 += dots(x, w4, w5, w6, w7);
        x = a4[ra.w + k]; a3 += dots(x, w0, w1, w2, w3); b3 += dots(x, w4, w5, w6, w7);
        x = a4[rb.x + k]; a5 += dots(x, w0, w1, w2, w3); b5 += dots(x, w4, w5, w6, w7);
        x = a4[rb.y + k]; a6 += dots(x, w0, w1, w2, w3); b6 += dots(x, w4, w5, w6, w7);
        x = a4[rb.z + k]; a7 += dots(x, w0, w1, w2, w3); b7 += dots(x, w4, w5, w6, w7);
        x = a4[rb.w + k]; a8 += dots(x, w0, w1, w2, w3); b8 += dots(x, w4, w5, w6, w7);
    }
    let no = vec4<bool>(false);
    store_row(rows_lo.x, cols_lo, a0, no); store_row(rows_lo.x, cols_hi, b0, no);
    store_row(rows_lo.y, cols_lo, a1, no); store_row(rows_lo.y, cols_hi, b1, no);
    store_row(rows_lo.z, cols_lo, a2, no); store_row(rows_lo.z, cols_hi, b2, no);
    store_row(rows_lo.w, cols_lo, a3, no); store_row(rows_lo.w, cols_hi, b3, no);
    store_row(rows_hi.x, cols_lo, a5, no); store_row(rows_hi.x, cols_hi, b5, no);
    store_row(rows_hi.y, cols_lo, a6, no); store_row(rows_hi.y, cols_hi, b6, no);
    store_row(rows_hi.z, cols_lo, a7, no); store_row(rows_hi.z, cols_hi, b7, no);
    store_row(rows_hi.w, cols_lo, a8, no); store_row(rows_hi.w, cols_hi, b8, no);
}

// x.x·y0 + x.y·y1 + x.z·y2 + x.w·y3: four rank-1 updates of one output row from four steps of k.
fn comb(x: vec4<f32>, y0: vec4<f32>, y1: vec4<f32>, y2: vec4<f32>, y3: vec4<f32>, acc: vec4<f32>) -> vec4<f32> {
    return fma(vec4<f32>(x.w), y3, fma(vec4<f32>(x.z), y2, fma(vec4<f32>(x.y), y1, fma(vec4<f32>(x.x), y0, acc))));
}

@compute @workgroup_size(MATMUL_SIDE, MATMUL_SIDE)
fn matmul_nn4(@builtin(workgroup_id) wg_in: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    nn4(enter(wg_in, num, MATMUL_TILE_BIG), lid);
}

fn nn4(wg: vec3<u32>, lid: vec3<u32>) {
    let row0 = wg.y * WY * BIG + lid.y;
    let rows_lo = vec4<u32>(row0, row0 + WY, row0 + 2u * WY, row0 + 3u * WY);
    let rows_hi = rows_lo + vec4<u32>(4u * WY);
    let c0 = wg.x * MATMUL_TILE_BIG + lid.x * 4u;
    let cols_lo = vec4<u32>(c0, c0 + 1u, c0 + 2u, c0 + 3u);
    let cols_hi = cols_lo + vec4<u32>(HALF_BIG);
    let k4 = p.k / 4u;
    let n4 = p.n / 4u;
    let ra = min(rows_lo, vec4<u32>(p.m - 1u)) * k4 + vec4<u32>(p.a_off / 4u);
    let rb = min(rows_hi, vec4<u32>(p.m - 1u)) * k4 + vec4<u32>(p.a_off / 4u);
    let cl = min(c0 / 4u, n4 - 1u) + p.b_off / 4u;
    let ch = min((c0 + HALF_BIG) / 4u, n4 - 1u) + p.b_off / 4u;
    var a0 = vec4<f32>(0.0); var b0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0); var b1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0); var b2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0); var b3 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0); var b5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0); var b6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0); var b7 = vec4<f32>(0.0);
    var a8 = vec4<f32>(0.0); var b8 = vec4<f32>(0.0);
    for (var k = 0u; k < k4; k++) {
        let row = 4u * k * n4;
        let l0 = bv(cl + row); let l1 = bv(cl + row + n4); let l2 = bv(cl + row + 2u * n4); let l3 = bv(cl + row + 3u * n4);
        let h0 = bv(ch + row); let h1 = bv(ch + row + n4); let h2 = bv(ch + row + 2u * n4); let h3 = bv(ch + row + 3u * n4);
        var x = a4[ra.x + k]; a0 = comb(x, l0, l1, l2, l3, a0); b0 = comb(x, h0, h1, h2, h3, b0);
        x = a4[ra.y + k]; a1 = comb(x, l0, l1, l2, l3, a1); b1 = comb(x, h0, h1, h2, h3, b1);
        x = a4[ra.z + k]; a2 = comb(x, l0, l1, l2, l3, a2); b2 = comb(x, h0, h1, h2, h3, b2);
        x = a4[ra.w + k]; a3 = comb(x, l0, l1, l2, l3, a3); b3 = comb(x, h0, h1, h2, h3, b3);
        x = a4[rb.x + k]; a5 = comb(x, l0, l1, l2, l3, a5); b5 = comb(x, h0, h1, h2, h3, b5);
        x = a4[rb.y + k]; a6 = comb(x, l0, l1, l2, l3, a6); b6 = comb(x, h0, h1, h2, h3, b6);
        x = a4[rb.z + k]; a7 = comb(x, l0, l1, l2, l3, a7); b7 = comb(x, h0, h1, h2, h3, b7);
        x = a4[rb.w + k]; a8 = comb(x, l0, l1, l2, l3, a8); b8 = comb(x, h0, h1, h2, h3, b8);
    }
    let no = vec4<bool>(false);
    store_row(rows_lo.x, cols_lo, a0, no); store_row(rows_lo.x, cols_hi, b0, no);
    store_row(rows_lo.y, cols_lo, a1, no); store_row(rows_lo.y, cols_hi, b1, no);
    store_row(rows_lo.z, cols_lo, a2, no); store_row(rows_lo.z, cols_hi, b2, no);
    store_row(rows_lo.w, cols_lo, a3, no); store_row(rows_lo.w, cols_hi, b3, no);
    store_row(rows_hi.x, cols_lo, a5, no); store_row(rows_hi.x, cols_hi, b5, no);
    store_row(rows_hi.y, cols_lo, a6, no); store_row(rows_hi.y, cols_hi, b6, no);
    store_row(rows_hi.z, cols_lo, a7, no); store_row(rows_hi.z, cols_hi, b7, no);
    store_row(rows_hi.w, cols_lo, a8, no); store_row(rows_hi.w, cols_hi, b8, no);
}

@compute @workgroup_size(MATMUL_SIDE, MATMUL_SIDE)
fn matmul_tn4(@builtin(workgroup_id) wg_in: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    tn4(enter(wg_in, num, MATMUL_TILE_BIG), lid);
}

// A pair of a weight gradient (TN, first) and an input gradient (NN, second) with the vec4 kernels: the layer's
// whole backward pass in one dispatch.
@compute @workgroup_size(MATMUL_SIDE, MATMUL_SIDE)
fn matmul_pair4(@builtin(workgroup_id) wg_in: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let wg = enter(wg_in, num, MATMUL_TILE_BIG);
    if second {
        nn4(wg, lid);
    } else {
        tn4(wg, lid);
    }
}

fn tn4(wg: vec3<u32>, lid: vec3<u32>) {
    let r0 = wg.y * MATMUL_TILE_BIG + lid.y * 4u;
    let c0 = wg.x * MATMUL_TILE_BIG + lid.x * 4u;
    let cols_lo = vec4<u32>(c0, c0 + 1u, c0 + 2u, c0 + 3u);
    let cols_hi = cols_lo + vec4<u32>(HALF_BIG);
    let m4 = p.m / 4u;
    let n4 = p.n / 4u;
    let ra = min(r0 / 4u, m4 - 1u) + p.a_off / 4u;
    let rb = min((r0 + HALF_BIG) / 4u, m4 - 1u) + p.a_off / 4u;
    let cl = min(c0 / 4u, n4 - 1u) + p.b_off / 4u;
    let ch = min((c0 + HALF_BIG) / 4u, n4 - 1u) + p.b_off / 4u;
    // Rows r0..r0+3 (x) and r0+64..r0+67 (z), each against columns c0..c0+3 (l) and c0+64..c0+67 (h).
    var x0l = vec4<f32>(0.0); var x0h = vec4<f32>(0.0); var x1l = vec4<f32>(0.0); var x1h = vec4<f32>(0.0);
    var x2l = vec4<f32>(0.0); var x2h = vec4<f32>(0.0); var x3l = vec4<f32>(0.0); var x3h = vec4<f32>(0.0);
    var z0l = vec4<f32>(0.0); var z0h = vec4<f32>(0.0); var z1l = vec4<f32>(0.0); var z1h = vec4<f32>(0.0);
    var z2l = vec4<f32>(0.0); var z2h = vec4<f32>(0.0); var z3l = vec4<f32>(0.0); var z3h = vec4<f32>(0.0);
    var sx = vec4<f32>(0.0);
    var sz = vec4<f32>(0.0);
    for (var k = 0u; k < p.k; k++) {
        let x = a4[ra + k * m4];
        let z = a4[rb + k * m4];
        let l = bv(cl + k * n4);
        let h = bv(ch + k * n4);
        x0l = fma(vec4<f32>(x.x), l, x0l); x0h = fma(vec4<f32>(x.x), h, x0h);
        x1l = fma(vec4<f32>(x.y), l, x1l); x1h = fma(vec4<f32>(x.y), h, x1h);
        x2l = fma(vec4<f32>(x.z), l, x2l); x2h = fma(vec4<f32>(x.z), h, x2h);
        x3l = fma(vec4<f32>(x.w), l, x3l); x3h = fma(vec4<f32>(x.w), h, x3h);
        z0l = fma(vec4<f32>(z.x), l, z0l); z0h = fma(vec4<f32>(z.x), h, z0h);
        z1l = fma(vec4<f32>(z.y), l, z1l); z1h = fma(vec4<f32>(z.y), h, z1h);
        z2l = fma(vec4<f32>(z.z), l, z2l); z2h = fma(vec4<f32>(z.z), h, z2h);
        z3l = fma(vec4<f32>(z.w), l, z3l); z3h = fma(vec4<f32>(z.w), h, z3h);
        if part_epilogue() == EPI_BIAS_GRAD {
            sx += x;
            sz += z;
        }
    }
    let no = vec4<bool>(false);
    store_row(r0, cols_lo, x0l, no); store_row(r0, cols_hi, x0h, no);
    store_row(r0 + 1u, cols_lo, x1l, no); store_row(r0 + 1u, cols_hi, x1h, no);
    store_row(r0 + 2u, cols_lo, x2l, no); store_row(r0 + 2u, cols_hi, x2h, no);
    store_row(r0 + 3u, cols_lo, x3l, no); store_row(r0 + 3u, cols_hi, x3h, no);
    store_row(r0 + HALF_BIG, cols_lo, z0l, no); store_row(r0 + HALF_BIG, cols_hi, z0h, no);
    store_row(r0 + HALF_BIG + 1u, cols_lo, z1l, no); store_row(r0 + HALF_BIG + 1u, cols_hi, z1h, no);
    store_row(r0 + HALF_BIG + 2u, cols_lo, z2l, no); store_row(r0 + HALF_BIG + 2u, cols_hi, z2h, no);
    store_row(r0 + HALF_BIG + 3u, cols_lo, z3l, no); store_row(r0 + HALF_BIG + 3u, cols_hi, z3h, no);
    // The bias gradient (row sums of A) once per row: by the invocations of the first column block.
    if part_epilogue() == EPI_BIAS_GRAD && wg.x == 0u && lid.x == 0u {
        for (var i = 0u; i < 4u; i++) {
            if r0 + i < p.m {
                set_c(p.bias_off + r0 + i, sx[i]);
            }
            if r0 + HALF_BIG + i < p.m {
                set_c(p.bias_off + r0 + HALF_BIG + i, sz[i]);
            }
        }
    }
}
