//! The whole training step on the CPU, in f64: the specification the GPU step is tested against.
//!
//! Plain loops, the same formulas as the kernel references (`matmul_cpu`, `bce_logits_cpu`, `kl_backward_cpu`,
//! `adam_cpu`) but in f64 end to end, so it can itself be checked by finite differences.

use crate::model::{Layout, Linear, ModelConfig};

/// Loss terms (summed over the batch) and the gradient of `bce + kl_weight·kl` in the flat layout.
#[derive(Clone, Debug)]
pub struct StepResult {
    pub bce: f64,
    pub kl: f64,
    pub grads: Vec<f64>,
}

/// y (rows, out) = x·Wᵀ + b.
fn linear(p: &[f64], l: Linear, x: &[f64], rows: usize) -> Vec<f64> {
    let (out, inp) = (l.out as usize, l.inp as usize);
    let mut y = vec![0.0; rows * out];
    for r in 0..rows {
        for o in 0..out {
            let mut s = p[l.bias() + o];
            for i in 0..inp {
                s += x[r * inp + i] * p[l.weight + o * inp + i];
            }
            y[r * out + o] = s;
        }
    }
    y
}

/// Accumulates ∂W = ∂yᵀ·x and ∂b = Σ ∂y into `g`, and returns ∂x = ∂y·W.
fn linear_backward(
    p: &[f64],
    g: &mut [f64],
    l: Linear,
    x: &[f64],
    dy: &[f64],
    rows: usize,
) -> Vec<f64> {
    let (out, inp) = (l.out as usize, l.inp as usize);
    let mut dx = vec![0.0; rows * inp];
    for r in 0..rows {
        for o in 0..out {
            let d = dy[r * out + o];
            g[l.bias() + o] += d;
            for i in 0..inp {
                g[l.weight + o * inp + i] += d * x[r * inp + i];
                dx[r * inp + i] += d * p[l.weight + o * inp + i];
            }
        }
    }
    dx
}

fn relu(v: &mut [f64]) {
    v.iter_mut().for_each(|x| *x = x.max(0.0));
}

fn relu_mask(dx: &mut [f64], y: &[f64]) {
    for (d, &y) in dx.iter_mut().zip(y) {
        if y <= 0.0 {
            *d = 0.0;
        }
    }
}

/// The activations of a forward pass.
#[derive(Clone, Debug)]
pub struct Forward {
    pub h1: Vec<f64>,
    /// μ | log σ² per row.
    pub heads: Vec<f64>,
    pub z: Vec<f64>,
    pub h3: Vec<f64>,
    pub logits: Vec<f64>,
}

/// The forward pass of one batch: `x` (rows, pixels) in [0, 1], `eps` (rows, latent) the noise.
pub fn forward(
    config: ModelConfig,
    params: &[f64],
    x: &[f64],
    eps: &[f64],
    rows: usize,
) -> Forward {
    let Layout {
        fc1,
        heads,
        fc3,
        fc4,
        ..
    } = config.layout();
    let latent = config.latent as usize;
    let mut h1 = linear(params, fc1, x, rows);
    relu(&mut h1);
    let hd = linear(params, heads, &h1, rows);
    let mut z = vec![0.0; rows * latent];
    for r in 0..rows {
        for j in 0..latent {
            let (mu, lv) = (hd[r * 2 * latent + j], hd[r * 2 * latent + latent + j]);
            z[r * latent + j] = mu + eps[r * latent + j] * (0.5 * lv).exp();
        }
    }
    let mut h3 = linear(params, fc3, &z, rows);
    relu(&mut h3);
    let logits = linear(params, fc4, &h3, rows);
    Forward {
        h1,
        heads: hd,
        z,
        h3,
        logits,
    }
}

/// Forward and backward of one batch: `x` (rows, pixels) in [0, 1], `eps` (rows, latent) the noise.
pub fn loss_and_grad(
    config: ModelConfig,
    params: &[f64],
    x: &[f64],
    eps: &[f64],
    rows: usize,
    kl_weight: f64,
) -> StepResult {
    let Layout {
        fc1,
        heads,
        fc3,
        fc4,
        len,
    } = config.layout();
    let latent = config.latent as usize;
    let Forward {
        h1,
        heads: hd,
        z,
        h3,
        logits,
    } = forward(config, params, x, eps, rows);

    let mut bce = 0.0;
    let mut dlogits = vec![0.0; logits.len()];
    for (i, &l) in logits.iter().enumerate() {
        bce += l.max(0.0) - l * x[i] + (-l.abs()).exp().ln_1p();
        dlogits[i] = 1.0 / (1.0 + (-l).exp()) - x[i];
    }
    let mut g = vec![0.0; len];
    let mut dh3 = linear_backward(params, &mut g, fc4, &h3, &dlogits, rows);
    relu_mask(&mut dh3, &h3);
    let dz = linear_backward(params, &mut g, fc3, &z, &dh3, rows);

    let mut kl = 0.0;
    let mut dheads = vec![0.0; hd.len()];
    for r in 0..rows {
        for j in 0..latent {
            let (mu_at, lv_at) = (r * 2 * latent + j, r * 2 * latent + latent + j);
            let (mu, lv) = (hd[mu_at], hd[lv_at]);
            let var = lv.exp();
            kl += 0.5 * (mu * mu + var - 1.0 - lv);
            let dzv = dz[r * latent + j];
            dheads[mu_at] = dzv + kl_weight * mu;
            dheads[lv_at] =
                0.5 * dzv * eps[r * latent + j] * var.sqrt() + kl_weight * 0.5 * (var - 1.0);
        }
    }
    let mut dh1 = linear_backward(params, &mut g, heads, &h1, &dheads, rows);
    relu_mask(&mut dh1, &h1);
    linear_backward(params, &mut g, fc1, x, &dh1, rows);
    StepResult { bce, kl, grads: g }
}

/// The encoder alone, q(z|x): μ | log σ² per row (rows, 2·latent) of `x` (rows, pixels).
pub fn encode(config: ModelConfig, params: &[f64], x: &[f64], rows: usize) -> Vec<f64> {
    let Layout { fc1, heads, .. } = config.layout();
    let mut h1 = linear(params, fc1, x, rows);
    relu(&mut h1);
    linear(params, heads, &h1, rows)
}

/// The decoder alone: the logits (rows, pixels) of latent codes `z` (rows, latent); σ of each is the Bernoulli
/// mean, the decoded grey level.
pub fn decode(config: ModelConfig, params: &[f64], z: &[f64], rows: usize) -> Vec<f64> {
    let Layout { fc3, fc4, .. } = config.layout();
    let mut h3 = linear(params, fc3, z, rows);
    relu(&mut h3);
    linear(params, fc4, &h3, rows)
}
