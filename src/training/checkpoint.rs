//! Checkpoints in the safetensors format, named and shaped as PyTorch's VAE example (`fc1.weight` (400, 784),
//! `fc1.bias`, `fc21.*`, `fc22.*`, `fc3.*`, `fc4.*`), so `model.load_state_dict` takes them after dropping the
//! `optimizer.` tensors: Adam's moments, under `optimizer.exp_avg.<name>` and `optimizer.exp_avg_sq.<name>`.
//! The step count, the model's sizes, the image shape, the run's [`Settings`] and the metrics so far are
//! metadata, parsed once, here, when a checkpoint is loaded. Other widths use the same names (`--hidden` changes
//! the shapes, not the names).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;

use super::plans::LossSum;
use super::settings::Settings;
use crate::atomic::write_atomic;
use crate::data::mnist::Split;
use crate::error::{Error, Result};
use crate::model::ModelConfig;

/// Identifies our checkpoints (and their version) in the metadata.
pub const FORMAT: &str = "vae-wgpu-checkpoint/1";

/// A training run's state.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub model: ModelConfig,
    pub params: Vec<f32>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Adam steps taken.
    pub step: u32,
    /// Epochs completed.
    pub epoch: u32,
    /// Steps of the next epoch already taken: 0, except in a checkpoint written on Ctrl-C mid-epoch.
    pub epoch_step: u32,
    /// That unfinished epoch's training loss so far and its training time (seconds), so that a resumed run
    /// reports the epoch as an uninterrupted one would.
    pub partial: LossSum,
    pub partial_seconds: f64,
    /// The run's settings; their `hidden` and `latent` are the model's.
    pub settings: Settings,
    /// (rows, cols) of the images the model was trained on; checkpoints written before it was recorded lack it.
    pub image: Option<(u32, u32)>,
    /// metrics.csv of the epochs so far.
    pub metrics: String,
    /// The matmul kernel of each product the run's plans compute (product key → kernel name), so a resumed run
    /// uses the same kernels even where a new tuning would choose others (split-K changes summation order).
    pub kernels: BTreeMap<String, String>,
}

/// PyTorch's name, the range in the flat layout, and the shape of each tensor.
pub fn tensors(model: &ModelConfig) -> Vec<(&'static str, Range<usize>, Vec<usize>)> {
    let l = model.layout();
    let (latent, hidden) = (model.latent as usize, model.hidden as usize);
    let whole = |lin: crate::model::Linear| {
        (
            lin.weight..lin.bias(),
            vec![lin.out as usize, lin.inp as usize],
            lin.bias()..lin.weight + lin.len(),
            vec![lin.out as usize],
        )
    };
    let (w1, s1, b1, t1) = whole(l.fc1);
    let (w3, s3, b3, t3) = whole(l.fc3);
    let (w4, s4, b4, t4) = whole(l.fc4);
    let hw = l.heads.weight;
    let hb = l.heads.bias();
    vec![
        ("fc1.weight", w1, s1),
        ("fc1.bias", b1, t1),
        (
            "fc21.weight",
            hw..hw + latent * hidden,
            vec![latent, hidden],
        ),
        ("fc21.bias", hb..hb + latent, vec![latent]),
        (
            "fc22.weight",
            hw + latent * hidden..hb,
            vec![latent, hidden],
        ),
        ("fc22.bias", hb + latent..hb + 2 * latent, vec![latent]),
        ("fc3.weight", w3, s3),
        ("fc3.bias", b3, t3),
        ("fc4.weight", w4, s4),
        ("fc4.bias", b4, t4),
    ]
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Data {
        path: path.display().to_string(),
        message: message.into(),
    }
}

