//! The loss kernels against their CPU references. Every tolerance is the bound WGSL's accuracy rules give for the
//! kernel's own arithmetic (`bce_term_error`, `kl_term_error`, ... in src/kernels/loss.rs, built on
//! src/kernels/accuracy.rs) plus the bound of its summation's real shape (`partials_sum_error`).

use vae_wgpu::kernels::StepParams;
use vae_wgpu::kernels::loss::{
    PartialsAt, bce_grad_error, bce_logits, bce_logits_cpu, bce_term_error, kl_backward_cpu,
    kl_grad_fused_error, kl_term_error, loss_groups, partials_sum_error,
};
use vae_wgpu::kernels::matmul::{Epilogue, Layout, error_bound, matmul, matmul_cpu};
use vae_wgpu::kernels::philox::stream;
use vae_wgpu::kernels::reparam::{ReparamOut, reparam};

use vae_wgpu::kernels::accuracy::U;

use crate::{assert_close_by, gpu, poisoned, read, rng, run, step_table, uniform_vec};

/// The loss partials summed on the host in f64 (the reduce kernel is tested on its own).
fn partial_sum(buf: &wgpu::Buffer, offset: usize, groups: u32) -> f64 {
    read(buf, offset, groups as usize)
        .iter()
        .map(|&v| v as f64)
        .sum()
}

/// `groups` partials at `offset` of slot `partial_slot` (the step row's) of slots `slot_stride` apart.
fn partials_at(
    buffer: &wgpu::Buffer,
    offset: u32,
    slot_stride: u32,
    groups: u32,
) -> PartialsAt<'_> {
    PartialsAt {
        buffer,
        offset,
        slot_stride,
        slots: 2,
        groups,
    }
}

fn check_bce(rows: u32, cols: u32) {
    check_bce_in(rows, rows, cols);
}

/// Fails unless `got` is still `stale`, bit for bit: rows past the batch that a kernel must not write.
#[track_caller]
fn assert_untouched(what: &str, got: &[f32], stale: &[f32]) {
    let changed: Vec<usize> = (0..stale.len())
        .filter(|&i| got[i].to_bits() != stale[i].to_bits())
        .collect();
    assert!(
        changed.is_empty(),
        "{what}: {} of {} elements past the batch were overwritten, first at {:?} (now {:e}, was {:e})",
        changed.len(),
        stale.len(),
        &changed[..changed.len().min(8)],
        got[changed[0]],
        stale[changed[0]]
    );
}

