use vae_wgpu::kernels::matmul::{
    Epilogue, EpilogueKind as Epi, Kernel, Layout, Part, bias_grad_cpu, error_bound, matmul,
    matmul_cpu, matmul_pair_with, matmul_with,
};

use vae_wgpu::gpu::Operand;
use vae_wgpu::kernels::accuracy::U;
use vae_wgpu::kernels::loss::{bce_grad_error, bce_logits_cpu};
use vae_wgpu::kernels::philox::Philox;

use crate::{assert_close_by, gpu, poisoned, read, rng, run, uniform_vec};

/// `v` at element `off` of a buffer whose other elements (before it, and three after) are NaN: an operand at an
/// awkward offset, or an output whose unwritten neighbours must stay NaN.
fn padded(off: usize, v: &[f32]) -> Vec<f32> {
    let mut p = vec![f32::NAN; off];
    p.extend_from_slice(v);
    p.extend_from_slice(&[f32::NAN; 3]);
    p
}

/// A ReLU's output as a mask: exact zeros and negatives among the positives, as a ReLU's output has zeros.
pub fn relu_mask(r: &mut Philox, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| [0.0, 0.5, -0.25, 2.0][r.below(4) as usize])
        .collect()
}

/// Runs C = A·B (+ epilogue) on the GPU with every operand at an awkward offset inside a larger buffer, and
/// compares with the f64 reference.
///
/// Tolerance: f32 accumulation of k products (with or without FMA, in any order) is within γ_k·Σ|a||b| of the
/// exact sum, plus 2u for the bias add and the final rounding ([`error_bound`]). A wrong index, sign or bound gives errors of the order of Σ|a||b| itself.
/// Every candidate kernel (autotuning may choose any of them, on any product).
fn check(layout: Layout, dims: (u32, u32, u32), epi: Epi) {
    for kernel in Kernel::CANDIDATES {
        // Operand offsets that are not multiples of 4 take the scalar kernels; aligned ones let the 128 tile
        // read vec4s where the shape allows (matmul_nt4 / nn4 / tn4); the others read scalars either way.
        let offsets: &[(usize, usize)] = match kernel {
            Kernel::Reg128 => &[(5, 3), (8, 4)],
            _ => &[(5, 3)],
        };
        for &o in offsets {
            check_kernel(kernel, o, layout, dims, epi);
        }
    }
}

