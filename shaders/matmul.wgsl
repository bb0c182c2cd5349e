// matmul: C = A·B for the forward and backward passes of a linear layer whose weight W is (out, in), PyTorch's
// layout. The layout is a pipeline constant, so each pipeline compiles to straight-line addressing:
//
//   LAYOUT_NT  forward      Y  = X·Wᵀ   A = X (m, k),                 B(k, n) = W[n, k], W (n, k)
//   LAYOUT_NN  input grad   ∂X = ∂Y·W   A = ∂Y (m, k),                B = W (k, n)
//   LAYOUT_TN  weight grad  ∂W = ∂Yᵀ·X  A(m, k) = ∂Y[k, m], ∂Y (k, m), B = X (k, n)
//
// Every matrix is row-major and addressed by an element offset into its buffer, so one flat buffer can hold every
// weight and bias. C is (m, n). Epilogues (pipeline constant EPILOGUE):
//
//   EPI_NONE        C = A·B
//   EPI_BIAS        C = A·B + aux[n]                     (bias add)
//   EPI_BIAS_RELU   C = max(A·B + aux[n], 0)             (bias add and ReLU)
//   EPI_RELU_MASK   C = A·B where aux[m, n] > 0, else 0  (ReLU backward; aux is the layer's forward output)
//   EPI_BIAS_GRAD   C = A·B, and c[bias_off + m] = Σ_k A(m, k): with LAYOUT_TN that is the bias gradient, the
//                   column sums of ∂Y, computed as one more output column against a virtual column of ones in B.
//
// Register tiling: a workgroup of 16×16 invocations computes a 64×64 tile of C, each invocation a 4×4 block of
// rows lid.y + 16·i and columns lid.x + 16·j (strided, so neighbouring invocations touch neighbouring columns).
// Each step of k loads 4 values of A and 4 of B into registers and does 16 multiply-adds; no workgroup memory
// and no barriers, which is what software rasterizers (lavapipe) run best.
// Dispatch: (ceil(n' / 64), ceil(m / 64), 1) workgroups, where n' = n + 1 for EPI_BIAS_GRAD, else n.

const LAYOUT_NT: u32 = 0u;
const LAYOUT_NN: u32 = 1u;
const LAYOUT_TN: u32 = 2u;

const EPI_NONE: u32 = 0u;
const EPI_BIAS: u32 = 1u;
const EPI_BIAS_RELU: u32 = 2u;
const EPI_RELU_MASK: u32 = 3u;
const EPI_BIAS_GRAD: u32 = 4u;

override LAYOUT: u32 = LAYOUT_NT;
override EPILOGUE: u32 = EPI_NONE;

const TM: u32 = 4u; // rows per invocation
const TN: u32 = 4u; // columns per invocation
const WX: u32 = 16u;
const WY: u32 = 16u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    aux_off: u32,
    bias_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> aux: array<f32>;

fn load_a(m: u32, k: u32) -> f32 {
    if LAYOUT == LAYOUT_TN {
        return a[p.a_off + k * p.m + m];
    }
    return a[p.a_off + m * p.k + k];
}

fn load_b(k: u32, n: u32) -> f32 {
    if LAYOUT == LAYOUT_NT {
        return b[p.b_off + n * p.k + k];
    }
    return b[p.b_off + k * p.n + n];
}

// B(k, n) for the four columns of this invocation; the virtual ones column (EPI_BIAS_GRAD) reads as 1.
fn load_b4(k: u32, cols: vec4<u32>, ones: vec4<bool>) -> vec4<f32> {
    let b = vec4<f32>(load_b(k, cols.x), load_b(k, cols.y), load_b(k, cols.z), load_b(k, cols.w));
    if EPILOGUE == EPI_BIAS_GRAD {
        return select(b, vec4<f32>(1.0), ones);
    }
    return b;
}

fn store(m: u32, n: u32, value: f32, is_ones: bool) {
    if m >= p.m {
        return;
    }
    if is_ones {
        c[p.bias_off + m] = value;
        return;
    }
    if n >= p.n {
        return;
    }
    var v = value;
    if EPILOGUE == EPI_BIAS || EPILOGUE == EPI_BIAS_RELU {
        v += aux[p.aux_off + n];
    }
    if EPILOGUE == EPI_BIAS_RELU {
        v = max(v, 0.0);
    }
    if EPILOGUE == EPI_RELU_MASK && !(aux[p.aux_off + m * p.n + n] > 0.0) {
        v = 0.0;
    }
    c[p.c_off + m * p.n + n] = v;
}

fn store_row(m: u32, cols: vec4<u32>, acc: vec4<f32>, ones: vec4<bool>) {
    store(m, cols.x, acc.x, ones.x);
    store(m, cols.y, acc.y, ones.y);
    store(m, cols.z, acc.z, ones.z);
    store(m, cols.w, acc.w, ones.w);
}

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    // This invocation's rows and columns (strided by the workgroup's size, so neighbours touch neighbours).
    let row0 = wg.y * WY * TM + lid.y;
    let col0 = wg.x * WX * TN + lid.x;
    let rows = vec4<u32>(row0, row0 + WY, row0 + 2u * WY, row0 + 3u * WY);
    let cols = vec4<u32>(col0, col0 + WX, col0 + 2u * WX, col0 + 3u * WX);
    // Loads use clamped indices so the k loop has no bounds branches; out-of-range results are not stored.
    let rc = min(rows, vec4<u32>(p.m - 1u));
    let cc = min(cols, vec4<u32>(p.n - 1u));
    let ones = (cols == vec4<u32>(p.n)) & vec4<bool>(EPILOGUE == EPI_BIAS_GRAD);

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
@compute @workgroup_size(16, 16)
fn matmul_big(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wg.y * WY * 8u + lid.y;
    let col0 = wg.x * WX * 8u + lid.x;
    let rows_lo = vec4<u32>(row0, row0 + WY, row0 + 2u * WY, row0 + 3u * WY);
    let rows_hi = rows_lo + vec4<u32>(4u * WY);
    let cols_lo = vec4<u32>(col0, col0 + WX, col0 + 2u * WX, col0 + 3u * WX);
    let cols_hi = cols_lo + vec4<u32>(4u * WX);
    let last = vec4<u32>(p.m - 1u);
    let rl = min(rows_lo, last);
    let rh = min(rows_hi, last);
    let cl = min(cols_lo, vec4<u32>(p.n - 1u));
    let ch = min(cols_hi, vec4<u32>(p.n - 1u));
    let ones_lo = (cols_lo == vec4<u32>(p.n)) & vec4<bool>(EPILOGUE == EPI_BIAS_GRAD);
    let ones_hi = (cols_hi == vec4<u32>(p.n)) & vec4<bool>(EPILOGUE == EPI_BIAS_GRAD);
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
