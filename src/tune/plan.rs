//! The plan tuning makes: every candidate for every product of the step, each gradient pair as one dispatch
//! against its two products apart, and which pairs run apart within the step's dispatch bound.

use std::collections::BTreeMap;

use super::timing::{MatmulRow, fastest, pair_label, time_candidates, time_reduction};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::Reduction;
use crate::kernels::matmul::{Kernel, Layout, Product, UNPAIRED, describe, no_kernel, pair_key};

/// One candidate for one product: its timing, or why it is unavailable.
#[derive(Clone, Debug)]
pub struct TuneRow {
    pub product: Product,
    pub kernel: Kernel,
    pub outcome: std::result::Result<MatmulRow, String>,
    pub chosen: bool,
}

/// Every candidate's row for every product, each pair's verdict, and the choices (product or pair key → kernel
/// name, or [`UNPAIRED`](crate::kernels::matmul::UNPAIRED) for a pair).
#[derive(Clone, Debug, Default)]
pub struct Tuned {
    pub rows: Vec<TuneRow>,
    pub pairs: Vec<PairTune>,
    pub choices: BTreeMap<String, String>,
}

/// A layer's weight gradient and input gradient, tuned as one dispatch: every kernel both can use, against the
/// two run apart, each with its own choice.
#[derive(Clone, Debug)]
pub struct PairTune {
    /// The pair's dispatch label, e.g. `fc4.weight_grad+input_grad`.
    pub label: String,
    /// Each kernel both products can use, timed computing both in one dispatch (or why it cannot).
    pub rows: Vec<(Kernel, std::result::Result<MatmulRow, String>)>,
    /// The two products' own choices and the sum of their times: the pair run as two dispatches.
    pub apart: (Kernel, Kernel, f64),
    /// The chosen kernel, or [`UNPAIRED`](crate::kernels::matmul::UNPAIRED).
    pub choice: String,
    /// Whether the pair was faster apart but is one dispatch all the same, the step having no room for another
    /// (see [`tune`]).
    pub bound: bool,
}

/// The pairs among `products`: each layer's weight gradient (`L.weight_grad`) with its input gradient
/// (`L.input_grad`) of the same batch, the two products the step can compute in one dispatch.
pub fn pairs(products: &[Product]) -> Vec<(Product, Product)> {
    products
        .iter()
        .filter_map(|w| {
            let layer = w.name.strip_suffix(".weight_grad")?;
            let i = products.iter().find(|i| {
                i.name.strip_suffix(".input_grad") == Some(layer)
                    && i.layout == Layout::NN
                    && w.layout == Layout::TN
                    && i.shape.0 == w.shape.2
            })?;
            Some((w.clone(), i.clone()))
        })
        .collect()
}

/// The key of a pair's choice in the kernel choices.
pub fn pair_key_of(weight_grad: &Product, input_grad: &Product) -> String {
    pair_key(&weight_grad.key(), &input_grad.key())
}

/// The candidates for `product`, each checked and timed; the fastest available one chosen (none where every
/// candidate is unavailable). Candidates are timed in two rounds: a quick one, then (for those within 2× of the
/// quickest) `runs` timed submissions of enough dispatches to fill about 2 ms each. Fails only if the device is
/// lost or hung.
pub fn tune_product(
    gpu: &Gpu,
    product: &Product,
    candidates: &[Kernel],
    runs: u32,
) -> Result<Vec<TuneRow>> {
    let timed = time_candidates(gpu, std::slice::from_ref(product), candidates, runs)?;
    let fastest = fastest(&timed);
    Ok(timed
        .into_iter()
        .map(|(kernel, outcome)| TuneRow {
            product: product.clone(),
            kernel,
            outcome,
            chosen: Some(kernel) == fastest.map(|(k, _)| k),
        })
        .collect())
}

