//! `vae train`: the whole run, from options to metrics.csv, checkpoints and pictures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::checkpoint::Checkpoint;
use super::eval::{EvalConfig, Evaluator, RECON_IMAGES, SAMPLE_IMAGES};
use super::plans::LossSum;
use super::settings::Settings;
use super::trainer::{EpochEnd, TrainConfig, Trainer};
use crate::atomic::write_atomic;
use crate::data::mnist::{self, Split};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::kernels::adam::AdamConfig;
use crate::kernels::matmul::Product;
use crate::tune::{self, Chosen, TuneMode};
use crate::model::ModelConfig;
use crate::model::inference::Inference;
use crate::model::net::Net;
use crate::output::images::Grid;
use crate::output::pictures::end_of_training;

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

/// The CSV header of metrics.csv.
pub const METRICS_HEADER: &str = "epoch,train_loss,train_bce,train_kl,test_loss,test_bce,test_kl,epoch_seconds,samples_per_second";

fn invalid(msg: String) -> Error {
    Error::Invalid(msg)
}

/// What one epoch did.
#[derive(Clone, Copy, Debug)]
pub struct EpochStats {
    pub epoch: u32,
    pub train: LossSum,
    pub test: LossSum,
    pub seconds: f64,
}

impl From<&Settings> for EvalConfig {
    fn from(s: &Settings) -> Self {
        EvalConfig {
            batch: s.batch_size,
            seed: s.seed,
            binarize: s.binarize,
        }
    }
}

impl TrainConfig {
    /// The trainer's configuration for a run's settings.
    pub fn new(model: ModelConfig, s: &Settings, log_interval: u32) -> TrainConfig {
        TrainConfig {
            model,
            batch: s.batch_size,
            adam: AdamConfig {
                lr: s.lr,
                ..Default::default()
            },
            seed: s.seed,
            beta: s.beta,
            kl_warmup: s.kl_warmup,
            binarize: s.binarize,
            log_interval,
        }
    }
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

/// Fails, before anything is allocated, when the model or batch needs a buffer larger than the device allows,
/// naming the limit and the largest --hidden or --batch-size that fits.
pub fn check_sizes(gpu: &Gpu, model: ModelConfig, batch: u32) -> Result<()> {
    let limits = gpu.device.limits();
    // Every buffer is bound whole as storage, and kernels index elements with 32-bit integers.
    let by_bytes = limits
        .max_buffer_size
        .min(limits.max_storage_buffer_binding_size)
        / 4;
    let (limit_name, limit_elems) = if by_bytes > u32::MAX as u64 {
        ("32-bit element indices in the kernels", u32::MAX as u64)
    } else if limits.max_buffer_size <= limits.max_storage_buffer_binding_size {
        ("max_buffer_size", by_bytes)
    } else {
        ("max_storage_buffer_binding_size", by_bytes)
    };
    let (p, l) = (model.pixels, model.latent);
    let params = model.param_count();
    if params > limit_elems {
        let fits = |h: u32| ModelConfig { hidden: h, ..model }.param_count() <= limit_elems;
        // The largest hidden width that fits: a binary search over what param_count says.
        let (mut lo, mut hi) = (0u32, model.hidden);
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) { lo = mid } else { hi = mid }
        }
        return Err(Error::TooLarge {
            op: "building the model",
            what: format!(
                "a {p}-{}-{l} model's parameter buffer ({params} floats)",
                model.hidden
            ),
            needed: params * 4,
            limit: limit_elems * 4,
            limit_name,
            hint: format!("the largest --hidden that fits with --latent {l} is {lo}"),
        });
    }
    let widest = (p as u64).max(model.hidden as u64).max(2 * l as u64);
    let b = batch as u64;
    if b * widest > limit_elems {
        return Err(Error::TooLarge {
            op: "allocating activations",
            what: format!("a batch of {b} rows of {widest} floats"),
            needed: b * widest * 4,
            limit: limit_elems * 4,
            limit_name,
            hint: format!(
                "the largest --batch-size that fits is {}",
                limit_elems / widest
            ),
        });
    }
    Ok(())
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

/// Holds `<out>/.vae.lock` while a run writes to `out`; removes it when dropped (a killed run's lock is stale and
/// is taken over once its process is gone).
pub struct OutLock {
    path: PathBuf,
}

