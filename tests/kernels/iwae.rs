use vae_wgpu::kernels::iwae::{
    Rows, iw_log_weight_cpu, iw_log_weights, iw_logsumexp, log_mean_exp_cpu,
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

const U: f64 = 1.0 / 16_777_216.0;

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
        let want = iw_log_weight_cpu(
            &logits[i * p_..(i + 1) * p_],
            &x[i * p_..(i + 1) * p_],
            &heads[i * 2 * l_..(i + 1) * 2 * l_],
            &z[i * l_..(i + 1) * l_],
            &eps[i * l_..(i + 1) * l_],
        );
        // A sum of pixels + latent terms, each a few ulp of itself (≤ ~12 for BCE, ≤ 6 for latent terms): the
        // f32 sum is within (n + 8)·u of Σ|term| ≤ 12·(pixels + latent).
        let tol = (p_ + l_ + 8) as f64 * U * 12.0 * (p_ + l_) as f64 + 1e-4;
        let g = got[2 + i] as f64;
        assert!(
            (g - want).abs() <= tol,
            "row {i} of {rows}×{pixels}×{latent}: {g} want {want} (tol {tol:e})"
        );
    }
}

#[test]
fn iw_log_weights_match_cpu() {
    check_log_weights(1, 784, 20);
    check_log_weights(13, 29, 3);
    check_log_weights(64, 784, 2);
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
        // exp, log within 3 ulp; the sum of K terms within K·u relative, which log turns into K·u absolute; the
        // result rounds to the ulp of ~100 (7.6e-6).
        let tol = 2e-5 + samples as f64 * 2.0 * U;
        assert!(
            (got[1 + i] as f64 - want).abs() <= tol,
            "image {i}: {} want {want}",
            got[1 + i]
        );
    }
}

#[test]
fn iw_logsumexp_matches_cpu() {
    check_logsumexp(1, 1);
    check_logsumexp(3, 37);
    check_logsumexp(2, 5000);
}

#[test]
fn iwae_known_values() {
    let gpu = gpu();
    // log mean exp of (0, ln 3) = ln 2.
    let w = gpu.storage_init("w", &[0f32, 3f32.ln()]).unwrap();
    let out = poisoned(1);
    run(&[&iw_logsumexp(gpu, &w, (1, 2), &out, &at(0)).unwrap()], 0);
    assert!((read(&out, 0, 1)[0] - 2f32.ln()).abs() < 1e-6);
    // Logits 0 against x = ½ on 4 pixels: BCE = 4 ln 2; z = ε = log σ² = 0: log w = −4 ln 2.
    let z4 = gpu.storage_init("logits", &[0f32; 4]).unwrap();
    let half = gpu.storage_init("x", &[0.5f32; 4]).unwrap();
    let zero = gpu.storage_init("zero", &[0f32; 2]).unwrap();
    let logw = poisoned(1);
    let rows = Rows {
        logits: &z4,
        x: &half,
        heads: &zero,
        z: &zero,
        eps: &zero,
    };
    run(
        &[&iw_log_weights(gpu, &rows, (1, 4, 1), &logw, &at(0)).unwrap()],
        0,
    );
    assert!((read(&logw, 0, 1)[0] + 4.0 * 2f32.ln()).abs() < 1e-5);
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
