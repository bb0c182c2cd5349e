//! Fetching MNIST when it is missing, the way torchvision does: each file from the first mirror that serves it,
//! its md5 checked before it is kept, written atomically into the data directory.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use md5::{Digest, Md5};

use crate::atomic::write_atomic;
use crate::data::files::{FILES, MD5};
use crate::error::{Error, Result};

/// torchvision's mirrors for MNIST, in its order.
pub const MIRRORS: [&str; 2] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
];

/// No MNIST file is larger than this (the training images are 9.9 MB gzipped); a bigger body is refused.
const MAX_BYTES: u64 = 64 << 20;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads `url` into memory, with a progress bar when `verbose`; returns the body.
fn get(
    agent: &ureq::Agent,
    url: &str,
    name: &str,
    verbose: bool,
) -> std::result::Result<Vec<u8>, String> {
    let response = agent.get(url).call().map_err(|e| e.to_string())?;
    let body = response.into_body();
    let total = body.content_length();
    if total.is_some_and(|t| t > MAX_BYTES) {
        return Err(format!(
            "the server announces {} bytes, more than any MNIST file",
            total.unwrap_or(0)
        ));
    }
    let bar = if verbose {
        let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_message(name.to_string());
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut reader = body.into_reader().take(MAX_BYTES + 1);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
        bar.set_position(out.len() as u64);
    }
    bar.finish_and_clear();
    if out.len() as u64 > MAX_BYTES {
        return Err("the body is larger than any MNIST file".into());
    }
    Ok(out)
}

/// Fetches the files `FILES[i]` for each `i` in `missing` into `dir` as `<name>.gz`, trying `mirrors` in order
/// (the built-in list when empty). A file is kept only when its md5 matches; nothing partial is ever left.
pub fn fetch(dir: &Path, missing: &[usize], mirrors: &[String], verbose: bool) -> Result<()> {
    let mirrors: Vec<String> = if mirrors.is_empty() {
        MIRRORS.iter().map(|s| s.to_string()).collect()
    } else {
        mirrors.to_vec()
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into();
    for &i in missing {
        let name = format!("{}.gz", FILES[i]);
        let mut attempts = Vec::new();
        let mut done = false;
        for mirror in &mirrors {
            let url = format!("{}/{name}", mirror.trim_end_matches('/'));
            if verbose {
                eprintln!("downloading {url}");
            }
            match get(&agent, &url, &name, verbose) {
                Err(e) => attempts.push(format!("{url}: {e}")),
                Ok(body) => {
                    let sum = hex(&Md5::digest(&body));
                    if sum != MD5[i] {
                        attempts.push(format!(
                            "{url}: md5 {sum} does not match the published {} (corrupt or different file; not kept)",
                            MD5[i]
                        ));
                        continue;
                    }
                    // The directory is made only once there is a verified file to put in it.
                    std::fs::create_dir_all(dir).map_err(|e| Error::Io {
                        what: format!("creating the data directory {}", dir.display()),
                        message: format!("{e}; pass another with --data"),
                    })?;
                    write_atomic(&dir.join(&name), &body)?;
                    done = true;
                    break;
                }
            }
        }
        if !done {
            return Err(Error::Data {
                path: dir.join(&name).display().to_string(),
                message: format!(
                    "missing, and no mirror gave a good copy:\n  {}\nDownload the four files yourself (see data/README.md) into {}, or pass --mirror URL",
                    attempts.join("\n  "),
                    dir.display()
                ),
            });
        }
    }
    Ok(())
}
