//! `vae`: the command-line program. Each subcommand lives in the library; this file parses arguments and turns
//! errors into a message and a non-zero exit.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vae_wgpu::data::mnist::{self, Split};
use vae_wgpu::gpu::{self, Gpu, GpuOptions};
use vae_wgpu::kernels::gather::ByteMatrix;
use vae_wgpu::kernels::matmul::Tile;
use vae_wgpu::model::inference::Inference;
use vae_wgpu::output::pictures;
use vae_wgpu::perf::bench;
use vae_wgpu::training::checkpoint::Checkpoint;

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
    /// The test-set ELBO of a checkpoint (with its BCE and KL parts) and, with --iw-samples, an importance-
    /// sampled estimate of log p(x).
    Eval {
        #[command(flatten)]
        common: ModelArgs,
        /// Importance samples per image for the log-likelihood estimate (IWAE bound; 5000 in the IWAE paper).
        #[arg(long, value_name = "K")]
        iw_samples: Option<u32>,
    },
    /// A grid of images decoded from z ~ N(0, I).
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
        /// Wrap the profiled steps in a graphics-debugger capture (when running under RenderDoc, Xcode or PIX).
        #[arg(long)]
        capture: bool,
        #[command(flatten)]
        gpu: GpuArgs,
    },
    /// Benchmarks (see BENCHMARKS.md). `vae bench matmul`: the model's matmul shapes and a large square, in
    /// GFLOP/s, each checked against the CPU reference before it is timed.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
        #[command(flatten)]
        gpu: GpuArgs,
    },
}

/// What the commands on a trained model share.
#[derive(clap::Args)]
struct ModelArgs {
    /// A checkpoint written by `vae train` (<run>/checkpoint.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Directory with the IDX files the model was trained on.
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Use only the first N test images.
    #[arg(long, value_name = "N")]
    test_samples: Option<usize>,
    /// Where to write the picture(s): a .png file, or a directory for `latent` [default: beside the checkpoint].
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    gpu: GpuArgs,
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

/// The model and data a benchmark or profile trains on.
#[derive(clap::Args, Clone, Debug)]
struct BenchModel {
    /// Directory with MNIST (random bytes of MNIST's shape are used when it is missing, and the output says so).
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Examples per step.
    #[arg(long, default_value_t = 128)]
    batch_size: u32,
    /// Latent dimensions.
    #[arg(long, default_value_t = 20)]
    latent: u32,
    /// Hidden units.
    #[arg(long, default_value_t = 400)]
    hidden: u32,
    /// Use only the first N training examples.
    #[arg(long, value_name = "N")]
    train_samples: Option<usize>,
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
    },
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
            ..Default::default()
        })
    }
}

fn main() -> ExitCode {
    // A panic is a bug in this program, never the user's fault: say so plainly, without a backtrace dump.
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "internal error (a bug in vae-wgpu; please report it with the command you ran): {info}"
        );
    }));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices { backend } => devices(backend),
        Command::Train(args) => train(*args),
        Command::Profile {
            steps,
            model,
            trace,
            capture,
            gpu,
        } => profile(&gpu, &model, steps, &trace, capture),
        Command::Eval { common, iw_samples } => eval(common, iw_samples),
        Command::Sample { common, n, seed } => with_model(common, "sample.png", |m, out| {
            let side = (n as f64).sqrt().ceil() as usize;
            pictures::sample_grid(&m.inference()?, side.max(1), seed, m.tile(), out)
        }),
        Command::Reconstruct { common, n } => with_model(common, "reconstruction.png", |m, out| {
            pictures::reconstruct(&m.inference()?, &m.images()?, &m.test, n, out)
        }),
        Command::Interpolate {
            common,
            pairs,
            steps,
        } => with_model(common, "interpolation.png", |m, out| {
            pictures::interpolate(
                &m.inference()?,
                &m.images()?,
                &m.test,
                pairs,
                steps.max(2),
                out,
            )
        }),
        Command::Latent { common, side } => with_model(common, "", |m, out| {
            std::fs::create_dir_all(out).map_err(|e| vae_wgpu::Error::Io {
                what: format!("creating {}", out.display()),
                message: e.to_string(),
            })?;
            let inf = m.inference()?;
            pictures::latent_scatter(&inf, &m.images()?, &m.test, &out.join("latent_scatter.png"))?;
            println!("wrote {}", out.join("latent_scatter.png").display());
            if m.ck.model.latent == 2 {
                pictures::manifold(&inf, side.max(1), m.tile(), &out.join("manifold.png"))?;
                println!("wrote {}", out.join("manifold.png").display());
            } else {
                println!(
                    "(the manifold is drawn for 2-D latent spaces; this model has {})",
                    m.ck.model.latent
                );
            }
            Ok(())
        }),
        Command::Bench { what, gpu } => match what {
            BenchWhat::Matmul {
                batch,
                square,
                reps,
                runs,
            } => bench_matmul(&gpu, batch, square, reps, runs),
            BenchWhat::Epoch {
                model,
                batch_sizes,
                warmup,
                reps,
            } => bench_epoch(&gpu, &model, &batch_sizes, warmup, reps),
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

    println!("(tile * = the one this adapter uses for the shape)");
    println!(
        "{:<18} {:<6} {:<6} {:>18} {:>10} {:>10} {:>9}",
        "kernel", "tile", "layout", "m×n×k", "median µs", "GFLOP/s", "err/bound"
    );
    for (name, layout, shape) in shapes {
        let big = shape.0 as u64 * shape.1 as u64 * shape.2 as u64 > 1 << 30;
        for tile in [Tile::T64, Tile::T128] {
            let row = bench::matmul_bench(
                &gpu,
                tile,
                &name,
                layout,
                shape,
                if big { 2 } else { reps },
                runs,
            )?;
            let (m, n, k) = row.shape;
            println!(
                "{:<18} {:<6} {:<6} {:>18} {:>10.1} {:>10.2} {:>9.3}",
                row.name,
                format!(
                    "{}{}",
                    tile.size(),
                    if tile == Tile::for_shape(&gpu, shape.0, shape.1) {
                        "*"
                    } else {
                        ""
                    }
                ),
                format!("{:?}", row.layout),
                format!("{m}×{n}×{k}"),
                row.median_us,
                row.gflops,
                row.error_ratio
            );
        }
    }
    Ok(())
}

