//! Several models in one matmul dispatch (the sweep's batched step): each model's operands at its own offset, the
//! model the grid's third dimension. Model i of a dispatch over M models must compute exactly what a dispatch of
//! model i alone computes, to the bit: the same kernel, the same operations in the same order, only the offsets
//! moved. The single-model dispatch is checked against the f64 reference by `matmul.rs`; here the batched one is
//! checked against it bit for bit (which no tolerance could hide), and its last model against the reference too,
//! so a batched dispatch that read the first model's data for every model fails twice.
//!
//! Every buffer starts as NaN around and between the models' copies, so a read past a model's copy poisons that
//! model's outputs, and a write past it shows as a difference from the single-model runs, which leave it NaN.

use vae_wgpu::gpu::Operand;
use vae_wgpu::kernels::matmul::{
    Epilogue, EpilogueKind as Epi, Kernel, Layout, Part, error_bound, matmul_cpu, matmul_pair_with,
    matmul_part_with,
};
use vae_wgpu::kernels::philox::Philox;

use crate::matmul::{aligned_for, relu_mask};
use crate::{assert_close_by, gpu, read, rng, run, uniform_vec};

/// One buffer of a test: `models` copies of an operand (one if it is shared), model i's at `base + i·stride`,
/// NaN elsewhere. Outputs start as NaN too, or with what the epilogue adds to.
struct Copies {
    init: Vec<f32>,
    base: usize,
    stride: usize,
}

impl Copies {
    /// `per[i]` is model i's copy; a single entry is shared by every model (stride 0). The stride leaves a gap
    /// of NaN after each copy and keeps every copy vec4-aligned where `base` is.
    fn new(models: usize, base: usize, per: &[Vec<f32>]) -> Copies {
        let len = per[0].len();
        let stride = if per.len() == 1 {
            0
        } else {
            (len + 5).next_multiple_of(4)
        };
        let mut init = vec![f32::NAN; base + stride * (models - 1) + len + 3];
        for (i, v) in per.iter().enumerate() {
            init[base + i * stride..][..len].copy_from_slice(v);
        }
        Copies { init, base, stride }
    }

    fn operand<'a>(&self, buffer: &'a wgpu::Buffer, which: Which) -> Operand<'a> {
        match which {
            Which::All(_) => Operand::at(buffer, self.base).per_model(self.stride),
            Which::One(i) => Operand::at(buffer, self.base + i * self.stride),
        }
    }
}

/// The dispatch over every model, or model i's alone.
#[derive(Clone, Copy)]
enum Which {
    All(u32),
    One(usize),
}

impl Which {
    fn models(self) -> u32 {
        match self {
            Which::All(m) => m,
            Which::One(_) => 1,
        }
    }
}

/// Runs the parts that `build` makes from the buffers' operands once over all `models` and once per model (each
/// way from fresh buffers), and fails unless every buffer ends the same to the bit. Returns the buffers after the
/// batched run.
fn same_as_alone(
    what: &str,
    kernel: Kernel,
    models: u32,
    bufs: &[Copies],
    build: impl for<'a> Fn(&[Operand<'a>], u32) -> Vec<Part<'a>>,
) -> Vec<Vec<f32>> {
    let gpu = gpu();
    let fresh = || -> Vec<wgpu::Buffer> {
        bufs.iter()
            .map(|c| gpu.storage_init("models", &c.init).unwrap())
            .collect()
    };
    let dispatch = |buffers: &[wgpu::Buffer], which: Which| {
        let ops: Vec<Operand> = bufs
            .iter()
            .zip(buffers)
            .map(|(c, b)| c.operand(b, which))
            .collect();
        let parts = build(&ops, which.models());
        match parts[..] {
            [p] => matmul_part_with(gpu, kernel, what, p),
            [w, i] => matmul_pair_with(gpu, kernel, what, w, i),
            _ => unreachable!("one product or a pair"),
        }
        .unwrap_or_else(|e| panic!("{what}: {e}"))
    };
    let readback = |buffers: &[wgpu::Buffer]| -> Vec<Vec<f32>> {
        bufs.iter()
            .zip(buffers)
            .map(|(c, b)| read(b, 0, c.init.len()))
            .collect()
    };

    let batched = fresh();
    run(&[&dispatch(&batched, Which::All(models))], 0);
    let alone = fresh();
    let singles: Vec<_> = (0..models as usize)
        .map(|i| dispatch(&alone, Which::One(i)))
        .collect();
    run(&singles.iter().collect::<Vec<_>>(), 0);

    let (got, want) = (readback(&batched), readback(&alone));
    for (b, (g, w)) in got.iter().zip(&want).enumerate() {
        let differ = g
            .iter()
            .zip(w)
            .position(|(x, y)| x.to_bits() != y.to_bits());
        if let Some(at) = differ {
            panic!(
                "{what}, {models} models: buffer {b} element {at} is {} batched but {} with each model alone",
                g[at], w[at]
            );
        }
    }
    got
}

