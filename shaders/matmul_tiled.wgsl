// matmul_tiled: C = A·B with workgroup-memory tiling (layouts, epilogues, loads and stores: matmul_common.wgsl).
//
// A workgroup of 16×16 invocations computes a BM × BN tile of C. For each BK-deep slice of k it stages A's
// BM × BK block and B's BK × BN block in workgroup memory, loaded so that consecutive invocations read
// consecutive addresses of the layout's contiguous dimension (coalesced), then every invocation accumulates its
// block of C from the staged slice: rows ty + 16·i and columns tx + 16·j (strided, so that neighbouring
// invocations read neighbouring words of workgroup memory, and write neighbouring columns of C). The block lives
// in named vec4 accumulators, straight-line code: private arrays indexed in loops can end up in memory (they did
// on NVIDIA, 100× slower). Barriers separate staging from use. Out-of-range rows, columns and k read as zero;
// under EPI_BIAS_GRAD the virtual ones column n = p.n gives the bias gradient, as in matmul.wgsl.
//
// Entry points: matmul_tiled8 (BM = BN = 128, 8×8 per invocation), matmul_tiled4 (64, 4×4), matmul_tiled2 (32,
// 2×2). Pipeline constant BK with BM·BK ≤ 2048 (16 KiB of workgroup memory for both slices).
// Dispatch: (ceil(n' / BN), ceil(m / BM), 1), n' = output_cols().

override BK: u32 = 16u;

var<workgroup> tile_a: array<f32, 2048>; // [kk · BM + row]
var<workgroup> tile_b: array<f32, 2048>; // [kk · BN + col]

// Stages the BK-deep slice at k0 of A's rows m0.. and B's columns n0.. for a bm × bn tile.
fn stage(lid: u32, m0: u32, n0: u32, k0: u32, bm: u32, bn: u32) {
    for (var e = lid; e < bm * BK; e += 256u) {
        // A is contiguous along k (NT, NN) or along m (TN): consecutive e, consecutive addresses.
        var r = e / BK;
        var kk = e % BK;
        if part_layout() == LAYOUT_TN {
            r = e % bm;
            kk = e / bm;
        }
        var v = 0.0;
        if m0 + r < p.m && k0 + kk < p.k {
            v = load_a(m0 + r, k0 + kk);
        }
        tile_a[kk * bm + r] = v;
    }
    for (var e = lid; e < BK * bn; e += 256u) {
        // B is contiguous along k (NT: W is (n, k)) or along n (NN, TN).
        var col = e % bn;
        var kk = e / bn;
        if part_layout() == LAYOUT_NT {
            col = e / BK;
            kk = e % BK;
        }
        var v = 0.0;
        if k0 + kk < p.k {
            v = load_b_or_one(k0 + kk, n0 + col);
        }
        tile_b[kk * bn + col] = v;
    }
}

fn ones_at(cols: vec4<u32>) -> vec4<bool> {
    return (cols == vec4<u32>(p.n)) & vec4<bool>(part_epilogue() == EPI_BIAS_GRAD);
}

