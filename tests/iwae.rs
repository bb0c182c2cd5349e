//! The importance-weighted log-likelihood estimate on the GPU against an f64 CPU reference, and against the ELBO.

mod common;

use vae_wgpu::data::mnist::Split;
use vae_wgpu::kernels::gather::ByteMatrix;
use vae_wgpu::kernels::iwae::log_mean_exp_cpu;
use vae_wgpu::kernels::philox::{self, Philox, stream};
use vae_wgpu::model::ModelConfig;
use vae_wgpu::model::inference::Inference;
use vae_wgpu::model::net::Net;
use vae_wgpu::model::reference::forward;
use vae_wgpu::training::eval::{EvalConfig, Evaluator};

/// Three images, 50 samples each, in chunks of 64 rows (so chunks straddle images): each image's estimate equals
/// the CPU's log-mean-exp of the same log-weights (same parameters, data and Philox noise, in f64).
#[test]
fn iw_estimate_matches_cpu_reference() {
    let gpu = common::gpu();
    let model = ModelConfig::new(784, 64, 5).unwrap();
    let seed = 4;
    let mut r = Philox::new(1, stream::TEST_INPUT);
    // Larger than the default init, so the posterior is not the prior and the samples disagree.
    let params: Vec<f32> = model.init(2).iter().map(|v| v * 4.0).collect();
    let bytes: Vec<u8> = (0..3 * 784)
        .map(|_| {
            if r.below(3) == 0 {
                r.below(256) as u8
            } else {
                0
            }
        })
        .collect();
    let data = ByteMatrix::upload(gpu, "images", &bytes, 784).unwrap();
    let (k, chunk) = (50u32, 64u32);
    let inf = Inference::new(gpu, model, &params, chunk, seed).unwrap();
    let got = inf.log_likelihood(&data, 3, k).unwrap();

    let p64: Vec<f64> = params.iter().map(|&v| v as f64).collect();
    let key = philox::key(seed);
    let l = model.latent as usize;
    let mut logw = Vec::new();
    for row in 0..3 * k {
        let (c, rr) = (row / chunk, row % chunk);
        let img = (row / k) as usize;
        let x: Vec<f64> = bytes[img * 784..(img + 1) * 784]
            .iter()
            .map(|&b| b as f64 / 255.0)
            .collect();
        let eps: Vec<f64> = (0..l)
            .map(|j| philox::normal_at(key, rr * l as u32 + j as u32, c, stream::IW_NOISE))
            .collect();
        let f = forward(model, &p64, &x, &eps, 1);
        let bce: f64 = f
            .logits
            .iter()
            .zip(&x)
            .map(|(&lg, &xv)| lg.max(0.0) - lg * xv + (-lg.abs()).exp().ln_1p())
            .sum();
        let lat: f64 = (0..l)
            .map(|j| 0.5 * (eps[j] * eps[j] - f.z[j] * f.z[j] + f.heads[l + j]))
            .sum();
        logw.push(lat - bce);
    }
    for i in 0..3 {
        let want = log_mean_exp_cpu(&logw[i * k as usize..(i + 1) * k as usize]);
        // Each log-weight is ~−300 nats summed from 784 f32 terms (≈1e-4 relative error budget of the f32
        // matmuls and sums, so a few 1e-3 nats), and the GPU's normals differ from the f64 ones by ~1e-7.
        assert!(
            (got[i] - want).abs() < 2e-2,
            "image {i}: GPU {} CPU {want}",
            got[i]
        );
    }
    // The estimate is at least the average log-weight (Jensen): log mean exp ≥ mean.
    for i in 0..3 {
        let mean = logw[i * 50..(i + 1) * 50].iter().sum::<f64>() / 50.0;
        assert!(
            got[i] >= mean - 1e-2,
            "image {i}: {} < mean log-weight {mean}",
            got[i]
        );
    }
}

/// docs/training.md's claim, on the GPU: for the same images, the importance-sampled log p(x) is at least the ELBO.
/// The ELBO is the GPU evaluator's (one z per image, as `vae eval` reports it), averaged over 20 draws per image
/// so that its own noise (a few nats per draw) is well below the gap being tested.
#[test]
fn iw_estimate_is_at_least_the_gpu_elbo_of_the_same_images() {
    let gpu = common::gpu();
    let model = ModelConfig::new(784, 64, 5).unwrap();
    let params: Vec<f32> = model.init(2).iter().map(|v| v * 2.0).collect();
    let mut r = Philox::new(7, stream::TEST_INPUT);
    let (images, draws) = (10usize, 20usize);
    let bytes: Vec<u8> = (0..images * 784)
        .map(|_| {
            if r.below(3) == 0 {
                r.below(256) as u8
            } else {
                0
            }
        })
        .collect();
    let data = ByteMatrix::upload(gpu, "images", &bytes, 784).unwrap();
    let inf = Inference::new(gpu, model, &params, 256, 3).unwrap();
    let ll = inf.log_likelihood(&data, images as u32, 200).unwrap();
    let iwae = ll.iter().sum::<f64>() / images as f64;
    // The same images, each repeated `draws` times: every row of the test set draws its own z.
    let repeated = Split {
        images: bytes.repeat(draws),
        labels: vec![0; images * draws],
        n: images * draws,
        rows: 28,
        cols: 28,
    };
    let net = Net::new(gpu, model, &params).unwrap();
    let config = EvalConfig {
        batch: 64,
        seed: 3,
        binarize: false,
    };
    let (loss, _, _) = Evaluator::new(gpu, &net, config, &repeated)
        .unwrap()
        .evaluate()
        .unwrap()
        .per_example();
    let elbo = -loss;
    assert!(
        iwae > elbo,
        "log p(x) estimate {iwae} is below the ELBO {elbo} of the same images"
    );
}
