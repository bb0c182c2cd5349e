//! Philox4x32-10 on the CPU: the reference for `shaders/philox.wgsl`, and the host's own generator (test inputs,
//! the epoch's shuffle). A draw is a pure function of (counter, key), so the GPU and the CPU can draw the very same
//! numbers independently, in any order.

pub const M0: u32 = 0xD251_1F53;
pub const M1: u32 = 0xCD9E_8D57;
pub const W0: u32 = 0x9E37_79B9;
pub const W1: u32 = 0xBB67_AE85;

/// Counter word 2 (the stream) of each use of the generator, so no two uses ever share a draw.
pub mod stream {
    /// ε of the reparameterization in training steps.
    pub const TRAIN_NOISE: u32 = 0;
    /// ε of the reparameterization when evaluating the test set.
    pub const EVAL_NOISE: u32 = 1;
    /// z ~ N(0, I) for sample grids.
    pub const SAMPLE: u32 = 2;
    /// The epoch's shuffle of the training set (host side).
    pub const SHUFFLE: u32 = 3;
    /// Host-side test inputs.
    pub const TEST_INPUT: u32 = 0xFFFF_0000;
    /// Parameter initialization.
    pub const INIT: u32 = 4;
    /// Dynamic binarization of training batches.
    pub const BINARIZE_TRAIN: u32 = 5;
    /// Binarization of the test set (the same every epoch).
    pub const BINARIZE_EVAL: u32 = 6;
    /// Importance-sampling noise (`vae eval --iw-samples`).
    pub const IW_NOISE: u32 = 7;
    /// Latent codes encoded for pictures (reconstructions, interpolation, the scatter).
    pub const PICTURES: u32 = 8;
}

/// The generator's key for a 64-bit seed: its low and high words.
pub fn key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// Ten rounds of Philox4x32 on `counter` under `key`.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let [mut c0, mut c1, mut c2, mut c3] = counter;
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c0);
        let (hi1, lo1) = mulhilo(M1, c2);
        (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0);
    }
    [c0, c1, c2, c3]
}

/// A uniform in (0, 1) from a word's top 23 bits: (2·(w >> 9) + 1) · 2⁻²⁴, exact in f32. (The 24-bit form
/// f32(w >> 8)·2⁻²⁴ + 2⁻²⁵ needs 25 significant bits, so it rounds: ties go to even, the largest value becomes
/// 1.0, and the bits depend on the device's rounding mode.)
pub fn uniform(word: u32) -> f32 {
    (word >> 9) as f32 * (1.0 / 8_388_608.0) + (1.0 / 16_777_216.0)
}

/// Box–Muller in f64 from two words, as `philox_normal` in WGSL computes it in f32:
/// √(−2 ln u0) · cos(π (2 u1 − 1)).
pub fn normal(w0: u32, w1: u32) -> f64 {
    let u0 = uniform(w0) as f64;
    let u1 = uniform(w1) as f64;
    (-2.0 * u0.ln()).sqrt() * (std::f64::consts::PI * (2.0 * u1 - 1.0)).cos()
}

/// The noise ε of one element: the normal from counter (element, step, stream, 0).
pub fn normal_at(key: [u32; 2], element: u32, step: u32, stream: u32) -> f64 {
    let w = philox4x32_10([element, step, stream, 0], key);
    normal(w[0], w[1])
}

/// A sequential generator on the host: counter (i, i >> 32, stream, lane) for the i-th block of four words.
#[derive(Clone, Debug)]
pub struct Philox {
    key: [u32; 2],
    stream: u32,
    block: u64,
    lane: u32,
    words: [u32; 4],
    used: usize,
}

impl Philox {
    pub fn new(seed: u64, stream: u32) -> Philox {
        Philox {
            key: key(seed),
            stream,
            block: 0,
            lane: 0,
            words: [0; 4],
            used: 4,
        }
    }

    /// A generator whose counters carry `lane` in their last word: independent of every other lane, e.g. one
    /// shuffle per epoch.
    pub fn with_lane(seed: u64, stream: u32, lane: u32) -> Philox {
        Philox {
            lane,
            ..Philox::new(seed, stream)
        }
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.used == 4 {
            self.words = philox4x32_10(
                [
                    self.block as u32,
                    (self.block >> 32) as u32,
                    self.stream,
                    self.lane,
                ],
                self.key,
            );
            self.block += 1;
            self.used = 0;
        }
        self.used += 1;
        self.words[self.used - 1]
    }

    /// A uniform in (0, 1).
    pub fn uniform(&mut self) -> f32 {
        uniform(self.next_u32())
    }

    /// A uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// An unbiased integer in 0..n (Lemire's multiply-and-reject).
    pub fn below(&mut self, n: u32) -> u32 {
        assert!(n > 0);
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = self.next_u32() as u64 * n as u64;
            if (m as u32) >= threshold {
                return (m >> 32) as u32;
            }
        }
    }

    /// A standard normal.
    pub fn normal(&mut self) -> f32 {
        let (w0, w1) = (self.next_u32(), self.next_u32());
        normal(w0, w1) as f32
    }

    /// Fisher–Yates shuffle of `0..n`.
    pub fn permutation(&mut self, n: u32) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n).collect();
        for i in (1..n as usize).rev() {
            let j = self.below(i as u32 + 1) as usize;
            p.swap(i, j);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Random123's known-answer vectors for Philox4x32-10.
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn uniform_is_open_interval_and_exact() {
        assert_eq!(uniform(0), 2f32.powi(-24));
        assert_eq!(uniform(u32::MAX), 1.0 - 2f32.powi(-24));
        assert!(uniform(u32::MAX) < 1.0);
        // Exact: the f64 computation gives the same value.
        for w in [0u32, 1 << 9, 12345 << 9, u32::MAX] {
            assert_eq!(
                uniform(w) as f64,
                (2.0 * (w >> 9) as f64 + 1.0) / 16_777_216.0
            );
        }
    }

    #[test]
    fn normals_have_unit_moments() {
        let key = key(7);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|i| normal_at(key, i, 3, 0)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard errors: 1/√n ≈ 0.0022 for the mean, √(2/n) ≈ 0.0032 for the variance; 5 of them.
        assert!(mean.abs() < 0.011, "mean {mean}");
        assert!((var - 1.0).abs() < 0.016, "variance {var}");
    }

    #[test]
    fn permutation_is_a_permutation_and_depends_on_seed() {
        let p = Philox::new(1, stream::SHUFFLE).permutation(1000);
        let mut sorted = p.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(p, Philox::new(2, stream::SHUFFLE).permutation(1000));
        assert_ne!(p, (0..1000).collect::<Vec<_>>());
    }
}