impl Drop for OutLock {
    fn drop(&mut self) {
        std::fs::remove_file(&self.path).ok();
    }
}

/// Whether process `pid` is running. Where that cannot be told (no /proc), assume it is.
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc_root = Path::new("/proc");
    !proc_root.is_dir() || proc_root.join(pid.to_string()).exists()
}

fn io_error(what: String, e: std::io::Error, hint: &str) -> Error {
    Error::Io {
        what,
        message: format!("{e}; {hint}"),
    }
}

fn creating_out(out: &Path, e: std::io::Error) -> Error {
    io_error(
        format!("creating the output directory {}", out.display()),
        e,
        "choose another with --out",
    )
}

fn holds_a_run(out: &Path) -> Error {
    Error::Invalid(format!(
        "{} already holds a run (checkpoint.safetensors): pass --resume {} to continue it, or choose another --out",
        out.display(),
        out.join("checkpoint.safetensors").display()
    ))
}

/// The live process that holds `out`'s lock, if one does.
fn lock_owner(out: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(out.join(".vae.lock"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    process_alive(pid).then_some(pid)
}

fn locked(out: &Path, pid: u32) -> Error {
    Error::Invalid(format!(
        "another run (process {pid}) is writing to {}: wait for it, or choose another --out. If no such run exists, delete {}",
        out.display(),
        out.join(".vae.lock").display()
    ))
}

/// The refusals of `out` that [`prepare_out`] would make, made before the run opens the GPU and chooses its
/// kernels (which can take minutes on a software driver), without creating anything: a path under a file or
/// through a symbolic link to nothing, a directory that already holds another run, or one that a live run is
/// writing to. [`prepare_out`] checks again, with the lock held.
fn check_out(out: &Path, resuming_here: bool) -> Result<()> {
    if let Some(link) = out
        .ancestors()
        .find(|a| a.symlink_metadata().is_ok() && a.metadata().is_err())
    {
        let to = std::fs::read_link(link).unwrap_or_default();
        let e = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{} is a symbolic link to {}, which does not exist",
                link.display(),
                to.display()
            ),
        );
        return Err(creating_out(out, e));
    }
    if let Some(existing) = out.ancestors().find(|a| a.exists())
        && !existing.is_dir()
    {
        let e = std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a directory", existing.display()),
        );
        return Err(creating_out(out, e));
    }
    if !resuming_here && out.join("checkpoint.safetensors").exists() {
        return Err(holds_a_run(out));
    }
    match lock_owner(out) {
        Some(pid) => Err(locked(out, pid)),
        None => Ok(()),
    }
}

/// Whether the checkpoint at `resume` lies in the directory `out`, both existing: a bare file name
/// (`--resume checkpoint.safetensors --out .`) lies in the working directory.
fn resumes_in(resume: &Path, out: &Path) -> bool {
    let dir = resume
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (dir.canonicalize(), out.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Creates `out`, checks it is writable, takes its lock and clears temporary files dead runs left behind.
/// `resuming_here`: the run continues the checkpoint already in `out`.
fn prepare_out(out: &Path, resuming_here: bool) -> Result<OutLock> {
    std::fs::create_dir_all(out).map_err(|e| creating_out(out, e))?;
    let path = out.join(".vae.lock");
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                use std::io::Write;
                writeln!(f, "{}", std::process::id()).map_err(|e| {
                    io_error(
                        format!("writing {}", path.display()),
                        e,
                        "choose another --out",
                    )
                })?;
                let lock = OutLock { path };
                if !resuming_here && out.join("checkpoint.safetensors").exists() {
                    return Err(holds_a_run(out));
                }
                clear_stale_temporaries(out);
                return Ok(lock);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match lock_owner(out) {
                Some(pid) => return Err(locked(out, pid)),
                // The run that held it is gone: take it over.
                None => {
                    std::fs::remove_file(&path).ok();
                }
            },
            Err(e) => {
                return Err(io_error(
                    format!("creating {}", path.display()),
                    e,
                    "the output directory must be writable; choose another with --out",
                ));
            }
        }
    }
    Err(Error::Invalid(format!(
        "could not take the lock {}",
        path.display()
    )))
}

