//! Training: the trainer (whole steps on the GPU), evaluation on the test set, checkpoints, a run's settings, and
//! `vae train` from options to metrics.csv and pictures.

pub mod checkpoint;
pub mod eval;
pub mod plans;
pub mod run;
pub mod settings;
pub mod trainer;