fn check_kernel(
    kernel: Kernel,
    (a_off, b_off): (usize, usize),
    layout: Layout,
    (m, n, k): (u32, u32, u32),
    epi: Epi,
) {
    let gpu = gpu();
    let (mu, nu, ku) = (m as usize, n as usize, k as usize);
    let mut r = rng((m as u64) << 40 | (n as u64) << 20 | k as u64);
    let a = uniform_vec(&mut r, mu * ku, -1.0, 1.0);
    let b = uniform_vec(&mut r, ku * nu, -1.0, 1.0);
    let bias = uniform_vec(&mut r, nu, -1.0, 1.0);
    let mask = relu_mask(&mut r, mu * nu);

    let (c_off, aux_off) = (11usize, 7usize);
    let a_buf = gpu.storage_init("a", &padded(a_off, &a)).unwrap();
    let b_buf = gpu.storage_init("b", &padded(b_off, &b)).unwrap();
    let aux_src = match epi {
        Epi::ReluMask => mask.clone(),
        _ => bias.clone(),
    };
    let aux_buf = gpu.storage_init("aux", &padded(aux_off, &aux_src)).unwrap();
    // C's buffer also holds the bias gradient (m values) after the matrix, as the flat gradient buffer does.
    let bias_off = c_off + mu * nu + 2;
    let c_buf = poisoned(bias_off + mu + 5);

    let aux = Operand::at(&aux_buf, aux_off);
    let epilogue = match epi {
        Epi::None => Epilogue::None,
        Epi::Bias => Epilogue::Bias(aux),
        Epi::BiasRelu => Epilogue::BiasRelu(aux),
        Epi::ReluMask => Epilogue::ReluMask(aux),
        Epi::BiasGrad => Epilogue::BiasGrad { offset: bias_off },
        Epi::KlGrad | Epi::BiasBce => {
            unreachable!("the KL and BCE epilogues have their own tests (kl_grad_…, bias_bce_…)")
        }
    };
    let d = matmul_with(
        gpu,
        kernel,
        "matmul",
        layout,
        (m, n, k),
        Operand::at(&a_buf, a_off),
        Operand::at(&b_buf, b_off),
        Operand::at(&c_buf, c_off),
        epilogue,
    )
    .unwrap();
    run(&[&d], 0);

    let epi_cpu = match epi {
        Epi::None | Epi::BiasGrad => Epilogue::None,
        Epi::Bias => Epilogue::Bias(bias.as_slice()),
        Epi::BiasRelu => Epilogue::BiasRelu(bias.as_slice()),
        Epi::ReluMask => Epilogue::ReluMask(mask.as_slice()),
        Epi::KlGrad | Epi::BiasBce => unreachable!(),
    };
    let want = matmul_cpu(layout, (mu, nu, ku), &a, &b, epi_cpu);
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let bound = matmul_cpu(layout, (mu, nu, ku), &abs(&a), &abs(&b), Epilogue::None);
    let gamma = error_bound(ku);
    let with_bias = matches!(epi, Epi::Bias | Epi::BiasRelu);
    let got = read(&c_buf, c_off, mu * nu);
    let what = format!(
        "{} offsets {a_off},{b_off} {layout:?} {m}×{n}×{k} {epi:?}",
        kernel.name()
    );
    assert_close_by(&what, &got, &want, |i| {
        let b = if with_bias {
            bias[i % nu].abs() as f64
        } else {
            0.0
        };
        gamma * (bound[i] as f64 + b)
    });

    // Nothing outside C (and the bias gradient, when asked for) was written.
    let before = read(&c_buf, 0, c_off);
    let after = read(&c_buf, c_off + mu * nu, bias_off + mu + 5 - c_off - mu * nu);
    let gap_and_tail_nan = before.iter().all(|v| v.is_nan())
        && after[..2].iter().all(|v| v.is_nan())
        && after[2 + mu..].iter().all(|v| v.is_nan());
    assert!(gap_and_tail_nan, "{what}: wrote outside its output");
    let grad = &after[2..2 + mu];
    if let Epi::BiasGrad = epi {
        assert_eq!(
            layout,
            Layout::TN,
            "bias gradients come with the weight gradient"
        );
        // A is ∂Y (k rows of m): the bias gradient is its column sums.
        let want = bias_grad_cpu(&a, ku, mu);
        let bound = bias_grad_cpu(&abs(&a), ku, mu);
        assert_close_by(&format!("{what} bias gradient"), grad, &want, |i| {
            gamma * bound[i] as f64
        });
    } else {
        assert!(
            grad.iter().all(|v| v.is_nan()),
            "{what}: wrote a bias gradient"
        );
    }
}

/// The operand alignments worth testing for `kernel`: both for the 128 tile and the split-K kernels, whose vec4
/// variants take aligned operands; scalar offsets only for the others, which read scalars either way.
pub fn aligned_for(kernel: Kernel) -> &'static [bool] {
    if matches!(kernel, Kernel::Reg128 | Kernel::Split { .. }) {
        &[false, true]
    } else {
        &[false]
    }
}

const EPIS: [Epi; 4] = [Epi::None, Epi::Bias, Epi::BiasRelu, Epi::ReluMask];

