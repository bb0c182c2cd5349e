//! Several models trained together in one batched step (issue 25): each model ends where the same model trained
//! alone ends, to the bit — its parameters, Adam's moments and every epoch's training loss — with the kernels the
//! device takes untuned and with each fusion flipped. The models differ in seed, β, KL warm-up and learning rate
//! (and, in one test, binarization), and share the batches (one data seed) and the shape.

mod common;
use common::random_split;

use vae_wgpu::Gpu;
use vae_wgpu::data::mnist::Split;
use vae_wgpu::kernels::adam::AdamConfig;
use vae_wgpu::kernels::{FUSIONS, fused};
use vae_wgpu::model::ModelConfig;
use vae_wgpu::model::net::Net;
use vae_wgpu::training::plans::LossSum;
use vae_wgpu::training::trainer::{ModelRun, TrainConfig, Trainer};

/// The device's kernel choices are shared by the tests of this binary: one test at a time sets them.
static CHOICES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// 784-72-2: a hidden width that fills no tile, and the default latent size. Every parameter tensor starts where
/// vec4 loads may (the step takes the kernels a real model takes): with 3 latent dimensions fc4's weight starts off
/// a vec4, and its gradient pair takes the 128 tile's scalar pair, which SwiftShader's compiler did not finish
/// building in minutes and gigabytes (see .ci/run; tests/kernels/matmul_models.rs covers that pair batched).
fn model() -> ModelConfig {
    ModelConfig::new(784, 72, 2).unwrap()
}

/// Model `k`'s own settings: seeds, β, warm-ups and learning rates all differ between neighbours.
fn run(k: u32) -> ModelRun {
    ModelRun {
        seed: 5 + 7 * k as u64,
        beta: [1.0, 0.25, 4.0, 0.5, 2.0][k as usize % 5],
        kl_warmup: [0.0, 1.5, 0.0, 0.7][k as usize % 4],
        lr: [1e-3, 3e-3, 5e-4][k as usize % 3],
        binarize: true,
    }
}

/// The shared settings, with the first model's own.
fn config(first: ModelRun) -> TrainConfig {
    TrainConfig {
        model: model(),
        // 300 examples: four full batches and a partial one of 44, each epoch.
        batch: 64,
        adam: AdamConfig {
            lr: first.lr,
            ..Default::default()
        },
        seed: first.seed,
        data_seed: 99,
        beta: first.beta,
        kl_warmup: first.kl_warmup,
        binarize: true,
        // Two log points an epoch, so a submission holds some steps but not all.
        log_interval: 3,
    }
}

/// What a model ends with: parameters, Adam's moments (as bits) and each epoch's training loss.
#[derive(Debug, PartialEq)]
struct End {
    params: Vec<u32>,
    m: Vec<u32>,
    v: Vec<u32>,
    losses: Vec<LossSum>,
}

fn bits(v: Vec<f32>) -> Vec<u32> {
    v.into_iter().map(f32::to_bits).collect()
}

/// Trains the models `runs` together for `epochs` epochs from their seeds' initial parameters; what each ends with.
fn train(gpu: &Gpu, runs: &[ModelRun], train: &Split, epochs: u32) -> Vec<End> {
    let model = model();
    let init: Vec<Vec<f32>> = runs.iter().map(|r| model.init(r.seed)).collect();
    let init: Vec<&[f32]> = init.iter().map(|p| p.as_slice()).collect();
    let net = Net::batched(gpu, model, &init).unwrap();
    let mut trainer = Trainer::batched(gpu, &net, config(runs[0]), runs.to_vec(), train).unwrap();
    let mut losses = vec![Vec::new(); runs.len()];
    for epoch in 1..=epochs {
        let sums = trainer
            .train_epoch(epoch, |_, _| {})
            .unwrap()
            .finished()
            .unwrap();
        for (l, s) in losses.iter_mut().zip(sums) {
            l.push(s);
        }
    }
    (0..runs.len() as u32)
        .zip(losses)
        .map(|(k, losses)| {
            let (m, v) = trainer.moments_of(k).unwrap();
            End {
                params: bits(trainer.params_of(k).unwrap()),
                m: bits(m),
                v: bits(v),
                losses,
            }
        })
        .collect()
}

