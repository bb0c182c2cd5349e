use vae_wgpu::gpu::Dispatch;
use vae_wgpu::kernels::StepParams;
use vae_wgpu::kernels::StepTable;
use vae_wgpu::kernels::WG;
use vae_wgpu::kernels::accuracy::sum_error;
use vae_wgpu::kernels::accuracy::{U, exp_rel};
use vae_wgpu::kernels::contract::MAX_PARTIALS;
use vae_wgpu::kernels::loss::kl_term_error;
use vae_wgpu::kernels::loss::{PartialsAt, loss_groups};
use vae_wgpu::kernels::matmul::{Epilogue, Layout, error_bound, matmul_cpu};
use vae_wgpu::kernels::philox::{self, stream};
use vae_wgpu::kernels::reparam::{
    Decode, ReparamOut, normal_error, philox_words, reparam, reparam_cpu, reparam_decode,
};

use crate::{assert_close_by, gpu, read, rng, run, step_table, uniform_vec};

/// GPU words and uniforms must equal the CPU's bit for bit.
fn words_on_gpu(counters: &[[u32; 4]], key: [u32; 2]) -> Vec<u32> {
    let gpu = gpu();
    let n = counters.len() as u32;
    let c = gpu.storage_init("counters", counters).unwrap();
    // One counter's worth of spare room, which must keep its sentinel.
    let w = gpu.storage::<u32>("words", 8 * n as usize + 8).unwrap();
    gpu.fill(&w, 0xdead_beefu32);
    run(&[&philox_words(gpu, &c, &w, n, key).unwrap()], 0);
    let all: Vec<u32> = gpu.read(&w, 0, 8 * n as usize + 8).unwrap();
    assert_eq!(
        all[8 * n as usize..],
        [0xdead_beefu32; 8],
        "wrote past the last counter"
    );
    all[..8 * n as usize].to_vec()
}

#[test]
fn philox_known_answers_on_gpu() {
    // Random123's test vectors (DESIGN.md).
    let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        (
            [0; 4],
            [0; 2],
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
        ),
        (
            [u32::MAX; 4],
            [u32::MAX; 2],
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
        ),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];
    for (counter, key, want) in cases {
        let got = words_on_gpu(&[counter], key);
        assert_eq!(&got[..4], &want, "counter {counter:08x?} key {key:08x?}");
    }
}

#[test]
fn philox_words_and_uniforms_match_cpu_bit_for_bit() {
    let mut r = rng(99);
    // Random counters, plus the ones whose words hit the uniform's ends.
    let mut counters: Vec<[u32; 4]> = (0..1000)
        .map(|_| [r.next_u32(), r.next_u32(), r.next_u32(), r.next_u32()])
        .collect();
    counters.extend([[0; 4], [u32::MAX; 4], [1, 0, 0, 0], [0, 0, 0, 1]]);
    let key = [r.next_u32(), r.next_u32()];
    let got = words_on_gpu(&counters, key);
    for (i, c) in counters.iter().enumerate() {
        let w = philox::philox4x32_10(*c, key);
        let u = w.map(|w| philox::uniform(w).to_bits());
        assert_eq!(&got[8 * i..8 * i + 4], &w, "words of counter {i}");
        assert_eq!(&got[8 * i + 4..8 * i + 8], &u, "uniforms of counter {i}");
    }
    // The extreme words themselves.
    for w in [0u32, 511, 512, u32::MAX] {
        assert!(philox::uniform(w) > 0.0 && philox::uniform(w) < 1.0);
    }
}

/// WGSL's bound on the GPU's ε for element `i` of a draw (`normal_error` of its two Philox words: log, sqrt and
/// cos are not correctly rounded; the words and uniforms are bit-identical), plus the reference's own rounding to
/// f32. Errors of a wrong counter, stream, key or formula are of order 1.
fn eps_tol(key: [u32; 2], counter: [u32; 4], want: f32) -> f64 {
    let w = philox::philox4x32_10(counter, key);
    normal_error(w[0], w[1]) + U * want.abs() as f64
}

/// WGSL's bound on z = μ + ε·σ given ε's: σ = exp(½·log σ²) (3 + |log σ²| ULP), the product and the sum round.
fn z_tol(eps_err: f64, eps: f64, log_var: f64, z: f64) -> f64 {
    let sigma = (0.5 * log_var).exp();
    sigma * eps_err + eps.abs() * sigma * (exp_rel(0.5 * log_var) + U) + 2.0 * U * z.abs()
}

