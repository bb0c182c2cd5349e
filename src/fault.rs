//! Hooks for the tests only, each armed by an environment variable whose name says what it is for; unset (always,
//! outside the tests), each check is one comparison with `None`.
//!
//! - `VAE_TEST_FAULT` names one point at which the program stalls (sleeps until it is killed), so a test can kill
//!   it at exactly that point.
//! - `VAE_TEST_SHADER_DIR` names a directory whose `.wgsl` files replace the embedded ones (the mutation run,
//!   tests/mutants/, plants one change at a time there without rebuilding).
//!
//! Points: `stall-before-rename:<file name>` (in [`crate::atomic::write_atomic`], after the temporary file is
//! written and synced, before the rename; the first write of that file in the process);
//! `stall-after-step:<n>` (in the trainer, at the log point after global step n, mid-epoch where n is).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The environment variable that arms a fault.
pub const VARIABLE: &str = "VAE_TEST_FAULT";

fn armed() -> Option<&'static str> {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    POINT
        .get_or_init(|| std::env::var(VARIABLE).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// Stalls forever, the first time the program reaches `point` while `VAE_TEST_FAULT` names it.
pub fn stall_at(point: &str) {
    static FIRED: AtomicBool = AtomicBool::new(false);
    if armed() == Some(point) && !FIRED.swap(true, Ordering::SeqCst) {
        eprintln!("{VARIABLE}: stalled at {point}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// The environment variable that points the shader registry at another copy of `shaders/`.
pub const SHADER_DIR: &str = "VAE_TEST_SHADER_DIR";

/// The text of `path` (e.g. `shaders/matmul.wgsl`) from the directory `VAE_TEST_SHADER_DIR` names, if it is set.
pub fn shader_override(path: &str) -> Option<String> {
    static DIR: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    let dir = DIR
        .get_or_init(|| std::env::var_os(SHADER_DIR).map(std::path::PathBuf::from))
        .as_ref()?;
    let name = std::path::Path::new(path).file_name()?;
    std::fs::read_to_string(dir.join(name)).ok()
}
