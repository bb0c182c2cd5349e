//! Data: MNIST-style IDX files (gzipped or not), and fetching them from mirrors with md5 checks.

pub mod download;
pub mod files;
pub mod mnist;