/// Removes `.<name>.tmp<pid>` files (see `write_atomic`) whose writer is no longer running.
fn clear_stale_temporaries(out: &Path) {
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(pid) = name
            .rsplit(".tmp")
            .next()
            .filter(|_| name.starts_with('.') && name.contains(".tmp"))
            && let Ok(pid) = pid.parse::<u32>()
            && !process_alive(pid)
        {
            std::fs::remove_file(entry.path()).ok();
        }
    }
}

fn metrics_line(e: &EpochStats, n_train: u32) -> String {
    let (tl, tb, tk) = e.train.per_example();
    let (vl, vb, vk) = e.test.per_example();
    format!(
        "{},{tl:.4},{tb:.4},{tk:.4},{vl:.4},{vb:.4},{vk:.4},{:.3},{:.1}",
        e.epoch,
        e.seconds,
        n_train as f64 / e.seconds
    )
}

/// What a run needs from start to end: the settings it trains with, the trainer and evaluator of its network, where
/// it writes and the metrics so far.
struct Run<'a> {
    settings: &'a Settings,
    trainer: Trainer<'a>,
    evaluator: Evaluator<'a>,
    out: &'a Path,
    image: (usize, usize),
    /// The kernel of each product the plans compute (recorded in checkpoints).
    kernels: BTreeMap<String, String>,
    /// Training time of an interrupted epoch before this run resumed it.
    resumed_seconds: f64,
    /// metrics.csv's rows so far, without the header.
    lines: Vec<String>,
    verbose: bool,
}

