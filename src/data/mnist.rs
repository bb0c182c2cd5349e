//! MNIST (and any IDX set of 8-bit images): the four IDX files, gzipped or not, every header field checked.
//!
//! IDX: two zero bytes, an element-type byte (0x08 = unsigned byte), the number of dimensions, then each dimension
//! as a big-endian u32, then the data. Images are (n, rows, cols), labels (n).

use std::path::{Path, PathBuf};

use crate::data::files::FILES;
use crate::error::{Error, Result};

/// One split: `n` images of `rows × cols` bytes and their labels.
#[derive(Clone, Debug)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Split {
    /// The split as the bytes of its two IDX files, images then labels (what `vae web` serves the Train view).
    pub fn to_idx(&self) -> (Vec<u8>, Vec<u8>) {
        let header = |kind: u8, dims: &[usize]| {
            let mut h = vec![0, 0, 8, kind];
            for &d in dims {
                h.extend((d as u32).to_be_bytes());
            }
            h
        };
        let mut images = header(3, &[self.n, self.rows, self.cols]);
        images.extend(&self.images);
        let mut labels = header(1, &[self.n]);
        labels.extend(&self.labels);
        (images, labels)
    }

    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// The first `n` examples (all of them when `n` is `None` or larger).
    pub fn take(mut self, n: Option<usize>) -> Split {
        if let Some(n) = n.filter(|&n| n < self.n) {
            self.images.truncate(n * self.pixels());
            self.labels.truncate(n);
            self.n = n;
        }
        self
    }

    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * self.pixels()..(i + 1) * self.pixels()]
    }
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub train: Split,
    pub test: Split,
}

fn data_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Data {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Where `name` is in `dir`: the plain file or its `.gz`, whichever exists (plain first).
pub fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

/// Reads a file, inflating it when it is gzipped (by content, not by name; a `.gz` name that is not gzip is an
/// error, because it means a broken download).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| data_err(path, format!("cannot read it: {e}")))?;
    let gz_name = path.extension().is_some_and(|e| e == "gz");
    let is_gz = raw.starts_with(&[0x1f, 0x8b]);
    if gz_name && !is_gz {
        return Err(data_err(
            path,
            "the name says gzip but the content is not gzip (a broken or partial download?); delete it and fetch it again",
        ));
    }
    if !is_gz {
        return Ok(raw);
    }
    gunzip(path, &raw)
}

/// Inflates a gzip stream (the native program reads the downloads as they come).
#[cfg(not(target_arch = "wasm32"))]
fn gunzip(path: &Path, raw: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .read_to_end(&mut out)
        .map_err(|e| {
            data_err(
                path,
                format!("the gzip stream is corrupt or truncated ({e}); delete the file and fetch it again"),
            )
        })?;
    Ok(out)
}

/// The browser is served the inflated IDX bytes (`vae web`), never gzip.
#[cfg(target_arch = "wasm32")]
fn gunzip(path: &Path, _raw: &[u8]) -> Result<Vec<u8>> {
    Err(data_err(
        path,
        "gzip is not read in the browser: serve the inflated IDX file",
    ))
}

