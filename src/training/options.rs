//! What `vae train` is told ([`TrainOptions`]), checked before anything is loaded, and the settings a run
//! trains with: the options given, over a resumed checkpoint's values (which they must agree with), over the
//! defaults.

use std::path::{Path, PathBuf};

use super::checkpoint::Checkpoint;
use super::settings::Settings;
use crate::data::mnist::{self, Split};
use crate::error::{Error, Result};
use crate::gpu::GpuOptions;
use crate::model::ModelConfig;
use crate::tune::TuneMode;

/// Everything `vae train` is told.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub data: PathBuf,
    pub out: Option<PathBuf>,
    pub epochs: u32,
    /// Unset options take their defaults, or the checkpoint's values when resuming.
    pub batch_size: Option<u32>,
    pub latent: Option<u32>,
    pub hidden: Option<u32>,
    pub lr: Option<f32>,
    pub seed: Option<u64>,
    /// The seed of the shuffle and the binarization, where not `seed` (to match a model of a sweep).
    pub data_seed: Option<u64>,
    pub beta: Option<f32>,
    pub kl_warmup: Option<f32>,
    pub binarize: bool,
    pub resume: Option<PathBuf>,
    pub train_samples: Option<usize>,
    pub test_samples: Option<usize>,
    pub log_interval: u32,
    pub gpu: GpuOptions,
    pub mirrors: Vec<String>,
    /// How the matmul kernels are chosen (a resumed run takes its checkpoint's).
    pub tune: TuneMode,
    /// Print per-epoch lines (the binary) or stay quiet (tests of the library).
    pub verbose: bool,
}

pub(super) fn invalid(msg: String) -> Error {
    Error::Invalid(msg)
}

impl TrainOptions {
    /// Rejects option values that cannot work, before anything is loaded or written.
    pub fn check(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(invalid("--epochs 0: train at least 1 epoch".into()));
        }
        if self.batch_size == Some(0) {
            return Err(invalid(
                "--batch-size 0: use at least 1 (the reference uses 128)".into(),
            ));
        }
        if let Some(lr) = self.lr.filter(|lr| !(lr.is_finite() && *lr > 0.0)) {
            return Err(invalid(format!(
                "--lr {lr}: the learning rate must be a positive finite number (the reference uses 1e-3)"
            )));
        }
        if self.latent == Some(0) {
            return Err(invalid(
                "--latent 0: the latent space needs at least 1 dimension (default 2)".into(),
            ));
        }
        if self.hidden == Some(0) {
            return Err(invalid(
                "--hidden 0: the hidden layers need at least 1 unit (default 400)".into(),
            ));
        }
        if let Some(b) = self.beta.filter(|b| !(b.is_finite() && *b >= 0.0)) {
            return Err(invalid(format!(
                "--beta {b}: the KL weight must be a finite number ≥ 0 (default 1)"
            )));
        }
        if let Some(w) = self.kl_warmup.filter(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err(invalid(format!(
                "--kl-warmup {w}: give a number of epochs ≥ 0 (default 0: no warm-up)"
            )));
        }
        if self.train_samples == Some(0) || self.test_samples == Some(0) {
            return Err(invalid(
                "--train-samples and --test-samples must be at least 1".into(),
            ));
        }
        if self.log_interval == 0 {
            return Err(invalid("--log-interval 0: use at least 1 step".into()));
        }
        Ok(())
    }

    /// The settings: the options given, over the checkpoint's values when resuming (where a given option must
    /// agree with the checkpoint, or the run would not be the same run), over the defaults.
    pub fn settings(&self, resume: Option<&Checkpoint>) -> Result<Settings> {
        let base = match resume {
            Some(ck) => ck.settings.clone(),
            None => Settings::DEFAULT,
        };
        let mut s = base.clone();
        macro_rules! take {
            ($field:ident, $flag:literal) => {
                if let Some(v) = self.$field {
                    if resume.is_some() && v != base.$field {
                        return Err(invalid(format!(
                            "{} {v} does not match the checkpoint's {}: a resumed run continues with the settings it started with; leave the option out, or start a new run",
                            $flag, base.$field
                        )));
                    }
                    s.$field = v;
                }
            };
        }
        take!(batch_size, "--batch-size");
        take!(latent, "--latent");
        take!(hidden, "--hidden");
        // The learning rate may change on resume (e.g. a smaller one after a divergence); the run is then no
        // longer the same run, which is the point.
        if let Some(lr) = self.lr {
            s.lr = lr;
        }
        take!(seed, "--seed");
        if let Some(d) = self.data_seed {
            if resume.is_some() && d != base.data_seed() {
                return Err(invalid(format!(
                    "--data-seed {d} does not match the checkpoint's {}: a resumed run continues over the batches it started with; leave the option out, or start a new run",
                    base.data_seed()
                )));
            }
            // The same as the seed is no separate data seed: the checkpoint says nothing of it.
            s.data_seed = (d != s.seed).then_some(d);
        }
        take!(beta, "--beta");
        take!(kl_warmup, "--kl-warmup");
        if resume.is_none() {
            s.binarize = self.binarize;
            s.train_samples = self.train_samples;
            s.test_samples = self.test_samples;
        } else if self.binarize && !base.binarize {
            return Err(invalid(
                "--binarize does not match the checkpoint's run (trained on grey levels)".into(),
            ));
        } else {
            if self.train_samples.is_some() && self.train_samples != base.train_samples
                || self.test_samples.is_some() && self.test_samples != base.test_samples
            {
                return Err(invalid(
                    "--train-samples/--test-samples do not match the checkpoint's run; leave them out when resuming".into(),
                ));
            }
        }
        Ok(s)
    }
}

/// The training and test splits a run uses, with MNIST downloaded first when it is missing.
pub(super) fn load_data(opts: &TrainOptions, s: &Settings) -> Result<(Split, Split)> {
    let data = mnist::ensure(&opts.data, &opts.mirrors, opts.verbose)?;
    let (train, test) = (
        data.train.take(s.train_samples),
        data.test.take(s.test_samples),
    );
    if s.batch_size as usize > train.n {
        return Err(invalid(format!(
            "--batch-size {} is larger than the training set ({} examples); use at most {}",
            s.batch_size, train.n, train.n
        )));
    }
    Ok((train, test))
}

/// The first epoch to train: 1, or the one after the checkpoint's.
pub(super) fn first_epoch(opts: &TrainOptions, resumed: Option<&Checkpoint>) -> Result<u32> {
    let first = resumed.map_or(0, |c| c.epoch) + 1;
    if first > opts.epochs {
        return Err(invalid(format!(
            "the checkpoint has already trained {} epochs and --epochs is {}: --epochs is the total, so ask for more",
            first - 1,
            opts.epochs
        )));
    }
    Ok(first)
}

/// The model for the data, which must be the checkpoint's when resuming.
pub(super) fn model_for(
    train: &Split,
    s: &Settings,
    resumed: Option<(&Checkpoint, &Path)>,
) -> Result<ModelConfig> {
    let model = ModelConfig::new(train.pixels() as u32, s.hidden, s.latent)?;
    if let Some((ck, path)) = resumed
        && ck.model != model
    {
        return Err(Error::Data {
            path: path.display().to_string(),
            message: format!(
                "the checkpoint is for a {}-{}-{} model but the data has {} pixels per image: resume with the dataset it was trained on",
                ck.model.pixels, ck.model.hidden, ck.model.latent, model.pixels
            ),
        });
    }
    Ok(model)
}
