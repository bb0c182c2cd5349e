//! `vae web`: an interactive explorer of a trained model's latent space, in the browser, on WebGPU.
//!
//! The page (`web/`: plain ES modules, no build step) decodes and encodes with this project's own matmul kernel,
//! `shaders/matmul.wgsl` after `matmul_common.wgsl` and the contract's prelude, composed here exactly as the
//! native pipeline composes it, with the checkpoint's weights. What the page cannot compute for itself, the test
//! set's latent means (through [`Inference`], on this machine's GPU) and their principal plane, is computed here
//! when the site is built.
//!
//! - [`site`]: the site's files, built in memory: the page, the shader module, the weights, a manifest;
//! - [`server`]: a loopback HTTP server of exactly those files (`vae web`);
//! - [`Site::export`]: the same files as a static site (`vae web --export DIR`).

pub mod server;
pub mod site;

use std::path::{Path, PathBuf};

pub use server::Server;
pub use site::{Means, Site, SiteModel};

use crate::data::files::FILES;
use crate::data::mnist;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::kernels::gather::ByteMatrix;
use crate::model::inference::Inference;
use crate::training::checkpoint::Checkpoint;

/// What a site is built from.
#[derive(Clone, Debug)]
pub struct Options {
    /// A checkpoint written by `vae train`.
    pub checkpoint: PathBuf,
    /// The dataset directory whose test images give the latent means (left out, with a note, when its test
    /// files are missing).
    pub data: PathBuf,
    /// Use only the first N test images.
    pub test_samples: Option<usize>,
    /// The Train view's training images: the first N of the dataset's.
    pub train_samples: usize,
    /// Where the Train view's module is built (`scripts/build-web` writes [`default_trainer_dir`]); `None`, or a
    /// directory without it, serves the Train view without it (it then says how to build it).
    pub trainer: Option<PathBuf>,
    pub gpu: GpuOptions,
}

/// Test images the Train view evaluates, reconstructs and draws in its scatter (the first of the test set).
pub const TRAIN_VIEW_TEST_IMAGES: usize = 1000;

/// Where `scripts/build-web` writes the Train view's module: `target/web` of this source tree.
pub fn default_trainer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("web")
}

/// Builds the explorer of `options.checkpoint`: loads it, encodes the test set on the GPU (when the dataset's
/// test files are there) and puts the site together.
pub fn prepare(options: &Options) -> Result<Site> {
    let ck = Checkpoint::load(&options.checkpoint)?;
    let test = test_split(options, ck.model.latent)?;
    if let Some(test) = &test {
        ck.check_data(&options.checkpoint, test)?;
    }
    let image = match (ck.image, &test) {
        (Some((r, c)), _) => (r, c),
        (None, Some(t)) => (t.rows as u32, t.cols as u32),
        (None, None) => {
            return Err(Error::Invalid(format!(
                "{} does not record its image shape (it predates that), and there are no test images in {} to \
                 take it from: pass the --data the model was trained on",
                options.checkpoint.display(),
                options.data.display()
            )));
        }
    };
    let means = match &test {
        Some(test) => {
            let gpu = Gpu::new(options.gpu.clone())?;
            eprintln!(
                "encoding {} test images on {} for the latent means",
                test.n, gpu.info.name
            );
            Some(test_means(&gpu, &ck, test)?)
        }
        None => None,
    };
    let mut site = site::build(&SiteModel {
        name: display_name(&options.checkpoint),
        checkpoint: &ck,
        image,
        means: means.as_ref(),
    })?;
    if test.is_some() && mnist::find(&options.data, FILES[0]).is_some() {
        let data = mnist::load(&options.data)?;
        let train = data.train.take(Some(options.train_samples));
        let test = data.test.take(Some(TRAIN_VIEW_TEST_IMAGES));
        let module = options.trainer.as_deref().filter(|d| {
            let built = site::TRAINER_FILES.iter().all(|(f, _)| d.join(f).is_file());
            if !built {
                eprintln!(
                    "note: the Train view's module is not built in {} (scripts/build-web builds it): the page's \
                     Train view says so and trains nothing",
                    d.display()
                );
            }
            built
        });
        site.add_train_view(&train, &test, module)?;
    } else {
        eprintln!(
            "note: no MNIST training images in {}: the page's Train view has nothing to train on",
            options.data.display()
        );
    }
    Ok(site)
}

/// The test split of `options.data`, or `None` (with a note saying what the page then lacks) where the directory
/// has no test files. Files that are there but unreadable are errors, as in every other command.
fn test_split(options: &Options, latent: u32) -> Result<Option<mnist::Split>> {
    let dir = &options.data;
    if mnist::find(dir, FILES[2]).is_none() || mnist::find(dir, FILES[3]).is_none() {
        let plane = if latent > 2 {
            ", and its pad is the plane of z₁ and z₂ rather than of the means' first two principal components"
        } else {
            ""
        };
        eprintln!(
            "note: no test images in {} ({} and {}): the page shows no test-set latent means{plane}; pass --data \
             with the dataset the model was trained on to draw them",
            dir.display(),
            FILES[2],
            FILES[3],
        );
        return Ok(None);
    }
    Ok(Some(mnist::load(dir)?.test.take(options.test_samples)))
}

/// μ of q(z|x) for every test image, through the same GPU inference path as `vae latent`.
pub fn test_means(gpu: &Gpu, ck: &Checkpoint, test: &mnist::Split) -> Result<Means> {
    let inf = Inference::fitting(gpu, ck.model, &ck.params, ck.settings.seed)?;
    let data = ByteMatrix::upload(gpu, "test.images", &test.images, ck.model.pixels)?;
    let indices: Vec<u32> = (0..test.n as u32).collect();
    let mu = inf.encode(&data, &indices)?.mu;
    Ok(Means {
        mu,
        labels: test.labels.clone(),
    })
}

/// How the page names a checkpoint: its file name and the directory it is in (the run), never the whole path,
/// which an exported site would otherwise publish.
fn display_name(path: &Path) -> String {
    let file = path.file_name().map(|f| f.to_string_lossy().to_string());
    let run = path
        .parent()
        .and_then(Path::file_name)
        .map(|d| d.to_string_lossy().to_string());
    match (run, file) {
        (Some(run), Some(file)) => format!("{run}/{file}"),
        (None, Some(file)) => file,
        _ => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_a_checkpoint_by_its_run_and_file_only() {
        assert_eq!(
            display_name(Path::new("/home/me/runs/20261126/checkpoint.safetensors")),
            "20261126/checkpoint.safetensors"
        );
        assert_eq!(display_name(Path::new("ck.safetensors")), "ck.safetensors");
    }
}
