// matmul_tiled: C = A·B with workgroup-memory tiling (layouts, epilogues, loads and the store: matmul_common.wgsl).
//
// A workgroup computes a BM × BN tile of C. For each BK-deep slice of k it stages A's BM × BK block and B's
// BK × BN block in workgroup memory, loading them so that consecutive invocations read consecutive addresses of the
// layout's contiguous dimension (coalesced), then each invocation accumulates a TM × TN block of C in registers
// from the staged slice: rows ty + i·(BM/TM), columns tx + j·(BN/TN) (strided, so neighbouring invocations read
// neighbouring words of workgroup memory and write neighbouring columns of C). Barriers separate staging from use.
// Out-of-range rows, columns and k read as zero; under EPI_BIAS_GRAD the virtual ones column n = p.n gives the
// bias gradient, as in matmul.wgsl.
//
// Pipeline constants: BM, BN, BK, TM ≤ 8, TN ≤ 8 with BM·BK ≤ 2048 and BK·BN ≤ 2048 (16 KiB of workgroup memory),
// and THREADS = (BM / TM)·(BN / TN) ≤ 256. Dispatch: (ceil(n' / BN), ceil(m / BM), 1), n' = output_cols().

override BM: u32 = 64u;
override BN: u32 = 64u;
override BK: u32 = 16u;
override TM: u32 = 4u;
override TN: u32 = 4u;
override THREADS: u32 = 256u;

var<workgroup> tile_a: array<f32, 2048>; // [kk · BM + row]
var<workgroup> tile_b: array<f32, 2048>; // [kk · BN + col]

@compute @workgroup_size(THREADS)
fn matmul_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let across = BN / TN; // invocations along a row of the tile
    let down = BM / TM;   // along a column
    let tx = lid % across;
    let ty = lid / across;
    let m0 = wg.y * BM;
    let n0 = wg.x * BN;
    var acc: array<f32, 64>; // [i · 8 + j]; a `var` starts at zero
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var e = lid; e < BM * BK; e += THREADS) {
            // A is contiguous along k (NT, NN) or along m (TN): consecutive e, consecutive addresses.
            var r = e / BK;
            var kk = e % BK;
            if LAYOUT == LAYOUT_TN {
                r = e % BM;
                kk = e / BM;
            }
            var v = 0.0;
            if m0 + r < p.m && k0 + kk < p.k {
                v = load_a(m0 + r, k0 + kk);
            }
            tile_a[kk * BM + r] = v;
        }
        for (var e = lid; e < BK * BN; e += THREADS) {
            // B is contiguous along k (NT: W is (n, k)) or along n (NN, TN).
            var col = e % BN;
            var kk = e / BN;
            if LAYOUT == LAYOUT_NT {
                col = e / BK;
                kk = e % BK;
            }
            var v = 0.0;
            if k0 + kk < p.k {
                v = load_b_or_one(k0 + kk, n0 + col);
            }
            tile_b[kk * BN + col] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var av: array<f32, 8>;
            var bv: array<f32, 8>;
            for (var i = 0u; i < TM; i++) {
                av[i] = tile_a[kk * BM + ty + i * down];
            }
            for (var j = 0u; j < TN; j++) {
                bv[j] = tile_b[kk * BN + tx + j * across];
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) {
                    acc[i * 8u + j] = fma(av[i], bv[j], acc[i * 8u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) {
            let n = n0 + tx + j * across;
            store(m0 + ty + i * down, n, acc[i * 8u + j], EPILOGUE == EPI_BIAS_GRAD && n == p.n);
        }
    }
}