/// [`check_bce`] for `rows` rows in buffers of `full_rows` (the last partial batch of an epoch runs in the full
/// batch's buffers, bound whole): the rows past the batch hold the previous batch's logits, targets and gradient,
/// finite and non-zero, and must neither count in the loss nor be overwritten.
fn check_bce_in(rows: u32, full_rows: u32, cols: u32) {
    let gpu = gpu();
    let n = (rows * cols) as usize;
    let stale_n = ((full_rows - rows) * cols) as usize;
    let mut r = rng(rows as u64 * 31 + cols as u64);
    // Logits mostly moderate, some far out where exp overflows or log(1 + e) underflows.
    let mut logit = || match r.below(10) {
        0 => r.range(-120.0, 120.0),
        _ => r.range(-8.0, 8.0),
    };
    let logits: Vec<f32> = (0..n).map(|_| logit()).collect();
    let stale_logits: Vec<f32> = (0..stale_n).map(|_| logit()).collect();
    // Targets as the dataset has them: k/255, with exact 0 and 1 common.
    let mut target = || [0, 255, r.below(256)][r.below(3) as usize] as f32 / 255.0;
    let x: Vec<f32> = (0..n).map(|_| target()).collect();
    let stale_x: Vec<f32> = (0..stale_n).map(|_| target()).collect();
    let stale_dl = uniform_vec(&mut r, stale_n, -1.0, 1.0);
    let l = gpu
        .storage_init("logits", &[&logits[..], &stale_logits].concat())
        .unwrap();
    let xb = gpu.storage_init("x", &[&x[..], &stale_x].concat()).unwrap();
    let dl = gpu
        .storage_init("dlogits", &[&vec![f32::NAN; n][..], &stale_dl].concat())
        .unwrap();
    // Two slots of 300 partials; the step's row says slot 1. As many partials as the full batch needs (what a
    // workspace asks for, so one reduction fits every batch size): those past the batch's own must be zero.
    let partials = poisoned(600);
    let groups = loss_groups(full_rows as u64 * cols as u64);
    let table = step_table(&[
        StepParams::default(),
        StepParams {
            partial_slot: 1,
            ..Default::default()
        },
    ]);
    let d = bce_logits(
        gpu,
        "bce",
        &l,
        &xb,
        &dl,
        partials_at(&partials, 3, 300, groups),
        (rows, cols),
        true,
        &table,
    )
    .unwrap();
    run(&[&d], 1);
    assert_untouched(
        &format!("bce {rows}×{cols} in {full_rows} rows: gradient"),
        &read(&dl, n, stale_n),
        &stale_dl,
    );
    let (want_loss, want_grad) = bce_logits_cpu(&logits, &x);
    assert_close_by(
        &format!("bce {rows}×{cols} gradient"),
        &read(&dl, 0, n),
        &want_grad,
        // The reference is rounded to f32 once more: half an ulp of it on top.
        |i| bce_grad_error(logits[i], x[i]) + U * want_grad[i].abs() as f64,
    );
    // The loss: each term's own error, plus the strided-then-tree summation's (the terms are ≥ 0, so Σ|term| is
    // the loss itself). Losing one workgroup's partial (≥ 1/256 of the loss) is far outside this.
    let got = partial_sum(&partials, 303, groups);
    let terms: f64 = (0..n).map(|i| bce_term_error(logits[i], x[i])).sum();
    let tol = terms + partials_sum_error(n as u64, groups, want_loss);
    assert!(
        (got - want_loss).abs() <= tol,
        "bce {rows}×{cols}: loss {got} want {want_loss} (tol {tol:e})"
    );
    // The partials of workgroups with no element of the batch are zero; the rest of the buffer (slot 0, and
    // slot 1 outside the kernel's partials) stays untouched.
    let own = loss_groups(n as u64);
    let extra = read(&partials, 303 + own as usize, (groups - own) as usize);
    assert!(
        extra.iter().all(|&v| v == 0.0),
        "partials past the batch: {extra:?}"
    );
    let groups = groups as usize;
    assert!(read(&partials, 0, 303).iter().all(|v| v.is_nan()));
    assert!(
        read(&partials, 303 + groups, 600 - 303 - groups)
            .iter()
            .all(|v| v.is_nan())
    );

    // Loss only (evaluation): same loss, gradient buffer left alone.
    let dl2 = poisoned(n + stale_n);
    let d = bce_logits(
        gpu,
        "bce.eval",
        &l,
        &xb,
        &dl2,
        partials_at(&partials, 0, 300, groups as u32),
        (rows, cols),
        false,
        &table,
    )
    .unwrap();
    run(&[&d], 0);
    let got = partial_sum(&partials, 0, groups as u32);
    assert!(
        (got - want_loss).abs() <= tol,
        "bce eval loss {got} want {want_loss}"
    );
    assert!(
        read(&dl2, 0, n + stale_n).iter().all(|v| v.is_nan()),
        "evaluation wrote a gradient"
    );
}

#[test]
fn bce_batch_one_and_one_element() {
    crate::both_reductions(|| {
        check_bce(1, 1);
        check_bce(1, 784);
    });
}

#[test]
fn bce_sizes_that_do_not_fill_a_workgroup() {
    crate::both_reductions(|| {
        check_bce(3, 257);
        check_bce(7, 29);
    });
}

