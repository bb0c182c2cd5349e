//! The whole training step: GPU against the f64 CPU reference for three steps, and the reference against finite
//! differences.

mod common;
use common::random_split;

use vae_wgpu::kernels::adam::{AdamConfig, adam_cpu};
use vae_wgpu::kernels::gather::gather_cpu;
use vae_wgpu::kernels::loss::{loss_groups, partials_sum_error};
use vae_wgpu::kernels::matmul::Product;
use vae_wgpu::kernels::matmul::{EVERY_PRODUCT, Kernel};
use vae_wgpu::kernels::philox::{Philox, stream};
use vae_wgpu::kernels::reparam::decode_fused;
use vae_wgpu::kernels::{FUSIONS, MAX_STEP_DISPATCHES, fused, strided_groups};
use vae_wgpu::model::ModelConfig;
use vae_wgpu::model::net::Net;
use vae_wgpu::model::reference::loss_and_grad;
use vae_wgpu::training::trainer::{ModelRun, TrainConfig, Trainer};
use vae_wgpu::tune;

/// `diff <= tol`: false for a NaN difference.
fn within(diff: f64, tol: f64) -> bool {
    diff <= tol
}

/// Three steps of the real 784-400-20 model at batch 50 (which divides no tile): each step's loss and gradients
/// against the CPU reference from the GPU's own parameters, batch and ε, then the Adam update against `adam_cpu`.
/// The whole step with each matmul candidate forced in turn on every product: any kernel autotuning may choose
/// is proven in the real step, not only in isolation.
/// The device's kernel choices are shared by the tests of this binary: one test at a time sets them.
static CHOICES: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn gpu_step_matches_cpu_reference_with_every_kernel() {
    let _choices = CHOICES.lock().unwrap_or_else(|p| p.into_inner());
    for kernel in Kernel::CANDIDATES {
        let gpu = common::gpu();
        gpu.clear_choices();
        gpu.set_choices([(EVERY_PRODUCT.to_string(), kernel.name())]);
        steps_match_the_reference(&kernel.name(), 50, 50, 3);
        gpu.clear_choices();
    }
}

/// The whole step with the kernels the device would use untuned, at the batch sizes that matter: the real batch
/// of 128, batch 1, and an epoch of 178 examples whose second step is a partial batch of 50 running in the full
/// batch's buffers (over the first step's stale rows).
#[test]
fn gpu_step_matches_cpu_reference_at_batch_128_1_and_partial() {
    let _choices = CHOICES.lock().unwrap_or_else(|p| p.into_inner());
    let gpu = common::gpu();
    gpu.clear_choices();
    steps_match_the_reference("default kernels, batch 128", 128, 128, 1);
    steps_match_the_reference("default kernels, batch 1", 1, 2, 1);
    steps_match_the_reference("default kernels, 128 then 50", 128, 178, 1);
}

/// Three models in one batched step (issue 25), with different seeds, β, learning rates and a KL warm-up on one:
/// each model's step against the reference, over an epoch of a full and a partial batch and a second epoch (the
/// warm-up's KL weight changing every step, then at β).
#[test]
fn gpu_step_matches_cpu_reference_for_three_models_at_once() {
    let _choices = CHOICES.lock().unwrap_or_else(|p| p.into_inner());
    let gpu = common::gpu();
    gpu.clear_choices();
    let runs = [
        (11, 1.0, 0.0, 1e-3),
        (12, 0.25, 1.5, 3e-3),
        (13, 4.0, 0.0, 2e-4),
    ]
    .map(|(seed, beta, kl_warmup, lr)| ModelRun {
        seed,
        beta,
        kl_warmup,
        lr,
        binarize: false,
    });
    models_steps_match_the_reference("default kernels, 3 models", (128, 178, 2), &runs);
}