/// The fc3 input gradient's KL epilogue with `kernel`: ∂z = A·B (m, n, NN as in the step) lands in the heads'
/// gradient (m, 2n) at an offset, on top of the KL's own part already there: ∂μ += ∂z, ∂log σ² += ∂z·coef. The
/// reference is the same chain in f64 from the same inputs.
///
/// Tolerance: ∂z's own bound γ_k·Σ|a||b| (as every product), carried once into ∂μ and times |coef| into ∂log σ²;
/// then ∂z·coef rounds once (u) and each += rounds once (u of the result).
fn check_kl_grad(kernel: Kernel, (m, n, k): (u32, u32, u32), aligned: bool) {
    let gpu = gpu();
    let (mu, nu, ku) = (m as usize, n as usize, k as usize);
    let mut r = rng(((m as u64) << 40) ^ ((n as u64) << 20) ^ k as u64 ^ 0x4b4c);
    let a = uniform_vec(&mut r, mu * ku, -1.0, 1.0);
    let b = uniform_vec(&mut r, ku * nu, -1.0, 1.0);
    let coef = uniform_vec(&mut r, mu * nu, -2.0, 2.0);
    let base = uniform_vec(&mut r, 2 * mu * nu, -1.0, 1.0);
    let (a_off, b_off, c_off, aux_off) = if aligned {
        (8, 4, 12, 4)
    } else {
        (5, 3, 11, 7)
    };
    let a_buf = gpu.storage_init("a", &padded(a_off, &a)).unwrap();
    let b_buf = gpu.storage_init("b", &padded(b_off, &b)).unwrap();
    let coef_buf = gpu.storage_init("coef", &padded(aux_off, &coef)).unwrap();
    let c_buf = gpu.storage_init("dheads", &padded(c_off, &base)).unwrap();
    let op = |buffer, offset| Operand::at(buffer, offset);
    let d = matmul_with(
        gpu,
        kernel,
        "fc3.input_grad",
        Layout::NN,
        (m, n, k),
        op(&a_buf, a_off),
        op(&b_buf, b_off),
        op(&c_buf, c_off),
        Epilogue::KlGrad(op(&coef_buf, aux_off)),
    )
    .unwrap();
    run(&[&d], 0);
    let dz = matmul_cpu(Layout::NN, (mu, nu, ku), &a, &b, Epilogue::None);
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let bound = matmul_cpu(Layout::NN, (mu, nu, ku), &abs(&a), &abs(&b), Epilogue::None);
    let gamma = error_bound(ku);
    let mut want = base.clone();
    for i in 0..mu {
        for j in 0..nu {
            let (g, c) = (dz[i * nu + j] as f64, coef[i * nu + j] as f64);
            want[i * 2 * nu + j] = (base[i * 2 * nu + j] as f64 + g) as f32;
            want[i * 2 * nu + nu + j] = (base[i * 2 * nu + nu + j] as f64 + g * c) as f32;
        }
    }
    let all = read(&c_buf, 0, c_off + 2 * mu * nu + 3);
    let what = format!("{} {m}×{n}×{k} KlGrad aligned={aligned}", kernel.name());
    assert_close_by(&what, &all[c_off..c_off + 2 * mu * nu], &want, |h| {
        let (i, col) = (h / (2 * nu), h % (2 * nu));
        let j = col % nu;
        let dz_err = gamma * bound[i * nu + j] as f64;
        let w = want[h].abs() as f64;
        // The reference's own rounding to f32 is half an ulp more.
        if col < nu {
            dz_err + 2.0 * U * w
        } else {
            let c = coef[i * nu + j].abs() as f64;
            dz_err * c + U * (dz[i * nu + j].abs() as f64 * c) + 2.0 * U * w
        }
    });
    let outside = all[..c_off].iter().chain(&all[c_off + 2 * mu * nu..]);
    assert!(
        outside.into_iter().all(|v| v.is_nan()),
        "{what}: wrote outside the heads' gradient"
    );
}

/// Every candidate, with scalar and vec4-aligned offsets, at batch 1, shapes that divide no tile, and the real
/// 128×20×400 (and the 2-D latent space's 128×2×400).
#[test]
fn kl_grad_epilogue_with_every_kernel() {
    for kernel in Kernel::CANDIDATES {
        // Aligned operands change the kernel only for the 128 tile (its vec4 variants).
        for &aligned in aligned_for(kernel) {
            for dims in [
                (1, 1, 1),
                (1, 20, 400),
                (13, 3, 29),
                (67, 5, 130),
                (128, 20, 400),
                (128, 2, 400),
            ] {
                check_kl_grad(kernel, dims, aligned);
            }
        }
    }
}