impl Checkpoint {
    /// Fails unless `split`'s images fit the model (`path` names the checkpoint in the message).
    pub fn check_data(&self, path: &Path, split: &Split) -> Result<()> {
        if split.pixels() as u32 != self.model.pixels {
            return Err(bad(
                path,
                format!(
                    "the checkpoint's model takes {}-pixel images but the data has {}×{}; pass the --data it was trained on",
                    self.model.pixels, split.rows, split.cols
                ),
            ));
        }
        Ok(())
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut views = Vec::new();
        for (name, range, shape) in tensors(&self.model) {
            for (prefix, data) in [
                ("", &self.params),
                ("optimizer.exp_avg.", &self.m),
                ("optimizer.exp_avg_sq.", &self.v),
            ] {
                let bytes: &[u8] = bytemuck::cast_slice(&data[range.clone()]);
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    bytes,
                )
                .map_err(|e| Error::Invalid(format!("checkpoint tensor {name}: {e}")))?;
                views.push((format!("{prefix}{name}"), view));
            }
        }
        let mut meta: HashMap<String, String> = self
            .settings
            .to_meta()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        for (k, v) in [
            ("format", FORMAT.to_string()),
            ("pixels", self.model.pixels.to_string()),
            ("hidden", self.model.hidden.to_string()),
            ("latent", self.model.latent.to_string()),
            ("step", self.step.to_string()),
            ("epoch", self.epoch.to_string()),
            ("metrics", self.metrics.clone()),
            ("epoch_step", self.epoch_step.to_string()),
            // {:?} prints the shortest text that parses back to the same f64.
            ("partial_bce", format!("{:?}", self.partial.bce)),
            ("partial_kl", format!("{:?}", self.partial.kl)),
            ("partial_examples", self.partial.examples.to_string()),
            ("partial_seconds", format!("{:?}", self.partial_seconds)),
            (
                "kernels",
                self.kernels
                    .iter()
                    .map(|(k, v)| format!("{k}\t{v}\n"))
                    .collect(),
            ),
        ] {
            meta.insert(k.into(), v);
        }
        if let Some((rows, cols)) = self.image {
            meta.insert("rows".into(), rows.to_string());
            meta.insert("cols".into(), cols.to_string());
        }
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::Invalid(format!("writing a checkpoint: {e}")))
    }

    /// Writes the checkpoint atomically: a crash leaves the previous file or the new one, never half of one.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path)
            .map_err(|e| bad(path, format!("cannot read the checkpoint: {e}")))?;
        Self::from_bytes(path, &bytes)
    }

    /// Parses and checks a checkpoint: format, sizes, every tensor's presence, dtype and shape.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Checkpoint> {
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
            bad(
                path,
                format!(
                    "not a readable safetensors file ({e}); it may be truncated or not a checkpoint"
                ),
            )
        })?;
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(path, format!("unreadable safetensors header: {e}")))?;
        let meta: BTreeMap<String, String> = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        match meta.get("format") {
            Some(f) if f == FORMAT => {}
            Some(f) => {
                return Err(bad(
                    path,
                    format!("checkpoint format {f:?}; this program reads {FORMAT:?}"),
                ));
            }
            None => {
                return Err(bad(
                    path,
                    "a safetensors file, but not a vae-wgpu checkpoint (no format metadata); pass a checkpoint.safetensors written by `vae train`",
                ));
            }
        }
        let num = |key: &str| -> Result<u64> {
            meta.get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad(path, format!("metadata {key:?} is missing or not a number")))
        };
        let small = |key: &str| -> Result<u32> {
            u32::try_from(num(key)?)
                .map_err(|_| bad(path, format!("metadata {key:?} is out of range")))
        };
        let model = ModelConfig::new(small("pixels")?, small("hidden")?, small("latent")?)
            .map_err(|e| bad(path, e.to_string()))?;
        let len = model.layout().len;
        let (mut params, mut m, mut v) = (vec![0f32; len], vec![0f32; len], vec![0f32; len]);
        for (name, range, shape) in tensors(&model) {
            for (prefix, out) in [
                ("", &mut params),
                ("optimizer.exp_avg.", &mut m),
                ("optimizer.exp_avg_sq.", &mut v),
            ] {
                let full = format!("{prefix}{name}");
                let t = st
                    .tensor(&full)
                    .map_err(|_| bad(path, format!("tensor {full} is missing")))?;
                if t.dtype() != safetensors::Dtype::F32 || t.shape() != shape.as_slice() {
                    return Err(bad(
                        path,
                        format!(
                            "tensor {full} is {:?} {:?}, expected F32 {shape:?} for a {}-{}-{} model",
                            t.dtype(),
                            t.shape(),
                            model.pixels,
                            model.hidden,
                            model.latent
                        ),
                    ));
                }
                for (dst, src) in out[range.clone()].iter_mut().zip(t.data().chunks_exact(4)) {
                    *dst = f32::from_le_bytes(src.try_into().expect("4 bytes"));
                }
            }
        }
        let settings = Settings::from_meta(&meta).map_err(|e| {
            bad(
                path,
                format!("{e}; the checkpoint is incomplete (was it written by `vae train`?)"),
            )
        })?;
        let image = match (meta.get("rows"), meta.get("cols")) {
            (None, None) => None,
            _ => {
                let (rows, cols) = (small("rows")?, small("cols")?);
                if rows as u64 * cols as u64 != model.pixels as u64 {
                    return Err(bad(
                        path,
                        format!(
                            "metadata says {rows}×{cols} images but the model takes {} pixels",
                            model.pixels
                        ),
                    ));
                }
                Some((rows, cols))
            }
        };
        Ok(Checkpoint {
            model,
            params,
            m,
            v,
            step: small("step")?,
            epoch: small("epoch")?,
            epoch_step: optional(&meta, "epoch_step", path)?.unwrap_or(0),
            partial: LossSum {
                bce: optional(&meta, "partial_bce", path)?.unwrap_or(0.0),
                kl: optional(&meta, "partial_kl", path)?.unwrap_or(0.0),
                examples: optional(&meta, "partial_examples", path)?.unwrap_or(0),
            },
            partial_seconds: optional(&meta, "partial_seconds", path)?.unwrap_or(0.0),
            settings,
            image,
            metrics: meta.get("metrics").cloned().unwrap_or_default(),
            kernels: parse_kernels(path, meta.get("kernels").map_or("", |s| s.as_str()))?,
        })
    }
}

/// The "kernels" metadata: `product<TAB>kernel` lines naming known kernels (absent in older checkpoints: none).
fn parse_kernels(path: &Path, text: &str) -> Result<BTreeMap<String, String>> {
    let mut kernels = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (key, kernel) = line
            .split_once('\t')
            .filter(|(key, k)| crate::kernels::known_choice(key, k))
            .ok_or_else(|| {
                bad(
                    path,
                    format!("metadata \"kernels\" has an unknown entry {line:?}"),
                )
            })?;
        kernels.insert(key.to_string(), kernel.to_string());
    }
    Ok(kernels)
}

/// An optional metadata value (absent in checkpoints written before it existed), refused when unparsable.
fn optional<T: std::str::FromStr>(
    meta: &BTreeMap<String, String>,
    key: &str,
    path: &Path,
) -> Result<Option<T>> {
    meta.get(key)
        .map(|v| {
            v.parse()
                .map_err(|_| bad(path, format!("metadata {key:?} = {v:?} is not valid")))
        })
        .transpose()
}