/// The step with each layer's weight and input gradients apart, as tuning chooses where a pair is slower than
/// its two products and the step has room (see `tune::tune`): three more dispatches, the same mathematics.
#[test]
fn gpu_step_matches_cpu_reference_with_every_pair_apart() {
    let _choices = CHOICES.lock().unwrap_or_else(|p| p.into_inner());
    let gpu = common::gpu();
    gpu.clear_choices();
    let model = ModelConfig::new(784, 400, 20).unwrap();
    let net = Net::new(gpu, model, &model.init(11)).unwrap();
    let config = TrainConfig {
        model,
        batch: 128,
        adam: AdamConfig::default(),
        seed: 11,
        data_seed: 11,
        beta: 1.0,
        kl_warmup: 0.0,
        binarize: false,
        log_interval: 1,
    };
    let train = random_split(178, 784, 1);
    let mut trainer = Trainer::new(gpu, &net, config, &train).unwrap();
    let paired = trainer.step_plan(128).iter().count();
    // The untuned step keeps within the bound, and tuning may run apart only the pairs it has room for.
    assert!(paired <= MAX_STEP_DISPATCHES, "{paired} dispatches");
    assert_eq!(trainer.pair_room(), MAX_STEP_DISPATCHES - paired);
    let products: Vec<Product> = trainer.products().into_iter().map(|(p, _)| p).collect();
    let pairs = tune::pairs(&products);
    // Three layers, at the full and the partial batch.
    assert_eq!(pairs.len(), 6, "{products:?}");
    gpu.set_choices(pairs.iter().map(|(w, i)| {
        (
            tune::pair_key_of(w, i),
            vae_wgpu::kernels::matmul::UNPAIRED.to_string(),
        )
    }));
    trainer.rebuild_plans().unwrap();
    assert_eq!(trainer.step_plan(128).iter().count(), paired + 3);
    assert_eq!(trainer.pair_room(), MAX_STEP_DISPATCHES - paired);
    assert_eq!(trainer.step_plan(50).iter().count(), paired + 3);
    steps_match_the_reference(
        "default kernels, every pair apart, 128 then 50",
        128,
        178,
        1,
    );
    gpu.clear_choices();
}

/// The step with every fusion the other way from this adapter's default (see `vae_wgpu::kernels::fused`), so both
/// ways are tested on every adapter: one dispatch more or less each.
#[test]
fn gpu_step_matches_cpu_reference_with_the_other_fusions() {
    let _choices = CHOICES.lock().unwrap_or_else(|p| p.into_inner());
    let gpu = common::gpu();
    gpu.clear_choices();
    let model = ModelConfig::new(784, 400, 20).unwrap();
    let net = Net::new(gpu, model, &model.init(11)).unwrap();
    let config = TrainConfig {
        model,
        batch: 128,
        adam: AdamConfig::default(),
        seed: 11,
        data_seed: 11,
        beta: 1.0,
        kl_warmup: 0.0,
        binarize: false,
        log_interval: 1,
    };
    let train = random_split(178, 784, 1);
    let mut trainer = Trainer::new(gpu, &net, config, &train).unwrap();
    let before = trainer.step_plan(128).iter().count() as i64;
    let mut change = 0i64;
    for key in FUSIONS {
        let other = if fused(gpu, key) { "apart" } else { "fused" };
        change += if other == "apart" { 1 } else { -1 };
        gpu.set_choices([(key.to_string(), other.to_string())]);
        assert_eq!(fused(gpu, key), other == "fused");
    }
    trainer.rebuild_plans().unwrap();
    assert_eq!(
        trainer.step_plan(128).iter().count() as i64,
        before + change
    );
    steps_match_the_reference("default kernels, every fusion the other way", 128, 178, 1);
    gpu.clear_choices();
}

/// `epochs` epochs of `n_train` examples in batches of `batch` on the real model, each step recorded as training
/// records it (its plan, then the submission's loss reduction) and checked against the CPU reference (see the
/// comments inside for each tolerance).
fn steps_match_the_reference(kernel: &str, batch: u32, n_train: u32, epochs: u32) {
    let one = ModelRun {
        seed: 11,
        beta: 1.0,
        kl_warmup: 0.0,
        lr: AdamConfig::default().lr,
        binarize: false,
    };
    models_steps_match_the_reference(kernel, (batch, n_train, epochs), &[one]);
}