/// The reparameterization of `heads` into `z` and `eps` without gradients (the KL's partials and gradient are
/// tested with the loss kernels, tests/kernels/loss.rs).
fn draw(
    heads: &wgpu::Buffer,
    z: &wgpu::Buffer,
    eps: &wgpu::Buffer,
    (rows, latent): (u32, u32),
    noise: (u64, u32),
    table: &StepTable,
) -> Result<Dispatch, vae_wgpu::Error> {
    let gpu = gpu();
    let partials = crate::poisoned(MAX_PARTIALS as usize);
    let n = rows as u64 * latent as u64;
    let kl = PartialsAt {
        buffer: &partials,
        offset: 0,
        slot_stride: 0,
        slots: 1,
        groups: loss_groups(n),
    };
    // Bound but not written without gradients.
    let (dheads, coef) = (crate::poisoned(1), crate::poisoned(1));
    let out = ReparamOut {
        z,
        eps,
        dheads: &dheads,
        coef: &coef,
    };
    reparam(
        gpu,
        "reparam",
        heads,
        out,
        kl,
        false,
        (rows, latent),
        noise,
        table,
    )
}

fn check(rows: u32, latent: u32, seed: u64, rng_step: u32, stream: u32) {
    let gpu = gpu();
    let (r_, l_) = (rows as usize, latent as usize);
    let mut r = rng(seed ^ rows as u64);
    let mut heads = uniform_vec(&mut r, r_ * 2 * l_, -2.0, 2.0);
    // log σ² in [−6, 3]: σ from 0.05 to 4.5.
    for row in 0..r_ {
        for j in 0..l_ {
            heads[row * 2 * l_ + l_ + j] = r.range(-6.0, 3.0);
        }
    }
    let h = gpu.storage_init("heads", &heads).unwrap();
    // Spare room after each output must stay NaN: an off-by-one bound writes into it.
    let z = crate::poisoned(r_ * l_ + 5);
    let eps = crate::poisoned(r_ * l_ + 5);
    let table = step_table(&[
        StepParams::default(),
        StepParams {
            rng_step,
            ..Default::default()
        },
    ]);
    let d = draw(&h, &z, &eps, (rows, latent), (seed, stream), &table).unwrap();
    run(&[&d], 1);
    let (want_z, want_eps) = reparam_cpu(&heads, (r_, l_), seed, rng_step, stream);
    assert!(
        read(&z, r_ * l_, 5)
            .iter()
            .chain(&read(&eps, r_ * l_, 5))
            .all(|v| v.is_nan()),
        "wrote past the output"
    );
    let got_eps = read(&eps, 0, r_ * l_);
    let got_z = read(&z, 0, r_ * l_);
    let what = format!("reparam {rows}×{latent} seed {seed} step {rng_step}");
    let key = philox::key(seed);
    let tol = |i: usize| eps_tol(key, [i as u32, rng_step, stream, 0], want_eps[i]);
    assert_close_by(&format!("{what} ε"), &got_eps, &want_eps, tol);
    assert_close_by(&format!("{what} z"), &got_z, &want_z, |i| {
        let log_var = heads[(i / l_) * 2 * l_ + l_ + i % l_] as f64;
        z_tol(tol(i), want_eps[i] as f64, log_var, want_z[i] as f64)
    });
}

#[test]
fn reparam_batch_one() {
    check(1, 2, 1, 1, stream::TRAIN_NOISE);
}

#[test]
fn reparam_sizes_that_do_not_fill_a_workgroup() {
    check(13, 3, 7, 12345, stream::TRAIN_NOISE);
    check(37, 20, u64::MAX - 3, u32::MAX, stream::SAMPLE); // another stream, an extreme key and step
}

#[test]
fn reparam_real_batch() {
    check(128, 20, 1, 469, stream::TRAIN_NOISE);
    check(128, 2, 2, 1, stream::EVAL_NOISE);
}

