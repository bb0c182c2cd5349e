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
//   EPI_BIAS_BCE    C = A·B + aux[n], the decoder's logits, and the BCE's gradient σ(C) − x into c2 at
//                   params[1].c_off (x: aux2 at params[1].aux_off), both (m, n): the step's BCE needs no
//                   dispatch of its own (adam_with_bce sums its value from the logits). Unpaired only.
//
// Pairs (pipeline constant PAIRED): two independent products with the same A in one dispatch, a layer's weight
// gradient and input gradient, so the backward pass of a layer is one launch instead of two. The first product
// has layout LAYOUT, epilogue EPILOGUE, params[0] and bindings b, c, aux; the second LAYOUT2, EPILOGUE2,
// params[1], b2, c2, aux2; their workgroups are interleaved in one grid (`pair_part`). Unpaired, params[1] and
// the second bindings are not read (the host binds the first's there), except by EPI_BIAS_BCE.
//
// This file holds the pipeline constants, the bindings, the part a workgroup computes (`enter`, which every entry
// point calls first), the operand loads and the epilogue store; it is prepended to each matmul kernel family
// (matmul.wgsl: register tiles; matmul_tiled.wgsl: workgroup-memory tiles; matmul_split.wgsl: split-K in a
// workgroup).

// The layout and epilogue codes come from the prelude (src/kernels/contract.rs).
override LAYOUT: u32 = LAYOUT_NT;
override EPILOGUE: u32 = EPI_NONE;
override PAIRED: bool = false;
override LAYOUT2: u32 = LAYOUT_NN;
override EPILOGUE2: u32 = EPI_NONE;

@group(0) @binding(0) var<uniform> params: array<MatmulParams, 2>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> aux: array<f32>;
@group(0) @binding(5) var<storage, read> b2: array<f32>;
@group(0) @binding(6) var<storage, read_write> c2: array<f32>;
@group(0) @binding(7) var<storage, read> aux2: array<f32>;

// The product this invocation computes: its params (offsets already at this workgroup's model), and whether it is
// a pair's second.
var<private> p: MatmulParams;
var<private> second: bool;
// EPI_BIAS_BCE: where this model's BCE gradient (in c2) and images (in aux2) start.
var<private> bce_grad_off: u32;
var<private> bce_x_off: u32;

// A pair's workgroups, interleaved: of the W = W1 + W2 workgroups (the grid's, numbered row by row), every
// params[0].pair_stride-th, W2 = params[0].pair_count of them, computes the second product and the rest the first,
// each numbering its own row by row, params[i].groups_x wide. Interleaved, because the two products' workgroups
// can differ six-fold in cost (k = 784 against 128 in fc4's pair): a software rasterizer that hands each thread a
// contiguous run of workgroups would give one thread all the heavy ones. Returns (second?, index in its product),
// the index past the product's workgroups for a grid's spare ones.
fn pair_part(wg: vec3<u32>, num: vec3<u32>) -> vec2<u32> {
    let w = wg.x + wg.y * num.x;
    let stride = params[0].pair_stride;
    let count = params[0].pair_count;
    if w < count * stride && w % stride == 0u {
        return vec2<u32>(1u, w / stride);
    }
    return vec2<u32>(0u, w - min(count, (w + stride - 1u) / stride));
}

// Moves p's offsets to model `model`'s operands. Models are the grid's third dimension, not folded into its rows:
// every kernel's tile loop and every pair's interleaving stay as they are for one model, so a model in a batched
// dispatch computes each output with the same operations, in the same order, as it would alone (bit-identical).
fn at_model(model: u32) {
    p.a_off += model * p.a_stride;
    p.b_off += model * p.b_stride;
    p.c_off += model * p.c_stride;
    p.bias_off += model * p.c_stride;
    p.aux_off += model * p.aux_stride;
    bce_grad_off = params[1].c_off + model * params[1].c_stride;
    bce_x_off = params[1].aux_off + model * params[1].aux_stride;
}

