//! A run's output directory: its default name, the checks made before the GPU is opened, and the lock that
//! keeps two runs out of one directory.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `runs/<UTC date>-<time>`, e.g. runs/20261125-170312.
pub fn default_out_dir() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    PathBuf::from(format!(
        "runs/{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    ))
}

/// Holds `<out>/.vae.lock` while a run writes to `out`; removes it when dropped (a killed run's lock is stale and
/// is taken over once its process is gone).
pub struct OutLock {
    path: PathBuf,
}

impl Drop for OutLock {
    fn drop(&mut self) {
        std::fs::remove_file(&self.path).ok();
    }
}

/// Whether process `pid` is running. Where that cannot be told (no /proc), assume it is.
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc_root = Path::new("/proc");
    !proc_root.is_dir() || proc_root.join(pid.to_string()).exists()
}

fn io_error(what: String, e: std::io::Error, hint: &str) -> Error {
    Error::Io {
        what,
        message: format!("{e}; {hint}"),
    }
}

fn creating_out(out: &Path, e: std::io::Error) -> Error {
    io_error(
        format!("creating the output directory {}", out.display()),
        e,
        "choose another with --out",
    )
}

fn holds_a_run(out: &Path) -> Error {
    Error::Invalid(format!(
        "{} already holds a run (checkpoint.safetensors): pass --resume {} to continue it, or choose another --out",
        out.display(),
        out.join("checkpoint.safetensors").display()
    ))
}

/// The live process that holds `out`'s lock, if one does.
fn lock_owner(out: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(out.join(".vae.lock"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    process_alive(pid).then_some(pid)
}

fn locked(out: &Path, pid: u32) -> Error {
    Error::Invalid(format!(
        "another run (process {pid}) is writing to {}: wait for it, or choose another --out. If no such run exists, delete {}",
        out.display(),
        out.join(".vae.lock").display()
    ))
}

/// The refusals of `out` that [`prepare_out`] would make, made before the run opens the GPU and chooses its
/// kernels (which can take minutes on a software driver), without creating anything: a path under a file or
/// through a symbolic link to nothing, a directory that already holds another run, or one that a live run is
/// writing to. [`prepare_out`] checks again, with the lock held.
pub(super) fn check_out(out: &Path, resuming_here: bool) -> Result<()> {
    if let Some(link) = out
        .ancestors()
        .find(|a| a.symlink_metadata().is_ok() && a.metadata().is_err())
    {
        let to = std::fs::read_link(link).unwrap_or_default();
        let e = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{} is a symbolic link to {}, which does not exist",
                link.display(),
                to.display()
            ),
        );
        return Err(creating_out(out, e));
    }
    if let Some(existing) = out.ancestors().find(|a| a.exists())
        && !existing.is_dir()
    {
        let e = std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a directory", existing.display()),
        );
        return Err(creating_out(out, e));
    }
    if !resuming_here && out.join("checkpoint.safetensors").exists() {
        return Err(holds_a_run(out));
    }
    match lock_owner(out) {
        Some(pid) => Err(locked(out, pid)),
        None => Ok(()),
    }
}

/// Whether the checkpoint at `resume` lies in the directory `out`, both existing: a bare file name
/// (`--resume checkpoint.safetensors --out .`) lies in the working directory.
pub(super) fn resumes_in(resume: &Path, out: &Path) -> bool {
    let dir = resume
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (dir.canonicalize(), out.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Creates `out`, checks it is writable, takes its lock and clears temporary files dead runs left behind.
/// `resuming_here`: the run continues the checkpoint already in `out`.
pub(super) fn prepare_out(out: &Path, resuming_here: bool) -> Result<OutLock> {
    std::fs::create_dir_all(out).map_err(|e| creating_out(out, e))?;
    let path = out.join(".vae.lock");
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                use std::io::Write;
                writeln!(f, "{}", std::process::id()).map_err(|e| {
                    io_error(
                        format!("writing {}", path.display()),
                        e,
                        "choose another --out",
                    )
                })?;
                let lock = OutLock { path };
                if !resuming_here && out.join("checkpoint.safetensors").exists() {
                    return Err(holds_a_run(out));
                }
                clear_stale_temporaries(out);
                return Ok(lock);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match lock_owner(out) {
                Some(pid) => return Err(locked(out, pid)),
                // The run that held it is gone: take it over.
                None => {
                    std::fs::remove_file(&path).ok();
                }
            },
            Err(e) => {
                return Err(io_error(
                    format!("creating {}", path.display()),
                    e,
                    "the output directory must be writable; choose another with --out",
                ));
            }
        }
    }
    Err(Error::Invalid(format!(
        "could not take the lock {}",
        path.display()
    )))
}

/// Removes `.<name>.tmp<pid>` files (see `write_atomic`) whose writer is no longer running.
fn clear_stale_temporaries(out: &Path) {
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(pid) = name
            .rsplit(".tmp")
            .next()
            .filter(|_| name.starts_with('.') && name.contains(".tmp"))
            && let Ok(pid) = pid.parse::<u32>()
            && !process_alive(pid)
        {
            std::fs::remove_file(entry.path()).ok();
        }
    }
}