#[test]
fn bce_real_batch() {
    crate::both_reductions(|| {
        // 100,352 elements: more than 256 workgroups' worth, so every invocation strides.
        check_bce(128, 784);
    });
}

#[test]
fn bce_known_values() {
    crate::both_reductions(|| {
        let gpu = gpu();
        let logits = [0.0f32, 100.0, -100.0, 2.0];
        let x = [0.5f32, 1.0, 1.0, 0.0];
        let l = gpu.storage_init("logits", &logits).unwrap();
        let xb = gpu.storage_init("x", &x).unwrap();
        let dl = poisoned(4);
        let partials = poisoned(1);
        run(
            &[&bce_logits(
                gpu,
                "bce",
                &l,
                &xb,
                &dl,
                partials_at(&partials, 0, 0, 1),
                (1, 4),
                true,
                &step_table(&[StepParams::default()]),
            )
            .unwrap()],
            0,
        );
        // ln 2 + e^−100 + 100 + (2 + ln(1 + e^−2)), worked out by hand from the Bernoulli log-likelihood.
        let want = 2f64.ln() + 100.0 + 2.0 + (-2f64).exp().ln_1p();
        let got = read(&partials, 0, 1)[0] as f64;
        let terms: f64 = (0..4).map(|i| bce_term_error(logits[i], x[i])).sum();
        let tol = terms + partials_sum_error(4, 1, want);
        assert!(
            (got - want).abs() <= tol,
            "loss {got} want {want} (tol {tol:e})"
        );
        // σ(0) − ½ = 0, σ(100) − 1 = 0 (to f32), σ(−100) − 1 = −1, σ(2) = 1 / (1 + e⁻²) ≈ 0.880797.
        let want = [0.0, 0.0, -1.0, 1.0 / (1.0 + (-2f64).exp())];
        let got = read(&dl, 0, 4);
        for i in 0..4 {
            let tol = bce_grad_error(logits[i], x[i]) + 1e-30;
            assert!(
                ((got[i] as f64) - want[i]).abs() <= tol,
                "∂[{i}] {} want {} (tol {tol:e})",
                got[i],
                want[i]
            );
        }
    });
}

fn check_kl(rows: u32, latent: u32, kl_weight: f32) {
    check_kl_in(rows, rows, latent, kl_weight);
}

