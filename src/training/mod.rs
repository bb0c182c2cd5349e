//! Training: the trainer (whole steps on the GPU), evaluation on the test set, checkpoints, a run's settings, and
//! `vae train` from options to metrics.csv and pictures: `options.rs` (what it is told, and what a resumed run
//! must agree with), `outdir.rs` (its output directory and lock), `metrics.rs` (metrics.csv's rows and the
//! progress bar) and `run.rs` (the run itself).

pub mod checkpoint;
pub mod eval;
pub mod grid;
pub mod metrics;
pub mod options;
pub mod outdir;
pub mod pace;
pub mod plans;
pub mod run;
pub mod settings;
pub mod sweep;
pub mod trainer;
