//! `vae train` and `vae sweep`: their options, converted once into the library's [`TrainOptions`] and
//! [`SweepOptions`].

use std::path::PathBuf;

use vae_wgpu::training::grid::Grid;
use vae_wgpu::training::options::TrainOptions;
use vae_wgpu::training::run;
use vae_wgpu::training::sweep::{self, SweepOptions};

use super::args::{GpuArgs, TuneArgs};

/// What `vae train` and `vae sweep` share: the data, the output, the schedule and the model's shape.
#[derive(clap::Args)]
pub struct RunArgs {
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

#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Adam's learning rate [default: 0.001].
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f32>,
    /// Seed of the initialization, the shuffling and the noise; the same seed on the same adapter gives the same
    /// losses [default: 1].
    #[arg(long)]
    seed: Option<u64>,
    /// Seed of the shuffling and the binarization only, where it differs from --seed: the models of a `vae sweep`
    /// share one, and `vae train --seed S --data-seed D` trains one of them alone [default: --seed].
    #[arg(long, value_name = "SEED")]
    data_seed: Option<u64>,
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
    #[command(flatten)]
    tune: TuneArgs,
}

/// `vae sweep`'s own options: the grid, or the sweep to resume.
#[derive(clap::Args)]
pub struct SweepArgs {
    #[command(flatten)]
    run: RunArgs,
    /// KL weights to train, comma-separated (e.g. 0.25,0.5,1,2,4) [default: 1].
    #[arg(long, allow_hyphen_values = true)]
    beta: Option<String>,
    /// Seeds to train (initialization and noise), comma-separated (e.g. 1,2,3) [default: 1].
    #[arg(long, allow_hyphen_values = true)]
    seeds: Option<String>,
    /// Adam's learning rates, comma-separated [default: 0.001].
    #[arg(long, allow_hyphen_values = true)]
    lr: Option<String>,
    /// KL warm-ups to train, in epochs, comma-separated (e.g. 0,5) [default: 0, no warm-up].
    #[arg(long, value_name = "EPOCHS", allow_hyphen_values = true)]
    kl_warmup: Option<String>,
    /// Dynamic binarization of the training images: `--binarize` alone binarizes every model; `--binarize no,yes`
    /// trains each model both ways [default: no].
    #[arg(long, num_args = 0..=1, default_missing_value = "yes", value_name = "no,yes")]
    binarize: Option<String>,
    /// Seed of the shuffling and the binarization, shared by every model [default: the first of --seeds].
    #[arg(long, value_name = "SEED")]
    data_seed: Option<u64>,
    /// Continue the sweep in this directory (its models and settings are kept; --epochs is the total).
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    #[command(flatten)]
    tune: TuneArgs,
}

impl RunArgs {
    /// The options these give, the per-model ones unset.
    fn options(self, tune: vae_wgpu::tune::TuneMode) -> TrainOptions {
        TrainOptions {
            gpu: (&self.gpu).into(),
            tune,
            data: self.data,
            out: self.out,
            epochs: self.epochs,
            batch_size: self.batch_size,
            latent: self.latent,
            hidden: self.hidden,
            lr: None,
            seed: None,
            data_seed: None,
            beta: None,
            kl_warmup: None,
            binarize: false,
            resume: None,
            train_samples: self.train_samples,
            test_samples: self.test_samples,
            log_interval: self.log_interval,
            mirrors: self.mirrors,
            verbose: true,
        }
    }
}

impl From<TrainArgs> for TrainOptions {
    fn from(a: TrainArgs) -> Self {
        TrainOptions {
            lr: a.lr,
            seed: a.seed,
            data_seed: a.data_seed,
            beta: a.beta,
            kl_warmup: a.kl_warmup,
            binarize: a.binarize,
            resume: a.resume,
            ..a.run.options((&a.tune).into())
        }
    }
}

/// Installs the Ctrl-C handler: Ctrl-C stops at the next step boundary; without a handler it would kill the run
/// and lose the epoch so far.
fn catch_ctrl_c() {
    if let Err(e) = vae_wgpu::interrupt::install() {
        eprintln!("warning: Ctrl-C will not checkpoint before stopping ({e})");
    }
}

pub fn train(args: TrainArgs) -> vae_wgpu::Result<()> {
    catch_ctrl_c();
    run::train(&args.into()).map(|_| ())
}

pub fn sweep(args: SweepArgs) -> vae_wgpu::Result<()> {
    let grid_given = [
        &args.beta,
        &args.seeds,
        &args.lr,
        &args.kl_warmup,
        &args.binarize,
    ]
    .iter()
    .any(|o| o.is_some());
    if args.resume.is_some() && (grid_given || args.data_seed.is_some()) {
        return Err(vae_wgpu::Error::Invalid(
            "--beta, --seeds, --lr, --kl-warmup, --binarize and --data-seed do not go with --resume: a resumed \
             sweep continues the models it has; leave them out, or start a new sweep"
                .into(),
        ));
    }
    // The grid first: a bad list is refused before anything is loaded.
    let list = |v: &Option<String>, default: &str| v.clone().unwrap_or_else(|| default.into());
    let grid = Grid::parse_all(
        (
            &list(&args.beta, "1"),
            &list(&args.seeds, "1"),
            &list(&args.lr, "0.001"),
        ),
        (&list(&args.kl_warmup, "0"), &list(&args.binarize, "no")),
    )?;
    catch_ctrl_c();
    let opts = SweepOptions {
        train: TrainOptions {
            resume: args.resume,
            ..args.run.options((&args.tune).into())
        },
        grid,
        data_seed: args.data_seed,
    };
    sweep::sweep(&opts).map(|_| ())
}