/// The layouts and epilogues [`check_loads_and_stores`] takes: every epilogue with NT, and NN and TN with the ones
/// the training step gives them. So every candidate's operand loads run in each layout and its stores with each
/// epilogue. What they leave of the cross product (NN and TN with the other epilogues) is
/// [`check_the_rest_of_the_cross_product`]'s, which CI's SwiftShader phase leaves out (.ci/run): there each
/// layout-and-epilogue pair is one more pipeline of every candidate to build, and building them was most of
/// that phase.
const LOADS_AND_STORES: [(Layout, Epi); 7] = [
    (Layout::NT, Epi::None),
    (Layout::NT, Epi::Bias),
    (Layout::NT, Epi::BiasRelu),
    (Layout::NT, Epi::ReluMask),
    (Layout::NN, Epi::None),
    (Layout::NN, Epi::ReluMask),
    (Layout::TN, Epi::BiasGrad),
];

fn check_loads_and_stores(dims: (u32, u32, u32)) {
    for (layout, epi) in LOADS_AND_STORES {
        check(layout, dims, epi);
    }
}

fn check_the_rest_of_the_cross_product(dims: (u32, u32, u32)) {
    for layout in [Layout::NN, Layout::TN] {
        for epi in EPIS {
            if !LOADS_AND_STORES.contains(&(layout, epi)) {
                check(layout, dims, epi);
            }
        }
    }
}

#[test]
fn matmul_one_element() {
    check_loads_and_stores((1, 1, 1));
}

#[test]
fn matmul_one_element_every_layout_with_every_epilogue() {
    check_the_rest_of_the_cross_product((1, 1, 1));
}

#[test]
fn matmul_batch_one() {
    // One image through the heads (400 → 2·20) and the decoder's output layer (400 → 784).
    check(Layout::NT, (1, 40, 400), Epi::Bias);
    check(Layout::NT, (1, 784, 400), Epi::Bias);
    check(Layout::NN, (1, 400, 784), Epi::ReluMask);
    check(Layout::TN, (784, 400, 1), Epi::BiasGrad);
}

/// 129 and 130 cross the 128 tile too.
const SIZES_THAT_DO_NOT_DIVIDE_THE_TILE: [(u32, u32, u32); 5] = [
    (67, 45, 33),
    (65, 129, 17),
    (3, 70, 200),
    (130, 1, 5),
    (129, 257, 9),
];

#[test]
fn matmul_sizes_that_do_not_divide_the_tile() {
    for dims in SIZES_THAT_DO_NOT_DIVIDE_THE_TILE {
        check_loads_and_stores(dims);
    }
}

#[test]
fn matmul_sizes_that_do_not_divide_the_tile_every_layout_with_every_epilogue() {
    for dims in SIZES_THAT_DO_NOT_DIVIDE_THE_TILE {
        check_the_rest_of_the_cross_product(dims);
    }
}

/// [`check`] for the register-tiled kernels alone (no workgroup memory, a fixed block of named registers per
/// invocation): the 64 tile (`matmul`) and the 128 tile, whose operands at offsets that are multiples of 4 take its
/// vec4 kernels (`matmul_nt4` / `nn4` / `tn4`) where the shape allows. Cheaper than every candidate, for shapes
/// aimed at those kernels' own row and column arithmetic.
fn check_register_tiles(layout: Layout, dims: (u32, u32, u32), epi: Epi) {
    check_kernel(Kernel::Reg64, (5, 3), layout, dims, epi);
    check_kernel(Kernel::Reg128, (5, 3), layout, dims, epi);
    check_kernel(Kernel::Reg128, (8, 4), layout, dims, epi);
}