impl Run<'_> {
    /// Trains, evaluates and saves one epoch: metrics.csv, the checkpoint and the pictures, then one line. On
    /// Ctrl-C it stops at a step boundary, writes a checkpoint at that step and returns `Error::Interrupted`.
    fn epoch(&mut self, epoch: u32, epochs: u32) -> Result<EpochStats> {
        if crate::interrupt::requested() {
            let path = self.out.join("checkpoint.safetensors");
            let saved = match epoch - 1 {
                0 => "no epoch had ended: nothing was saved".to_string(),
                e => format!(
                    "the checkpoint of epoch {e} is complete; continue with --resume {}",
                    path.display()
                ),
            };
            return Err(Error::Interrupted(format!(
                "stopped before epoch {epoch}; {saved}"
            )));
        }
        let bar = progress_bar(self.verbose, self.trainer.steps_per_epoch(), epoch, epochs);
        bar.set_position(self.trainer.epoch_step as u64);
        let start = Instant::now();
        let end = self.trainer.train_epoch(epoch, |done, sum| {
            bar.set_position(done as u64);
            bar.set_message(format!("loss {:.2}", sum.per_example().0));
        })?;
        self.trainer.gpu.wait()?;
        let seconds = start.elapsed().as_secs_f64() + std::mem::take(&mut self.resumed_seconds);
        bar.finish_and_clear();
        let train = match end {
            EpochEnd::Done(sum) => sum,
            EpochEnd::Interrupted => return Err(self.interrupted(epoch, seconds)),
        };
        let test = self.evaluator.evaluate()?;
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
        let n = self.trainer.n_train();
        self.lines.push(metrics_line(&stats, n));
        let csv = self.metrics_csv();
        write_atomic(&self.out.join("metrics.csv"), csv.as_bytes())?;
        self.checkpoint(epoch, 0.0)?
            .save(&self.out.join("checkpoint.safetensors"))?;
        self.trainer.gpu.set_hang_note(self.saved());
        self.pictures(epoch)?;
        if self.verbose {
            println!(
                "epoch {epoch:>3}  train {tl:8.3} (bce {tb:8.3} kl {tk:6.3})  test {vl:8.3} (bce {vb:8.3} kl {vk:6.3})  {seconds:6.2} s  {:8.0} samples/s",
                n as f64 / seconds
            );
        }
        Ok(stats)
    }

    fn metrics_csv(&self) -> String {
        let rows: String = self.lines.iter().map(|l| format!("{l}\n")).collect();
        format!("{METRICS_HEADER}\n{rows}")
    }

    /// A GPU fault (device loss, a hang, memory, an error from the driver) with where the run stopped and what
    /// it keeps: no checkpoint can be written once the device is gone, so the last complete one is what the
    /// user resumes from. Other errors pass through as they are.
    fn stopped(&self, e: Error) -> Error {
        match e {
            Error::DeviceLost { .. }
            | Error::GpuTimeout { .. }
            | Error::OutOfMemory { .. }
            | Error::Internal { .. }
            | Error::Validation { .. }
            | Error::Readback { .. } => {}
            other => return other,
        }
        Error::Stopped {
            cause: Box::new(e),
            at: format!("the run stopped after step {}", self.trainer.step),
            saved: self.saved(),
        }
    }

    /// What the output directory holds to resume from, in words.
    fn saved(&self) -> String {
        let path = self.out.join("checkpoint.safetensors");
        match Checkpoint::load(&path) {
            Ok(c) => format!(
                "the last complete checkpoint, at step {} (epoch {}{}), is intact: continue with --resume {}",
                c.step,
                c.epoch,
                match c.epoch_step {
                    0 => String::new(),
                    s => format!(" and {s} steps"),
                },
                path.display()
            ),
            Err(_) => "no checkpoint had been written yet: start the run again".into(),
        }
    }

    /// Writes a checkpoint at the step the interrupted epoch reached, and says so.
    fn interrupted(&self, epoch: u32, seconds: f64) -> Error {
        let path = self.out.join("checkpoint.safetensors");
        let (done, of) = (self.trainer.epoch_step, self.trainer.steps_per_epoch());
        let saved = self
            .checkpoint(epoch - 1, seconds)
            .and_then(|ck| ck.save(&path));
        match saved {
            Ok(()) => Error::Interrupted(format!(
                "checkpoint written at step {} (epoch {epoch}, step {done} of {of}) in {}; continue with --resume {}",
                self.trainer.step,
                path.display(),
                path.display()
            )),
            Err(e) => e,
        }
    }

    /// The run's state after `epoch` whole epochs (and, mid-epoch, the steps and loss of the next one so far),
    /// read back from the GPU.
    fn checkpoint(&self, epoch: u32, partial_seconds: f64) -> Result<Checkpoint> {
        let (m, v) = self.trainer.moments()?;
        Ok(Checkpoint {
            model: self.trainer.net.config,
            params: self.trainer.params()?,
            m,
            v,
            step: self.trainer.step,
            epoch,
            epoch_step: self.trainer.epoch_step,
            partial: self.trainer.partial,
            partial_seconds,
            settings: self.settings.clone(),
            image: Some((self.image.0 as u32, self.image.1 as u32)),
            metrics: self.metrics_csv(),
            kernels: self.kernels.clone(),
        })
    }

    /// reconstruction_<epoch>.png (test images over their reconstructions) and sample_<epoch>.png.
    fn pictures(&self, epoch: u32) -> Result<()> {
        let tile = self.image;
        let px = tile.0 * tile.1;
        let (x, recon) = self.evaluator.reconstructions()?;
        let n = x.len() / px;
        let mut grid = Grid::new(2, RECON_IMAGES as usize, tile);
        for i in 0..n {
            grid.put(i, &x[i * px..(i + 1) * px]);
            grid.put(RECON_IMAGES as usize + i, &recon[i * px..(i + 1) * px]);
        }
        grid.save(&self.out.join(format!("reconstruction_{epoch}.png")))?;
        let samples = self.evaluator.samples()?;
        let side = (SAMPLE_IMAGES as f64).sqrt() as usize;
        let mut grid = Grid::new(side, side, tile);
        for i in 0..SAMPLE_IMAGES as usize {
            grid.put(i, &samples[i * px..(i + 1) * px]);
        }
        grid.save(&self.out.join(format!("sample_{epoch}.png")))
    }
}