#[test]
fn reparam_known_values() {
    let gpu = gpu();
    // μ = 1, log σ² = 2·ln 3 (σ = 3): z = 1 + 3ε, with ε the normal of counter (0, step, TRAIN_NOISE, 0) under
    // key (0, 0). Worked out apart from this crate (a separate Philox4x32-10, checked against Random123's vectors,
    // then Box–Muller in f64): step 5 gives the words 0x68bc134e, 0x52e2d174, so u0 = 0.40911978483200073,
    // u1 = 0.32377344369888306 and ε = √(−2 ln u0)·cos(π(2u1 − 1)) = 0.597774139868474; step 6 gives
    // ε = 1.0785929524839104.
    let heads = [1.0f32, (2.0 * 3f64.ln()) as f32];
    let h = gpu.storage_init("heads", &heads).unwrap();
    for (step, e) in [
        (5u32, 0.597_774_139_868_474f64),
        (6, 1.078_592_952_483_910_4),
    ] {
        let (z, eps) = (crate::poisoned(1), crate::poisoned(1));
        let table = step_table(&[StepParams {
            rng_step: step,
            ..Default::default()
        }]);
        let d = draw(&h, &z, &eps, (1, 1), (0, stream::TRAIN_NOISE), &table);
        run(&[&d.unwrap()], 0);
        let (gz, ge) = (read(&z, 0, 1)[0] as f64, read(&eps, 0, 1)[0] as f64);
        let w = philox::philox4x32_10([0, step, stream::TRAIN_NOISE, 0], [0, 0]);
        let e_tol = normal_error(w[0], w[1]);
        assert!(
            (ge - e).abs() <= e_tol,
            "step {step}: ε {ge} want {e} (tol {e_tol:e})"
        );
        let z_want = 1.0 + 3.0 * e;
        let tol = z_tol(e_tol, e, heads[1] as f64, z_want);
        assert!(
            (gz - z_want).abs() <= tol,
            "step {step}: z {gz} want {z_want}"
        );
    }
    // Another stream, same counter: the GPU draws other noise (ε far from step 5's TRAIN_NOISE value).
    let eps = crate::poisoned(1);
    let table = step_table(&[StepParams {
        rng_step: 5,
        ..Default::default()
    }]);
    let z = crate::poisoned(1);
    let d = draw(&h, &z, &eps, (1, 1), (0, stream::EVAL_NOISE), &table);
    run(&[&d.unwrap()], 0);
    let other = read(&eps, 0, 1)[0] as f64;
    assert!(
        (other - 0.597_774_139_868_474).abs() > 0.01,
        "EVAL_NOISE drew TRAIN_NOISE's ε {other}"
    );
}

