//! What a run reports per epoch: metrics.csv's rows, and the progress bar.

use super::plans::LossSum;

/// The CSV header of metrics.csv.
pub const METRICS_HEADER: &str = "epoch,train_loss,train_bce,train_kl,test_loss,test_bce,test_kl,epoch_seconds,samples_per_second";

/// What one epoch did.
#[derive(Clone, Copy, Debug)]
pub struct EpochStats {
    pub epoch: u32,
    pub train: LossSum,
    pub test: LossSum,
    pub seconds: f64,
}

pub(super) fn metrics_line(e: &EpochStats, n_train: u32) -> String {
    let (tl, tb, tk) = e.train.per_example();
    let (vl, vb, vk) = e.test.per_example();
    format!(
        "{},{tl:.4},{tb:.4},{tk:.4},{vl:.4},{vb:.4},{vk:.4},{:.3},{:.1}",
        e.epoch,
        e.seconds,
        n_train as f64 / e.seconds
    )
}

pub(super) fn progress_bar(
    verbose: bool,
    steps: u32,
    epoch: u32,
    epochs: u32,
) -> indicatif::ProgressBar {
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