fn per_model(r: &mut Philox, models: u32, len: usize, lo: f32, hi: f32) -> Vec<Vec<f32>> {
    (0..models).map(|_| uniform_vec(r, len, lo, hi)).collect()
}

/// [`Copies`] of `copies` random operands of `len` elements in [lo, hi) (one copy is shared by every model).
fn random(
    r: &mut Philox,
    models: usize,
    copies: u32,
    at: usize,
    len: usize,
    lo: f32,
    hi: f32,
) -> Copies {
    Copies::new(models, at, &per_model(r, copies, len, lo, hi))
}

/// Where each buffer's first copy starts: awkward, or vec4-aligned so the 128 tile's vec4 kernels run.
fn base(aligned: bool, o: usize) -> usize {
    if aligned { o.next_multiple_of(4) } else { o }
}

/// One product with a plain epilogue (none, a bias, bias and ReLU, the ReLU's mask, the bias gradient), each
/// model with its own B, C and epilogue operand; the forward's A (the batch of images) is shared, as in a sweep.
fn check_product(
    kernel: Kernel,
    models: u32,
    aligned: bool,
    layout: Layout,
    dims: (u32, u32, u32),
    epi: Epi,
) {
    let (m, n, k) = dims;
    let (mu, nu, ku) = (m as usize, n as usize, k as usize);
    let mut r =
        rng(0x5eed ^ ((models as u64) << 48) ^ ((m as u64) << 32) ^ ((n as u64) << 16) ^ k as u64);
    let shared_a = layout == Layout::NT;
    let a = per_model(
        &mut r,
        if shared_a { 1 } else { models },
        mu * ku,
        -1.0,
        1.0,
    );
    let b = per_model(&mut r, models, ku * nu, -1.0, 1.0);
    let aux: Vec<Vec<f32>> = match epi {
        Epi::ReluMask => (0..models).map(|_| relu_mask(&mut r, mu * nu)).collect(),
        _ => per_model(&mut r, models, nu, -1.0, 1.0),
    };
    // C's copy holds the bias gradient two elements after the matrix, as the flat gradient buffer does.
    let c_len = mu * nu + if epi == Epi::BiasGrad { 2 + mu } else { 0 };
    let bufs = [
        Copies::new(models as usize, base(aligned, 5), &a),
        Copies::new(models as usize, base(aligned, 3), &b),
        Copies::new(
            models as usize,
            base(aligned, 11),
            &vec![vec![f32::NAN; c_len]; models as usize],
        ),
        Copies::new(models as usize, base(aligned, 7), &aux),
    ];
    let c_base = bufs[2].base;
    let what = format!(
        "{} aligned={aligned} {layout:?} {m}×{n}×{k} {epi:?}",
        kernel.name()
    );
    let got = same_as_alone(&what, kernel, models, &bufs, |ops, models| {
        let epilogue = match epi {
            Epi::None => Epilogue::None,
            Epi::Bias => Epilogue::Bias(ops[3]),
            Epi::BiasRelu => Epilogue::BiasRelu(ops[3]),
            Epi::ReluMask => Epilogue::ReluMask(ops[3]),
            Epi::BiasGrad => Epilogue::BiasGrad {
                offset: ops[2].offset + mu * nu + 2,
            },
            Epi::KlGrad | Epi::BiasBce => unreachable!("check_kl_grad, check_bias_bce"),
        };
        vec![Part {
            layout,
            dims,
            a: ops[0],
            b: ops[1],
            c: ops[2],
            epilogue,
            models,
        }]
    });

    // The last model against the f64 reference, on its own data.
    let last = models as usize - 1;
    let a_last = &a[if shared_a { 0 } else { last }];
    let epi_cpu = match epi {
        Epi::None | Epi::BiasGrad => Epilogue::None,
        Epi::Bias => Epilogue::Bias(aux[last].as_slice()),
        Epi::BiasRelu => Epilogue::BiasRelu(aux[last].as_slice()),
        Epi::ReluMask => Epilogue::ReluMask(aux[last].as_slice()),
        _ => unreachable!(),
    };
    let want = matmul_cpu(layout, (mu, nu, ku), a_last, &b[last], epi_cpu);
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let bound = matmul_cpu(
        layout,
        (mu, nu, ku),
        &abs(a_last),
        &abs(&b[last]),
        Epilogue::None,
    );
    let with_bias = matches!(epi, Epi::Bias | Epi::BiasRelu);
    let at = c_base + last * bufs[2].stride;
    assert_close_by(
        &format!("{what}, model {last}"),
        &got[2][at..at + mu * nu],
        &want,
        |i| {
            let bias = if with_bias {
                aux[last][i % nu].abs() as f64
            } else {
                0.0
            };
            error_bound(ku) * (bound[i] as f64 + bias)
        },
    );
}

