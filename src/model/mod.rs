//! The model: PyTorch's VAE example (784-400-z, ReLU), its parameters in one flat buffer.
//!
//! Flat layout, in order (weights in PyTorch's (out, in) layout, each bias right after its weight so one
//! weight-gradient matmul writes both, see `Epilogue::BiasGrad`):
//!
//! | tensor | shape | PyTorch name |
//! |---|---|---|
//! | fc1.w | (hidden, pixels) | `fc1.weight` |
//! | fc1.b | (hidden) | `fc1.bias` |
//! | heads.w | (2·latent, hidden) | `fc21.weight` (rows 0..latent) then `fc22.weight` |
//! | heads.b | (2·latent) | `fc21.bias` then `fc22.bias` |
//! | fc3.w | (hidden, latent) | `fc3.weight` |
//! | fc3.b | (hidden) | `fc3.bias` |
//! | fc4.w | (pixels, hidden) | `fc4.weight` |
//! | fc4.b | (pixels) | `fc4.bias` |
//!
//! The two encoder heads (μ and log σ²) are stacked into one matrix, so the heads are one matmul.

pub mod inference;
pub mod net;
pub mod reference;

use crate::error::{Error, Result};
use crate::kernels::philox::{Philox, stream};

/// Sizes of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    pub pixels: u32,
    pub hidden: u32,
    pub latent: u32,
}

/// One linear layer's place in the flat buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear {
    pub name: &'static str,
    pub out: u32,
    pub inp: u32,
    /// Element offset of the weight; the bias follows at `weight + out·in`.
    pub weight: usize,
}

impl Linear {
    pub fn bias(&self) -> usize {
        self.weight + self.out as usize * self.inp as usize
    }
    pub fn len(&self) -> usize {
        self.out as usize * (self.inp as usize + 1)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The four layers in flat order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub fc1: Linear,
    pub heads: Linear,
    pub fc3: Linear,
    pub fc4: Linear,
    pub len: usize,
}

impl ModelConfig {
    pub fn new(pixels: u32, hidden: u32, latent: u32) -> Result<ModelConfig> {
        for (name, v, flag) in [
            ("pixels", pixels, "the dataset"),
            ("hidden", hidden, "--hidden"),
            ("latent", latent, "--latent"),
        ] {
            if v == 0 {
                return Err(Error::Invalid(format!(
                    "{name} size is 0: it must be at least 1 (set by {flag})"
                )));
            }
        }
        Ok(ModelConfig {
            pixels,
            hidden,
            latent,
        })
    }

    /// (name, out, in) of each layer, in flat order: the one description the layout and the size checks use.
    fn layers(&self) -> [(&'static str, u32, u32); 4] {
        [
            ("fc1", self.hidden, self.pixels),
            ("heads", 2 * self.latent, self.hidden),
            ("fc3", self.hidden, self.latent),
            ("fc4", self.pixels, self.hidden),
        ]
    }

    /// Parameters (weights and biases) of the model, in u64 so that sizes past any device's limits still count.
    pub fn param_count(&self) -> u64 {
        self.layers()
            .iter()
            .map(|&(_, out, inp)| out as u64 * (inp as u64 + 1))
            .sum()
    }

    pub fn layout(&self) -> Layout {
        let mut at = 0usize;
        let [fc1, heads, fc3, fc4] = self.layers().map(|(name, out, inp)| {
            let l = Linear {
                name,
                out,
                inp,
                weight: at,
            };
            at += l.len();
            l
        });
        Layout {
            fc1,
            heads,
            fc3,
            fc4,
            len: at,
        }
    }

    /// PyTorch's `nn.Linear` initialization, U(−1/√in, 1/√in) for weights and biases, drawn from Philox
    /// (stream INIT) under `seed`. The heads draw as fc21 and fc22 would, each with fan-in `hidden`.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let layout = self.layout();
        let mut params = vec![0f32; layout.len];
        let mut rng = Philox::new(seed, stream::INIT);
        for l in [layout.fc1, layout.heads, layout.fc3, layout.fc4] {
            let bound = 1.0 / (l.inp as f32).sqrt();
            for p in &mut params[l.weight..l.weight + l.len()] {
                *p = rng.range(-bound, bound);
            }
        }
        params
    }
}

/// σ(l): the Bernoulli mean of a decoder logit, the grey level of a decoded pixel (pictures, on the host).
pub fn sigmoid(l: f32) -> f32 {
    1.0 / (1.0 + (-l).exp())
}
