//! The explorer's files, built in memory: what `vae web` serves and `vae web --export` writes.
//!
//! | file | what |
//! |---|---|
//! | `index.html`, `app.js`, `model.js`, `style.css` | the page (`web/` in the repository, embedded in the binary) |
//! | `matmul.wgsl` | the matmul shader module, composed from `shaders/` as the native pipeline composes it |
//! | `params.bin` | the checkpoint's parameters: little-endian f32 in the flat layout of `src/model/mod.rs` |
//! | `scatter.bin` | the test set's latent means on the pad: n × 2 little-endian f32 (pad coordinates), then n labels (u8) |
//! | `model.json` | the manifest: sizes, where each layer is in `params.bin`, the kernel's contract, the pad's plane |
//!
//! `scatter.bin` is there only when the site was built with test images.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::data::mnist::Split;
use crate::error::{Error, Result};
use crate::kernels::contract::{EpilogueKind, Layout, MatmulParams};
use crate::kernels::matmul::Kernel;
use crate::model::Linear;
use crate::output::plots::Pca;
use crate::training::checkpoint::Checkpoint;

/// Identifies the manifest's format (and its version) for the page.
pub const FORMAT: &str = "vae-wgpu-web/1";

/// The page's own files: (name, content type, text).
const PAGE: [(&str, &str, &str); 4] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../web/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/app.js"),
    ),
    (
        "model.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/model.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../web/style.css"),
    ),
];

/// The Train view (`train.html`): always in the site; it says so when its module (below) is not built.
const TRAIN_PAGE: [(&str, &str, &str); 2] = [
    (
        "train.html",
        "text/html; charset=utf-8",
        include_str!("../../web/train.html"),
    ),
    (
        "train.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/train.js"),
    ),
];

/// The Train view's module, the library compiled to WebAssembly (web/trainer): the files `scripts/build-web`
/// writes, with their content types (the browser compiles a module as it downloads only if it is served as
/// `application/wasm`).
pub const TRAINER_FILES: [(&str, &str); 2] = [
    ("vae_web.js", "text/javascript; charset=utf-8"),
    ("vae_web_bg.wasm", "application/wasm"),
];

/// The Train view's data files: the training and test subsets as IDX files of unsigned bytes.
pub const TRAIN_DATA: [&str; 4] = [
    "train-images.idx",
    "train-labels.idx",
    "test-images.idx",
    "test-labels.idx",
];

/// The kernel the page runs: the register-tiled 64×64 kernel, the portable default on GPUs (the browser's GPU is
/// unknown here, and the 64 tile is what `--no-tune` runs on one).
const PAGE_KERNEL: Kernel = Kernel::Reg64;

/// One file of the site.
#[derive(Clone, Debug)]
pub struct SiteFile {
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

/// The site: a fixed map from file name to contents. Nothing else is ever served or written.
#[derive(Clone, Debug)]
pub struct Site {
    files: BTreeMap<String, SiteFile>,
}

/// The test set's latent means, `latent` values per image, and the images' labels.
#[derive(Clone, Debug)]
pub struct Means {
    pub mu: Vec<f32>,
    pub labels: Vec<u8>,
}

/// What a site shows.
pub struct SiteModel<'a> {
    /// How the page names the checkpoint.
    pub name: String,
    pub checkpoint: &'a Checkpoint,
    /// (rows, cols) of the images.
    pub image: (u32, u32),
    pub means: Option<&'a Means>,
}

