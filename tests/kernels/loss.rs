//! The loss kernels against their CPU references. Every tolerance is the bound WGSL's accuracy rules give for the
//! kernel's own arithmetic (`bce_term_error`, `kl_term_error`, ... in src/kernels/loss.rs, built on
//! src/kernels/accuracy.rs) plus the bound of its summation's real shape (`partials_sum_error`).

use vae_wgpu::kernels::StepParams;
use vae_wgpu::kernels::loss::{
    PartialsAt, bce_grad_error, bce_logits, bce_logits_cpu, bce_term_error, kl_backward,
    kl_backward_cpu, kl_grad_error, kl_term_error, loss_groups, partials_sum_error,
};

use vae_wgpu::kernels::accuracy::U;

use crate::{assert_close_by, gpu, poisoned, read, rng, run, step_table, uniform_vec};

/// The loss partials summed on the host in f64 (the reduce kernel is tested on its own).
fn partial_sum(buf: &wgpu::Buffer, offset: usize, n: u64) -> f64 {
    let groups = loss_groups(n) as usize;
    read(buf, offset, groups).iter().map(|&v| v as f64).sum()
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
    let partials = poisoned(300);
    let d = bce_logits(
        gpu,
        "bce",
        &l,
        &xb,
        &dl,
        PartialsAt {
            buffer: &partials,
            offset: 3,
        },
        (rows, cols),
        true,
    )
    .unwrap();
    run(&[&d], 0);
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
    let got = partial_sum(&partials, 3, n as u64);
    let terms: f64 = (0..n).map(|i| bce_term_error(logits[i], x[i])).sum();
    let tol = terms + partials_sum_error(n as u64, want_loss);
    assert!(
        (got - want_loss).abs() <= tol,
        "bce {rows}×{cols}: loss {got} want {want_loss} (tol {tol:e})"
    );
    // Partials outside the kernel's slots stay untouched.
    let groups = loss_groups(n as u64) as usize;
    assert!(read(&partials, 0, 3).iter().all(|v| v.is_nan()));
    assert!(
        read(&partials, 3 + groups, 300 - 3 - groups)
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
        PartialsAt {
            buffer: &partials,
            offset: 0,
        },
        (rows, cols),
        false,
    )
    .unwrap();
    run(&[&d], 0);
    let got = partial_sum(&partials, 0, n as u64);
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
                PartialsAt {
                    buffer: &partials,
                    offset: 0,
                },
                (1, 4),
                true,
            )
            .unwrap()],
            0,
        );
        // ln 2 + e^−100 + 100 + (2 + ln(1 + e^−2)), worked out by hand from the Bernoulli log-likelihood.
        let want = 2f64.ln() + 100.0 + 2.0 + (-2f64).exp().ln_1p();
        let got = read(&partials, 0, 1)[0] as f64;
        let terms: f64 = (0..4).map(|i| bce_term_error(logits[i], x[i])).sum();
        let tol = terms + partials_sum_error(4, want);
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

