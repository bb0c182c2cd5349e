//! Data: MNIST-style IDX files (gzipped or not), and fetching them from mirrors with md5 checks.

#[cfg(not(target_arch = "wasm32"))]
pub mod download;
pub mod files;
pub mod mnist;
