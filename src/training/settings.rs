//! A run's settings: its options once defaults (or, when resuming, the checkpoint's values) are filled in. One
//! type, written into every checkpoint's metadata and parsed back once when a checkpoint is loaded, so resuming,
//! `vae eval` and every tool read the same values the same way. Every command's defaults come from
//! [`Settings::DEFAULT`].

use std::collections::BTreeMap;

/// The options that define a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub batch_size: u32,
    pub latent: u32,
    pub hidden: u32,
    pub lr: f32,
    pub seed: u64,
    /// The seed of the shuffle and the training set's binarization where it is not `seed` (a sweep's models
    /// share one: `vae train --data-seed`, `vae sweep`).
    pub data_seed: Option<u64>,
    pub beta: f32,
    pub kl_warmup: f32,
    pub binarize: bool,
    pub train_samples: Option<usize>,
    pub test_samples: Option<usize>,
}

impl Settings {
    /// The defaults of every command: the reference model (PyTorch's VAE example) with a 2-D latent space.
    pub const DEFAULT: Settings = Settings {
        batch_size: 128,
        latent: 2,
        hidden: 400,
        lr: 1e-3,
        seed: 1,
        data_seed: None,
        beta: 1.0,
        kl_warmup: 0.0,
        binarize: false,
        train_samples: None,
        test_samples: None,
    };

    /// As checkpoint metadata (string values, as safetensors keeps them).
    pub fn to_meta(&self) -> Vec<(&'static str, String)> {
        let count = |v: Option<usize>| v.map_or("all".to_string(), |n| n.to_string());
        // A run whose data follow its seed writes no data_seed, as before there was one.
        let data_seed = self.data_seed.map(|d| ("data_seed", d.to_string()));
        let mut meta = vec![
            ("batch_size", self.batch_size.to_string()),
            ("latent", self.latent.to_string()),
            ("hidden", self.hidden.to_string()),
            ("lr", self.lr.to_string()),
            ("seed", self.seed.to_string()),
            ("beta", self.beta.to_string()),
            ("kl_warmup", self.kl_warmup.to_string()),
            ("binarize", self.binarize.to_string()),
            ("train_samples", count(self.train_samples)),
            ("test_samples", count(self.test_samples)),
        ];
        meta.extend(data_seed);
        meta
    }

    /// The seed of the data: the shuffle and the training set's binarization.
    pub fn data_seed(&self) -> u64 {
        self.data_seed.unwrap_or(self.seed)
    }

    /// Parses the metadata [`Settings::to_meta`] wrote; the error names the key that is missing or invalid.
    pub fn from_meta(meta: &BTreeMap<String, String>) -> Result<Settings, String> {
        let get = |k: &str| {
            meta.get(k)
                .map(|v| v.trim())
                .ok_or_else(|| format!("metadata {k:?} is missing"))
        };
        fn parse<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("metadata {k:?} = {v:?} is not valid"))
        }
        let count = |k: &str| -> Result<Option<usize>, String> {
            match get(k)? {
                "all" => Ok(None),
                v => parse(k, v).map(Some),
            }
        };
        Ok(Settings {
            batch_size: parse("batch_size", get("batch_size")?)?,
            latent: parse("latent", get("latent")?)?,
            hidden: parse("hidden", get("hidden")?)?,
            lr: parse("lr", get("lr")?)?,
            seed: parse("seed", get("seed")?)?,
            data_seed: match meta.get("data_seed") {
                Some(v) => Some(parse("data_seed", v.trim())?),
                None => None,
            },
            beta: parse("beta", get("beta")?)?,
            kl_warmup: parse("kl_warmup", get("kl_warmup")?)?,
            binarize: parse("binarize", get("binarize")?)?,
            train_samples: count("train_samples")?,
            test_samples: count("test_samples")?,
        })
    }

    /// Which data a loss of this run is on, for messages.
    pub fn data_kind(&self) -> &'static str {
        if self.binarize {
            "binarized (dynamic)"
        } else {
            "grey levels / 255"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_names_what_is_missing() {
        let s = Settings {
            train_samples: Some(2048),
            binarize: true,
            lr: 3e-4,
            data_seed: Some(7),
            ..Settings::DEFAULT
        };
        let meta: BTreeMap<String, String> = s
            .to_meta()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(Settings::from_meta(&meta), Ok(s));
        let mut partial = meta.clone();
        partial.remove("beta");
        assert_eq!(
            Settings::from_meta(&partial),
            Err("metadata \"beta\" is missing".to_string())
        );
        let mut bad = meta;
        bad.insert("batch_size".into(), "many".into());
        assert!(
            Settings::from_meta(&bad)
                .unwrap_err()
                .contains("batch_size")
        );
    }
}
