//! vae-wgpu: a Variational Autoencoder (Kingma & Welling, 2013) trained on MNIST with hand-written WGSL compute
//! shaders through wgpu. The GPU does all the math; this crate owns buffers and pipelines, records dispatches, and
//! keeps a plain-Rust reference of every kernel for the tests.

pub mod bench;
pub mod checkpoint;
pub mod download;
pub mod error;
pub mod gpu;
pub mod images;
pub mod infer;
pub mod kernels;
pub mod mnist;
pub mod model;
pub mod net;
pub mod philox;
pub mod plots;
pub mod profile;
pub mod reference;
pub mod run;
pub mod tools;
pub mod train;

pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions};