/// [`steps_match_the_reference`] for the models `runs` trained together in one batched step: each model's
/// losses, gradients and Adam update against the reference from its own parameters and ε, with its own KL weight
/// (warm-up included) and learning rate.
fn models_steps_match_the_reference(
    kernel: &str,
    (batch, n_train, epochs): (u32, u32, u32),
    runs: &[ModelRun],
) {
    let gpu = common::gpu();
    let model = ModelConfig::new(784, 400, 20).unwrap();
    let data_seed = 11;
    let train = random_split(n_train as usize, 784, 1);
    let first = runs[0];
    let config = TrainConfig {
        model,
        batch,
        adam: AdamConfig {
            lr: first.lr,
            ..Default::default()
        },
        seed: first.seed,
        data_seed,
        beta: first.beta,
        kl_warmup: first.kl_warmup,
        binarize: false,
        log_interval: 1,
    };
    let init: Vec<Vec<f32>> = runs.iter().map(|r| model.init(r.seed)).collect();
    let init: Vec<&[f32]> = init.iter().map(|p| p.as_slice()).collect();
    let net = Net::batched(gpu, model, &init).unwrap();
    let mut trainer = Trainer::batched(gpu, &net, config, runs.to_vec(), &train).unwrap();
    let used: Vec<String> = trainer.products().into_iter().map(|(_, k)| k).collect();
    let full_and_partial = if n_train.is_multiple_of(batch) { 1 } else { 2 };
    // fc3's forward pass is a product of its own unless the reparameterization computes it.
    let products = if decode_fused(gpu) { 10 } else { 11 };
    assert_eq!(
        used.len(),
        products * full_and_partial,
        "{kernel}: {used:?}"
    );
    if kernel.starts_with("default") {
        assert!(used.iter().all(|k| !k.is_empty()), "{kernel}: {used:?}");
    } else {
        assert!(used.iter().all(|k| k == kernel), "{kernel}: {used:?}");
    }
    let n = model.layout().len;
    // Model k's state `k × stride` into the net's buffers, its ε `k × z` into the workspace's.
    let (stride, z) = (net.stride, trainer.ws.models.z as usize);
    let read =
        |b: &wgpu::Buffer, at: usize, len: usize| -> Vec<f32> { gpu.read(b, at, len).unwrap() };
    let mut t = 0u32;
    for epoch in 1..=epochs {
        let sizes = trainer.begin_epoch(epoch).unwrap();
        let order = Philox::with_lane(data_seed, stream::SHUFFLE, epoch).permutation(n_train);
        for (i, &rows) in sizes.iter().enumerate() {
            t += 1;
            let before: Vec<_> = (0..runs.len())
                .map(|k| {
                    let at = k * stride;
                    let (p, m) = (read(&net.params, at, n), read(&net.m, at, n));
                    (p, m, read(&net.v, at, n))
                })
                .collect();
            // The gather of the next batches where this step's is the first of them (x slot 0), the step's plan
            // for its x slot, and the loss reduction.
            let plans = trainer.recorded(i as u32, rows);
            let plans = plans.chain([(trainer.reduce_plan(), i as u32)]);
            gpu.submit_plans("test.step", plans).unwrap();
            // As `train_epoch` counts: the next epoch's rows start from here.
            trainer.step += 1;
            let log = trainer.loss_rows(i, 1).unwrap();
            let start = i * batch as usize;
            let x: Vec<f64> = gather_cpu(&train.images, 784, &order, start, rows as usize)
                .iter()
                .map(|&v| v as f64)
                .collect();
            for (k, (run, (p0, m0, v0))) in runs.iter().zip(before).enumerate() {
                let (bce, kl) = (log[2 * k] as f64, log[2 * k + 1] as f64);
                let grads = read(&net.grads, k * stride, n);
                let p1 = read(&net.params, k * stride, n);
                let eps = read(&trainer.ws.eps, k * z, (rows * 20) as usize);
                let p0d: Vec<f64> = p0.iter().map(|&v| v as f64).collect();
                let epsd: Vec<f64> = eps.iter().map(|&v| v as f64).collect();
                let kl_weight = run.kl_weight(epoch, i as u32, sizes.len() as u32);
                let want = loss_and_grad(model, &p0d, &x, &epsd, rows as usize, kl_weight as f64);
                let step = format!(
                    "{kernel} epoch {epoch} step {t} ({rows} rows), model {k} of {} (KL weight {kl_weight}, lr {})",
                    runs.len(),
                    run.lr
                );
                // The BCE's summation: the workspace's (full batch's) loss workgroups over this batch's terms.
                let groups = strided_groups(gpu, loss_groups(batch as u64 * 784));
                let bce_sum = partials_sum_error(rows as u64 * 784, groups, want.bce);
                check_step(&step, model, &want, (bce, kl, bce_sum), &grads);

                // Adam: from the GPU's state and gradients, the CPU update must agree to the adam kernel test's bounds.
                let adam = AdamConfig {
                    lr: run.lr,
                    ..Default::default()
                };
                let (mut p, mut m, mut v) = (p0.clone(), m0, v0);
                adam_cpu(&adam, t, &mut p, &grads, &mut m, &mut v);
                // Counted as `!within(..)`, so that a NaN parameter (never within anything) is a mismatch.
                let bad = (0..n)
                    .filter(|&i| {
                        let diff = (p1[i] as f64 - p[i] as f64).abs();
                        !within(
                            diff,
                            2e-9 + 1e-6 * (p[i] as f64).abs() + 1e-6 * adam.lr as f64,
                        )
                    })
                    .count();
                assert_eq!(
                    bad, 0,
                    "{step}: {bad} parameters differ from the CPU Adam update"
                );
                // And the step moved the parameters: most of those with a gradient (batch 1 leaves fc1's columns of
                // black pixels without one; Adam's momentum can cancel a later step's gradient).
                let stuck = (0..n)
                    .filter(|&i| grads[i] != 0.0 && p1[i] == p0[i])
                    .count();
                let with_grad = grads.iter().filter(|&&g| g != 0.0).count();
                assert!(
                    with_grad > 0 && stuck < with_grad / 2,
                    "{step}: {stuck} of {with_grad} did not move"
                );
            }
        }
    }
}

