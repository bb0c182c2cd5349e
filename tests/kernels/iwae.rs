//! The IWAE kernels against their CPU references and against values worked out by hand from the Gaussian and
//! Bernoulli densities; tolerances from WGSL's accuracy rules (`log_weight_error`, `log_mean_exp_error`).

use vae_wgpu::kernels::iwae::{
    Rows, iw_log_weight_cpu, iw_log_weights, iw_logsumexp, log_mean_exp_cpu, log_mean_exp_error,
    log_weight_error,
};

use vae_wgpu::kernels::{StepParams, StepTable};

use crate::{gpu, poisoned, read, rng, run, step_table, uniform_vec};

/// A step table whose row 0 puts the outputs at `offset` (as a chunk or group starting there).
fn at(offset: u32) -> StepTable {
    step_table(&[StepParams {
        batch_offset: offset,
        ..Default::default()
    }])
}

fn check_log_weights(rows: u32, pixels: u32, latent: u32) {
    let gpu = gpu();
    let (r_, p_, l_) = (rows as usize, pixels as usize, latent as usize);
    let mut r = rng(rows as u64 * 1000 + pixels as u64 + latent as u64);
    let logits = uniform_vec(&mut r, r_ * p_, -10.0, 10.0);
    let x: Vec<f32> = (0..r_ * p_).map(|_| r.below(256) as f32 / 255.0).collect();
    let heads = uniform_vec(&mut r, r_ * 2 * l_, -3.0, 2.0);
    let z = uniform_vec(&mut r, r_ * l_, -3.0, 3.0);
    let eps = uniform_vec(&mut r, r_ * l_, -3.0, 3.0);
    let b = |v: &[f32]| gpu.storage_init("in", v).unwrap();
    let (lb, xb, hb, zb, eb) = (b(&logits), b(&x), b(&heads), b(&z), b(&eps));
    let logw = poisoned(r_ + 3);
    let rows_in = Rows {
        logits: &lb,
        x: &xb,
        heads: &hb,
        z: &zb,
        eps: &eb,
    };
    run(
        &[&iw_log_weights(gpu, &rows_in, (rows, pixels, latent), &logw, &at(2)).unwrap()],
        0,
    );
    let got = read(&logw, 0, r_ + 3);
    assert!(
        got[..2].iter().chain(&got[2 + r_..]).all(|v| v.is_nan()),
        "wrote outside its rows"
    );
    for i in 0..r_ {
        let row = (
            &logits[i * p_..(i + 1) * p_],
            &x[i * p_..(i + 1) * p_],
            &heads[i * 2 * l_..(i + 1) * 2 * l_],
            &z[i * l_..(i + 1) * l_],
            &eps[i * l_..(i + 1) * l_],
        );
        let want = iw_log_weight_cpu(row.0, row.1, row.2, row.3, row.4);
        let tol = log_weight_error(row.0, row.1, row.2, row.3, row.4);
        let g = got[2 + i] as f64;
        assert!(
            (g - want).abs() <= tol,
            "row {i} of {rows}×{pixels}×{latent}: {g} want {want} (tol {tol:e})"
        );
    }
}

#[test]
fn iw_log_weights_match_cpu() {
    crate::both_reductions(|| {
        check_log_weights(1, 784, 20);
        check_log_weights(13, 29, 3);
        check_log_weights(64, 784, 2);
    });
}

fn check_logsumexp(images: u32, samples: u32) {
    let gpu = gpu();
    let n = (images * samples) as usize;
    let mut r = rng(images as u64 * 7 + samples as u64);
    // Log-weights of the size they have for MNIST: around −100, spread by tens of nats.
    let w: Vec<f32> = (0..n)
        .map(|_| -100.0 + 30.0 * (r.uniform() - 0.5))
        .collect();
    let wb = gpu.storage_init("w", &w).unwrap();
    let out = poisoned(images as usize + 1);
    run(
        &[&iw_logsumexp(gpu, &wb, (images, samples), &out, &at(1)).unwrap()],
        0,
    );
    let got = read(&out, 0, images as usize + 1);
    assert!(got[0].is_nan());
    for i in 0..images as usize {
        let s = samples as usize;
        let want = log_mean_exp_cpu(
            &w[i * s..(i + 1) * s]
                .iter()
                .map(|&v| v as f64)
                .collect::<Vec<_>>(),
        );
        let wi: Vec<f64> = w[i * s..(i + 1) * s].iter().map(|&v| v as f64).collect();
        let tol = log_mean_exp_error(&wi);
        assert!(
            (got[1 + i] as f64 - want).abs() <= tol,
            "image {i}: {} want {want}",
            got[1 + i]
        );
    }
}