@compute @workgroup_size(16, 16)
fn matmul_tiled8(@builtin(workgroup_id) wg_in: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let wg = enter(wg_in, num, 128u);
    let k_end = part_k(wg_in, num);
    let tx = lid3.x;
    let ty = lid3.y;
    let m0 = wg.y * 128u;
    let n0 = wg.x * 128u;
    var a0 = vec4<f32>(0.0); var b0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0); var b1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0); var b2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0); var b3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0); var b4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0); var b5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0); var b6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0); var b7 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < k_end; k0 += BK) {
        stage(lid, m0, n0, k0, 128u, 128u);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let ra = kk * 128u + ty;
            let cb = kk * 128u + tx;
            let lo = vec4<f32>(tile_b[cb], tile_b[cb + 16u], tile_b[cb + 32u], tile_b[cb + 48u]);
            let hi = vec4<f32>(tile_b[cb + 64u], tile_b[cb + 80u], tile_b[cb + 96u], tile_b[cb + 112u]);
            var s = vec4<f32>(tile_a[ra]); a0 = fma(s, lo, a0); b0 = fma(s, hi, b0);
            s = vec4<f32>(tile_a[ra + 16u]); a1 = fma(s, lo, a1); b1 = fma(s, hi, b1);
            s = vec4<f32>(tile_a[ra + 32u]); a2 = fma(s, lo, a2); b2 = fma(s, hi, b2);
            s = vec4<f32>(tile_a[ra + 48u]); a3 = fma(s, lo, a3); b3 = fma(s, hi, b3);
            s = vec4<f32>(tile_a[ra + 64u]); a4 = fma(s, lo, a4); b4 = fma(s, hi, b4);
            s = vec4<f32>(tile_a[ra + 80u]); a5 = fma(s, lo, a5); b5 = fma(s, hi, b5);
            s = vec4<f32>(tile_a[ra + 96u]); a6 = fma(s, lo, a6); b6 = fma(s, hi, b6);
            s = vec4<f32>(tile_a[ra + 112u]); a7 = fma(s, lo, a7); b7 = fma(s, hi, b7);
        }
        workgroupBarrier();
    }
    let cl = vec4<u32>(n0 + tx, n0 + tx + 16u, n0 + tx + 32u, n0 + tx + 48u);
    let ch = cl + vec4<u32>(64u);
    let ol = ones_at(cl);
    let oh = ones_at(ch);
    let r = m0 + ty;
    store_row(r, cl, a0, ol); store_row(r, ch, b0, oh);
    store_row(r + 16u, cl, a1, ol); store_row(r + 16u, ch, b1, oh);
    store_row(r + 32u, cl, a2, ol); store_row(r + 32u, ch, b2, oh);
    store_row(r + 48u, cl, a3, ol); store_row(r + 48u, ch, b3, oh);
    store_row(r + 64u, cl, a4, ol); store_row(r + 64u, ch, b4, oh);
    store_row(r + 80u, cl, a5, ol); store_row(r + 80u, ch, b5, oh);
    store_row(r + 96u, cl, a6, ol); store_row(r + 96u, ch, b6, oh);
    store_row(r + 112u, cl, a7, ol); store_row(r + 112u, ch, b7, oh);
}

@compute @workgroup_size(16, 16)
fn matmul_tiled4(@builtin(workgroup_id) wg_in: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let wg = enter(wg_in, num, 64u);
    let k_end = part_k(wg_in, num);
    let tx = lid3.x;
    let ty = lid3.y;
    let m0 = wg.y * 64u;
    let n0 = wg.x * 64u;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < k_end; k0 += BK) {
        stage(lid, m0, n0, k0, 64u, 64u);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let ra = kk * 64u + ty;
            let cb = kk * 64u + tx;
            let y = vec4<f32>(tile_b[cb], tile_b[cb + 16u], tile_b[cb + 32u], tile_b[cb + 48u]);
            a0 = fma(vec4<f32>(tile_a[ra]), y, a0);
            a1 = fma(vec4<f32>(tile_a[ra + 16u]), y, a1);
            a2 = fma(vec4<f32>(tile_a[ra + 32u]), y, a2);
            a3 = fma(vec4<f32>(tile_a[ra + 48u]), y, a3);
        }
        workgroupBarrier();
    }
    let c = vec4<u32>(n0 + tx, n0 + tx + 16u, n0 + tx + 32u, n0 + tx + 48u);
    let o = ones_at(c);
    let r = m0 + ty;
    store_row(r, c, a0, o);
    store_row(r + 16u, c, a1, o);
    store_row(r + 32u, c, a2, o);
    store_row(r + 48u, c, a3, o);
}

@compute @workgroup_size(16, 16)
fn matmul_tiled2(@builtin(workgroup_id) wg_in: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let wg = enter(wg_in, num, 32u);
    let k_end = part_k(wg_in, num);
    let tx = lid3.x;
    let ty = lid3.y;
    let m0 = wg.y * 32u;
    let n0 = wg.x * 32u;
    var a0 = vec2<f32>(0.0);
    var a1 = vec2<f32>(0.0);
    for (var k0 = 0u; k0 < k_end; k0 += BK) {
        stage(lid, m0, n0, k0, 32u, 32u);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let ra = kk * 32u + ty;
            let cb = kk * 32u + tx;
            let y = vec2<f32>(tile_b[cb], tile_b[cb + 16u]);
            a0 = fma(vec2<f32>(tile_a[ra]), y, a0);
            a1 = fma(vec2<f32>(tile_a[ra + 16u]), y, a1);
        }
        workgroupBarrier();
    }
    let c0 = n0 + tx;
    let c1 = n0 + tx + 16u;
    let bias = part_epilogue() == EPI_BIAS_GRAD;
    let r = m0 + ty;
    store(r, c0, a0.x, bias && c0 == p.n);
    store(r, c1, a0.y, bias && c1 == p.n);
    store(r + 16u, c0, a1.x, bias && c0 == p.n);
    store(r + 16u, c1, a1.y, bias && c1 == p.n);
}