/// `reparam_decode` against the chain of references it replaces: z and ε as [`check`] checks them (from
/// `reparam_cpu`), h3 as `matmul_cpu` computes fc3's forward pass (NT, bias and ReLU) from the GPU's own z, the
/// KL's partials as `kl_loss_cpu`'s total. `groups` workgroups take the rows in turn (1, some, one per row).
/// W3 and b3 sit at odd offsets in a larger buffer, and every output has poisoned spare room after it.
fn check_decode(rows: u32, latent: u32, hidden: u32, groups: u32, grad: bool) {
    let gpu = gpu();
    let (r_, l_, h_) = (rows as usize, latent as usize, hidden as usize);
    let mut r = rng(0x5eed ^ (rows as u64) << 8 ^ hidden as u64);
    let mut heads = uniform_vec(&mut r, r_ * 2 * l_, -2.0, 2.0);
    for row in 0..r_ {
        for j in 0..l_ {
            heads[row * 2 * l_ + l_ + j] = r.range(-6.0, 3.0);
        }
    }
    // params: 7 junk values, W3 (hidden, latent), 3 junk, b3 (hidden), 5 junk.
    let (w_off, b_off) = (7, 7 + h_ * l_ + 3);
    let mut params = uniform_vec(&mut r, b_off + h_ + 5, -1.0, 1.0);
    let (w3, b3) = (
        params[w_off..w_off + h_ * l_].to_vec(),
        params[b_off..b_off + h_].to_vec(),
    );
    params[w_off - 1] = f32::NAN;
    params[b_off + h_] = f32::NAN;
    let hb = gpu.storage_init("heads", &heads).unwrap();
    let pb = gpu.storage_init("params", &params).unwrap();
    let spare = 5;
    let (z, eps, h3) = (
        crate::poisoned(r_ * l_ + spare),
        crate::poisoned(r_ * l_ + spare),
        crate::poisoned(r_ * h_ + spare),
    );
    let grad_len = if grad { r_ * l_ } else { 1 };
    let (dheads, coef) = (crate::poisoned(2 * grad_len), crate::poisoned(grad_len));
    let partials = crate::poisoned(MAX_PARTIALS as usize);
    let kl = PartialsAt {
        buffer: &partials,
        offset: 0,
        slot_stride: 0,
        slots: 1,
        groups,
    };
    let (seed, rng_step, stream) = (9, 77, stream::TRAIN_NOISE);
    let table = step_table(&[StepParams {
        rng_step,
        kl_weight: 0.5,
        ..Default::default()
    }]);
    let out = ReparamOut {
        z: &z,
        eps: &eps,
        dheads: &dheads,
        coef: &coef,
    };
    let decode = Decode {
        params: &pb,
        weight: w_off,
        bias: b_off,
        hidden,
        h: &h3,
    };
    let d = reparam_decode(
        gpu,
        "reparam_decode",
        &hb,
        out,
        kl,
        grad,
        (rows, latent),
        (seed, stream),
        &table,
        decode,
    )
    .unwrap();
    run(&[&d], 0);
    let what = format!("reparam_decode {rows}×{latent}→{hidden}, {groups} workgroups, grad {grad}");
    for (name, buf, len) in [
        ("z", &z, r_ * l_),
        ("ε", &eps, r_ * l_),
        ("h3", &h3, r_ * h_),
    ] {
        assert!(
            read(buf, len, spare).iter().all(|v| v.is_nan()),
            "{what}: wrote past {name}"
        );
    }
    // z and ε: the unfused kernel's specification and tolerances.
    let (want_z, want_eps) = reparam_cpu(&heads, (r_, l_), seed, rng_step, stream);
    let (got_z, got_eps) = (read(&z, 0, r_ * l_), read(&eps, 0, r_ * l_));
    let key = philox::key(seed);
    let tol = |i: usize| eps_tol(key, [i as u32, rng_step, stream, 0], want_eps[i]);
    assert_close_by(&format!("{what} ε"), &got_eps, &want_eps, tol);
    assert_close_by(&format!("{what} z"), &got_z, &want_z, |i| {
        let log_var = heads[(i / l_) * 2 * l_ + l_ + i % l_] as f64;
        z_tol(tol(i), want_eps[i] as f64, log_var, want_z[i] as f64)
    });
    // h3 = max(z·W3ᵀ + b3, 0) from the GPU's z: a latent-term dot product and the bias, bound
    // error_bound(latent)·(Σ|z||w| + |b|) as for every matmul.
    let want_h = matmul_cpu(
        Layout::NT,
        (r_, h_, l_),
        &got_z,
        &w3,
        Epilogue::BiasRelu(b3.as_slice()),
    );
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let bound = matmul_cpu(
        Layout::NT,
        (r_, h_, l_),
        &abs(&got_z),
        &abs(&w3),
        Epilogue::None,
    );
    let gamma = error_bound(l_);
    assert_close_by(
        &format!("{what} h3"),
        &read(&h3, 0, r_ * h_),
        &want_h,
        |i| gamma * (bound[i] as f64 + b3[i % h_].abs() as f64),
    );
    // The KL: the partials' total against the f64 sum of the terms, each within its own error, the sum within
    // a serial sum of each invocation's rows and a workgroup's tree.
    let got_partials = read(&partials, 0, groups as usize);
    assert!(
        read(
            &partials,
            groups as usize,
            MAX_PARTIALS as usize - groups as usize
        )
        .iter()
        .all(|v| v.is_nan()),
        "{what}: wrote past its {groups} partials"
    );
    let total: f64 = got_partials.iter().map(|&v| v as f64).sum();
    let (mut want_kl, mut term_err, mut sum_abs) = (0f64, 0f64, 0f64);
    for row in 0..r_ {
        for j in 0..l_ {
            let (mu, lv) = (heads[row * 2 * l_ + j], heads[row * 2 * l_ + l_ + j]);
            let t = 0.5 * ((mu as f64).powi(2) + (lv as f64).exp() - 1.0 - lv as f64);
            want_kl += t;
            sum_abs += t.abs();
            term_err += kl_term_error(mu, lv);
        }
    }
    let additions = r_.div_ceil(groups as usize) * l_.div_ceil(WG as usize) + WG.ilog2() as usize;
    let kl_tol = term_err + sum_error(additions, sum_abs + term_err);
    assert!(
        (total - want_kl).abs() <= kl_tol,
        "{what}: KL {total} against {want_kl} (tolerance {kl_tol})"
    );
    if grad {
        // The KL's own part of ∂heads, as the unfused kernel writes it (its tests check the values).
        let dh = read(&dheads, 0, 2 * r_ * l_);
        assert!(
            dh.iter().all(|v| v.is_finite()),
            "{what}: ∂heads not written"
        );
        assert!(
            read(&coef, 0, r_ * l_).iter().all(|v| v.is_finite()),
            "{what}: ½·ε·σ not written"
        );
    }
}

#[test]
fn reparam_decode_matches_reparam_then_fc3_forward() {
    // Batch 1; rows that do not divide among the workgroups; latent and hidden past a workgroup's 256
    // invocations; the real 128 × 20 → 400, with one workgroup per row (as training) and with one in all.
    check_decode(1, 2, 5, 1, false);
    check_decode(13, 3, 37, 4, true);
    check_decode(7, 300, 300, 3, true);
    check_decode(128, 20, 400, 128, true);
    check_decode(128, 20, 400, 1, false);
}
