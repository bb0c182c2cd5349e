//! `vae`: the command-line program. Each subcommand lives in the library; this file parses arguments and turns
//! errors into a message and a non-zero exit.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vae_wgpu::bench;
use vae_wgpu::gpu::{self, Gpu, GpuOptions};

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
    /// Train the VAE on MNIST (or any IDX set of 8-bit images), writing metrics.csv and pictures per epoch.
    Train(Box<TrainArgs>),
    /// Benchmarks (see BENCHMARKS.md). `vae bench matmul`: the model's matmul shapes and a large square, in
    /// GFLOP/s, each checked against the CPU reference before it is timed.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
        #[command(flatten)]
        gpu: GpuArgs,
    },
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Directory with the four IDX files (gzipped or not); missing files are downloaded there.
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Output directory for metrics.csv and the pictures [default: runs/<UTC date-time>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Number of passes over the training set.
    #[arg(long, default_value_t = 10)]
    epochs: u32,
    /// Examples per step; the last partial batch of an epoch is trained too [default: 128].
    #[arg(long)]
    batch_size: Option<u32>,
    /// Latent dimensions: 2 can be drawn directly; 20 is the PyTorch example's setting [default: 2].
    #[arg(long)]
    latent: Option<u32>,
    /// Units of the encoder's and decoder's hidden layers [default: 400].
    #[arg(long)]
    hidden: Option<u32>,
    /// Adam's learning rate [default: 0.001].
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f32>,
    /// Seed of the initialization, the shuffling and the noise; the same seed on the same adapter gives the same
    /// losses [default: 1].
    #[arg(long)]
    seed: Option<u64>,
    /// Weight on the KL term (β-VAE); 1 trains the ELBO [default: 1].
    #[arg(long, allow_negative_numbers = true)]
    beta: Option<f32>,
    /// Epochs over which the KL weight ramps linearly from 0 to --beta [default: 0, no warm-up].
    #[arg(long, value_name = "EPOCHS", allow_negative_numbers = true)]
    kl_warmup: Option<f32>,
    /// Dynamically binarize each batch on the GPU (pixel = 1 with probability grey level / 255), the setup of the
    /// log-likelihood literature; the test set is binarized once, the same way every epoch.
    #[arg(long)]
    binarize: bool,
    /// Continue the run saved in this checkpoint (its settings are kept; --epochs is the total).
    #[arg(long, value_name = "CHECKPOINT")]
    resume: Option<PathBuf>,
    /// Use only the first N training examples (quick runs and tests).
    #[arg(long, value_name = "N")]
    train_samples: Option<usize>,
    /// Use only the first N test examples.
    #[arg(long, value_name = "N")]
    test_samples: Option<usize>,
    /// Steps between loss readbacks (and per GPU submission).
    #[arg(long, default_value_t = 50)]
    log_interval: u32,
    /// Download MNIST from this URL prefix instead of the built-in mirrors (repeatable).
    #[arg(long = "mirror", value_name = "URL")]
    mirrors: Vec<String>,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// The matmuls of one training step (batch 128, 784-400-20) and a large square.
    Matmul {
        /// Batch size of the model shapes.
        #[arg(long, default_value_t = 128)]
        batch: u32,
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

/// Adapter choice, shared by every command that opens a GPU.
#[derive(clap::Args, Clone, Debug, Default)]
struct GpuArgs {
    /// Backend(s) to use: vulkan, metal, dx12 (comma-separated); default: wgpu's choice, or WGPU_BACKEND.
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Adapter to use: a case-insensitive part of its name as `vae devices` prints it (e.g. llvmpipe, H200);
    /// default: WGPU_ADAPTER_NAME, else the high-performance adapter.
    #[arg(long, global = true)]
    adapter: Option<String>,
}

impl GpuArgs {
    fn open(&self) -> vae_wgpu::Result<Gpu> {
        Gpu::new(GpuOptions {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            power: None,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices { backend } => devices(backend),
        Command::Train(args) => train(*args),
        Command::Bench { what, gpu } => match what {
            BenchWhat::Matmul {
                batch,
                square,
                reps,
                runs,
            } => bench_matmul(&gpu, batch, square, reps, runs),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
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

fn bench_matmul(
    args: &GpuArgs,
    batch: u32,
    square: u32,
    reps: u32,
    runs: u32,
) -> vae_wgpu::Result<()> {
    let gpu = args.open()?;
    println!("matmul on {}", gpu.info);
    let mut shapes = bench::model_shapes(batch, 400, 20, 784);
    if square > 0 {
        shapes.push((
            format!("square{square}"),
            vae_wgpu::kernels::matmul::Layout::NT,
            (square, square, square),
        ));
    }
    println!(
        "{:<18} {:<6} {:>18} {:>10} {:>10} {:>9}",
        "kernel", "layout", "m×n×k", "median µs", "GFLOP/s", "err/bound"
    );
    for (name, layout, shape) in shapes {
        let big = shape.0 as u64 * shape.1 as u64 * shape.2 as u64 > 1 << 30;
        let row =
            bench::matmul_bench(&gpu, &name, layout, shape, if big { 2 } else { reps }, runs)?;
        let (m, n, k) = row.shape;
        println!(
            "{:<18} {:<6} {:>18} {:>10.1} {:>10.2} {:>9.3}",
            row.name,
            format!("{:?}", row.layout),
            format!("{m}×{n}×{k}"),
            row.median_us,
            row.gflops,
            row.error_ratio
        );
    }
    Ok(())
}

fn train(a: TrainArgs) -> vae_wgpu::Result<()> {
    let opts = vae_wgpu::run::TrainOptions {
        data: a.data,
        out: a.out,
        epochs: a.epochs,
        batch_size: a.batch_size,
        latent: a.latent,
        hidden: a.hidden,
        lr: a.lr,
        seed: a.seed,
        beta: a.beta,
        kl_warmup: a.kl_warmup,
        binarize: a.binarize,
        resume: a.resume,
        train_samples: a.train_samples,
        test_samples: a.test_samples,
        log_interval: a.log_interval,
        gpu: GpuOptions {
            backend: a.gpu.backend,
            adapter: a.gpu.adapter,
            power: None,
        },
        mirrors: a.mirrors,
        verbose: true,
    };
    vae_wgpu::run::train(&opts).map(|_| ())
}