/// The KL term as the training step computes it, against the chain of unfused references: the
/// reparameterization with GRAD (the KL's partials, and its own part of ∂heads) in a workspace of `full_rows`
/// rows, then fc3's input gradient ∂z = ∂h3·W (NN, 29 hidden units) with the KL epilogue finishing ∂heads; the
/// reference is `kl_backward_cpu` on the same heads and ε, with ∂z from `matmul_cpu`. The stale rows past the
/// batch (heads and the heads' gradient of the previous batch) must neither count in the KL nor be overwritten.
fn check_kl_in(rows: u32, full_rows: u32, latent: u32, kl_weight: f32) {
    let gpu = gpu();
    let (r_, l_, hidden) = (rows as usize, latent as usize, 29usize);
    let n = r_ * l_;
    let stale_n = (full_rows - rows) as usize * l_;
    let mut r = rng(rows as u64 * 7 + latent as u64);
    let mut draw_heads = |rows: usize| {
        let mut heads = uniform_vec(&mut r, 2 * rows * l_, -2.0, 2.0);
        for row in 0..rows {
            for j in 0..l_ {
                heads[row * 2 * l_ + l_ + j] = r.range(-6.0, 3.0);
            }
        }
        heads
    };
    let heads = draw_heads(r_);
    let stale_heads = draw_heads(stale_n / l_);
    let dh3 = uniform_vec(&mut r, r_ * hidden, -1.0, 1.0);
    let w3 = uniform_vec(&mut r, hidden * l_, -1.0, 1.0);
    let stale_dh = uniform_vec(&mut r, 2 * stale_n, -1.0, 1.0);
    let hb = gpu
        .storage_init("heads", &[&heads[..], &stale_heads].concat())
        .unwrap();
    let dh = gpu
        .storage_init("dheads", &[&vec![f32::NAN; 2 * n][..], &stale_dh].concat())
        .unwrap();
    let (z, eps, coef) = (
        poisoned(n + stale_n),
        poisoned(n + stale_n),
        poisoned(n + stale_n),
    );
    let a = gpu.storage_init("dh3", &dh3).unwrap();
    let b = gpu.storage_init("w3", &w3).unwrap();
    // Two slots of 260 partials; the step's row says slot 1. As many partials as the full batch needs: those past
    // the batch's own must be zero.
    let partials = poisoned(520);
    let groups = loss_groups(full_rows as u64 * latent as u64);
    let table = step_table(&[
        StepParams::default(),
        StepParams {
            kl_weight,
            partial_slot: 1,
            rng_step: 3,
            ..Default::default()
        },
    ]);
    let out = ReparamOut {
        z: &z,
        eps: &eps,
        dheads: &dh,
        coef: &coef,
    };
    let at = partials_at(&partials, 2, 260, groups);
    let noise = (5, stream::TRAIN_NOISE);
    let draw = reparam(
        gpu,
        "reparam",
        &hb,
        out,
        at,
        true,
        (rows, latent),
        noise,
        &table,
    )
    .unwrap();
    let dims = (rows, latent, hidden as u32);
    let epi = Epilogue::KlGrad((&coef).into());
    let back = matmul(
        gpu,
        "fc3.input_grad",
        Layout::NN,
        dims,
        (&a).into(),
        (&b).into(),
        (&dh).into(),
        epi,
    );
    run(&[&draw, &back.unwrap()], 1);
    assert_untouched(
        &format!("kl {rows}×{latent} in {full_rows} rows: heads' gradient"),
        &read(&dh, 2 * n, 2 * stale_n),
        &stale_dh,
    );
    let got_eps = read(&eps, 0, n);
    let dz = matmul_cpu(Layout::NN, (r_, l_, hidden), &dh3, &w3, Epilogue::None);
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let dz_bound = matmul_cpu(
        Layout::NN,
        (r_, l_, hidden),
        &abs(&dh3),
        &abs(&w3),
        Epilogue::None,
    );
    let (want_kl, want_dh) = kl_backward_cpu(&heads, &got_eps, &dz, (r_, l_), kl_weight);
    // (μ, log σ²) of latent element i (row-major over rows × latent).
    let mu_lv = |i: usize| {
        let (row, j) = (i / l_, i % l_);
        (heads[row * 2 * l_ + j], heads[row * 2 * l_ + l_ + j])
    };
    let got_dh = read(&dh, 0, 2 * n);
    assert_close_by(
        &format!("kl {rows}×{latent} w={kl_weight} gradient"),
        &got_dh,
        &want_dh,
        |h| {
            // Element h of heads is row h / 2l, column h % 2l: μ's gradient below l, log σ²'s above.
            let (row, col) = (h / (2 * l_), h % (2 * l_));
            let i = row * l_ + col % l_;
            let (mu, lv) = mu_lv(i);
            // ∂z's own error (the matmul's bound; the reference rounds ∂z to f32 too, half an ulp).
            let dz_err = error_bound(hidden) * dz_bound[i] as f64 + U * dz[i].abs() as f64;
            let (d_mu, d_lv) = kl_grad_fused_error(mu, lv, got_eps[i], dz[i], dz_err, kl_weight);
            // The reference is rounded to f32 once more: half an ulp of it on top.
            U * want_dh[h].abs() as f64 + if col < l_ { d_mu } else { d_lv }
        },
    );
    // Each term's own error, plus the summation's over Σ|term|.
    let (mut terms, mut sum_abs) = (0f64, 0f64);
    for i in 0..n {
        let (mu, lv) = mu_lv(i);
        terms += kl_term_error(mu, lv);
        let (mu, lv) = (mu as f64, lv as f64);
        sum_abs += 0.5 * (mu * mu + lv.exp() - 1.0 - lv).abs();
    }
    let got = partial_sum(&partials, 262, groups);
    let tol = terms + partials_sum_error(n as u64, groups, sum_abs);
    assert!(
        (got - want_kl).abs() <= tol,
        "kl {rows}×{latent}: {got} want {want_kl} (tol {tol:e})"
    );
    let own = loss_groups(n as u64);
    let extra = read(&partials, 262 + own as usize, (groups - own) as usize);
    assert!(
        extra.iter().all(|&v| v == 0.0),
        "partials past the batch: {extra:?}"
    );
    let groups = groups as usize;
    assert!(read(&partials, 0, 262).iter().all(|v| v.is_nan()));
    assert!(
        read(&partials, 262 + groups, 520 - 262 - groups)
            .iter()
            .all(|v| v.is_nan())
    );
}