#[test]
fn matmul_more_than_one_row_of_128_tiles() {
    // m past 128 needs a second (and third) row of workgroups; k a multiple of 4 (n too, for NN) lets the 128 tile
    // read vec4s. matmul_nt4 and matmul_nn4 place a workgroup's rows at wg.y · 128, which no m ≤ 128 tests. Three
    // rows of tiles (257), because a misplaced second row can still cover 130: one at wg.y · 2 computes rows
    // 2..129, all correct, and only past 131 leaves rows unwritten.
    for (m, n, k) in [(130, 45, 8), (257, 132, 12)] {
        check_register_tiles(Layout::NT, (m, n, k), Epi::Bias);
        check_register_tiles(Layout::NN, (m, n, k), Epi::ReluMask);
    }
}

#[test]
fn matmul_shapes_ending_in_either_half_of_the_128_tile() {
    // The vec4 kernels load blocks of 4 rows (matmul_tn4) and 4 columns (tn4, nn4) for each half of the tile, r0..
    // and r0 + 64.., each block index clamped to the last block (m / 4 − 1) so that loads past the matrix stay in
    // it. The clamp reaches a real row only when the matrix ends in that half: m (or n) mod 128 in 4..64 for the
    // first, 68..124 or 0 for the second. The real sizes (400, 784) are 16 mod 128, so only the first is tested
    // there. Here: m = 128, 196, 100 (second half), 132 (first); n = 100, 196, 128 (second), 260 (first).
    for (m, n, k) in [(128, 100, 12), (196, 260, 8), (100, 196, 4), (132, 128, 4)] {
        check_register_tiles(Layout::TN, (m, n, k), Epi::BiasGrad);
        check_register_tiles(Layout::NN, (m, n, k), Epi::ReluMask);
    }
}

#[test]
fn matmul_real_fc1_forward_and_weight_gradient() {
    check(Layout::NT, (128, 400, 784), Epi::BiasRelu); // h1 = relu(x·W1ᵀ + b1)
    check(Layout::TN, (400, 784, 128), Epi::BiasGrad); // ∂W1 = ∂h1ᵀ·x, ∂b1
}

#[test]
fn matmul_real_fc4_forward_and_backward() {
    check(Layout::NT, (128, 784, 400), Epi::Bias); // logits = h3·W4ᵀ + b4
    check(Layout::NN, (128, 400, 784), Epi::ReluMask); // ∂h3 = (∂logits·W4) ⊙ [h3 > 0]
    check(Layout::TN, (784, 400, 128), Epi::BiasGrad); // ∂W4 = ∂logitsᵀ·h3, ∂b4
}

#[test]
fn matmul_real_latent_shapes() {
    check(Layout::NT, (128, 40, 400), Epi::Bias); // heads
    check(Layout::NN, (128, 400, 40), Epi::ReluMask); // ∂h1 from the heads
    check(Layout::NN, (128, 20, 400), Epi::None); // ∂z = ∂h3·W3
    check(Layout::TN, (400, 20, 128), Epi::BiasGrad); // ∂W3, ∂b3
}

#[test]
fn matmul_known_values() {
    let gpu = gpu();
    // A = [[1, 2], [3, 4]], W = [[5, 6], [7, 8]] (out, in): A·Wᵀ = [[17, 23], [39, 53]], + bias (−20, 1), ReLU.
    let a = gpu.storage_init("a", &[1f32, 2., 3., 4.]).unwrap();
    let w = gpu.storage_init("w", &[5f32, 6., 7., 8.]).unwrap();
    let bias = gpu.storage_init("bias", &[-20f32, 1.]).unwrap();
    for kernel in Kernel::CANDIDATES {
        let name = kernel.name();
        let run_one = |label, layout, c: &wgpu::Buffer, epilogue| {
            let ops = ((&a).into(), (&w).into(), c.into());
            let d = matmul_with(
                gpu,
                kernel,
                label,
                layout,
                (2, 2, 2),
                ops.0,
                ops.1,
                ops.2,
                epilogue,
            );
            run(&[&d.unwrap()], 0);
        };
        let c = poisoned(4);
        run_one("known", Layout::NT, &c, Epilogue::BiasRelu((&bias).into()));
        assert_eq!(read(&c, 0, 4), vec![0., 24., 19., 54.], "{name}");
        // A·W = [[19, 22], [43, 50]]; Aᵀ·W = [[26, 30], [38, 44]] with row sums of Aᵀ = [4, 6].
        let c2 = poisoned(6);
        run_one("known.nn", Layout::NN, &c2, Epilogue::None);
        assert_eq!(read(&c2, 0, 4), vec![19., 22., 43., 50.], "{name}");
        run_one(
            "known.tn",
            Layout::TN,
            &c2,
            Epilogue::BiasGrad { offset: 4 },
        );
        assert_eq!(read(&c2, 0, 6), vec![26., 30., 38., 44., 4., 6.], "{name}");
    }
}