fn train(a: TrainArgs) -> vae_wgpu::Result<()> {
    let opts = vae_wgpu::training::run::TrainOptions {
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
            ..Default::default()
        },
        mirrors: a.mirrors,
        verbose: true,
    };
    vae_wgpu::training::run::train(&opts).map(|_| ())
}

/// A checkpoint, its test data and a device: what every command on a trained model starts from.
struct Loaded {
    ck: Checkpoint,
    test: Split,
    gpu: Gpu,
}

impl Loaded {
    fn open(a: &ModelArgs) -> vae_wgpu::Result<Loaded> {
        let ck = Checkpoint::load(&a.checkpoint)?;
        let test = mnist::load(&a.data)?.test.take(a.test_samples);
        pictures::check_data(&ck, &a.checkpoint, &test)?;
        let gpu = a.gpu.open()?;
        Ok(Loaded { ck, test, gpu })
    }
    fn inference(&self) -> vae_wgpu::Result<Inference<'_>> {
        Inference::new(
            &self.gpu,
            self.ck.model,
            &self.ck.params,
            pictures::INFER_ROWS,
            self.ck.seed,
        )
    }
    fn images(&self) -> vae_wgpu::Result<ByteMatrix> {
        ByteMatrix::upload(
            &self.gpu,
            "test.images",
            &self.test.images,
            self.ck.model.pixels,
        )
    }
    fn tile(&self) -> (usize, usize) {
        (self.test.rows, self.test.cols)
    }
}