#[test]
fn kl_batch_one() {
    crate::both_reductions(|| {
        check_kl(1, 1, 1.0);
        check_kl(1, 20, 1.0);
    });
}

#[test]
fn kl_awkward_sizes_and_weights() {
    crate::both_reductions(|| {
        check_kl(13, 3, 1.0);
        check_kl(37, 7, 0.25);
        check_kl(5, 2, 0.0);
    });
}

#[test]
fn kl_real_batch() {
    crate::both_reductions(|| {
        check_kl(128, 20, 1.0);
        check_kl(128, 2, 1.0);
        // More than 256 workgroups' worth of elements: every invocation strides.
        check_kl(4096, 20, 1.0);
    });
}

#[test]
fn loss_last_partial_batch_in_full_batch_buffers() {
    crate::both_reductions(|| {
        // An epoch's last batch is short (MNIST's training set: 60,000 = 468·128 + 96 rows) and runs in the full
        // batch's buffers, bound whole, over the previous batch's rows. A kernel that reads or writes one element
        // past rows × cols (a bound `i <= n`) counts a stale term and overwrites a stale gradient.
        check_bce_in(96, 128, 784);
        check_bce_in(1, 3, 29);
        check_kl_in(96, 128, 20, 1.0);
        check_kl_in(1, 3, 7, 0.5);
    });
}

