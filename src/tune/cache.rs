//! The choice cache: one text file per adapter, driver, backend and program version (with a hash of the
//! shaders), so a second run starts at once. A cache that is unreadable, corrupt or foreign is refused with the
//! reason, and never names a kernel that does not exist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::known_choice;

/// What the cache is keyed by: the adapter, its driver, the backend and the program (version and shaders).
pub fn identity(gpu: &Gpu) -> String {
    let i = &gpu.info;
    format!(
        "adapter={} | driver={} {} | backend={:?} | program=vae-wgpu {} shaders {:016x}",
        i.name,
        i.driver,
        i.driver_info,
        i.backend,
        env!("CARGO_PKG_VERSION"),
        shaders_hash()
    )
}

/// FNV-1a over every shader module's text: a changed kernel invalidates the cache.
fn shaders_hash() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for family in crate::kernels::FAMILIES {
        // The module's source, without what a test-only fault adds (a driver's rejection is not the program).
        let parts = family.parts();
        let texts: Vec<&str> = parts
            .iter()
            .filter(|(name, _)| *name != crate::gpu::pipeline::REJECTED_PART.0)
            .map(|(_, text)| text.as_ref())
            .collect();
        for b in texts.join("\n").bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The default cache file for this adapter: `<user cache dir>/vae-wgpu/kernels-<hash of the identity>.txt`.
pub fn default_cache_path(identity: &str) -> Option<PathBuf> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in identity.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    #[cfg(target_arch = "wasm32")]
    return None; // the browser has no files (it does not tune)
    #[cfg(not(target_arch = "wasm32"))]
    Some(
        dirs::cache_dir()?
            .join("vae-wgpu")
            .join(format!("kernels-{h:016x}.txt")),
    )
}

const HEADER: &str =
    "# vae-wgpu kernel choices, written by tuning (vae tune); delete this file to tune again";

/// Reads a cache file written for `identity`. Ok(None) when there is none; Err(warning) when it is unusable.
pub fn read_cache(
    path: &Path,
    identity: &str,
) -> std::result::Result<Option<BTreeMap<String, String>>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it ({e})")),
    };
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err("it is not a kernel-choice cache (unexpected first line)".into());
    }
    match lines.next().and_then(|l| l.strip_prefix("identity ")) {
        Some(id) if id == identity => {}
        Some(id) => {
            return Err(format!(
                "it was written for another adapter or program ({id})"
            ));
        }
        None => return Err("its identity line is missing".into()),
    }
    let mut choices = BTreeMap::new();
    for (i, line) in lines.enumerate() {
        let (key, kernel) = line
            .split_once('\t')
            .ok_or_else(|| format!("line {} is not `product<TAB>kernel`", i + 3))?;
        if !known_choice(key, kernel) {
            return Err(format!("line {} names no known kernel ({kernel:?})", i + 3));
        }
        choices.insert(key.to_string(), kernel.to_string());
    }
    Ok(Some(choices))
}

/// Writes the cache (atomically; the directory is created).
pub fn write_cache(path: &Path, identity: &str, choices: &BTreeMap<String, String>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            what: format!("creating {}", dir.display()),
            message: e.to_string(),
        })?;
    }
    let mut text = format!("{HEADER}\nidentity {identity}\n");
    for (k, v) in choices {
        text.push_str(&format!("{k}\t{v}\n"));
    }
    write_atomic(path, text.as_bytes())
}