/// Opens the model, runs `f` with the output path (`--out`, else `default` beside the checkpoint) and says what
/// it wrote.
fn with_model(
    a: ModelArgs,
    default: &str,
    f: impl FnOnce(&Loaded, &std::path::Path) -> vae_wgpu::Result<()>,
) -> vae_wgpu::Result<()> {
    let m = Loaded::open(&a)?;
    let out = a.out.clone().unwrap_or_else(|| {
        let dir = a
            .checkpoint
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        if default.is_empty() {
            dir
        } else {
            dir.join(default)
        }
    });
    f(&m, &out)?;
    if !default.is_empty() {
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn eval(a: ModelArgs, iw_samples: Option<u32>) -> vae_wgpu::Result<()> {
    let m = Loaded::open(&a)?;
    let binarize = m.ck.meta.get("binarize").is_some_and(|b| b == "true");
    let report = pictures::evaluate(&m.gpu, &m.ck, &m.test, iw_samples)?;
    let data = if binarize {
        "binarized test set"
    } else {
        "grey-level test set"
    };
    println!(
        "{} test images ({data}), {} on {}",
        m.test.n,
        a.checkpoint.display(),
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

/// The training data for benchmarks: MNIST when present, else random bytes of its shape (said on stderr).
fn bench_data(m: &BenchModel) -> (Split, Split) {
    match mnist::load(&m.data) {
        Ok(d) => (d.train.take(m.train_samples), d.test.take(Some(256))),
        Err(e) => {
            eprintln!("note: {e}\nnote: timing on random bytes of MNIST's shape instead");
            let n = m.train_samples.unwrap_or(60_000);
            let mut rng = vae_wgpu::kernels::philox::Philox::new(
                1,
                vae_wgpu::kernels::philox::stream::TEST_INPUT,
            );
            let mut split = |n: usize| Split {
                images: (0..n * 784).map(|_| rng.below(256) as u8).collect(),
                labels: vec![0; n],
                n,
                rows: 28,
                cols: 28,
            };
            (split(n), split(256))
        }
    }
}

fn bench_trainer<'g>(
    gpu: &'g Gpu,
    m: &BenchModel,
    batch: u32,
    train: &Split,
    test: &Split,
) -> vae_wgpu::Result<vae_wgpu::training::trainer::Trainer<'g>> {
    let model = vae_wgpu::model::ModelConfig::new(train.pixels() as u32, m.hidden, m.latent)?;
    let steps = train.n.div_ceil(batch as usize) as u32;
    let config = vae_wgpu::training::trainer::TrainConfig {
        model,
        batch,
        adam: Default::default(),
        seed: 1,
        beta: 1.0,
        kl_warmup: 0.0,
        binarize: false,
        // One readback per epoch, as a training run with a long log interval.
        log_interval: steps,
    };
    vae_wgpu::training::trainer::Trainer::new(gpu, config, train, test, &model.init(1))
}

fn bench_epoch(
    args: &GpuArgs,
    m: &BenchModel,
    batches: &[u32],
    warmup: u32,
    reps: u32,
) -> vae_wgpu::Result<()> {
    let gpu = args.open()?;
    let (train, test) = bench_data(m);
    println!(
        "epoch benchmark on {} ({} training examples, 784-{}-{})",
        gpu.info, train.n, m.hidden, m.latent
    );
    println!(
        "{:>6} {:>12} {:>14} {:>6}  runs (ms)",
        "batch", "median ms", "samples/s", "reps"
    );
    for &b in batches {
        let mut trainer = bench_trainer(&gpu, m, b, &train, &test)?;
        let row = bench::epoch_bench(&mut trainer, warmup, reps)?;
        let runs: Vec<String> = row.runs.iter().map(|r| format!("{r:.1}")).collect();
        println!(
            "{:>6} {:>12.1} {:>14.0} {:>6}  {}",
            row.batch,
            row.median_ms,
            row.samples_per_second,
            reps,
            runs.join(" ")
        );
    }
    Ok(())
}

fn profile(
    args: &GpuArgs,
    m: &BenchModel,
    steps: u32,
    trace: &std::path::Path,
    capture: bool,
) -> vae_wgpu::Result<()> {
    if steps == 0 {
        return Err(vae_wgpu::Error::Invalid(
            "--steps 0: profile at least 1 step".into(),
        ));
    }
    let gpu = Gpu::new(GpuOptions {
        backend: args.backend.clone(),
        adapter: args.adapter.clone(),
        timestamps: true,
        ..Default::default()
    })?;
    let (train, test) = bench_data(m);
    let mut trainer = bench_trainer(&gpu, m, m.batch_size, &train, &test)?;
    let p = vae_wgpu::perf::profile::profile(&mut trainer, steps, Some(trace), capture)?;
    println!(
        "profile of {} training steps (batch {}, 784-{}-{}) on {}",
        p.steps, m.batch_size, m.hidden, m.latent, gpu.info
    );
    if p.kernels.is_empty() {
        println!(
            "this adapter has no timestamp queries: per-kernel times are unavailable (whole-step wall clock only)"
        );
    } else {
        println!(
            "{:<20} {:>6} {:>10} {:>10} {:>7} {:>9} {:>8}",
            "kernel", "calls", "mean µs", "median µs", "share", "GFLOP/s", "GB/s"
        );
        for k in &p.kernels {
            let gf = if k.gflops > 0.0 {
                format!("{:.2}", k.gflops)
            } else {
                "-".into()
            };
            println!(
                "{:<20} {:>6} {:>10.1} {:>10.1} {:>6.1}% {:>9} {:>8.2}",
                k.label,
                k.calls,
                k.mean_us,
                k.median_us,
                100.0 * k.share,
                gf,
                k.gbps
            );
        }
        println!("trace written to {}", trace.display());
    }
    if let Some(g) = p.gpu_step_us {
        println!("GPU time per step (sum of kernels, one timed pass each): {g:.1} µs");
    }
    println!(
        "wall-clock per step (recorded back to back in one pass, as training does): {:.1} µs",
        p.wall_step_us
    );
    Ok(())
}
