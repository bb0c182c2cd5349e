//! Hooks for the tests only, each armed by an environment variable whose name says what it is for; unset (always,
//! outside the tests), each check is one comparison with `None`.
//!
//! - `VAE_TEST_FAULT` names points, comma-separated, at which the program misbehaves on purpose, each the first
//!   time it gets there: it stalls (until killed or interrupted) so a test can kill or interrupt it at exactly
//!   that point, or it meets a fault a real GPU brings (device loss, a hang, a full memory, a rejected kernel).
//! - `VAE_TEST_SHADER_DIR` names a directory whose `.wgsl` files replace the embedded ones (the mutation run,
//!   tests/mutants/, plants one change at a time there without rebuilding).
//!
//! Points: `stall-before-rename:<file name>` (in [`crate::atomic::write_atomic`], after the temporary file is
//! written and synced, before the rename; the first write of that file in the process);
//! `stall-after-step:<n>` (in the trainer, at the log point after global step n, mid-epoch where n is);
//! `lose-device-after-step:<n>` (there too: destroys the device, as a driver reset would);
//! `hang-after-step:<n>` (there too: submits a kernel that keeps the GPU busy far longer than the wait timeout);
//! `oom:<buffer label>` (the allocation of the first buffer whose label starts with it fails as out of memory;
//! `oom:<buffer label>#<n>`, the n-th such allocation); `memory:<bytes>` (a device with only that much memory:
//! every allocation past it fails);
//! `reject:<kernel>` (the pipeline of that matmul candidate, e.g. `reg64`, fails to build inside wgpu, as a driver
//! that rejects it would: it is given a pipeline constant its shader does not declare);
//! `reject:<module>` (that shader module, e.g. `matmul_split`, fails validation when it is built, so every kernel
//! in it is rejected: it ends with invalid WGSL, see `gpu::pipeline::REJECTED_PART`);
//! `wrong:<kernel>` (that matmul candidate computes wrong, finite numbers, as a miscompiled kernel would);
//! `submission-seconds:<s>` (the trainer's submissions hold about s seconds of steps instead of a quarter of a
//! second; 0: one step each, as on an adapter whose steps are slow, whatever this one's speed);
//! `stall-after-submit:<n>` (in the trainer, right after it submits the steps that end at global step n, while
//! they are in flight, before it waits for anything).
//! `reject:`, `wrong:` and `submission-seconds:` hold every time, not only the first: a driver that rejects a
//! kernel always does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, OnceLock};

/// The environment variable that arms faults.
pub const VARIABLE: &str = "VAE_TEST_FAULT";

/// The armed points (empty, always, outside the tests).
fn armed() -> &'static BTreeSet<String> {
    static POINTS: OnceLock<BTreeSet<String>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var(VARIABLE)
            .unwrap_or_default()
            .split(',')
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect()
    })
}

/// Whether any fault is armed (so that callers build point names only in the tests).
pub fn any_armed() -> bool {
    !armed().is_empty()
}

/// Whether `point` is armed and reached for the first time (each point fires once per process).
pub fn fires(point: &str) -> bool {
    static FIRED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    armed().contains(point)
        && FIRED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(point.to_string())
}

/// Whether `point` is armed and reached for the `n`-th time (1-based) in this process.
pub fn nth(point: &str, n: u32) -> bool {
    static SEEN: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());
    if !armed().contains(point) {
        return false;
    }
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let count = seen.entry(point.to_string()).or_insert(0);
    *count += 1;
    *count == n
}

/// The value after `prefix` of the armed points that start with it (e.g. `oom:` gives the buffer labels).
pub fn values(prefix: &str) -> impl Iterator<Item = &'static str> {
    armed().iter().filter_map(move |p| p.strip_prefix(prefix))
}

/// Stalls until killed or interrupted (Ctrl-C, which the run then handles as anywhere else), the first time the
/// program reaches `point` while it is armed. Stalls one after another each wait for an interrupt of their own.
pub fn stall_at(point: &str) {
    if fires(point) {
        let seen = crate::interrupt::count();
        eprintln!("{VARIABLE}: stalled at {point}");
        // A second interrupt is the handler's exit on its way (it exits on its own thread): never go on then,
        // or the work this stall holds back could still finish before that exit.
        while crate::interrupt::count() == seen || crate::interrupt::count() >= 2 {
            std::thread::sleep(std::time::Duration::from_millis(5));
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