// Sets the product this workgroup computes and returns its workgroup id within that product, whose rows of tiles
// are `tile_m` high (z: the model). Unpaired, the grid's x and y are the product's own.
fn enter(wg: vec3<u32>, num: vec3<u32>, tile_m: u32) -> vec3<u32> {
    if !PAIRED {
        p = params[0];
        second = false;
        at_model(wg.z);
        return wg;
    }
    let part = pair_part(wg, num);
    second = part.x == 1u;
    p = params[part.x];
    at_model(wg.z);
    let rows = (p.m + tile_m - 1u) / tile_m;
    let x = part.y % p.groups_x;
    // A spare workgroup (past its product's) gets the row just past the last: it stores nothing.
    let y = min(part.y / p.groups_x, rows);
    return vec3<u32>(x, y, wg.z);
}

// k of this workgroup's product, read from the uniform params (uniform, for loops with barriers).
fn part_k(wg: vec3<u32>, num: vec3<u32>) -> u32 {
    if PAIRED {
        return params[pair_part(wg, num).x].k;
    }
    return params[0].k;
}

fn part_layout() -> u32 {
    if PAIRED && second {
        return LAYOUT2;
    }
    return LAYOUT;
}

fn part_epilogue() -> u32 {
    if PAIRED && second {
        return EPILOGUE2;
    }
    return EPILOGUE;
}

fn b_at(i: u32) -> f32 {
    if PAIRED && second {
        return b2[i];
    }
    return b[i];
}

fn aux_at(i: u32) -> f32 {
    if PAIRED && second {
        return aux2[i];
    }
    return aux[i];
}

fn c_at(i: u32) -> f32 {
    if PAIRED && second {
        return c2[i];
    }
    return c[i];
}

fn set_c(i: u32, v: f32) {
    if PAIRED && second {
        c2[i] = v;
    } else {
        c[i] = v;
    }
}

fn load_a(m: u32, k: u32) -> f32 {
    if part_layout() == LAYOUT_TN {
        return a[p.a_off + k * p.m + m];
    }
    return a[p.a_off + m * p.k + k];
}

fn load_b(k: u32, n: u32) -> f32 {
    if part_layout() == LAYOUT_NT {
        return b_at(p.b_off + n * p.k + k);
    }
    return b_at(p.b_off + k * p.n + n);
}

// B(k, n), with the virtual column of ones at n = p.n under EPI_BIAS_GRAD and zeros past it.
fn load_b_or_one(k: u32, n: u32) -> f32 {
    if n < p.n {
        return load_b(k, n);
    }
    return select(0.0, 1.0, part_epilogue() == EPI_BIAS_GRAD && n == p.n);
}

// Columns of C a kernel computes: n, plus the virtual ones column under EPI_BIAS_GRAD.
fn output_cols() -> u32 {
    return select(p.n, p.n + 1u, part_epilogue() == EPI_BIAS_GRAD);
}

fn store(m: u32, n: u32, value: f32, is_ones: bool) {
    if m >= p.m {
        return;
    }
    if is_ones {
        set_c(p.bias_off + m, value);
        return;
    }
    if n >= p.n {
        return;
    }
    var v = value;
    let epi = part_epilogue();
    if epi == EPI_BIAS_BCE {
        v += aux_at(p.aux_off + n);
        let at = m * p.n + n;
        set_c(p.c_off + at, v);
        c2[bce_grad_off + at] = sigmoid(v) - aux2[bce_x_off + at];
        return;
    }
    if epi == EPI_KL_GRAD {
        let at = p.c_off + m * 2u * p.n + n;
        set_c(at, c_at(at) + v);
        set_c(at + p.n, c_at(at + p.n) + v * aux_at(p.aux_off + m * p.n + n));
        return;
    }
    if epi == EPI_BIAS || epi == EPI_BIAS_RELU {
        v += aux_at(p.aux_off + n);
    }
    if epi == EPI_BIAS_RELU {
        v = max(v, 0.0);
    }
    if epi == EPI_RELU_MASK && !(aux_at(p.aux_off + m * p.n + n) > 0.0) {
        v = 0.0;
    }
    set_c(p.c_off + m * p.n + n, v);
}

// Four outputs of row m (columns `cols`), each stored with the epilogue; `ones` marks the bias-gradient column.
fn store_row(m: u32, cols: vec4<u32>, acc: vec4<f32>, ones: vec4<bool>) {
    store(m, cols.x, acc.x, ones.x);
    store(m, cols.y, acc.y, ones.y);
    store(m, cols.z, acc.z, ones.z);
    store(m, cols.w, acc.w, ones.w);
}