/// The reparameterization's backward into the heads' gradient (NN, KL epilogue): each model's heads' gradient
/// already holds its KL part, which the epilogue adds to.
fn check_kl_grad(kernel: Kernel, models: u32, aligned: bool, dims: (u32, u32, u32)) {
    let (m, n, k) = dims;
    let (mu, nu, ku) = (m as usize, n as usize, k as usize);
    let mut r = rng(0x4b4c ^ ((models as u64) << 48) ^ ((m as u64) << 32) ^ k as u64);
    let c = models as usize;
    let bufs = [
        random(&mut r, c, models, base(aligned, 5), mu * ku, -1.0, 1.0),
        random(&mut r, c, models, base(aligned, 3), ku * nu, -1.0, 1.0),
        random(&mut r, c, models, base(aligned, 11), 2 * mu * nu, -1.0, 1.0),
        random(&mut r, c, models, base(aligned, 7), mu * nu, -2.0, 2.0),
    ];
    let what = format!("{} aligned={aligned} {m}×{n}×{k} KlGrad", kernel.name());
    same_as_alone(&what, kernel, models, &bufs, |ops, models| {
        vec![Part {
            layout: Layout::NN,
            dims,
            a: ops[0],
            b: ops[1],
            c: ops[2],
            epilogue: Epilogue::KlGrad(ops[3]),
            models,
        }]
    });
}

/// The decoder's output layer in training (NT, BCE epilogue): the logits and the BCE's gradient per model, the
/// images shared (one binarization for all) or each model's own.
fn check_bias_bce(kernel: Kernel, models: u32, aligned: bool, dims: (u32, u32, u32), own_x: bool) {
    let (m, n, k) = dims;
    let (mu, nu, ku) = (m as usize, n as usize, k as usize);
    let mut r = rng(0xbce ^ ((models as u64) << 48) ^ ((m as u64) << 32) ^ k as u64);
    let c = models as usize;
    let x: Vec<Vec<f32>> = (0..if own_x { models } else { 1 })
        .map(|_| {
            (0..mu * nu)
                .map(|_| [0, 255, r.below(256)][r.below(3) as usize] as f32 / 255.0)
                .collect()
        })
        .collect();
    let poison = vec![vec![f32::NAN; mu * nu]; c];
    let bufs = [
        random(&mut r, c, 1, base(aligned, 5), mu * ku, -1.0, 1.0),
        random(&mut r, c, models, base(aligned, 3), ku * nu, -1.0, 1.0),
        Copies::new(c, base(aligned, 11), &poison),
        random(&mut r, c, models, base(aligned, 7), nu, -1.0, 1.0),
        Copies::new(c, base(aligned, 2), &x),
        Copies::new(c, base(aligned, 6), &poison),
    ];
    let what = format!(
        "{} aligned={aligned} {m}×{n}×{k} BiasBce own_x={own_x}",
        kernel.name()
    );
    same_as_alone(&what, kernel, models, &bufs, |ops, models| {
        vec![Part {
            layout: Layout::NT,
            dims,
            a: ops[0],
            b: ops[1],
            c: ops[2],
            epilogue: Epilogue::BiasBce {
                bias: ops[3],
                x: ops[4],
                grad: ops[5],
            },
            models,
        }]
    });
}

