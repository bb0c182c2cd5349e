//! Helpers shared by the integration tests that run the binary or build files.
#![allow(dead_code)] // each test target uses its own subset

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use vae_wgpu::{Gpu, GpuOptions};

/// The device every GPU test of a test binary shares. Fails (never skips) when there is none, saying how to get
/// one.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| match Gpu::new(GpuOptions::default()) {
        Ok(gpu) => {
            eprintln!("GPU tests on {}", gpu.info);
            gpu
        }
        Err(e) => panic!(
            "these tests need a GPU adapter and found none: {e}\n\
             They run the real shaders; they are not skipped without a GPU."
        ),
    })
}

/// The MNIST directory: data/mnist (where .ci/run links it), else ../shared/data/mnist. Fails, never skips.
pub fn mnist_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in [root.join("data/mnist"), root.join("../shared/data/mnist")] {
        if dir.join("train-images-idx3-ubyte.gz").is_file()
            || dir.join("train-images-idx3-ubyte").is_file()
        {
            return dir;
        }
    }
    panic!(
        "these tests need MNIST in data/mnist/ (see data/README.md for where to get the four files)"
    );
}

/// A fresh path under the temporary directory, unique to this process and call (not created).
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vae-test-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// An IDX file: the 4 magic bytes, big-endian dimensions, data.
pub fn idx(magic: [u8; 4], dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = magic.to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A checkpoint of `model` initialized under `seed`, with zero Adam moments, at step 3 of epoch 1, with the
/// default settings for that model's sizes.
pub fn checkpoint(
    model: vae_wgpu::model::ModelConfig,
    seed: u64,
) -> vae_wgpu::training::checkpoint::Checkpoint {
    use vae_wgpu::training::settings::Settings;
    let params = model.init(seed);
    vae_wgpu::training::checkpoint::Checkpoint {
        model,
        m: vec![0.0; params.len()],
        v: vec![0.0; params.len()],
        params,
        step: 3,
        epoch: 1,
        epoch_step: 0,
        partial: Default::default(),
        partial_seconds: 0.0,
        settings: Settings {
            hidden: model.hidden,
            latent: model.latent,
            seed,
            ..Settings::DEFAULT
        },
        image: None,
        metrics: String::new(),
        kernels: Default::default(),
    }
}

/// `n` random images of `pixels` bytes like MNIST's (mostly 0, some 255, some in between) and random labels,
/// from Philox under `seed`: a training set for the step and sweep tests.
pub fn random_split(n: usize, pixels: usize, seed: u64) -> vae_wgpu::data::mnist::Split {
    use vae_wgpu::kernels::philox::{Philox, stream};
    let mut r = Philox::new(seed, stream::TEST_INPUT);
    vae_wgpu::data::mnist::Split {
        images: (0..n * pixels)
            .map(|_| match r.below(4) {
                0 | 1 => 0,
                2 => 255,
                _ => r.below(256) as u8,
            })
            .collect(),
        labels: (0..n).map(|_| r.below(10) as u8).collect(),
        n,
        rows: 1,
        cols: pixels,
    }
}