/// For each model count, the models trained together against each trained alone.
fn batched_equals_alone(gpu: &Gpu, what: &str, counts: &[u32]) {
    batched_equals_alone_with(gpu, what, counts, run)
}

/// [`batched_equals_alone`] with model k's settings `run(k)`.
fn batched_equals_alone_with(gpu: &Gpu, what: &str, counts: &[u32], run: fn(u32) -> ModelRun) {
    let data = random_split(300, 784, 3);
    let epochs = 2;
    for &count in counts {
        let runs: Vec<ModelRun> = (0..count).map(run).collect();
        let together = train(gpu, &runs, &data, epochs);
        for (k, run) in runs.iter().enumerate() {
            let alone = train(gpu, std::slice::from_ref(run), &data, epochs);
            let (a, t) = (&alone[0], &together[k]);
            let same = |x: &[u32], y: &[u32]| x.iter().zip(y).filter(|(p, q)| p != q).count();
            assert!(
                a == t,
                "{what}: model {k} of {count} differs from the model alone: {} of {} parameters, {} and {} \
                 moments; losses alone {:?}, together {:?}",
                same(&a.params, &t.params),
                a.params.len(),
                same(&a.m, &t.m),
                same(&a.v, &t.v),
                a.losses,
                t.losses
            );
        }
        // The models really are trained apart: no two end alike (a mix-up of their offsets would show here
        // too, as a model's end differing from its run alone).
        for j in 1..together.len() {
            assert_ne!(
                together[j].params,
                together[j - 1].params,
                "{what}: models {j} and {}",
                j - 1
            );
            assert_ne!(
                together[j].losses,
                together[j - 1].losses,
                "{what}: models {j} and {}",
                j - 1
            );
        }
        eprintln!(
            "{what}: {count} models together equal each alone; epoch 2 losses {:?}",
            together
                .iter()
                .map(|e| e.losses[1].per_example().0)
                .collect::<Vec<_>>()
        );
    }
}

/// M = 3 and 7 (neither divides a workgroup or a tile) with the device's untuned choices.
#[test]
fn models_trained_together_equal_each_trained_alone() {
    let _choices = CHOICES.lock().unwrap_or_else(|p| p.into_inner());
    let gpu = common::gpu();
    gpu.clear_choices();
    batched_equals_alone(gpu, "default kernels", &[3, 7]);
}

/// Models that differ in their binarization (binarized, grey, binarized, …) each gather their own batches, and
/// each still equals its run alone (a grey run alone gathers no noise at all).
#[test]
fn models_that_differ_in_binarization_each_equal_their_run_alone() {
    let _choices = CHOICES.lock().unwrap_or_else(|p| p.into_inner());
    let gpu = common::gpu();
    gpu.clear_choices();
    let mixed = |k: u32| ModelRun {
        binarize: k.is_multiple_of(2),
        ..run(k)
    };
    batched_equals_alone_with(gpu, "binarized and grey", &[3], mixed);
}

/// The same with each fusion the other way round from the device's default (reparam+fc3 and adam+bce), so the
/// batched reparam_decode, the BCE apart and plain Adam are each checked.
#[test]
fn models_trained_together_equal_each_trained_alone_with_the_fusions_flipped() {
    let _choices = CHOICES.lock().unwrap_or_else(|p| p.into_inner());
    let gpu = common::gpu();
    gpu.clear_choices();
    let flipped = FUSIONS.map(|key| {
        let other = if fused(gpu, key) { "apart" } else { "fused" };
        (key.to_string(), other.to_string())
    });
    gpu.set_choices(flipped.clone());
    batched_equals_alone(gpu, &format!("{flipped:?}"), &[3]);
    gpu.clear_choices();
}
