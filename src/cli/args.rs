//! Options several commands share, each converted to the library's types in one place.

use std::path::PathBuf;

use vae_wgpu::GpuOptions;
use vae_wgpu::training::settings::Settings;
use vae_wgpu::tune::TuneMode;

/// Adapter choice, shared by every command that opens a GPU.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct GpuArgs {
    /// Backend(s) to use: vulkan, metal, dx12 (comma-separated); default: wgpu's choice, or WGPU_BACKEND.
    #[arg(long, global = true)]
    pub backend: Option<String>,
    /// Adapter to use: a case-insensitive part of its name as `vae devices` prints it (e.g. llvmpipe, H200);
    /// default: WGPU_ADAPTER_NAME, else the high-performance adapter.
    #[arg(long, global = true)]
    pub adapter: Option<String>,
    /// Seconds any wait on the GPU may take before the program stops and calls it a hang (the last checkpoint
    /// stays) [default: 300].
    #[arg(long, global = true, value_name = "SECONDS", value_parser = parse_seconds)]
    pub gpu_timeout: Option<std::time::Duration>,
}

/// A positive number of seconds.
fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() => Ok(std::time::Duration::from_secs_f64(s)),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

impl From<&GpuArgs> for GpuOptions {
    fn from(a: &GpuArgs) -> Self {
        GpuOptions {
            backend: a.backend.clone(),
            adapter: a.adapter.clone(),
            wait_timeout: a.gpu_timeout,
            ..Default::default()
        }
    }
}

/// What the commands on a trained model share.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// A checkpoint written by `vae train` (<run>/checkpoint.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Directory with the IDX files the model was trained on (read only by the commands that need test images).
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Use only the first N test images.
    #[arg(long, value_name = "N")]
    pub test_samples: Option<usize>,
    /// Where to write the picture(s): a .png file, or a directory for `latent` [default: beside the checkpoint].
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

/// The model and data a benchmark or profile trains on; the defaults are `vae train`'s.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchModel {
    /// Directory with MNIST (random bytes of MNIST's shape are used when it is missing, and the output says so).
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Examples per step.
    #[arg(long, default_value_t = Settings::DEFAULT.batch_size)]
    pub batch_size: u32,
    /// Latent dimensions (the PyTorch example and BENCHMARKS.md use 20).
    #[arg(long, default_value_t = Settings::DEFAULT.latent)]
    pub latent: u32,
    /// Hidden units.
    #[arg(long, default_value_t = Settings::DEFAULT.hidden)]
    pub hidden: u32,
    /// Use only the first N training examples.
    #[arg(long, value_name = "N")]
    pub train_samples: Option<usize>,
}

/// How the matmul kernels are chosen: tuned on this adapter (cached), or the fixed portable ones.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TuneArgs {
    /// The kernel-choice cache [default: one file per adapter, driver and program version in the user's cache
    /// directory, e.g. ~/.cache/vae-wgpu/].
    #[arg(long, value_name = "FILE", global = true)]
    pub tune_cache: Option<PathBuf>,
    /// Do not tune: use the fixed portable kernels (the 64 tile on GPUs, the 128 tile on CPU adapters).
    #[arg(long, global = true)]
    pub no_tune: bool,
}

impl From<&TuneArgs> for TuneMode {
    fn from(a: &TuneArgs) -> Self {
        if a.no_tune {
            TuneMode::Off
        } else {
            TuneMode::Tune {
                cache: a.tune_cache.clone(),
            }
        }
    }
}
