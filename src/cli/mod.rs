//! The command-line layer: clap's types and the commands' bodies. It parses, converts options once into the
//! library's types, calls the library, and turns errors into a message and a non-zero exit.

mod args;
mod model;
mod perf;
mod train;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vae_wgpu::gpu::{self, GpuOptions};

use args::{BenchModel, GpuArgs, ModelArgs, TuneArgs};

#[derive(Parser)]
#[command(
    name = "vae",
    version,
    about = "A variational autoencoder trained with WGSL compute shaders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter wgpu can see: name, backend, device type, driver.
    Devices {
        /// Only these backends (comma-separated: vulkan, metal, dx12); default: all, or WGPU_BACKEND.
        #[arg(long)]
        backend: Option<String>,
    },
    /// Download MNIST's four IDX files into --data (those missing), md5-checked; `vae train` does so too.
    Fetch {
        /// Directory for the four IDX files.
        #[arg(long, default_value = "data/mnist")]
        data: PathBuf,
        /// Download from this URL prefix instead of the built-in mirrors (repeatable).
        #[arg(long = "mirror", value_name = "URL")]
        mirrors: Vec<String>,
    },
    /// Train the VAE on MNIST (or any IDX set of 8-bit images), writing metrics.csv and pictures per epoch.
    Train(Box<train::TrainArgs>),
    /// Train a grid of models (every --beta × --seeds × --lr) together in one batched step over the same batches,
    /// each written to its own directory as `vae train` writes a run, with sweep.csv, sweep.png and
    /// rate_distortion.png beside them.
    Sweep(Box<train::SweepArgs>),
    /// The test-set ELBO of a checkpoint (with its BCE and KL parts) and, with --iw-samples, an importance-
    /// sampled estimate of log p(x).
    Eval {
        #[command(flatten)]
        common: ModelArgs,
        /// Importance samples per image for the log-likelihood estimate (IWAE bound; 5000 in the IWAE paper).
        #[arg(long, value_name = "K")]
        iw_samples: Option<u32>,
    },
    /// A grid of images decoded from z ~ N(0, I) (needs no dataset).
    Sample {
        #[command(flatten)]
        common: ModelArgs,
        /// Number of images (drawn as a square grid, rounded up).
        #[arg(long, default_value_t = 64)]
        n: usize,
        /// Seed of the latent draws.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The first test images (top) over their reconstructions (bottom).
    Reconstruct {
        #[command(flatten)]
        common: ModelArgs,
        /// Number of test images.
        #[arg(long, default_value_t = 8)]
        n: usize,
    },
    /// Decoded straight lines in latent space between pairs of test images, one pair per row.
    Interpolate {
        #[command(flatten)]
        common: ModelArgs,
        /// Number of pairs (rows).
        #[arg(long, default_value_t = 6)]
        pairs: usize,
        /// Points along each line.
        #[arg(long, default_value_t = 10)]
        steps: usize,
    },
    /// The latent space: the test set's latent means coloured by digit (first two principal components beyond
    /// 2-D) and, for 2-D latents, the manifold of decoded grid points (the paper's Figure 4).
    Latent {
        #[command(flatten)]
        common: ModelArgs,
        /// Grid points per side of the manifold.
        #[arg(long, default_value_t = 20)]
        side: usize,
    },
    /// The latent-space explorer in the browser (WebGPU, this project's own kernels): serve it on this machine,
    /// or --export it as a static site.
    Web(Box<web::WebArgs>),
    /// Per-kernel GPU timings of training steps (timestamp queries), a table and a Chrome/Perfetto trace.
    Profile {
        /// Training steps to profile.
        #[arg(long, default_value_t = 20)]
        steps: u32,
        #[command(flatten)]
        model: BenchModel,
        /// Where to write the Chrome/Perfetto trace (open in chrome://tracing or ui.perfetto.dev).
        #[arg(long, default_value = "profile_trace.json")]
        trace: PathBuf,
        /// Wrap the profiled steps in a graphics-debugger capture, every dispatch labelled (under RenderDoc, e.g.
        /// `renderdoccmd capture vae profile --capture`, Xcode or PIX).
        #[arg(long)]
        capture: bool,
        #[command(flatten)]
        tune: TuneArgs,
        #[command(flatten)]
        gpu: GpuArgs,
    },
    /// Measure every matmul kernel candidate for every product of a training run on this adapter, check each
    /// against the CPU reference, print the table and cache the fastest (training then starts at once).
    Tune {
        #[command(flatten)]
        model: BenchModel,
        /// Timed submissions per candidate (the median is taken).
        #[arg(long, default_value_t = 5)]
        runs: u32,
        #[command(flatten)]
        tune: TuneArgs,
        #[command(flatten)]
        gpu: GpuArgs,
    },
    /// Benchmarks (see BENCHMARKS.md), each kernel checked against its CPU reference before it is timed.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
        #[command(flatten)]
        tune: TuneArgs,
        #[command(flatten)]
        gpu: GpuArgs,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Training epochs over the full training set at each batch size: warm-up, repetitions, the median.
    Epoch {
        #[command(flatten)]
        model: BenchModel,
        /// Batch sizes to time (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "128,1024")]
        batch_sizes: Vec<u32>,
        /// Untimed epochs first.
        #[arg(long, default_value_t = 1)]
        warmup: u32,
        /// Timed epochs (the median is reported).
        #[arg(long, default_value_t = 3)]
        reps: u32,
        /// Seed of the initialization, the shuffling and the noise (and of the test loss's noise).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Epochs of M models trained together in one batched step (as `vae sweep` trains them), against M runs of
    /// one: the epoch time, samples/s summed over the models, and the ratio.
    Sweep {
        #[command(flatten)]
        model: BenchModel,
        /// Model counts to time (comma-separated); one model is always timed, as the baseline.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
        models: Vec<u32>,
        /// Untimed epochs first.
        #[arg(long, default_value_t = 1)]
        warmup: u32,
        /// Timed epochs (the median is reported).
        #[arg(long, default_value_t = 3)]
        reps: u32,
    },
    /// Every matmul of one training step (read from the step's plan), in GFLOP/s, and a large square.
    Matmul {
        #[command(flatten)]
        model: BenchModel,
        /// Side of the square product (0 to skip it).
        #[arg(long, default_value_t = 2048)]
        square: u32,
        /// Dispatches per timed submission.
        #[arg(long, default_value_t = 20)]
        reps: u32,
        /// Timed submissions (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: u32,
    },
}

/// Runs the command line's command.
pub fn main() -> ExitCode {
    // A panic is a bug in this program, never the user's fault: say so plainly, without a backtrace dump.
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "internal error (a bug in vae-wgpu; please report it with the command you ran): {info}"
        );
    }));
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        // The shell's convention for a program stopped by SIGINT.
        Err(e @ vae_wgpu::Error::Interrupted(_)) => {
            eprintln!("{e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> vae_wgpu::Result<()> {
    match command {
        Command::Devices { backend } => devices(backend),
        Command::Fetch { data, mirrors } => fetch(&data, &mirrors),
        Command::Train(args) => train::train(*args),
        Command::Sweep(args) => train::sweep(*args),
        Command::Eval { common, iw_samples } => model::eval(common, iw_samples),
        Command::Sample { common, n, seed } => model::sample(common, n, seed),
        Command::Reconstruct { common, n } => model::reconstruct(common, n),
        Command::Interpolate {
            common,
            pairs,
            steps,
        } => model::interpolate(common, pairs, steps),
        Command::Latent { common, side } => model::latent(common, side),
        Command::Web(args) => web::web(*args),
        Command::Profile {
            steps,
            model,
            trace,
            capture,
            tune,
            gpu,
        } => perf::profile(&gpu, &tune, &model, steps, &trace, capture),
        Command::Tune {
            model,
            runs,
            tune,
            gpu,
        } => perf::tune(&gpu, &tune, &model, runs),
        Command::Bench { what, tune, gpu } => match what {
            BenchWhat::Epoch {
                model,
                batch_sizes,
                warmup,
                reps,
                seed,
            } => perf::epoch(&gpu, &tune, &model, &batch_sizes, warmup, reps, seed),
            BenchWhat::Sweep {
                model,
                models,
                warmup,
                reps,
            } => perf::sweep(&gpu, &tune, &model, &models, (warmup, reps)),
            BenchWhat::Matmul {
                model,
                square,
                reps,
                runs,
            } => perf::matmul(&gpu, &tune, &model, square, reps, runs),
        },
    }
}

fn fetch(dir: &std::path::Path, mirrors: &[String]) -> vae_wgpu::Result<()> {
    let data = vae_wgpu::data::mnist::ensure(dir, mirrors, true)?;
    println!(
        "MNIST in {}: {} training and {} test images of {}x{}",
        dir.display(),
        data.train.n,
        data.test.n,
        data.train.rows,
        data.train.cols
    );
    Ok(())
}

fn devices(backend: Option<String>) -> vae_wgpu::Result<()> {
    let options = GpuOptions {
        backend,
        ..Default::default()
    }
    .with_env();
    let adapters = gpu::list_adapters(&options)?;
    if adapters.is_empty() {
        return Err(vae_wgpu::Error::NoAdapter {
            wanted: "any backend".into(),
        });
    }
    println!("{:<40} {:<8} {:<14} driver", "adapter", "backend", "type");
    for a in adapters {
        println!(
            "{:<40} {:<8} {:<14} {} {}",
            a.name,
            format!("{:?}", a.backend),
            format!("{:?}", a.device_type),
            a.driver,
            a.driver_info
        );
    }
    Ok(())
}