#[test]
fn iw_logsumexp_matches_cpu() {
    crate::both_reductions(|| {
        check_logsumexp(1, 1);
        check_logsumexp(3, 37);
        check_logsumexp(2, 5000);
    });
}

#[test]
fn iw_logsumexp_takes_the_max_out_of_widely_spread_weights() {
    crate::both_reductions(|| {
        // Log-weights 120 nats apart, the largest not first: e^120 overflows f32, so only a log-mean-exp that
        // subtracts the true maximum first gets this right. log((e^−50 + e^−170 + e^−60) / 3) ≈ −50 − ln 3 + e^−10.
        let gpu = gpu();
        let w = [-170.0f32, -50.0, -60.0];
        let wb = gpu.storage_init("w", &w).unwrap();
        let out = poisoned(1);
        run(&[&iw_logsumexp(gpu, &wb, (1, 3), &out, &at(0)).unwrap()], 0);
        let want = -50.0 - 3f64.ln() + (1.0 + (-10f64).exp() + (-120f64).exp()).ln();
        let got = read(&out, 0, 1)[0] as f64;
        let tol = log_mean_exp_error(&w.map(|v| v as f64));
        assert!((got - want).abs() <= tol, "{got} want {want} (tol {tol:e})");
    });
}

#[test]
fn iwae_known_values() {
    crate::both_reductions(|| {
        let gpu = gpu();
        // log mean exp of (0, ln 3) = ln 2.
        let w = gpu.storage_init("w", &[0f32, 3f32.ln()]).unwrap();
        let out = poisoned(1);
        run(&[&iw_logsumexp(gpu, &w, (1, 2), &out, &at(0)).unwrap()], 0);
        let tol = log_mean_exp_error(&[0.0, 3f64.ln()]);
        assert!((read(&out, 0, 1)[0] as f64 - 2f64.ln()).abs() <= tol);

        // One sample of a 2-pixel, 2-latent model, worked out from the densities by hand:
        //   pixels: logits (0, 2) against x (½, 1): log p(x|z) = −(ln 2 + ln(1 + e⁻²)) = −0.8200751916;
        //   latent 1: μ = ½, σ = 2 (log σ² = ln 4), ε = 1, so z = 2.5:
        //     log N(2.5; 0, 1) − log N(2.5; ½, 4) = (−3.125 − ½ln 2π) − (−½ − ln 2 − ½ln 2π) = −1.9318528194;
        //   latent 2: μ = −1, σ = ½ (log σ² = ln ¼), ε = −2, so z = −2:
        //     log N(−2; 0, 1) − log N(−2; −1, ¼) = (−2 − ½ln 2π) − (−2 + ln 2 − ½ln 2π) = −0.6931471806;
        //   log w = −0.8200751916 − 1.9318528194 − 0.6931471806 = −3.4450751916.
        let want = -3.445_075_191_6;
        let logits = [0f32, 2.0];
        let x = [0.5f32, 1.0];
        let heads = [0.5f32, -1.0, 4f32.ln(), 0.25f32.ln()];
        let z = [2.5f32, -2.0];
        let eps = [1f32, -2.0];
        let b = |v: &[f32]| gpu.storage_init("in", v).unwrap();
        let (lb, xb, hb, zb, eb) = (b(&logits), b(&x), b(&heads), b(&z), b(&eps));
        let logw = poisoned(1);
        let rows = Rows {
            logits: &lb,
            x: &xb,
            heads: &hb,
            z: &zb,
            eps: &eb,
        };
        run(
            &[&iw_log_weights(gpu, &rows, (1, 2, 2), &logw, &at(0)).unwrap()],
            0,
        );
        let got = read(&logw, 0, 1)[0] as f64;
        // The inputs are f32 roundings of the exact values (ln 4, ln ¼): their error enters the bound through the terms.
        let tol =
            log_weight_error(&logits, &x, &heads, &z, &eps) + 2.0 * vae_wgpu::kernels::accuracy::U;
        assert!(
            (got - want).abs() <= tol,
            "log w {got} want {want} (tol {tol:e})"
        );
        // The CPU reference agrees with the densities too (so it cannot share a sign error with the kernel).
        let cpu = iw_log_weight_cpu(&logits, &x, &heads, &z, &eps);
        assert!((cpu - want).abs() < 1e-7, "CPU reference {cpu} want {want}");
    });
}

#[test]
fn iw_log_weights_rejects_inputs_too_small_for_the_shape() {
    let gpu = gpu();
    let small = gpu.storage::<f32>("small", 10).unwrap();
    let big = gpu.storage::<f32>("big", 1000).unwrap();
    let rows = Rows {
        logits: &small,
        x: &big,
        heads: &big,
        z: &big,
        eps: &big,
    };
    let e = iw_log_weights(gpu, &rows, (2, 8, 3), &big, &at(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("logits needs elements 0..16"), "{e}");
}
