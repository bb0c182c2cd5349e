//! vae-wgpu: a Variational Autoencoder (Kingma & Welling, 2013) trained on MNIST with hand-written WGSL compute
//! shaders through wgpu. The GPU does all the math; this crate owns buffers and pipelines, records dispatches, and
//! keeps a plain-Rust reference of every kernel for the tests.
//!
//! Layers, each using only those above it:
//!
//! - [`error`], [`atomic`], [`fault`], [`interrupt`]: the error type; files written whole or not at all; the
//!   tests' fault injection; Ctrl-C.
//! - [`gpu`]: adapters, the device and its limits, error scopes, buffers, readback, pipelines and dispatches.
//! - [`kernels`]: the WGSL kernel families, each with its host wrapper and CPU reference, and the host/shader
//!   contract (constants and uniform structs) they share.
//! - [`tune`]: autotuning above the kernel families: each matmul candidate checked and timed per product, the
//!   choices and their cache.
//! - [`model`]: the model's sizes and flat parameter layout, the network's dispatches, the f64 reference step,
//!   and inference on a trained model.
//! - [`data`]: MNIST's IDX files, and downloading them.
//! - [`training`]: the trainer, evaluation, checkpoints, a run's settings and `vae train` itself.
//! - [`output`]: PNG grids, plots, and the pictures drawn from a model.
//! - [`perf`]: benchmarks and the per-kernel profile.
//! - [`web`]: the latent-space explorer in the browser (`vae web`): its site, server and export.

pub mod atomic;
pub mod data;
pub mod error;
pub mod fault;
pub mod gpu;
pub mod interrupt;
pub mod kernels;
pub mod model;
#[cfg(not(target_arch = "wasm32"))]
pub mod output;
#[cfg(not(target_arch = "wasm32"))]
pub mod perf;
pub mod training;
#[cfg(not(target_arch = "wasm32"))]
pub mod tune;
#[cfg(not(target_arch = "wasm32"))]
pub mod web;

pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions};