/// Parses an IDX file of unsigned bytes with `ndims` dimensions; returns (dims, data).
pub fn parse_idx(path: &Path, bytes: &[u8], ndims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    if bytes.len() < 4 {
        return Err(data_err(
            path,
            format!(
                "{} bytes is too short for an IDX header; the file is empty or truncated",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(data_err(
            path,
            format!(
                "wrong magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file (expected 0000 08 0{ndims})",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(data_err(
            path,
            format!(
                "element type 0x{:02x}, expected 0x08 (unsigned byte): only 8-bit IDX data is supported",
                bytes[2]
            ),
        ));
    }
    if bytes[3] as usize != ndims {
        return Err(data_err(
            path,
            format!(
                "{} dimensions, expected {ndims} ({}); are the image and label files swapped?",
                bytes[3],
                if ndims == 3 {
                    "images: count, rows, columns"
                } else {
                    "labels: count"
                }
            ),
        ));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(data_err(path, "the header is truncated"));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().unwrap()) as usize)
        .collect();
    let expected = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let Some(expected) = expected else {
        return Err(data_err(path, format!("dimensions {dims:?} overflow")));
    };
    let have = bytes.len() - header;
    if have < expected {
        return Err(data_err(
            path,
            format!(
                "the header promises {dims:?} = {expected} bytes of data but the file holds {have}: it is truncated; fetch it again"
            ),
        ));
    }
    if have > expected {
        return Err(data_err(
            path,
            format!(
                "{} bytes of trailing data after the {dims:?} the header describes: the file is corrupt",
                have - expected
            ),
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
}

fn load_split(dir: &Path, images: &str, labels: &str) -> Result<Split> {
    let missing = |name: &str| {
        data_err(
            &dir.join(name),
            format!(
                "not found (nor {name}.gz). Put MNIST's four IDX files in {} (see data/README.md), or pass --data DIR",
                dir.display()
            ),
        )
    };
    let ipath = find(dir, images).ok_or_else(|| missing(images))?;
    let lpath = find(dir, labels).ok_or_else(|| missing(labels))?;
    split_from_bytes(
        (&ipath, &read_maybe_gz(&ipath)?),
        (&lpath, &read_maybe_gz(&lpath)?),
    )
}

/// A split from the bytes of its images' and labels' IDX files (each with the path or name that errors give):
/// what [`load`] reads from files, and the browser is served.
pub fn split_from_bytes(
    (ipath, images): (&Path, &[u8]),
    (lpath, labels): (&Path, &[u8]),
) -> Result<Split> {
    let (idims, ibytes) = parse_idx(ipath, images, 3)?;
    let (ldims, lbytes) = parse_idx(lpath, labels, 1)?;
    let (n, rows, cols) = (idims[0], idims[1], idims[2]);
    if n == 0 || rows == 0 || cols == 0 {
        return Err(data_err(
            ipath,
            format!("holds no images ({n} × {rows} × {cols})"),
        ));
    }
    if ldims[0] != n {
        return Err(data_err(
            lpath,
            format!(
                "{} labels but {} has {n} images; the files do not belong together",
                ldims[0],
                ipath.display()
            ),
        ));
    }
    if let Some(i) = lbytes.iter().position(|&l| l > 9) {
        return Err(data_err(
            lpath,
            format!(
                "label {} at index {i} is out of range 0..=9; the file is corrupt",
                lbytes[i]
            ),
        ));
    }
    Ok(Split {
        images: ibytes,
        labels: lbytes,
        n,
        rows,
        cols,
    })
}

/// Loads the four files from `dir` and checks that train and test images have the same size.
pub fn load(dir: &Path) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(data_err(
            dir,
            "no such directory. Put MNIST's four IDX files there (see data/README.md; `vae train` downloads them when missing), or pass --data DIR",
        ));
    }
    let train = load_split(dir, FILES[0], FILES[1])?;
    let test = load_split(dir, FILES[2], FILES[3])?;
    if (train.rows, train.cols) != (test.rows, test.cols) {
        return Err(data_err(
            dir,
            format!(
                "the training images ({}) are {}×{} but the test images ({}) are {}×{}; the files come from different datasets: put matching files in the directory",
                FILES[0], train.rows, train.cols, FILES[2], test.rows, test.cols
            ),
        ));
    }
    Ok(Dataset { train, test })
}

#[cfg(not(target_arch = "wasm32"))]
/// Loads the dataset from `dir`, downloading missing files from `mirrors` first (see [`crate::data::download`]).
pub fn ensure(dir: &Path, mirrors: &[String], verbose: bool) -> Result<Dataset> {
    let missing: Vec<usize> = (0..4).filter(|&i| find(dir, FILES[i]).is_none()).collect();
    if !missing.is_empty() {
        crate::data::download::fetch(dir, &missing, mirrors, verbose)?;
    }
    load(dir)
}