#[test]
fn kl_known_values() {
    crate::both_reductions(|| {
        let gpu = gpu();
        // Row 0: μ = 0, log σ² = 0 (the prior itself): KL 0, the KL's gradient 0, coef = ½·ε.
        // Row 1: μ = 2, log σ² = ln 4 (σ = 2): KL ½(4 + 4 − 1 − ln 4), the KL's gradient (2, ½·3), coef = ε.
        // Then ∂z = (3, 1) (A = ∂z itself, B = 1): ∂μ = (3, 1 + 2), ∂log σ² = (3·½·ε₀, 1·ε₁ + 1.5).
        let heads = [0.0f32, 0.0, 2.0, 4f32.ln()];
        let hb = gpu.storage_init("heads", &heads).unwrap();
        let (z, eps, coef, dh) = (poisoned(2), poisoned(2), poisoned(2), poisoned(4));
        let partials = poisoned(1);
        let table = step_table(&[StepParams {
            kl_weight: 1.0,
            ..Default::default()
        }]);
        let out = ReparamOut {
            z: &z,
            eps: &eps,
            dheads: &dh,
            coef: &coef,
        };
        let at = partials_at(&partials, 0, 0, 1);
        let draw = reparam(gpu, "kl", &hb, out, at, true, (2, 1), (0, 0), &table).unwrap();
        run(&[&draw], 0);
        let want_kl = 0.5 * (7.0 - 4f64.ln());
        let got = read(&partials, 0, 1)[0] as f64;
        let tol = kl_term_error(0.0, 0.0)
            + kl_term_error(2.0, heads[3])
            + partials_sum_error(2, 1, want_kl);
        assert!(
            (got - want_kl).abs() <= tol,
            "kl {got} want {want_kl} (tol {tol:e})"
        );
        let e: Vec<f64> = read(&eps, 0, 2).iter().map(|&v| v as f64).collect();
        let a = gpu.storage_init("dz", &[3.0f32, 1.0]).unwrap();
        let one = gpu.storage_init("one", &[1.0f32]).unwrap();
        let epi = Epilogue::KlGrad((&coef).into());
        let back = matmul(
            gpu,
            "fc3.input_grad",
            Layout::NN,
            (2, 1, 1),
            (&a).into(),
            (&one).into(),
            (&dh).into(),
            epi,
        );
        run(&[&back.unwrap()], 0);
        let want = [3.0, 1.5 * e[0], 3.0, e[1] + 1.5];
        let err: Vec<(f64, f64)> = (0..2)
            .map(|i| {
                kl_grad_fused_error(
                    heads[2 * i],
                    heads[2 * i + 1],
                    e[i] as f32,
                    [3.0, 1.0][i],
                    0.0,
                    1.0,
                )
            })
            .collect();
        let tols = [err[0].0, err[0].1, err[1].0, err[1].1];
        assert_close_by(
            "kl known gradient",
            &read(&dh, 0, 4),
            &want.map(|v| v as f32),
            |i| tols[i] + U * want[i].abs(),
        );
    });
}

#[test]
fn bce_is_accurate_where_the_loss_is_tiny() {
    crate::both_reductions(|| {
        // A confident, right logit: x = 1 and l > 0, or x = 0 and l < 0. The loss log(1 + e^−|l|) is tiny, and each
        // pixel's term must still be accurate relative to itself (a driver that folds (1 + e) − 1 to e defeated the
        // textbook fix; see logistic.wgsl).
        let gpu = gpu();
        let ls = [0.5f32, 4.0, 4.2, 4.5, 8.0, 12.0, 15.0, 16.5, 17.0, 30.0];
        let dl = poisoned(1);
        for (i, &lv) in ls.iter().enumerate() {
            for (l, x) in [(lv, 1.0f32), (-lv, 0.0)] {
                let partials = poisoned(1);
                let one = gpu.storage_init("logit", &[l]).unwrap();
                let xb = gpu.storage_init("x", &[x]).unwrap();
                let d = bce_logits(
                    gpu,
                    "bce.tiny",
                    &one,
                    &xb,
                    &dl,
                    partials_at(&partials, 0, 0, 1),
                    (1, 1),
                    true,
                    &step_table(&[StepParams::default()]),
                )
                .unwrap();
                run(&[&d], 0);
                let want = (-(lv as f64)).exp().ln_1p();
                let got = read(&partials, 0, 1)[0] as f64;
                // WGSL's bound for this term. With x exactly 0 or 1 the linear part max(l, 0) − l·x is exact (0),
                // so only log1p's own error is left: exp's 3 + 2|l| ULP, and the series (l ≥ 4.16, a few u relative)
                // or log (2⁻²¹ absolute). That is 2.1e-6 relative at l = 4.2, where a wrong last series coefficient
                // (e·(¼ − e/5) ⇒ e / (¼ − e/5)) is off by 1.3e-5; log(1 + e) alone loses e's low bits (1e-5 at l = 6,
                // all of them at l = 17).
                let tol = bce_term_error(l, x);
                assert!(
                    (got - want).abs() <= tol,
                    "l = {l}, x = {x}: {got:e} want {want:e}, tol {tol:e} ({i}); relative error {:e}, allowed {:e}",
                    (got - want).abs() / want,
                    tol / want
                );
            }
        }
    });
}