impl Tuned {
    /// Fails where a product has no available candidate (so no choice), naming the first such product and why
    /// each of its candidates is unavailable.
    pub fn complete(&self, gpu: &Gpu) -> Result<()> {
        let mut failed: Vec<&Product> = Vec::new();
        for r in &self.rows {
            let key = r.product.key();
            if !self.choices.contains_key(&key) && !failed.iter().any(|p| p.key() == key) {
                failed.push(&r.product);
            }
        }
        let Some(first) = failed.first() else {
            return Ok(());
        };
        let reasons: Vec<(Kernel, String)> = self
            .rows
            .iter()
            .filter(|r| r.product.key() == first.key())
            .filter_map(|r| r.outcome.as_ref().err().map(|why| (r.kernel, why.clone())))
            .collect();
        let mut product = describe(&first.name, first.layout, first.shape, first.epilogue);
        if failed.len() > 1 {
            product.push_str(&format!(" (and {} more products)", failed.len() - 1));
        }
        Err(no_kernel(gpu, &product, &reasons))
    }

    /// The chosen row of the product with `key` (its kernel and median µs), where it was tuned here.
    fn chosen(&self, key: &str) -> Option<(Kernel, f64)> {
        self.rows
            .iter()
            .filter(|r| r.chosen && r.product.key() == key)
            .find_map(|r| r.outcome.as_ref().ok().map(|o| (r.kernel, o.median_us)))
    }

    /// The kernels available to the product with `key` (timed, or checked and slower).
    fn available(&self, key: &str) -> Vec<Kernel> {
        self.rows
            .iter()
            .filter(|r| r.product.key() == key && r.outcome.is_ok())
            .map(|r| r.kernel)
            .collect()
    }
}

/// Which pairs run as two dispatches, from each pair's time as one dispatch (its fastest kernel's, `None` where
/// no kernel computes both products) and its two products' times apart: those faster apart, at most `room` of
/// them, the ones that save the most first. A pair no kernel computes runs apart whatever the room (and takes
/// its share of it).
pub fn run_apart(times: &[(Option<f64>, f64)], room: usize) -> Vec<bool> {
    let saving = |(one, apart): (Option<f64>, f64)| one.map_or(f64::INFINITY, |us| us - apart);
    let mut order: Vec<usize> = (0..times.len()).collect();
    order.sort_by(|&a, &b| saving(times[b]).total_cmp(&saving(times[a])));
    let mut apart = vec![false; times.len()];
    let mut room = room;
    for at in order {
        if times[at].0.is_none() {
            apart[at] = true;
            room = room.saturating_sub(1);
        } else if saving(times[at]) > 0.0 && room > 0 {
            apart[at] = true;
            room -= 1;
        }
    }
    apart
}

/// A pair's key without its batch dimension: the pairs of a run's full and partial batches share it.
pub(super) fn pair_batch_key(weight_grad: &Product, input_grad: &Product) -> String {
    format!("{} + {}", weight_grad.batch_key(), input_grad.batch_key())
}

