//! Training: the trainer (whole steps on the GPU), evaluation on the test set, checkpoints, a run's settings, and
//! `vae train` from options to metrics.csv and pictures: `options.rs` (what it is told, and what a resumed run
//! must agree with), `outdir.rs` (its output directory and lock), `metrics.rs` (metrics.csv's rows and the
//! progress bar) and `run.rs` (the run itself).

pub mod checkpoint;
pub mod eval;
pub mod grid;
#[cfg(not(target_arch = "wasm32"))]
pub mod metrics;
#[cfg(not(target_arch = "wasm32"))]
pub mod options;
#[cfg(not(target_arch = "wasm32"))]
pub mod outdir;
pub mod pace;
pub mod plans;
#[cfg(not(target_arch = "wasm32"))]
pub mod run;
pub mod settings;
#[cfg(not(target_arch = "wasm32"))]
pub mod sweep;
pub mod trainer;