/// [`check_kl`] for `rows` rows in buffers of `full_rows`, as [`check_bce_in`]: the stale rows past the batch
/// (heads, ε, ∂z and the heads' gradient of the previous batch) must neither count in the KL nor be overwritten.
fn check_kl_in(rows: u32, full_rows: u32, latent: u32, kl_weight: f32) {
    let gpu = gpu();
    let (r_, l_) = (rows as usize, latent as usize);
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
    let eps: Vec<f32> = (0..n).map(|_| r.normal()).collect();
    let dz = uniform_vec(&mut r, n, -3.0, 3.0);
    let stale_eps: Vec<f32> = (0..stale_n).map(|_| r.normal()).collect();
    let stale_dz = uniform_vec(&mut r, stale_n, -3.0, 3.0);
    let stale_dh = uniform_vec(&mut r, 2 * stale_n, -1.0, 1.0);
    let hb = gpu
        .storage_init("heads", &[&heads[..], &stale_heads].concat())
        .unwrap();
    let eb = gpu
        .storage_init("eps", &[&eps[..], &stale_eps].concat())
        .unwrap();
    let db = gpu
        .storage_init("dz", &[&dz[..], &stale_dz].concat())
        .unwrap();
    let dh = gpu
        .storage_init("dheads", &[&vec![f32::NAN; 2 * n][..], &stale_dh].concat())
        .unwrap();
    let partials = poisoned(260);
    let table = step_table(&[
        StepParams::default(),
        StepParams {
            kl_weight,
            ..Default::default()
        },
    ]);
    let d = kl_backward(
        gpu,
        "kl",
        &hb,
        &eb,
        &db,
        &dh,
        PartialsAt {
            buffer: &partials,
            offset: 2,
        },
        (rows, latent),
        true,
        &table,
    )
    .unwrap();
    run(&[&d], 1);
    assert_untouched(
        &format!("kl {rows}×{latent} in {full_rows} rows: heads' gradient"),
        &read(&dh, 2 * n, 2 * stale_n),
        &stale_dh,
    );
    let (want_kl, want_dh) = kl_backward_cpu(&heads, &eps, &dz, (r_, l_), kl_weight);
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
            let (d_mu, d_lv) = kl_grad_error(mu, lv, eps[i], dz[i], kl_weight);
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
    let got = partial_sum(&partials, 2, n as u64);
    let tol = terms + partials_sum_error(n as u64, sum_abs);
    assert!(
        (got - want_kl).abs() <= tol,
        "kl {rows}×{latent}: {got} want {want_kl} (tol {tol:e})"
    );
    let groups = loss_groups(n as u64) as usize;
    assert!(read(&partials, 0, 2).iter().all(|v| v.is_nan()));
    assert!(
        read(&partials, 2 + groups, 260 - 2 - groups)
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
        // Row 0: μ = 0, log σ² = 0 (the prior itself): KL 0, ∂μ = ∂z, ∂log σ² = ½·∂z·ε.
        // Row 1: μ = 2, log σ² = ln 4 (σ = 2): KL ½(4 + 4 − 1 − ln 4), ∂μ = ∂z + 2, ∂log σ² = ½·∂z·ε·2 + ½·3.
        let heads = [0.0f32, 0.0, 2.0, 4f32.ln()];
        let eps = [0.5f32, -1.0];
        let dz = [3.0f32, 1.0];
        let hb = gpu.storage_init("heads", &heads).unwrap();
        let eb = gpu.storage_init("eps", &eps).unwrap();
        let db = gpu.storage_init("dz", &dz).unwrap();
        let dh = poisoned(4);
        let partials = poisoned(1);
        let table = step_table(&[StepParams {
            kl_weight: 1.0,
            ..Default::default()
        }]);
        run(
            &[&kl_backward(
                gpu,
                "kl",
                &hb,
                &eb,
                &db,
                &dh,
                PartialsAt {
                    buffer: &partials,
                    offset: 0,
                },
                (2, 1),
                true,
                &table,
            )
            .unwrap()],
            0,
        );
        let want_kl = 0.5 * (7.0 - 4f64.ln());
        let got = read(&partials, 0, 1)[0] as f64;
        let tol =
            kl_term_error(0.0, 0.0) + kl_term_error(2.0, heads[3]) + partials_sum_error(2, want_kl);
        assert!(
            (got - want_kl).abs() <= tol,
            "kl {got} want {want_kl} (tol {tol:e})"
        );
        let want = [3.0, 0.75, 3.0, -1.0 + 1.5];
        let (e0, e1) = (
            kl_grad_error(0.0, 0.0, eps[0], dz[0], 1.0),
            kl_grad_error(2.0, heads[3], eps[1], dz[1], 1.0),
        );
        let tols = [e0.0, e0.1, e1.0, e1.1];
        assert_close_by("kl known gradient", &read(&dh, 0, 4), &want, |i| tols[i]);
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
                    PartialsAt {
                        buffer: &partials,
                        offset: 0,
                    },
                    (1, 1),
                    true,
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
