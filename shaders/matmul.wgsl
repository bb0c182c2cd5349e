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