/// A layer's backward pass as one pair: ∂W and ∂b (TN, bias gradient) into the gradient buffer and ∂X (NN, the
/// ReLU's mask), both from each model's ∂Y.
fn check_pair(kernel: Kernel, models: u32, aligned: bool, (rows, inp, out): (u32, u32, u32)) {
    let (r_, i_, o_) = (rows as usize, inp as usize, out as usize);
    let mut r = rng(0x9a12 ^ ((models as u64) << 48) ^ ((rows as u64) << 32) ^ out as u64);
    let c = models as usize;
    let masks: Vec<Vec<f32>> = (0..models).map(|_| relu_mask(&mut r, r_ * i_)).collect();
    let bufs = [
        random(&mut r, c, models, base(aligned, 5), r_ * o_, -1.0, 1.0),
        random(&mut r, c, models, base(aligned, 3), r_ * i_, -1.0, 1.0),
        random(&mut r, c, models, base(aligned, 7), o_ * i_, -1.0, 1.0),
        Copies::new(c, base(aligned, 1), &masks),
        // ∂W, a gap, then ∂b; ∂X in its own buffer.
        Copies::new(
            c,
            base(aligned, 9),
            &vec![vec![f32::NAN; o_ * i_ + 2 + o_]; c],
        ),
        Copies::new(c, base(aligned, 6), &vec![vec![f32::NAN; r_ * i_]; c]),
    ];
    let what = format!(
        "{} aligned={aligned} pair {rows}×{inp}×{out}",
        kernel.name()
    );
    same_as_alone(&what, kernel, models, &bufs, |ops, models| {
        let weight_grad = Part {
            layout: Layout::TN,
            dims: (out, inp, rows),
            a: ops[0],
            b: ops[1],
            c: ops[4],
            epilogue: Epilogue::BiasGrad {
                offset: ops[4].offset + o_ * i_ + 2,
            },
            models,
        };
        let input_grad = Part {
            layout: Layout::NN,
            dims: (rows, inp, out),
            a: ops[0],
            b: ops[2],
            c: ops[5],
            epilogue: Epilogue::ReluMask(ops[3]),
            models,
        };
        vec![weight_grad, input_grad]
    });
}

/// The layouts and epilogues of a training step's products with plain epilogues.
const PRODUCTS: [(Layout, Epi); 7] = [
    (Layout::NT, Epi::None),
    (Layout::NT, Epi::Bias),
    (Layout::NT, Epi::BiasRelu),
    (Layout::NN, Epi::None),
    (Layout::NN, Epi::ReluMask),
    (Layout::TN, Epi::None),
    (Layout::TN, Epi::BiasGrad),
];

/// Model counts: one (the batched path with nothing to batch), and three and five, which divide no workgroup
/// size.
const MODELS: [u32; 3] = [1, 3, 5];

/// Shapes: one that divides no tile, and one whose sides are multiples of 4 (the vec4 kernels' condition) but of
/// no tile.
const DIMS: [(u32, u32, u32); 2] = [(13, 6, 7), (36, 20, 44)];

/// Every product of the step with `kernel`, and its backward pairs where `pairs` says (with the shape and
/// alignment).
fn check_every_product(kernel: Kernel, pairs: impl Fn((u32, u32, u32), bool) -> bool) {
    for &aligned in aligned_for(kernel) {
        for models in MODELS {
            for dims in DIMS {
                for (layout, epi) in PRODUCTS {
                    check_product(kernel, models, aligned, layout, dims, epi);
                }
                check_kl_grad(kernel, models, aligned, dims);
                check_bias_bce(kernel, models, aligned, dims, models % 2 == 1);
                if pairs(dims, aligned) {
                    check_pair(kernel, models, aligned, dims);
                }
            }
        }
    }
}

