//! Autotuning, a layer above the kernel families: it uses them, and they know nothing of it. For each matmul of
//! the training step, every candidate kernel is checked against the CPU reference and timed on this adapter, and
//! the fastest is chosen; each gradient pair is timed as one dispatch against its two products apart. The choices
//! go to the device (`Gpu::set_choices`), where the kernel families read them, and to a cache on disk, keyed by
//! the adapter, its driver, the backend and the program version (with a hash of the shaders), so a second run
//! starts at once.
//!
//! `timing.rs` times one dispatch with one candidate; `plan.rs` makes the choices; `cache.rs` keeps them. A
//! candidate that fails anywhere (shader validation, pipeline creation, its check against the reference) is
//! unavailable: the table says why and the others compete. A cache that cannot be read, is corrupt or was written
//! for another adapter or program is ignored with a warning and rewritten; it can never select a kernel that does
//! not exist (names are parsed back into candidates) or one for another shape (keys are products).

mod cache;
mod plan;
mod timing;

pub use crate::kernels::known_choice;
pub use cache::{default_cache_path, identity, read_cache, write_cache};
pub use plan::{
    PairTune, TuneRow, Tuned, pair_key_of, pairs, reduction_size, run_apart, tune, tune_product,
    tune_reduction,
};
pub use timing::{
    MatmulRow, bench_candidate, bench_parts, dispatch_bench, matmul_bench, median, pair_label,
    time_reduction,
};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::Reduction;
use crate::kernels::matmul::{Product, UNPAIRED};
use plan::pair_batch_key;

/// How the kernels of a run are chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TuneMode {
    /// Measure where the cache has no answer, with the cache in this file (None: the user's cache directory).
    Tune { cache: Option<PathBuf> },
    /// No tuning: the portable defaults (`Kernel::default_for`).
    Off,
}

impl Default for TuneMode {
    fn default() -> Self {
        TuneMode::Tune { cache: None }
    }
}

/// Where the choices of a run came from, and how long getting them took.
#[derive(Clone, Debug)]
pub struct Chosen {
    pub how: String,
    pub seconds: f64,
    pub tuned: Option<Tuned>,
}

impl Chosen {
    /// The one line training and `vae profile` print.
    pub fn line(&self) -> String {
        format!("kernels: {} ({:.2} s)", self.how, self.seconds)
    }
}

/// Sets the device's kernel choices for `products` as `mode` says: from the cache where it answers every
/// product, else tuned (and the cache rewritten), or the fixed defaults. At most `room` of the step's gradient
/// pairs run apart (see [`tune`]), those the cache already runs apart included. Warnings go to `warn`.
pub fn choose(
    gpu: &Gpu,
    products: &[Product],
    mode: &TuneMode,
    room: usize,
    mut warn: impl FnMut(&str),
) -> Result<Chosen> {
    let start = Instant::now();
    let cache = match mode {
        TuneMode::Off => {
            gpu.clear_choices();
            return Ok(Chosen {
                how: "fixed portable defaults (--no-tune)".into(),
                seconds: 0.0,
                tuned: None,
            });
        }
        TuneMode::Tune { cache } => cache.clone(),
    };
    let identity = identity(gpu);
    let path = cache.or_else(|| default_cache_path(&identity));
    let mut known = BTreeMap::new();
    if let Some(path) = &path {
        match read_cache(path, &identity) {
            Ok(Some(c)) => known = c,
            Ok(None) => {}
            Err(why) => warn(&format!(
                "warning: ignoring the kernel-choice cache {}: {why}; tuning again and rewriting it",
                path.display()
            )),
        }
    }
    // A pair is tuned against its two products' own times: where it has no choice, they are measured again.
    let unpaired: Vec<String> = pairs(products)
        .iter()
        .filter(|(w, i)| !known.contains_key(&pair_key_of(w, i)))
        .flat_map(|(w, i)| [w.key(), i.key()])
        .collect();
    let missing: Vec<Product> = products
        .iter()
        .filter(|p| !known.contains_key(&p.key()) || unpaired.contains(&p.key()))
        .cloned()
        .collect();
    let reduction_known = known.contains_key(Reduction::KEY);
    let where_ = path.as_ref().map_or("no cache directory".to_string(), |p| {
        p.display().to_string()
    });
    if missing.is_empty() && reduction_known {
        gpu.set_choices(known);
        return Ok(Chosen {
            how: format!("{} products from the cache {where_}", products.len()),
            seconds: start.elapsed().as_secs_f64(),
            tuned: None,
        });
    }
    let apart: std::collections::BTreeSet<String> = pairs(products)
        .iter()
        .filter(|(w, i)| known.get(&pair_key_of(w, i)).map(String::as_str) == Some(UNPAIRED))
        .map(|(w, i)| pair_batch_key(w, i))
        .collect();
    let tuned = tune(gpu, &missing, 3, room.saturating_sub(apart.len()))?;
    tuned.complete(gpu)?;
    known.extend(tuned.choices.clone());
    if !reduction_known {
        let (best, _) = tune_reduction(gpu, reduction_size(products), 3)?;
        known.insert(Reduction::KEY.to_string(), best.name().to_string());
    }
    if let Some(path) = &path
        && let Err(e) = write_cache(path, &identity, &known)
    {
        warn(&format!(
            "warning: could not write the kernel-choice cache: {e}"
        ));
    }
    gpu.set_choices(known);
    Ok(Chosen {
        how: format!(
            "tuned {} products on this adapter, cached in {where_}",
            tuned.choices.len()
        ),
        seconds: start.elapsed().as_secs_f64(),
        tuned: Some(tuned),
    })
}