/// One step's losses and gradients against the reference's.
fn check_step(
    step: &str,
    model: ModelConfig,
    want: &vae_wgpu::model::reference::StepResult,
    (bce, kl, bce_sum): (f64, f64, f64),
    grads: &[f32],
) {
    // Losses: sums of up to 100,352 (BCE) and 2,560 (KL) non-negative f32 terms, each a few ulp off; the inputs
    // to them (logits, heads) carry the matmuls' relative ~1e-6. 1e-5 relative covers both with margin. The
    // BCE's own summation error, `bce_sum`, comes on top: on a CPU adapter its few workgroups
    // (`strided_groups`) give each invocation up to a few hundred terms to add in turn.
    assert!(
        (bce - want.bce).abs() <= 1e-5 * want.bce + bce_sum,
        "{step} bce {} want {}",
        bce,
        want.bce
    );
    // KL is a sum of 1,000 terms whose inputs (the heads) carry the fc1 and heads matmuls' relative errors;
    // measured at most 1.8e-6 relative on lavapipe, so 1e-5 relative, with no absolute slack (KL is positive).
    assert!(
        (kl - want.kl).abs() <= 1e-5 * want.kl,
        "{step} kl {} want {}",
        kl,
        want.kl
    );

    // Gradients, tensor by tensor: each is a sum over the batch of products that passed through two or three
    // f32 matmuls (k up to 784); errors relative to the tensor's largest gradient measured at most 7e-7 on
    // lavapipe; 1e-5 leaves room for other summation orders. A wrong index or sign gives errors of the order of the gradient itself.
    let layout = model.layout();
    for l in [layout.fc1, layout.heads, layout.fc3, layout.fc4] {
        for (what, range) in [
            ("weight", l.weight..l.bias()),
            ("bias", l.bias()..l.weight + l.len()),
        ] {
            let scale = want.grads[range.clone()]
                .iter()
                .fold(0f64, |a, g| a.max(g.abs()));
            let mut worst = (0f64, 0usize);
            for i in range.clone() {
                let e = (grads[i] as f64 - want.grads[i]).abs();
                if e > worst.0 || grads[i].is_nan() {
                    worst = (if grads[i].is_nan() { f64::INFINITY } else { e }, i);
                }
            }
            assert!(
                worst.0 <= 1e-5 * scale,
                "{step} {}.{what}: gradient error {:e} at {} (got {} want {}), scale {scale:e}",
                l.name,
                worst.0,
                worst.1,
                grads[worst.1],
                want.grads[worst.1]
            );
        }
    }
}

/// The CPU reference's gradient against central differences of its own loss, in f64, on a small model.
#[test]
fn reference_gradient_matches_finite_differences() {
    let model = ModelConfig::new(7, 5, 3).unwrap();
    let rows = 4;
    let mut r = Philox::new(3, stream::TEST_INPUT);
    let params: Vec<f64> = model.init(5).iter().map(|&v| v as f64 * 3.0).collect();
    let x: Vec<f64> = (0..rows * 7).map(|_| r.uniform() as f64).collect();
    let eps: Vec<f64> = (0..rows * 3).map(|_| r.normal() as f64).collect();
    for kl_weight in [1.0, 0.3] {
        let base = loss_and_grad(model, &params, &x, &eps, rows, kl_weight);
        let objective = |p: &[f64]| {
            let s = loss_and_grad(model, p, &x, &eps, rows, kl_weight);
            s.bce + kl_weight * s.kl
        };
        let h = 1e-6;
        for i in 0..params.len() {
            let mut plus = params.clone();
            let mut minus = params.clone();
            plus[i] += h;
            minus[i] -= h;
            let fd = (objective(&plus) - objective(&minus)) / (2.0 * h);
            // Central differences: truncation O(h²) ≈ 1e-12 times the third derivative, rounding ≈ 1e-16·|f|/h ≈
            // 1e-9 for |f| ≈ 10. 1e-6 absolute plus 1e-6 relative is far below any real error.
            let g = base.grads[i];
            assert!(
                (fd - g).abs() <= 1e-6 + 1e-6 * g.abs(),
                "param {i} (w={kl_weight}): analytic {g} vs finite difference {fd}"
            );
        }
    }
}