/// Whether the 128 tile's pair at `dims` runs its vec4 variants, as it does at the step's real shapes. Both
/// halves need aligned operands and the weight gradient's two output sides (TN) and the input gradient's k and
/// n (NN) multiples of 4; every side a multiple of 4 is stricter, and gives the same answer at every shape in
/// [`DIMS`].
fn vec4_pair(dims: (u32, u32, u32), aligned: bool) -> bool {
    aligned && [dims.0, dims.1, dims.2].iter().all(|d| d % 4 == 0)
}

/// The kernels an untuned software adapter and an untuned GPU take, on every product of the step (every phase of
/// CI runs this one).
#[test]
fn models_batched_default_kernels() {
    check_every_product(Kernel::Reg64, |_, _| true);
    check_every_product(Kernel::Reg128, vec4_pair);
}

/// The 128 tile's pair with scalar loads (a side not a multiple of 4, or operands off vec4 alignment). CI runs
/// it on lavapipe, under the validation layer and on GL but not on SwiftShader, whose Subzero compiler took over
/// 5 minutes and 10 GB without finishing this pipeline (2-vCPU AMD EPYC; the step's shapes take the vec4 pair
/// there).
#[test]
fn models_batched_scalar_128_tile_pair() {
    for aligned in aligned_for(Kernel::Reg128) {
        for models in MODELS {
            for dims in DIMS {
                if !vec4_pair(dims, *aligned) {
                    check_pair(Kernel::Reg128, models, *aligned, dims);
                }
            }
        }
    }
}

/// Every other candidate (autotuning may choose any of them for a sweep).
#[test]
fn models_batched_every_kernel() {
    for kernel in Kernel::CANDIDATES {
        if !matches!(kernel, Kernel::Reg128 | Kernel::Reg64) {
            check_every_product(kernel, |_, _| true);
        }
    }
}

/// The real fc1 forward and fc4 backward pair at batch 128 with the kernels an untuned software adapter and GPU
/// take, for three models: several workgroups per model in both grid dimensions.
#[test]
fn models_batched_real_shapes() {
    for kernel in [Kernel::Reg128, Kernel::Reg64] {
        check_product(kernel, 3, true, Layout::NT, (128, 400, 784), Epi::BiasRelu);
        check_pair(kernel, 3, true, (128, 784, 400));
    }
}

/// What a batched dispatch refuses: models whose outputs overlap, zero models, and a pair whose two products are
/// for different model counts.
#[test]
fn models_batched_rejects_overlapping_outputs_and_mismatched_pairs() {
    let gpu = gpu();
    let buf = gpu.storage_init("models", &vec![0f32; 1024]).unwrap();
    let op = |offset, stride| Operand::at(&buf, offset).per_model(stride);
    let part = |c, models| Part {
        layout: Layout::NT,
        dims: (4, 4, 4),
        a: op(0, 0),
        b: op(64, 16),
        c,
        epilogue: Epilogue::None,
        models,
    };
    let err = |p: Part| {
        matmul_part_with(gpu, Kernel::Reg64, "t", p)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    // C of 16 elements per model, 8 apart: the models would write each other's.
    let e = err(part(op(256, 8), 3));
    assert!(
        e.contains("each needs its own 16 elements") && e.contains("stride is 8"),
        "{e}"
    );
    // One shared C (stride 0) for three models.
    let e = err(part(op(256, 0), 3));
    assert!(e.contains("each needs its own"), "{e}");
    let e = err(part(op(256, 16), 0));
    assert!(e.contains("at least one model"), "{e}");
    // Past the buffer's end only for the last model.
    let e = err(part(op(1024 - 16 - 32, 20), 3));
    assert!(
        e.contains("C of the last of 3 models needs elements 1016..1032"),
        "{e}"
    );
    let first = Part {
        layout: Layout::TN,
        ..part(op(256, 16), 3)
    };
    let second = Part {
        layout: Layout::NN,
        ..part(op(512, 16), 2)
    };
    let e = matmul_pair_with(gpu, Kernel::Reg64, "t", first, second)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("same models"), "{e}");
    // The same parts each for three models are accepted.
    assert!(matmul_part_with(gpu, Kernel::Reg64, "t", part(op(256, 16), 3)).is_ok());
}