impl Site {
    /// Adds the Train view's data, the training and test subsets as IDX files, and its module, the files
    /// [`TRAINER_FILES`] of `module` (`scripts/build-web`'s output directory), where it is built. Without them
    /// the Train view says what is missing and how to get it.
    pub fn add_train_view(
        &mut self,
        train: &Split,
        test: &Split,
        module: Option<&Path>,
    ) -> Result<()> {
        let (train_images, train_labels) = train.to_idx();
        let (test_images, test_labels) = test.to_idx();
        for (name, bytes) in
            TRAIN_DATA
                .into_iter()
                .zip([train_images, train_labels, test_images, test_labels])
        {
            let content_type = "application/octet-stream";
            self.files.insert(
                name.into(),
                SiteFile {
                    content_type,
                    bytes,
                },
            );
        }
        let Some(dir) = module else {
            return Ok(());
        };
        for (name, content_type) in TRAINER_FILES {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| Error::Io {
                what: format!("reading the Train view's module {}", path.display()),
                message: format!("{e}; build it with scripts/build-web"),
            })?;
            self.files.insert(
                name.into(),
                SiteFile {
                    content_type,
                    bytes,
                },
            );
        }
        Ok(())
    }

    /// The file at `name` (a site file name, e.g. `index.html`), if the site has one.
    pub fn get(&self, name: &str) -> Option<&SiteFile> {
        self.files.get(name)
    }

    /// Every file, by name.
    pub fn files(&self) -> impl Iterator<Item = (&str, &SiteFile)> {
        self.files.iter().map(|(n, f)| (n.as_str(), f))
    }

    /// The bytes of all files together.
    pub fn size(&self) -> usize {
        self.files.values().map(|f| f.bytes.len()).sum()
    }

    /// Writes the site into `dir`, which must not exist or be empty: the files go into a temporary directory
    /// beside it, which is renamed into place once all are written, so an error leaves nothing behind.
    pub fn export(&self, dir: &Path) -> Result<()> {
        let io = |what: String| {
            move |e: std::io::Error| Error::Io {
                what,
                message: e.to_string(),
            }
        };
        let existed = dir.exists();
        if existed {
            let mut entries = std::fs::read_dir(dir).map_err(io(format!(
                "{} exists and cannot be read as a directory",
                dir.display()
            )))?;
            if entries.next().is_some() {
                return Err(Error::Invalid(format!(
                    "{} is not empty: --export writes the site into a new or empty directory, never over other \
                     files; choose another directory or empty this one",
                    dir.display()
                )));
            }
        }
        let name = dir
            .file_name()
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "--export {}: give a directory name (e.g. --export site)",
                    dir.display()
                ))
            })?
            .to_string_lossy()
            .to_string();
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(io(format!("creating {}", parent.display())))?;
        let tmp = parent.join(format!(".{name}.tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let written = (|| {
            std::fs::create_dir(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
            for (file, f) in &self.files {
                let path = tmp.join(file);
                write_synced(&path, &f.bytes).map_err(io(format!("writing {}", path.display())))?;
            }
            if existed {
                std::fs::remove_dir(dir).map_err(io(format!("replacing {}", dir.display())))?;
            }
            std::fs::rename(&tmp, dir).map_err(io(format!(
                "moving {} into place as {}",
                tmp.display(),
                dir.display()
            )))
        })();
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        written
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The plane the pad shows, in latent space: z = origin + a·axes[0] + b·axes[1] for pad coordinates (a, b).
#[derive(Clone, Debug, PartialEq)]
pub struct Plane {
    /// `latent` (the first two latent dimensions), `pca` (the means' first two principal components) or `line`
    /// (a 1-D latent space: a is z₁, b only spreads the means by label).
    pub kind: &'static str,
    pub origin: Vec<f64>,
    pub axes: [Vec<f64>; 2],
    pub labels: [String; 2],
}

impl Plane {
    /// The pad's plane for a `latent`-dimensional model with these test means.
    pub fn new(latent: usize, means: Option<&Means>) -> Plane {
        let unit = |j: usize| {
            (0..latent)
                .map(|i| (i == j) as u8 as f64)
                .collect::<Vec<_>>()
        };
        match (latent, means) {
            (1, _) => Plane {
                kind: "line",
                origin: vec![0.0],
                axes: [unit(0), vec![0.0]],
                labels: ["z₁".into(), "label".into()],
            },
            (3.., Some(m))
                if let Some(pca) = Some(Pca::fit(&m.mu, latent))
                    // Two directions of spread (not a single mean, nor points on a line).
                    .filter(|p| m.labels.len() >= 3 && p.share.iter().all(|&s| s > 1e-9)) =>
            {
                let [c0, c1] = pca.components;
                Plane {
                    kind: "pca",
                    origin: pca.mean,
                    axes: [c0, c1],
                    labels: [
                        format!("PC1 ({:.0}% of variance)", 100.0 * pca.share[0]),
                        format!("PC2 ({:.0}% of variance)", 100.0 * pca.share[1]),
                    ],
                }
            }
            _ => Plane {
                kind: "latent",
                origin: vec![0.0; latent],
                axes: [unit(0), unit(1)],
                labels: ["z₁".into(), "z₂".into()],
            },
        }
    }

    /// Pad coordinates of latent point `z`; for a line, b spreads the points by `label` (a fixed jitter of up to
    /// ±0.3 around it, so that dense clusters show their density).
    pub fn project(&self, z: &[f32], i: usize, label: u8) -> (f32, f32) {
        let along = |v: &[f64]| {
            v.iter()
                .zip(z.iter().zip(&self.origin))
                .map(|(a, (&x, o))| (x as f64 - o) * a)
                .sum::<f64>() as f32
        };
        let a = along(&self.axes[0]);
        if self.kind == "line" {
            let jitter = ((i as f64 * 0.618_033_988_75).fract() - 0.5) * 0.6;
            (a, (label as f64 + jitter) as f32)
        } else {
            (a, along(&self.axes[1]))
        }
    }
}

/// The range [lo, hi] holding all but `tail` of `v` at each end, widened by `pad` of its width on each side.
fn robust_range(v: &mut [f32], tail: f64, pad: f64) -> [f64; 2] {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64;
    let (lo, hi) = (at(tail), at(1.0 - tail));
    let w = (hi - lo).max(1e-3);
    [lo - pad * w, hi + pad * w]
}

/// Builds the site of `model`.
pub fn build(model: &SiteModel) -> Result<Site> {
    let ck = model.checkpoint;
    let config = ck.model;
    let (rows, cols) = model.image;
    if rows as u64 * cols as u64 != config.pixels as u64 {
        return Err(Error::Invalid(format!(
            "the checkpoint's model takes {}-pixel images, not {rows}×{cols}",
            config.pixels
        )));
    }
    let latent = config.latent as usize;
    if let Some(m) = model.means
        && (m.mu.len() != m.labels.len() * latent)
    {
        return Err(Error::Invalid(format!(
            "{} latent means for {} labels of a {latent}-D model",
            m.mu.len(),
            m.labels.len()
        )));
    }
    let plane = Plane::new(latent, model.means);
    let mut files = BTreeMap::new();
    for (name, content_type, text) in PAGE.into_iter().chain(TRAIN_PAGE) {
        files.insert(
            name.to_string(),
            SiteFile {
                content_type,
                bytes: text.as_bytes().to_vec(),
            },
        );
    }
    let (module, entry, constants) = PAGE_KERNEL.pipeline();
    files.insert(
        "matmul.wgsl".into(),
        SiteFile {
            content_type: "text/wgsl; charset=utf-8",
            bytes: module.source().into_bytes(),
        },
    );
    files.insert(
        "params.bin".into(),
        SiteFile {
            content_type: "application/octet-stream",
            bytes: ck.params.iter().flat_map(|v| v.to_le_bytes()).collect(),
        },
    );

    // The pad's extent and the sliders' ranges: the means' (on the pad, all but their extreme 0.5 % on each
    // side), widened to hold ±3 around the prior's mean (its bulk), and ±3 without means.
    let mut ranges = vec![[-3.0f64, 3.0]; latent];
    let mut pad = [[-3.0, 3.0], [-3.0, 3.0]];
    let mut scatter = Value::Null;
    if let Some(m) = model.means.filter(|m| !m.labels.is_empty()) {
        let n = m.labels.len();
        for (j, r) in ranges.iter_mut().enumerate() {
            let mut v: Vec<f32> = m.mu.iter().skip(j).step_by(latent).copied().collect();
            let [lo, hi] = robust_range(&mut v, 0.0, 0.05);
            *r = [lo.min(-3.0).floor(), hi.max(3.0).ceil()];
        }
        let points: Vec<(f32, f32)> =
            m.mu.chunks_exact(latent)
                .zip(&m.labels)
                .enumerate()
                .map(|(i, (z, &l))| plane.project(z, i, l))
                .collect();
        let mut xs: Vec<f32> = points.iter().map(|p| p.0).collect();
        let mut ys: Vec<f32> = points.iter().map(|p| p.1).collect();
        // The means' box, widened to hold the prior's bulk: ±3 around where z = 0 falls on the pad.
        let prior = plane.project(&vec![0.0; latent], 0, 0);
        let hold = |[lo, hi]: [f64; 2], c: f32| [lo.min(c as f64 - 3.0), hi.max(c as f64 + 3.0)];
        pad = [
            hold(robust_range(&mut xs, 0.005, 0.08), prior.0),
            robust_range(&mut ys, 0.005, 0.08),
        ];
        if plane.kind != "line" {
            pad[1] = hold(pad[1], prior.1);
        }
        let mut bytes = Vec::with_capacity(n * 9);
        for (a, b) in &points {
            bytes.extend(a.to_le_bytes());
            bytes.extend(b.to_le_bytes());
        }
        bytes.extend(&m.labels);
        files.insert(
            "scatter.bin".into(),
            SiteFile {
                content_type: "application/octet-stream",
                bytes,
            },
        );
        scatter = json!({ "file": "scatter.bin", "count": n });
    }
    if plane.kind == "line" {
        pad[1] = match model.means.filter(|m| !m.labels.is_empty()) {
            Some(m) => {
                let (lo, hi) = m
                    .labels
                    .iter()
                    .fold((255u8, 0u8), |(lo, hi), &l| (lo.min(l), hi.max(l)));
                [lo as f64 - 0.5, hi as f64 + 0.5]
            }
            None => [-1.0, 1.0],
        };
    }

    let layout = config.layout();
    let layer =
        |l: Linear| json!({ "out": l.out, "in": l.inp, "weight": l.weight, "bias": l.bias() });
    let params_struct = MatmulParams::info();
    let (tile_m, tile_n) = PAGE_KERNEL.tile();
    let manifest = json!({
        "format": FORMAT,
        "info": {
            "latent": config.latent,
            "hidden": config.hidden,
            "pixels": config.pixels,
            "rows": rows,
            "cols": cols,
        },
        "checkpoint": {
            "name": model.name,
            "epoch": ck.epoch,
            "step": ck.step,
            "binarize": ck.settings.binarize,
        },
        "params": { "file": "params.bin", "count": ck.params.len() },
        "layers": {
            "fc1": layer(layout.fc1),
            "heads": layer(layout.heads),
            "fc3": layer(layout.fc3),
            "fc4": layer(layout.fc4),
        },
        "kernel": {
            "file": "matmul.wgsl",
            "module": module.name,
            "parts": module.parts().iter().map(|(name, text)| {
                json!({ "name": name, "lines": text.matches('\n').count() + 1 })
            }).collect::<Vec<_>>(),
            "entry": entry,
            "constants": constants.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "tile": { "rows": tile_m, "cols": tile_n },
            "layout": { "NT": Layout::NT.code() },
            "epilogue": {
                "Bias": EpilogueKind::Bias.code(),
                "BiasRelu": EpilogueKind::BiasRelu.code(),
            },
            // Group 0 as the native wrapper binds it (src/kernels/matmul.rs): the uniform parameters (an array
            // of two, the second for a pair's second product), then A, B (the weights), C, the epilogue's
            // operand (the bias), and a pair's second B, C and operand (never read unpaired).
            "bindings": [
                { "binding": 0, "name": "params", "type": "uniform" },
                { "binding": 1, "name": "a", "type": "read-only-storage" },
                { "binding": 2, "name": "b", "type": "read-only-storage" },
                { "binding": 3, "name": "c", "type": "storage" },
                { "binding": 4, "name": "aux", "type": "read-only-storage" },
                { "binding": 5, "name": "b2", "type": "read-only-storage" },
                { "binding": 6, "name": "c2", "type": "storage" },
                { "binding": 7, "name": "aux2", "type": "read-only-storage" },
            ],
            "params": {
                "name": params_struct.name,
                "size": params_struct.size,
                "count": 2,
                "fields": params_struct.fields.iter().map(|f| {
                    json!({ "name": f.name, "type": f.wgsl, "offset": f.offset })
                }).collect::<Vec<_>>(),
            },
        },
        "plane": {
            "kind": plane.kind,
            "origin": plane.origin,
            "axes": plane.axes,
            "labels": plane.labels,
        },
        "pad": { "x": pad[0], "y": pad[1] },
        "ranges": ranges,
        "scatter": scatter,
    });
    let manifest = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::Invalid(format!("writing the site's model.json: {e}")))?;
    files.insert(
        "model.json".into(),
        SiteFile {
            content_type: "application/json",
            bytes: manifest,
        },
    );
    Ok(Site { files })
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A site of one page, for the server's tests.
    pub fn tiny_site() -> Site {
        let mut files = BTreeMap::new();
        files.insert(
            "index.html".to_string(),
            SiteFile {
                content_type: "text/html; charset=utf-8",
                bytes: b"<!doctype html>".to_vec(),
            },
        );
        Site { files }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn means(latent: usize, n: usize) -> Means {
        // Points spread mostly along (1, 1, 0, …) (up to 1e-2), a little along (1, −1, 0, …).
        let mut mu = Vec::new();
        for i in 0..n {
            let (s, t) = (i as f32 / n as f32 - 0.5, ((i * 7) % 5) as f32 / 50.0);
            let mut z = vec![0.0; latent];
            z[0] = 3.0 * s + t;
            z[1] = 3.0 * s - t;
            mu.extend(z);
        }
        Means {
            mu,
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
        }
    }

    #[test]
    fn the_pad_is_the_latent_plane_in_2d_and_the_principal_plane_beyond() {
        let two = Plane::new(2, Some(&means(2, 100)));
        assert_eq!(two.kind, "latent");
        assert_eq!(two.project(&[0.5, -2.0], 0, 0), (0.5, -2.0));
        let four = Plane::new(4, Some(&means(4, 100)));
        assert_eq!(four.kind, "pca");
        let r = std::f64::consts::FRAC_1_SQRT_2;
        let first = &four.axes[0];
        assert!(
            (first[0].abs() - r).abs() < 1e-2 && (first[1].abs() - r).abs() < 1e-2,
            "{first:?}"
        );
        assert!(four.labels[0].starts_with("PC1 ("), "{:?}", four.labels);
        // Means with fewer than two directions of spread have no principal plane either.
        let one = Means {
            mu: vec![1.0, 2.0, 3.0],
            labels: vec![4],
        };
        assert_eq!(Plane::new(3, Some(&one)).kind, "latent");
        let line = Means {
            mu: (0..30)
                .flat_map(|i| [i as f32, 2.0 * i as f32, 0.5])
                .collect(),
            labels: vec![0; 10],
        };
        assert_eq!(Plane::new(3, Some(&line)).kind, "latent");
        // Without means there is no principal plane: the first two latent dimensions.
        assert_eq!(Plane::new(4, None).kind, "latent");
        assert_eq!(Plane::new(1, None).kind, "line");
    }

    fn checkpoint(pixels: u32, hidden: u32, latent: u32) -> Checkpoint {
        use crate::training::settings::Settings;
        let model = crate::model::ModelConfig::new(pixels, hidden, latent).unwrap();
        let params = model.init(7);
        Checkpoint {
            model,
            m: vec![0.0; params.len()],
            v: vec![0.0; params.len()],
            params,
            step: 5,
            epoch: 1,
            epoch_step: 0,
            partial: Default::default(),
            partial_seconds: 0.0,
            settings: Settings {
                hidden,
                latent,
                ..Settings::DEFAULT
            },
            image: None,
            metrics: String::new(),
            kernels: Default::default(),
        }
    }

    fn manifest(site: &Site) -> Value {
        serde_json::from_slice(&site.get("model.json").unwrap().bytes).unwrap()
    }

    #[test]
    fn the_site_holds_the_page_the_composed_kernel_the_weights_and_the_manifest() {
        let ck = checkpoint(12 * 10, 9, 3);
        let model = SiteModel {
            name: "run/ck.safetensors".into(),
            checkpoint: &ck,
            image: (12, 10),
            means: None,
        };
        let site = build(&model).unwrap();
        let names: Vec<&str> = site.files().map(|(n, _)| n).collect();
        // Without means: no scatter, and the pad is the plane of z₁ and z₂, ±3.
        assert_eq!(
            names,
            [
                "app.js",
                "index.html",
                "matmul.wgsl",
                "model.js",
                "model.json",
                "params.bin",
                "style.css",
                "train.html",
                "train.js"
            ]
        );
        // The Train view's data and module, where it is given them.
        let mut with_train = site.clone();
        let split = Split {
            images: (0..3 * 120).map(|i| i as u8).collect(),
            labels: vec![1, 2, 3],
            n: 3,
            rows: 12,
            cols: 10,
        };
        let module = std::env::temp_dir().join(format!("vae-site-module-{}", std::process::id()));
        std::fs::create_dir_all(&module).unwrap();
        for (f, _) in TRAINER_FILES {
            std::fs::write(module.join(f), f.as_bytes()).unwrap();
        }
        with_train
            .add_train_view(&split, &split, Some(&module))
            .unwrap();
        let (images, labels) = split.to_idx();
        let parsed = crate::data::mnist::split_from_bytes(
            (Path::new("i"), &images),
            (Path::new("l"), &labels),
        )
        .unwrap();
        assert_eq!(
            (parsed.images, parsed.labels),
            (split.images.clone(), split.labels.clone())
        );
        assert_eq!(with_train.get("train-images.idx").unwrap().bytes, images);
        assert_eq!(with_train.get("test-labels.idx").unwrap().bytes, labels);
        let wasm = with_train.get("vae_web_bg.wasm").unwrap();
        assert_eq!(
            (wasm.content_type, &wasm.bytes[..]),
            ("application/wasm", &b"vae_web_bg.wasm"[..])
        );
        std::fs::remove_dir_all(&module).unwrap();
        let (module, entry, _) = Kernel::Reg64.pipeline();
        assert_eq!(
            site.get("matmul.wgsl").unwrap().bytes,
            module.source().into_bytes()
        );
        let params: Vec<f32> = site
            .get("params.bin")
            .unwrap()
            .bytes
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(params, ck.params);
        let m = manifest(&site);
        assert_eq!(
            m["info"],
            json!({ "latent": 3, "hidden": 9, "pixels": 120, "rows": 12, "cols": 10 })
        );
        assert_eq!(m["kernel"]["entry"], entry);
        let fc4 = ck.model.layout().fc4;
        assert_eq!(
            m["layers"]["fc4"],
            json!({ "out": 120, "in": 9, "weight": fc4.weight, "bias": fc4.bias() })
        );
        assert_eq!(m["plane"]["kind"], "latent");
        assert_eq!(m["pad"], json!({ "x": [-3.0, 3.0], "y": [-3.0, 3.0] }));
        assert_eq!(m["scatter"], Value::Null);
        // The parts' line counts add up to the module's, so the page can locate a compiler message.
        let lines: u64 = m["kernel"]["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["lines"].as_u64().unwrap())
            .sum();
        assert_eq!(lines as usize, module.source().matches('\n').count() + 1);
        // The image shape must be the model's.
        let wrong = SiteModel {
            image: (11, 11),
            ..model
        };
        assert!(build(&wrong).is_err());
    }

    /// The bindings the manifest gives the page are exactly those the kernel's entry point uses, as naga reads
    /// the composed module: a change to the kernel's interface fails here, not only in a browser.
    #[test]
    fn the_manifest_binds_what_the_kernel_uses() {
        use naga::valid::{Capabilities, ValidationFlags, Validator};
        let (source, entry, _) = PAGE_KERNEL.pipeline();
        let module = crate::gpu::pipeline::validate(source, Capabilities::empty()).unwrap();
        let info = Validator::new(ValidationFlags::all(), Capabilities::empty())
            .validate(&module)
            .unwrap();
        let at = module
            .entry_points
            .iter()
            .position(|e| e.name == entry)
            .unwrap();
        let uses = info.get_entry_point(at);
        let mut used: Vec<Value> = module
            .global_variables
            .iter()
            .filter(|(h, _)| !uses[*h].is_empty())
            .filter_map(|(_, var)| {
                let b = var.binding.as_ref()?;
                assert_eq!(b.group, 0, "the page binds group 0 only");
                let kind = match var.space {
                    naga::AddressSpace::Uniform => "uniform",
                    naga::AddressSpace::Storage { access }
                        if access.contains(naga::StorageAccess::STORE) =>
                    {
                        "storage"
                    }
                    naga::AddressSpace::Storage { .. } => "read-only-storage",
                    other => panic!("binding {} in {other:?}", b.binding),
                };
                Some(json!({ "binding": b.binding, "name": var.name, "type": kind }))
            })
            .collect();
        used.sort_by_key(|v| v["binding"].as_u64());
        let ck = checkpoint(16, 4, 2);
        let site = build(&SiteModel {
            name: "ck".into(),
            checkpoint: &ck,
            image: (4, 4),
            means: None,
        })
        .unwrap();
        assert_eq!(manifest(&site)["kernel"]["bindings"], json!(used));
    }

    #[test]
    fn export_refuses_a_non_empty_directory_and_writes_all_or_nothing() {
        let ck = checkpoint(16, 4, 2);
        let site = build(&SiteModel {
            name: "ck".into(),
            checkpoint: &ck,
            image: (4, 4),
            means: Some(&means(2, 30)),
        })
        .unwrap();
        let root = std::env::temp_dir().join(format!("vae-web-export-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("empty")).unwrap();
        // A new directory (its parent made) and an empty one both get the whole site.
        for dir in [root.join("new/site"), root.join("empty")] {
            site.export(&dir).unwrap();
            for (name, f) in site.files() {
                assert_eq!(std::fs::read(dir.join(name)).unwrap(), f.bytes, "{name}");
            }
        }
        std::fs::write(root.join("full.txt"), "x").unwrap();
        let err = site.export(&root).unwrap_err().to_string();
        assert!(err.contains("is not empty"), "{err}");
        // Nothing was left beside it: no temporary directory.
        let leftovers: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_range_leaves_out_the_tails_and_pads() {
        let mut v: Vec<f32> = (0..=1000).map(|i| i as f32).collect();
        v[0] = -1e6;
        let [lo, hi] = robust_range(&mut v, 0.005, 0.0);
        assert_eq!((lo, hi), (5.0, 995.0));
    }
}
