//! `vae train`: the whole run, from options to metrics.csv and pictures.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::images::{Grid, write_atomic};
use crate::kernels::adam::AdamConfig;
use crate::mnist;
use crate::model::ModelConfig;
use crate::train::{EpochStats, RECON_IMAGES, SAMPLE_IMAGES, TrainConfig, Trainer};

/// Everything `vae train` is told.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub data: PathBuf,
    pub out: Option<PathBuf>,
    pub epochs: u32,
    pub batch_size: u32,
    pub latent: u32,
    pub hidden: u32,
    pub lr: f32,
    pub seed: u64,
    pub train_samples: Option<usize>,
    pub test_samples: Option<usize>,
    pub log_interval: u32,
    pub gpu: GpuOptions,
    pub mirrors: Vec<String>,
    /// Print per-epoch lines (the binary) or stay quiet (tests of the library).
    pub verbose: bool,
}

/// The CSV header of metrics.csv.
pub const METRICS_HEADER: &str = "epoch,train_loss,train_bce,train_kl,test_loss,test_bce,test_kl,epoch_seconds,samples_per_second";

fn invalid(msg: String) -> Error {
    Error::Invalid(msg)
}

impl TrainOptions {
    /// Rejects option values that cannot work, before anything is loaded or written.
    pub fn check(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(invalid("--epochs 0: train at least 1 epoch".into()));
        }
        if self.batch_size == 0 {
            return Err(invalid(
                "--batch-size 0: use at least 1 (the reference uses 128)".into(),
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(invalid(format!(
                "--lr {}: the learning rate must be a positive finite number (the reference uses 1e-3)",
                self.lr
            )));
        }
        if self.latent == 0 {
            return Err(invalid(
                "--latent 0: the latent space needs at least 1 dimension (default 2)".into(),
            ));
        }
        if self.hidden == 0 {
            return Err(invalid(
                "--hidden 0: the hidden layers need at least 1 unit (default 400)".into(),
            ));
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
}

/// `runs/<UTC date>-<time>`, e.g. runs/20261125-170312.
pub fn default_out_dir() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    PathBuf::from(format!(
        "runs/{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    ))
}

fn prepare_out(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::Io {
        what: format!("creating the output directory {}", out.display()),
        message: format!("{e}; choose another with --out"),
    })?;
    // Prove it is writable now rather than after the first epoch.
    write_atomic(&out.join(".write-test"), b"ok")?;
    std::fs::remove_file(out.join(".write-test")).ok();
    Ok(())
}

fn metrics_csv(rows: &[EpochStats], n_train: u32) -> String {
    let mut s = format!("{METRICS_HEADER}\n");
    for e in rows {
        let (tl, tb, tk) = e.train.per_example();
        let (vl, vb, vk) = e.test.per_example();
        let _ = writeln!(
            s,
            "{},{tl:.4},{tb:.4},{tk:.4},{vl:.4},{vb:.4},{vk:.4},{:.3},{:.1}",
            e.epoch,
            e.seconds,
            n_train as f64 / e.seconds
        );
    }
    s
}

fn save_pictures(
    trainer: &Trainer,
    out: &Path,
    epoch: u32,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let tile = (rows, cols);
    let px = rows * cols;
    let (x, recon) = trainer.reconstructions()?;
    let n = x.len() / px;
    let mut grid = Grid::new(2, RECON_IMAGES as usize, tile);
    for i in 0..n {
        grid.put(i, &x[i * px..(i + 1) * px]);
        grid.put(RECON_IMAGES as usize + i, &recon[i * px..(i + 1) * px]);
    }
    grid.save(&out.join(format!("reconstruction_{epoch}.png")))?;
    let samples = trainer.samples()?;
    let side = (SAMPLE_IMAGES as f64).sqrt() as usize;
    let mut grid = Grid::new(side, side, tile);
    for i in 0..SAMPLE_IMAGES as usize {
        grid.put(i, &samples[i * px..(i + 1) * px]);
    }
    grid.save(&out.join(format!("sample_{epoch}.png")))
}

/// Runs `vae train`; returns the per-epoch statistics.
pub fn train(opts: &TrainOptions) -> Result<Vec<EpochStats>> {
    opts.check()?;
    let data = mnist::ensure(&opts.data, &opts.mirrors, opts.verbose)?;
    let train_split = data.train.take(opts.train_samples);
    let test_split = data.test.take(opts.test_samples);
    if opts.batch_size as usize > train_split.n {
        return Err(invalid(format!(
            "--batch-size {} is larger than the training set ({} examples); use at most {}",
            opts.batch_size, train_split.n, train_split.n
        )));
    }
    let model = ModelConfig::new(train_split.pixels() as u32, opts.hidden, opts.latent)?;
    let gpu = Gpu::new(opts.gpu.clone())?;
    let out = opts.out.clone().unwrap_or_else(default_out_dir);
    let config = TrainConfig {
        model,
        batch: opts.batch_size,
        adam: AdamConfig {
            lr: opts.lr,
            ..Default::default()
        },
        seed: opts.seed,
        kl_weight: 1.0,
        log_interval: opts.log_interval,
    };
    let params = model.init(opts.seed);
    let mut trainer = Trainer::new(&gpu, config, &train_split, &test_split, &params)?;
    prepare_out(&out)?;
    if opts.verbose {
        eprintln!(
            "training {}-{}-{} on {} ({} train / {} test examples, batch {}), writing to {}",
            model.pixels,
            model.hidden,
            model.latent,
            gpu.info,
            trainer.n_train(),
            trainer.n_test(),
            opts.batch_size,
            out.display()
        );
    }
    let mut history = Vec::new();
    for epoch in 1..=opts.epochs {
        let bar = if opts.verbose {
            let bar = indicatif::ProgressBar::new(trainer.steps_per_epoch() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} steps {msg} ({eta})",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{}", opts.epochs));
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let start = Instant::now();
        let train = trainer.train_epoch(epoch, |done, sum| {
            bar.set_position(done as u64);
            bar.set_message(format!("loss {:.2}", sum.per_example().0));
        })?;
        gpu.wait()?;
        let seconds = start.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let test = trainer.evaluate()?;
        let stats = EpochStats {
            epoch,
            train,
            test,
            seconds,
        };
        let (tl, tb, tk) = train.per_example();
        let (vl, vb, vk) = test.per_example();
        if !(tl.is_finite() && vl.is_finite()) {
            return Err(invalid(format!(
                "the loss became non-finite during epoch {epoch} (train {tl}, test {vl}); lower --lr"
            )));
        }
        history.push(stats);
        write_atomic(
            &out.join("metrics.csv"),
            metrics_csv(&history, trainer.n_train()).as_bytes(),
        )?;
        save_pictures(&trainer, &out, epoch, train_split.rows, train_split.cols)?;
        if opts.verbose {
            println!(
                "epoch {epoch:>3}  train {tl:8.3} (bce {tb:8.3} kl {tk:6.3})  test {vl:8.3} (bce {vb:8.3} kl {vk:6.3})  {seconds:6.2} s  {:8.0} samples/s",
                trainer.n_train() as f64 / seconds
            );
        }
    }
    Ok(history)
}
