//! The commands on a trained model: `vae eval`, `sample`, `reconstruct`, `interpolate` and `latent`. Each opens
//! the checkpoint and a device; only those that need test images read the dataset.

use std::path::{Path, PathBuf};

use vae_wgpu::data::mnist::{self, Split};
use vae_wgpu::gpu::Gpu;
use vae_wgpu::kernels::gather::ByteMatrix;
use vae_wgpu::model::inference::Inference;
use vae_wgpu::output::pictures;
use vae_wgpu::training::checkpoint::Checkpoint;
use vae_wgpu::training::eval;
use vae_wgpu::{Error, Result};

use super::args::ModelArgs;

/// A checkpoint and a device: what every command on a trained model starts from.
struct Loaded {
    ck: Checkpoint,
    gpu: Gpu,
    args: ModelArgs,
}

impl Loaded {
    fn open(args: ModelArgs) -> Result<Loaded> {
        let ck = Checkpoint::load(&args.checkpoint)?;
        let gpu = Gpu::new((&args.gpu).into())?;
        Ok(Loaded { ck, gpu, args })
    }

    /// The test images (`--data`, `--test-samples`), checked against the model.
    fn test(&self) -> Result<Split> {
        let test = mnist::load(&self.args.data)?
            .test
            .take(self.args.test_samples);
        self.ck.check_data(&self.args.checkpoint, &test)?;
        Ok(test)
    }

    /// (rows, cols) of the images: recorded in the checkpoint, else (older checkpoints) the test data's.
    fn image(&self) -> Result<(usize, usize)> {
        match self.ck.image {
            Some((r, c)) => Ok((r as usize, c as usize)),
            None => {
                let test = self.test().map_err(|e| {
                    Error::Invalid(format!(
                        "{} does not record its image shape (it predates that), so the test images give it: {e}",
                        self.args.checkpoint.display()
                    ))
                })?;
                Ok((test.rows, test.cols))
            }
        }
    }

    fn inference(&self) -> Result<Inference<'_>> {
        let ck = &self.ck;
        Inference::fitting(&self.gpu, ck.model, &ck.params, ck.settings.seed)
    }

    fn upload(&self, test: &Split) -> Result<ByteMatrix> {
        ByteMatrix::upload(&self.gpu, "test.images", &test.images, self.ck.model.pixels)
    }

    /// `--out`, else `default` beside the checkpoint (the checkpoint's directory when `default` is empty).
    fn out(&self, default: &str) -> PathBuf {
        self.args.out.clone().unwrap_or_else(|| {
            let dir = self.args.checkpoint.parent().map(Path::to_path_buf);
            dir.unwrap_or_default().join(default)
        })
    }
}

fn wrote(path: &Path) {
    println!("wrote {}", path.display());
}

pub fn sample(args: ModelArgs, n: usize, seed: u64) -> Result<()> {
    let m = Loaded::open(args)?;
    let out = m.out("sample.png");
    let side = ((n as f64).sqrt().ceil() as usize).max(1);
    pictures::sample_grid(&m.inference()?, side, seed, m.image()?, &out)?;
    wrote(&out);
    Ok(())
}

pub fn reconstruct(args: ModelArgs, n: usize) -> Result<()> {
    let m = Loaded::open(args)?;
    let (out, test) = (m.out("reconstruction.png"), m.test()?);
    pictures::reconstruct(&m.inference()?, &m.upload(&test)?, &test, n, &out)?;
    wrote(&out);
    Ok(())
}

pub fn interpolate(args: ModelArgs, pairs: usize, steps: usize) -> Result<()> {
    let m = Loaded::open(args)?;
    let (out, test) = (m.out("interpolation.png"), m.test()?);
    let data = m.upload(&test)?;
    pictures::interpolate(&m.inference()?, &data, &test, pairs, steps.max(2), &out)?;
    wrote(&out);
    Ok(())
}

pub fn latent(args: ModelArgs, side: usize) -> Result<()> {
    let m = Loaded::open(args)?;
    let (dir, test) = (m.out(""), m.test()?);
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
        what: format!("creating {}", dir.display()),
        message: e.to_string(),
    })?;
    let inf = m.inference()?;
    let scatter = dir.join("latent_scatter.png");
    pictures::latent_scatter(&inf, &m.upload(&test)?, &test, &scatter)?;
    wrote(&scatter);
    let latent = m.ck.model.latent;
    if latent == 2 {
        let manifold = dir.join("manifold.png");
        pictures::manifold(&inf, side.max(1), (test.rows, test.cols), &manifold)?;
        wrote(&manifold);
    } else {
        println!("(the manifold is drawn for 2-D latent spaces; this model has {latent})");
    }
    Ok(())
}

pub fn eval(args: ModelArgs, iw_samples: Option<u32>) -> Result<()> {
    let m = Loaded::open(args)?;
    let test = m.test()?;
    let report = eval::evaluate(&m.gpu, &m.ck, &test, iw_samples)?;
    let data = if m.ck.settings.binarize {
        "binarized test set"
    } else {
        "grey-level test set"
    };
    println!(
        "{} test images ({data}), {} on {}",
        test.n,
        m.args.checkpoint.display(),
        m.gpu.info
    );
    println!(
        "ELBO:     -{:.3} nats per image (loss {:.3} = BCE {:.3} + KL {:.3}; one z sample per image)",
        report.loss, report.loss, report.bce, report.kl
    );
    if let (Some(k), Some(ll)) = (iw_samples, report.log_likelihood) {
        println!(
            "log p(x) ≈ {ll:.3} nats per image (importance sampling, K = {k}); {:.3} nats above the ELBO",
            ll + report.loss
        );
    }
    Ok(())
}
