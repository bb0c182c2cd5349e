use vae_wgpu::kernels::StepParams;
use vae_wgpu::kernels::philox::{self, stream};
use vae_wgpu::kernels::reparam::{philox_words, reparam, reparam_cpu};

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

/// Tolerance for ε and z: the words and uniforms are bit-identical, but log, cos and exp are not correctly
/// rounded on GPUs. Vulkan bounds cos on [−π, π] by 2⁻¹¹ absolute and log by 3 ulp (2⁻²¹ absolute near 1); with a
/// Box–Muller radius of at most √(−2 ln 2⁻²⁴) ≈ 5.8 that allows ≈ 3·10⁻³ on ε. Errors of a wrong counter,
/// stream, key or formula are of order 1.
fn eps_tol(e: f32) -> f64 {
    6e-4 * (1.0 + e.abs() as f64)
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
    let d = reparam(
        gpu,
        "reparam",
        &h,
        &z,
        &eps,
        (rows, latent),
        seed,
        stream,
        &table,
    )
    .unwrap();
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
    assert_close_by(&format!("{what} ε"), &got_eps, &want_eps, |i| {
        eps_tol(want_eps[i])
    });
    // z = μ + ε·σ: ε's error times σ, plus exp's (3 ulp) and the rounding of the sum.
    assert_close_by(&format!("{what} z"), &got_z, &want_z, |i| {
        let row = i / l_;
        let sigma = (0.5 * heads[row * 2 * l_ + l_ + i % l_] as f64).exp();
        eps_tol(want_eps[i]) * sigma + 1e-6 * (1.0 + want_z[i].abs() as f64)
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
    // μ = 1, log σ² = 2·ln 3 (σ = 3): z = 1 + 3ε, with ε the normal from counter (0, 5, TRAIN_NOISE, 0).
    let heads = [1.0f32, (2.0 * 3f64.ln()) as f32];
    let h = gpu.storage_init("heads", &heads).unwrap();
    let (z, eps) = (crate::poisoned(1), crate::poisoned(1));
    let table = step_table(&[StepParams {
        rng_step: 5,
        ..Default::default()
    }]);
    run(
        &[&reparam(
            gpu,
            "reparam",
            &h,
            &z,
            &eps,
            (1, 1),
            0,
            stream::TRAIN_NOISE,
            &table,
        )
        .unwrap()],
        0,
    );
    let e = philox::normal_at([0, 0], 0, 5, stream::TRAIN_NOISE);
    let (gz, ge) = (read(&z, 0, 1)[0] as f64, read(&eps, 0, 1)[0] as f64);
    assert!((ge - e).abs() < eps_tol(e as f32), "ε {ge} want {e}");
    assert!(
        (gz - (1.0 + 3.0 * e)).abs() < 4.0 * eps_tol(e as f32),
        "z {gz} want {}",
        1.0 + 3.0 * e
    );
    // Different steps and streams draw different noise.
    assert_ne!(
        philox::normal_at([0, 0], 0, 5, stream::TRAIN_NOISE),
        philox::normal_at([0, 0], 0, 6, stream::TRAIN_NOISE)
    );
}