#[test]
fn matmul_rejects_operands_that_do_not_fit() {
    let gpu = gpu();
    let small = gpu.storage::<f32>("small", 10).unwrap();
    let c = gpu.storage::<f32>("c", 100).unwrap();
    let e = matmul(
        gpu,
        "bad",
        Layout::NT,
        (4, 4, 4),
        (&small).into(),
        (&small).into(),
        (&c).into(),
        Epilogue::None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("A needs elements 0..16"), "{e}");
}

/// A layer's backward pair with `kernel`: the weight gradient (TN, bias gradient in the same buffer) and the input
/// gradient (NN, ReLU mask) of one ∂Y in one dispatch, each checked against its reference as if it ran alone (the
/// same bounds as [`check_kernel`]), and nothing else of either output buffer written. `aligned` puts every
/// operand at a multiple of 4, so the 128 tile takes its vec4 pair (`matmul_pair4`) where the shapes allow.
/// (rows, in, out) are the layer's batch, input and output sizes.
fn check_pair(kernel: Kernel, (rows, inp, out): (u32, u32, u32), aligned: bool) {
    let gpu = gpu();
    let (r_, i_, o_) = (rows as usize, inp as usize, out as usize);
    let mut r = rng(((rows as u64) << 40) ^ ((inp as u64) << 20) ^ out as u64 ^ 0x9a1);
    let dy = uniform_vec(&mut r, r_ * o_, -1.0, 1.0);
    let x = uniform_vec(&mut r, r_ * i_, -1.0, 1.0);
    let w = uniform_vec(&mut r, o_ * i_, -1.0, 1.0);
    let mask = relu_mask(&mut r, r_ * i_);
    let off = |o: usize| if aligned { o.next_multiple_of(4) } else { o };
    let (dy_off, x_off, w_off, mask_off) = (off(5), off(3), off(7), off(1));
    let dy_buf = gpu.storage_init("dy", &padded(dy_off, &dy)).unwrap();
    let x_buf = gpu.storage_init("x", &padded(x_off, &x)).unwrap();
    let w_buf = gpu.storage_init("w", &padded(w_off, &w)).unwrap();
    let mask_buf = gpu.storage_init("mask", &padded(mask_off, &mask)).unwrap();
    // The gradient buffer: ∂W at an offset, then a gap, then ∂b; ∂X in its own buffer.
    let (dw_off, dx_off) = (off(9), off(6));
    let db_off = dw_off + o_ * i_ + 2;
    let grads = poisoned(db_off + o_ + 5);
    let dx = poisoned(dx_off + r_ * i_ + 5);
    let op = |buffer, offset| Operand::at(buffer, offset);
    let first = Part {
        layout: Layout::TN,
        dims: (out, inp, rows),
        a: op(&dy_buf, dy_off),
        b: op(&x_buf, x_off),
        c: op(&grads, dw_off),
        epilogue: Epilogue::BiasGrad { offset: db_off },
        models: 1,
    };
    let second = Part {
        layout: Layout::NN,
        dims: (rows, inp, out),
        a: op(&dy_buf, dy_off),
        b: op(&w_buf, w_off),
        c: op(&dx, dx_off),
        epilogue: Epilogue::ReluMask(op(&mask_buf, mask_off)),
        models: 1,
    };
    let d = matmul_pair_with(gpu, kernel, "pair", first, second).unwrap();
    run(&[&d], 0);
    let what = format!(
        "{} pair {rows}×{inp}×{out} aligned={aligned}",
        kernel.name()
    );
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();

    // ∂W = ∂Yᵀ·X (k = rows) and ∂b, the column sums of ∂Y.
    let g = read(&grads, 0, db_off + o_ + 5);
    let want = matmul_cpu(Layout::TN, (o_, i_, r_), &dy, &x, Epilogue::None);
    let bound = matmul_cpu(
        Layout::TN,
        (o_, i_, r_),
        &abs(&dy),
        &abs(&x),
        Epilogue::None,
    );
    let gamma = error_bound(r_);
    assert_close_by(
        &format!("{what} ∂W"),
        &g[dw_off..dw_off + o_ * i_],
        &want,
        |i| gamma * bound[i] as f64,
    );
    let want_b = bias_grad_cpu(&dy, r_, o_);
    let bound_b = bias_grad_cpu(&abs(&dy), r_, o_);
    assert_close_by(
        &format!("{what} ∂b"),
        &g[db_off..db_off + o_],
        &want_b,
        |i| gamma * bound_b[i] as f64,
    );
    let untouched = g[..dw_off]
        .iter()
        .chain(&g[dw_off + o_ * i_..db_off])
        .chain(&g[db_off + o_..]);
    assert!(
        untouched.into_iter().all(|v| v.is_nan()),
        "{what}: ∂W's buffer written outside ∂W and ∂b"
    );

    // ∂X = ∂Y·W (k = out), masked.
    let got = read(&dx, 0, dx_off + r_ * i_ + 5);
    let want = matmul_cpu(
        Layout::NN,
        (r_, i_, o_),
        &dy,
        &w,
        Epilogue::ReluMask(mask.as_slice()),
    );
    let bound = matmul_cpu(
        Layout::NN,
        (r_, i_, o_),
        &abs(&dy),
        &abs(&w),
        Epilogue::None,
    );
    let gamma = error_bound(o_);
    assert_close_by(
        &format!("{what} ∂X"),
        &got[dx_off..dx_off + r_ * i_],
        &want,
        |i| gamma * bound[i] as f64,
    );
    let outside = got[..dx_off].iter().chain(&got[dx_off + r_ * i_..]);
    assert!(
        outside.into_iter().all(|v| v.is_nan()),
        "{what}: wrote outside ∂X"
    );
}

