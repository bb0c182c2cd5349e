use vae_wgpu::gpu::Operand;
use vae_wgpu::kernels::StepParams;
use vae_wgpu::kernels::adam::{AdamConfig, BceValue, adam, adam_cpu, adam_with_bce};
use vae_wgpu::kernels::loss::{
    PartialsAt, bce_logits, bce_logits_cpu, bce_term_error, loss_groups, partials_sum_error,
};

use crate::{
    assert_close, both_reductions, gpu, poisoned, read, rng, run, step_table, uniform_vec,
};

/// Three Adam steps recorded into one submission, each reading its own step-table row (t = 1, 2, 3): the step
/// count reaches the kernel without a host write between steps.
fn check(n: usize) {
    let gpu = gpu();
    let config = AdamConfig::default();
    let mut r = rng(n as u64);
    let mut param = uniform_vec(&mut r, n, -0.05, 0.05);
    let grads: Vec<Vec<f32>> = (0..3)
        .map(|_| {
            (0..n)
                .map(|_| match r.below(8) {
                    0 => 0.0, // unused parameters get exact-zero gradients
                    1 => r.range(-1e-6, 1e-6),
                    _ => r.range(-10.0, 10.0),
                })
                .collect()
        })
        .collect();
    // Five spare elements after each buffer hold a sentinel the kernel must not touch.
    let spare = |v: &[f32]| [v, &[7.0f32; 5][..]].concat();
    let pb = gpu.storage_init("param", &spare(&param)).unwrap();
    let gbs: Vec<_> = grads
        .iter()
        .map(|g| gpu.storage_init("grad", &spare(g)).unwrap())
        .collect();
    let mb = gpu.storage_init("m", &spare(&vec![0f32; n])).unwrap();
    let vb = gpu.storage_init("v", &spare(&vec![0f32; n])).unwrap();
    let rows: Vec<StepParams> = (1..=3)
        .map(|t| {
            let mut row = StepParams::default();
            config.fill(&mut row, t);
            row
        })
        .collect();
    let table = step_table(&rows);
    let ds: Vec<_> = gbs
        .iter()
        .map(|g| adam(gpu, "adam", &config, &pb, g, &mb, &vb, n as u32, &table).unwrap())
        .collect();
    gpu.submit_pass("adam x3", |pass| {
        for (slot, d) in ds.iter().enumerate() {
            d.record(pass, slot as u32);
        }
    })
    .unwrap();
    let (mut m, mut v) = (vec![0f32; n], vec![0f32; n]);
    // Error bounds, element by element. m = β1·m + (1 − β1)·g cancels when g changes sign, so its f32 error is
    // relative to m_abs = β1·m_abs + (1 − β1)·|g| (a few ulp per step: 8u over three steps), not to m. v has no
    // cancellation (1e-6 relative). Each parameter update lr/(1 − β1ᵗ)·m/(√v̂ + ε) inherits m's error through
    // the numerator plus a few ulp of itself; the parameter adds its own rounding (a relative 5e-7 over 3 steps).
    let u = 1.0 / 16_777_216.0;
    let (b1, b2) = (config.beta1 as f64, config.beta2 as f64);
    let mut m_abs = vec![0f64; n];
    let mut param_tol = vec![0f64; n];
    for (t, g) in grads.iter().enumerate() {
        let t = t as i32 + 1;
        let step_size = config.lr as f64 / (1.0 - b1.powi(t));
        adam_cpu(&config, t as u32, &mut param, g, &mut m, &mut v);
        for i in 0..n {
            m_abs[i] = b1 * m_abs[i] + (1.0 - b1) * (g[i] as f64).abs();
            let denom = (v[i] as f64 / (1.0 - b2.powi(t))).sqrt() + config.eps as f64;
            param_tol[i] +=
                step_size * (8.0 * u * m_abs[i] + 8.0 * u * (m[i] as f64).abs()) / denom;
        }
    }
    for b in [&pb, &mb, &vb] {
        assert_eq!(
            read(b, n, 5),
            vec![7.0f32; 5],
            "adam n={n} wrote past its parameters"
        );
    }
    let got_m = read(&mb, 0, n);
    crate::assert_close_by(&format!("adam n={n} m"), &got_m, &m, |i| 8.0 * u * m_abs[i]);
    assert_close(&format!("adam n={n} v"), &read(&vb, 0, n), &v, 1e-30, 1e-6);
    crate::assert_close_by(
        &format!("adam n={n} param"),
        &read(&pb, 0, n),
        &param,
        |i| param_tol[i] + 5e-7 * (param[i] as f64).abs(),
    );
}

#[test]
fn adam_one_parameter() {
    check(1);
}

#[test]
fn adam_awkward_size() {
    check(1001);
}

#[test]
fn adam_real_parameter_count() {
    // The 784-400-20 VAE's 652,824 parameters.
    check(652_824);
}

#[test]
fn adam_more_than_65535_workgroups_of_parameters() {
    // Each invocation updates ADAM_PER parameters, a whole grid of invocations apart: a wrong stride would skip or
    // repeat some. (The grid needs a second dimension only past 65,535 · 256 · ADAM_PER parameters, more memory
    // than a test should take; gather_more_than_65535_workgroups covers `grid`'s 2-D indexing.)
    check(65_535 * 256 + 3);
}