/// Tunes every distinct product of `products` over every candidate, then each pair among them ([`pairs`]) as one
/// dispatch over every kernel both can use. A pair runs as two dispatches ([`UNPAIRED`](crate::kernels::matmul::UNPAIRED)), each product with its
/// own choice, where that took less time than the pair's fastest kernel, for at most `room` pairs (those that
/// save the most): the step keeps within [`crate::kernels::MAX_STEP_DISPATCHES`]. Fewer dispatches, and within
/// that bound never a slower step.
/// Products (and pairs) that differ from an earlier one only in the batch dimension (a run's last, partial batch
/// after its full ones) take the earlier one's choice without being measured: they run once an epoch, and tuning
/// them would double the time tuning takes. A product whose every candidate is unavailable gets no choice
/// ([`Tuned::complete`] says so), nor does its pair; fails only if the device is lost or hung.
pub fn tune(gpu: &Gpu, products: &[Product], runs: u32, room: usize) -> Result<Tuned> {
    let mut tuned = Tuned::default();
    let mut by_batch: BTreeMap<String, String> = BTreeMap::new();
    for p in products {
        if tuned.choices.contains_key(&p.key()) {
            continue;
        }
        if let Some(kernel) = by_batch.get(&p.batch_key()) {
            tuned.choices.insert(p.key(), kernel.clone());
            continue;
        }
        let rows = tune_product(gpu, p, &Kernel::CANDIDATES, runs)?;
        if let Some(r) = rows.iter().find(|r| r.chosen) {
            tuned.choices.insert(p.key(), r.kernel.name());
            by_batch.insert(p.batch_key(), r.kernel.name());
        }
        tuned.rows.extend(rows);
    }
    // Every pair timed first, then the choices: the room goes to the pairs that save the most apart.
    let mut later: Vec<(String, String)> = Vec::new();
    let mut timed: Vec<(String, String, PairTune)> = Vec::new();
    for (w, i) in pairs(products) {
        let key = pair_key_of(&w, &i);
        let batch_key = pair_batch_key(&w, &i);
        if tuned.choices.contains_key(&key) || later.iter().any(|(k, _)| *k == key) {
            continue;
        }
        if timed.iter().any(|(_, b, _)| *b == batch_key) {
            later.push((key, batch_key));
            continue;
        }
        let (Some(cw), Some(ci)) = (tuned.chosen(&w.key()), tuned.chosen(&i.key())) else {
            continue;
        };
        let both: Vec<Kernel> = tuned
            .available(&w.key())
            .into_iter()
            .filter(|k| tuned.available(&i.key()).contains(k))
            .collect();
        let rows = time_candidates(gpu, &[w.clone(), i.clone()], &both, runs)?;
        let pair = PairTune {
            label: pair_label(&w, &i),
            rows,
            apart: (cw.0, ci.0, cw.1 + ci.1),
            choice: String::new(),
            bound: false,
        };
        timed.push((key, batch_key, pair));
    }
    let times: Vec<(Option<f64>, f64)> = timed
        .iter()
        .map(|(_, _, p)| (fastest(&p.rows).map(|(_, us)| us), p.apart.2))
        .collect();
    for ((_, _, pair), apart) in timed.iter_mut().zip(run_apart(&times, room)) {
        pair.choice = match fastest(&pair.rows) {
            Some((k, us)) if !apart => {
                pair.bound = us > pair.apart.2;
                k.name()
            }
            _ => UNPAIRED.to_string(),
        };
    }
    for (key, batch_key, pair) in timed {
        tuned.choices.insert(key, pair.choice.clone());
        by_batch.insert(batch_key, pair.choice.clone());
        tuned.pairs.push(pair);
    }
    for (key, batch_key) in later {
        if let Some(choice) = by_batch.get(&batch_key) {
            tuned.choices.insert(key, choice.clone());
        }
    }
    Ok(tuned)
}

/// The faster reduction on this device for `n` elements (only the workgroup tree where subgroups are missing),
/// with each one's time in µs.
pub fn tune_reduction(gpu: &Gpu, n: u32, runs: u32) -> Result<(Reduction, Vec<(Reduction, f64)>)> {
    let mut times = Vec::new();
    for r in Reduction::available(gpu) {
        times.push((r, time_reduction(gpu, r, n, runs)? * 1e6));
    }
    let best = times
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|t| t.0)
        .unwrap_or(Reduction::Workgroup);
    Ok((best, times))
}

/// The number of elements of the step's largest reduction (the BCE over the reconstruction, rows × pixels), from
/// its products: the largest output of a forward product (layout NT).
pub fn reduction_size(products: &[Product]) -> u32 {
    products
        .iter()
        .filter(|p| p.layout == Layout::NT)
        .map(|p| p.shape.0.saturating_mul(p.shape.1))
        .max()
        .unwrap_or(1)
}