/// The training and test splits a run uses, with MNIST downloaded first when it is missing.
fn load_data(opts: &TrainOptions, s: &Settings) -> Result<(Split, Split)> {
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
fn first_epoch(opts: &TrainOptions, resumed: Option<&Checkpoint>) -> Result<u32> {
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
fn model_for(
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

/// Distinct products, by key, in first-seen order.
pub fn distinct(products: impl IntoIterator<Item = (Product, String)>) -> Vec<Product> {
    let mut seen = std::collections::BTreeSet::new();
    products
        .into_iter()
        .filter(|(p, _)| seen.insert(p.key()))
        .map(|(p, _)| p)
        .collect()
}

/// The kernel of each product, by key, and each pair's choice where the device has one (a pair run as two
/// dispatches, or with a kernel of its own).
fn kernels_used(
    gpu: &Gpu,
    products: impl IntoIterator<Item = (Product, String)>,
) -> BTreeMap<String, String> {
    let products: Vec<(Product, String)> = products.into_iter().collect();
    let mut kernels: BTreeMap<String, String> =
        products.iter().map(|(p, k)| (p.key(), k.clone())).collect();
    let list: Vec<Product> = products.into_iter().map(|(p, _)| p).collect();
    for (w, i) in tune::pairs(&list) {
        let key = tune::pair_key_of(&w, &i);
        if let Some(choice) = gpu.choice(&key) {
            kernels.insert(key, choice);
        }
    }
    for key in crate::kernels::FUSIONS {
        let fused = crate::kernels::fused(gpu, key);
        kernels.insert(key.into(), if fused { "fused" } else { "apart" }.into());
    }
    kernels
}

/// Sets the device's kernel choices for the run's products: the checkpoint's when resuming (exact resume holds
/// even where tuning would now choose otherwise), else as `opts.tune` says.
fn choose_kernels(
    gpu: &Gpu,
    opts: &TrainOptions,
    ck: Option<&Checkpoint>,
    trainer: &Trainer,
    evaluator: &Evaluator,
) -> Result<Chosen> {
    if let Some(ck) = ck.filter(|c| !c.kernels.is_empty()) {
        gpu.clear_choices();
        gpu.set_choices(ck.kernels.clone());
        return Ok(Chosen {
            how: format!("{} products from the checkpoint", ck.kernels.len()),
            seconds: 0.0,
            tuned: None,
        });
    }
    // The step's products; the evaluator's full batches are the same products, the rest take the defaults.
    let _ = evaluator;
    let products = distinct(trainer.products());
    let room = trainer.pair_room();
    tune::choose(gpu, &products, &opts.tune, room, |w| eprintln!("{w}"))
}

/// Runs `vae train`; returns the per-epoch statistics of the epochs it trained.
pub fn train(opts: &TrainOptions) -> Result<Vec<EpochStats>> {
    opts.check()?;
    let resumed = match &opts.resume {
        Some(path) => Some((Checkpoint::load(path)?, path.as_path())),
        None => None,
    };
    let ck = resumed.as_ref().map(|(c, _)| c);
    let settings = opts.settings(ck)?;
    let first = first_epoch(opts, ck)?;
    let (train, test) = load_data(opts, &settings)?;
    let model = model_for(&train, &settings, resumed.as_ref().map(|(c, p)| (c, *p)))?;
    let out = opts.out.clone().unwrap_or_else(default_out_dir);
    let resuming_here = opts.resume.as_ref().is_some_and(|r| resumes_in(r, &out));
    check_out(&out, resuming_here)?;
    // Timestamps where the adapter has them: tuning on a cache miss then times kernels on the GPU's clock, as
    // `vae tune` does (they share the cache), not as submit and wait, whose overhead on a GPU is a large part
    // of a small kernel's time. A training step itself reads no timestamps.
    let gpu = Gpu::new(GpuOptions {
        timestamps: true,
        ..opts.gpu.clone()
    })?;
    check_sizes(&gpu, model, settings.batch_size)?;
    let params = ck.map_or_else(|| model.init(settings.seed), |c| c.params.clone());
    let net = Net::new(&gpu, model, &params).map_err(|e| {
        e.advising(format!(
            "The model's parameters alone do not fit: use a smaller --hidden (now {}) or a device with more memory",
            model.hidden
        ))
    })?;
    let (mut trainer, mut evaluator) =
        build_for_device(&gpu, &net, &settings, opts.log_interval, &train, &test)?;
    let chosen = choose_kernels(&gpu, opts, ck, &trainer, &evaluator)?;
    trainer.rebuild_plans()?;
    evaluator.rebuild_plans()?;
    let mut kernels = kernels_used(
        &gpu,
        trainer.products().into_iter().chain(evaluator.products()),
    );
    let reduction = crate::kernels::Reduction::for_gpu(&gpu);
    kernels.insert(
        crate::kernels::Reduction::KEY.into(),
        reduction.name().into(),
    );
    let mut lines = Vec::new();
    if let Some(ck) = ck {
        trainer.restore(&ck.m, &ck.v, ck.step)?;
        trainer.epoch_step = ck.epoch_step;
        trainer.partial = ck.partial;
        // The earlier epochs' rows, so the new metrics.csv tells the whole run.
        lines.extend(
            ck.metrics
                .lines()
                .skip(1)
                .filter(|l| !l.is_empty())
                .map(String::from),
        );
    }
    let _lock = prepare_out(&out, resuming_here)?;
    if opts.verbose {
        let resuming = match ck {
            Some(c) if c.epoch_step > 0 => {
                format!(", resuming in epoch {first} after step {}", c.epoch_step)
            }
            Some(_) => format!(", resuming at epoch {first}"),
            None => String::new(),
        };
        eprintln!(
            "training {}-{}-{} on {} ({} train / {} test examples, batch {}, data {}){resuming}, writing to {}",
            model.pixels,
            model.hidden,
            model.latent,
            gpu.info,
            trainer.n_train(),
            evaluator.n_test(),
            settings.batch_size,
            settings.data_kind(),
            out.display()
        );
        eprintln!("{}", chosen.line());
    }
    let mut run = Run {
        settings: &settings,
        trainer,
        evaluator,
        out: &out,
        image: (train.rows, train.cols),
        kernels,
        resumed_seconds: ck.map_or(0.0, |c| c.partial_seconds),
        lines,
        verbose: opts.verbose,
    };
    run.trainer.gpu.set_hang_note(run.saved());
    let history = (first..=opts.epochs)
        .map(|epoch| run.epoch(epoch, opts.epochs).map_err(|e| run.stopped(e)))
        .collect::<Result<Vec<_>>>()?;
    // The training curve, the latent scatter and (2-D) the manifold, from the final parameters.
    let (params, metrics) = (run.trainer.params()?, run.metrics_csv());
    // Training's buffers are the pictures' now: a device that held the run holds them.
    drop(run);
    drop(net);
    let inf = Inference::fitting(&gpu, model, &params, settings.seed)?;
    end_of_training(&inf, &test, &metrics, &out)?;
    Ok(history)
}

/// The trainer and the evaluator at `settings`' batch size. Each attempt also makes room for the run's largest
/// readback (the parameters, at checkpoints), so a batch size that builds here also runs. Out of memory, the
/// error names the largest batch size that does build, found by building again at smaller sizes.
fn build_for_device<'a>(
    gpu: &'a Gpu,
    net: &'a Net,
    settings: &Settings,
    log_interval: u32,
    train: &Split,
    test: &Split,
) -> Result<(Trainer<'a>, Evaluator<'a>)> {
    let build = |batch: u32| -> Result<(Trainer<'a>, Evaluator<'a>)> {
        // What earlier uploads (or a failed attempt) dropped is freed first: every attempt sees the same memory.
        gpu.release_dropped()?;
        let s = Settings {
            batch_size: batch,
            ..settings.clone()
        };
        let trainer = Trainer::new(
            gpu,
            net,
            TrainConfig::new(net.config, &s, log_interval),
            train,
        )?;
        let evaluator = Evaluator::new(gpu, net, EvalConfig::from(&s), test)?;
        let readback = (net.layout.len * size_of::<f32>()) as u64;
        gpu.buffer(
            "readback.room",
            readback,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        Ok((trainer, evaluator))
    };
    build(settings.batch_size).map_err(|e| match e {
        Error::OutOfMemory { .. } => {
            let advice = match largest_fitting(settings.batch_size, |b| build(b).is_ok()) {
                Some(b) => format!(
                    "--batch-size {b} is the largest that fits on this device now (tried at start-up; --batch-size {} does not)",
                    settings.batch_size
                ),
                None => format!(
                    "Not even --batch-size 1 fits: use a smaller --hidden (now {}), fewer --train-samples/--test-samples (the data sets live on the device), or a device with more memory",
                    net.config.hidden
                ),
            };
            e.advising(advice)
        }
        e => e,
    })
}

/// The largest value in 1..`failed` for which `fits` holds (`fits` is taken to be monotone: what fits, fits
/// smaller), found by halving down from `failed` and then bisecting; `None` if not even 1 fits.
fn largest_fitting(failed: u32, fits: impl Fn(u32) -> bool) -> Option<u32> {
    let mut hi = failed; // does not fit
    let mut lo = hi / 2;
    while lo > 0 && !fits(lo) {
        hi = lo;
        lo /= 2;
    }
    if lo == 0 {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

fn progress_bar(verbose: bool, steps: u32, epoch: u32, epochs: u32) -> indicatif::ProgressBar {
    if !verbose {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} steps {msg} ({eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}
