//! Files written whole or not at all: a crash or a `kill -9` leaves the old file or the new one, never half of
//! one. Checkpoints, metrics, pictures and downloads all go through here.

use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it into place: readers see the old
/// file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |e: std::io::Error| Error::Io {
        what: format!("writing {}", path.display()),
        message: e.to_string(),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        crate::fault::stall_at(&format!("stall-before-rename:{name}"));
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}
