//! Helpers shared by the integration tests that run the binary or build files.
#![allow(dead_code)] // each test target uses its own subset

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The MNIST directory: data/mnist (where .ci/run links it), else ../shared/data/mnist. Fails, never skips.
pub fn mnist_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in [root.join("data/mnist"), root.join("../shared/data/mnist")] {
        if dir.join("train-images-idx3-ubyte.gz").is_file()
            || dir.join("train-images-idx3-ubyte").is_file()
        {
            return dir;
        }
    }
    panic!(
        "these tests need MNIST in data/mnist/ (see data/README.md for where to get the four files)"
    );
}

/// A fresh path under the temporary directory, unique to this process and call (not created).
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vae-test-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// An IDX file: the 4 magic bytes, big-endian dimensions, data.
pub fn idx(magic: [u8; 4], dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = magic.to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}