#[test]
fn adam_known_values() {
    let gpu = gpu();
    let config = AdamConfig::default();
    // At t = 1 the bias-corrected update is lr·g/(|g| + ε') ≈ lr·sign(g): each parameter moves by 1e-3 against
    // its gradient whatever the gradient's size (and not at all for a zero gradient).
    let pb = gpu.storage_init("param", &[1f32, 1.0, 1.0, 1.0]).unwrap();
    let gb = gpu.storage_init("grad", &[5f32, -0.01, 0.0, 1e3]).unwrap();
    let mb = gpu.storage_init("m", &[0f32; 4]).unwrap();
    let vb = gpu.storage_init("v", &[0f32; 4]).unwrap();
    let mut row = StepParams::default();
    config.fill(&mut row, 1);
    let table = step_table(&[row]);
    run(
        &[&adam(gpu, "adam", &config, &pb, &gb, &mb, &vb, 4, &table).unwrap()],
        0,
    );
    assert_close(
        "adam t=1",
        &read(&pb, 0, 4),
        &[0.999, 1.001, 1.0, 0.999],
        2e-7,
        0.0,
    );
    assert_close(
        "adam m",
        &read(&mb, 0, 4),
        &[0.5, -0.001, 0.0, 100.0],
        0.0,
        1e-6,
    );
}

/// `adam_with_bce`, the training step's last dispatch: the same Adam step as `adam`, bit for bit (the same code
/// per element), and in its first workgroups the step's BCE from the logits, bit for bit the partials of
/// `bce_logits` (the same strided loop and tree) in the step's slot, and within WGSL's bound of the CPU
/// reference. With few parameters the grid still has a workgroup per partial.
fn check_with_bce(n: usize, (rows, cols): (u32, u32)) {
    both_reductions(|| {
        let gpu = gpu();
        let config = AdamConfig::default();
        let mut r = rng(n as u64 ^ 0xadb);
        let param = uniform_vec(&mut r, n, -0.05, 0.05);
        let grad = uniform_vec(&mut r, n, -10.0, 10.0);
        let e = (rows * cols) as usize;
        let logits: Vec<f32> = (0..e).map(|_| r.range(-8.0, 8.0)).collect();
        let x: Vec<f32> = (0..e)
            .map(|_| [0, 255, r.below(256)][r.below(3) as usize] as f32 / 255.0)
            .collect();
        let state = |label: &str| {
            let b = |v: &[f32]| gpu.storage_init(label, v).unwrap();
            (b(&param), b(&grad), b(&vec![0f32; n]), b(&vec![0f32; n]))
        };
        let (p1, g1, m1, v1) = state("fused");
        let (p2, g2, m2, v2) = state("plain");
        let lb = gpu.storage_init("logits", &logits).unwrap();
        // The images after NaNs, as in a training step's x slot other than the first: both kernels must read
        // them at their offset (each at its own here).
        let after_nans = |skip: usize| {
            let v: Vec<f32> = std::iter::repeat_n(f32::NAN, skip)
                .chain(x.iter().copied())
                .collect();
            gpu.storage_init("x", &v).unwrap()
        };
        let (xb, xk) = (after_nans(64), after_nans(5));
        let groups = loss_groups(e as u64);
        let (fused_partials, kernel_partials) = (poisoned(600), poisoned(300));
        let mut row = StepParams {
            partial_slot: 1,
            ..Default::default()
        };
        config.fill(&mut row, 1);
        let table = step_table(&[StepParams::default(), row]);
        let at = |buffer, slot_stride| PartialsAt {
            buffer,
            offset: 3,
            slot_stride,
            slots: 2,
            groups,
        };
        let bce = BceValue {
            logits: &lb,
            x: Operand::at(&xb, 64),
            shape: (rows, cols),
            partials: at(&fused_partials, 300),
        };
        let state1 = (&p1, &g1, &m1, &v1);
        let fused = adam_with_bce(gpu, "adam+bce", &config, state1, n as u32, bce, &table).unwrap();
        let plain = adam(gpu, "adam", &config, &p2, &g2, &m2, &v2, n as u32, &table).unwrap();
        let dl = poisoned(e);
        let kernel = bce_logits(
            gpu,
            "bce",
            &lb,
            Operand::at(&xk, 5),
            &dl,
            at(&kernel_partials, 0),
            (rows, cols),
            false,
            &table,
        );
        run(&[&fused, &plain, &kernel.unwrap()], 1);
        for (what, a, b) in [("param", &p1, &p2), ("m", &m1, &m2), ("v", &v1, &v2)] {
            let (a, b) = (read(a, 0, n), read(b, 0, n));
            let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "{what}: adam_with_bce's step differs from adam's ({n} parameters)"
            );
        }
        let g = groups as usize;
        let got = read(&fused_partials, 0, 600);
        let want = read(&kernel_partials, 3, g);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&got[303..303 + g]),
            bits(&want),
            "BCE partials differ from bce_logits'"
        );
        let untouched = got[..303].iter().chain(&got[303 + g..]);
        assert!(
            untouched.into_iter().all(|v| v.is_nan()),
            "partials written outside the step's slot"
        );
        let (want_loss, _) = bce_logits_cpu(&logits, &x);
        let sum: f64 = got[303..303 + g].iter().map(|&v| v as f64).sum();
        let tol = (0..e).map(|i| bce_term_error(logits[i], x[i])).sum::<f64>()
            + partials_sum_error(e as u64, groups, want_loss);
        assert!(
            (sum - want_loss).abs() <= tol,
            "BCE {sum} want {want_loss} (tol {tol:e})"
        );
    });
}

#[test]
fn adam_with_bce_matches_adam_and_the_bce_kernel() {
    check_with_bce(1000, (37, 29));
    check_with_bce(3, (128, 784));
    check_with_bce(70_000, (1, 784));
}
