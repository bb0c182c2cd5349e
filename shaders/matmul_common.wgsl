// matmul_common: what every matmul kernel shares. C = A·B for the forward and backward passes of a linear layer whose weight W is (out, in), PyTorch's
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
//   EPI_KL_GRAD     A·B is ∂z (m, n), the reparameterization's input; C is the heads' gradient (m, 2n), already
//                   holding the KL's own part (reparam.wgsl): C[m, n'] += ∂z for ∂μ (n' = n) and
//                   C[m, n + n'] += ∂z·aux[m, n'] for ∂log σ² (aux = ½·ε·σ). ∂z never goes through memory, and
//                   the KL's backward needs no dispatch of its own. Each output is stored once, so += is safe.
//
//
// This file holds the pipeline constants LAYOUT and EPILOGUE, the bindings, the operand loads and the epilogue
// store; it is prepended to each matmul kernel family (matmul.wgsl: register tiles; matmul_tiled.wgsl:
// workgroup-memory tiles; matmul_split.wgsl: split-K in a workgroup).

// The layout and epilogue codes come from the prelude (src/kernels/contract.rs).
override LAYOUT: u32 = LAYOUT_NT;
override EPILOGUE: u32 = EPI_NONE;

@group(0) @binding(0) var<uniform> p: MatmulParams;
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

// B(k, n), with the virtual column of ones at n = p.n under EPI_BIAS_GRAD and zeros past it.
fn load_b_or_one(k: u32, n: u32) -> f32 {
    if n < p.n {
        return load_b(k, n);
    }
    return select(0.0, 1.0, EPILOGUE == EPI_BIAS_GRAD && n == p.n);
}

// Columns of C a kernel computes: n, plus the virtual ones column under EPI_BIAS_GRAD.
fn output_cols() -> u32 {
    return select(p.n, p.n + 1u, EPILOGUE == EPI_BIAS_GRAD);
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
    if EPILOGUE == EPI_KL_GRAD {
        let at = p.c_off + m * 2u * p.n + n;
        c[at] += v;
        c[at + p.n] += v * aux[p.aux_off + m * p.n + n];
        return;
    }
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

// Four outputs of row m (columns `cols`), each stored with the epilogue; `ones` marks the bias-gradient column.
fn store_row(m: u32, cols: vec4<u32>, acc: vec4<f32>, ones: vec4<bool>) {
    store(m, cols.x, acc.x, ones.x);
    store(m, cols.y, acc.y, ones.y);
    store(m, cols.z, acc.z, ones.z);
    store(m, cols.w, acc.w, ones.w);
}