/// Every candidate on pairs at batch 1, shapes that divide no tile (the second product wider or narrower than the
/// first in workgroups), and the real fc4 pair (784 outputs of 400 inputs at batch 128), scalar and vec4-aligned.
#[test]
fn pair_with_every_kernel() {
    for kernel in Kernel::CANDIDATES {
        // Aligned operands change the kernel only for the 128 tile (its vec4 variants).
        for &aligned in aligned_for(kernel) {
            for dims in [
                (1, 1, 1),
                (1, 400, 40),
                (13, 29, 37),
                (130, 20, 6),
                (67, 129, 3),
            ] {
                check_pair(kernel, dims, aligned);
            }
        }
    }
    // The real fc4 pair with the kernels a software adapter and a GPU would take untuned.
    for kernel in [Kernel::Reg128, Kernel::Reg64] {
        check_pair(kernel, (128, 400, 784), true);
    }
}

/// The decoder's output layer in training with `kernel`: the logits (a bias add's, same bounds) and, from the same
/// epilogue, the BCE's gradient σ(l) − x against the chain of references (`bce_logits_cpu` on the GPU's own
/// logits: `bce_grad_error` plus the reference's rounding), x as the dataset has it (k/255, exact 0 and 1
/// common); nothing outside either output written.
fn check_bias_bce(kernel: Kernel, (m, n, k): (u32, u32, u32), aligned: bool) {
    let gpu = gpu();
    let (mu, nu, ku) = (m as usize, n as usize, k as usize);
    let mut r = rng(((m as u64) << 40) ^ ((n as u64) << 20) ^ k as u64 ^ 0xbce);
    let a = uniform_vec(&mut r, mu * ku, -1.0, 1.0);
    let b = uniform_vec(&mut r, ku * nu, -1.0, 1.0);
    let bias = uniform_vec(&mut r, nu, -1.0, 1.0);
    let x: Vec<f32> = (0..mu * nu)
        .map(|_| [0, 255, r.below(256)][r.below(3) as usize] as f32 / 255.0)
        .collect();
    let off = |o: usize| if aligned { o.next_multiple_of(4) } else { o };
    let (a_off, b_off, bias_off, x_off, c_off, g_off) =
        (off(5), off(3), off(7), off(2), off(11), off(6));
    let a_buf = gpu.storage_init("a", &padded(a_off, &a)).unwrap();
    let b_buf = gpu.storage_init("b", &padded(b_off, &b)).unwrap();
    let bias_buf = gpu.storage_init("bias", &padded(bias_off, &bias)).unwrap();
    let x_buf = gpu.storage_init("x", &padded(x_off, &x)).unwrap();
    let c_buf = poisoned(c_off + mu * nu + 3);
    let g_buf = poisoned(g_off + mu * nu + 3);
    let op = |buffer, offset| Operand::at(buffer, offset);
    let epi = Epilogue::BiasBce {
        bias: op(&bias_buf, bias_off),
        x: op(&x_buf, x_off),
        grad: op(&g_buf, g_off),
    };
    let d = matmul_with(
        gpu,
        kernel,
        "fc4.forward",
        Layout::NT,
        (m, n, k),
        op(&a_buf, a_off),
        op(&b_buf, b_off),
        op(&c_buf, c_off),
        epi,
    )
    .unwrap();
    run(&[&d], 0);
    let what = format!("{} {m}×{n}×{k} BiasBce aligned={aligned}", kernel.name());
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let want = matmul_cpu(
        Layout::NT,
        (mu, nu, ku),
        &a,
        &b,
        Epilogue::Bias(bias.as_slice()),
    );
    let bound = matmul_cpu(Layout::NT, (mu, nu, ku), &abs(&a), &abs(&b), Epilogue::None);
    let gamma = error_bound(ku);
    let all = read(&c_buf, 0, c_off + mu * nu + 3);
    let logits = &all[c_off..c_off + mu * nu];
    assert_close_by(&format!("{what} logits"), logits, &want, |i| {
        gamma * (bound[i] as f64 + bias[i % nu].abs() as f64)
    });
    let (_, want_g) = bce_logits_cpu(logits, &x);
    let g = read(&g_buf, 0, g_off + mu * nu + 3);
    assert_close_by(
        &format!("{what} ∂logits"),
        &g[g_off..g_off + mu * nu],
        &want_g,
        |i| bce_grad_error(logits[i], x[i]) + U * want_g[i].abs() as f64,
    );
    let outside = all[..c_off]
        .iter()
        .chain(&all[c_off + mu * nu..])
        .chain(&g[..g_off])
        .chain(&g[g_off + mu * nu..]);
    assert!(
        outside.into_iter().all(|v| v.is_nan()),
        "{what}: wrote outside its outputs"
    );
}

/// Every candidate, scalar and vec4-aligned, at batch 1, shapes dividing no tile, and the real 128×784×400 for
/// the kernels a software adapter and a GPU take untuned.
#[test]
fn bias_bce_epilogue_with_every_kernel() {
    for kernel in Kernel::CANDIDATES {
        // Aligned operands change the kernel only for the 128 tile (its vec4 variants).
        for &aligned in aligned_for(kernel) {
            for dims in [(1, 1, 1), (1, 784, 400), (13, 29, 37), (67, 130, 12)] {
                check_bias_bce(kernel, dims, aligned);
            }
        }
    }
    for kernel in [Kernel::Reg128, Kernel::Reg64] {
        check_bias_bce(kernel, (128, 784, 400), true);
    }
}
