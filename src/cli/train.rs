//! `vae train`: its options, converted once into the library's [`TrainOptions`].

use std::path::PathBuf;

use vae_wgpu::training::options::TrainOptions;
use vae_wgpu::training::run;

use super::args::{GpuArgs, TuneArgs};

#[derive(clap::Args)]
pub struct TrainArgs {
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
    tune: TuneArgs,
    #[command(flatten)]
    gpu: GpuArgs,
}

impl From<TrainArgs> for TrainOptions {
    fn from(a: TrainArgs) -> Self {
        TrainOptions {
            gpu: (&a.gpu).into(),
            tune: (&a.tune).into(),
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
            mirrors: a.mirrors,
            verbose: true,
        }
    }
}

pub fn train(args: TrainArgs) -> vae_wgpu::Result<()> {
    // Ctrl-C stops at the next step boundary with a checkpoint there; without a handler it would kill the run
    // and lose the epoch so far.
    if let Err(e) = vae_wgpu::interrupt::install() {
        eprintln!("warning: Ctrl-C will not checkpoint before stopping ({e})");
    }
    run::train(&args.into()).map(|_| ())
}
