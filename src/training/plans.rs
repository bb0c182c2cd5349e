//! What the trainer and the evaluator share: a pass over a set in batches, the dispatch plan of each batch size,
//! and the loss totals read back from the loss log.

use crate::error::Result;
use crate::gpu::Plan;
use crate::kernels::contract::{EpilogueKind, Layout, LossTerm, TERMS};
use crate::kernels::matmul::Product;

/// The batches of one pass over `n` examples: full batches, then the remainder (kept, not dropped).
pub fn batches(n: u32, batch: u32) -> Vec<u32> {
    let mut v = vec![batch; (n / batch) as usize];
    if !n.is_multiple_of(batch) {
        v.push(n % batch);
    }
    v
}

/// The plan for a full batch and, where the set does not divide, the plan for the last partial one.
pub struct Plans {
    full: Plan,
    last: Option<(u32, Plan)>,
}

impl Plans {
    /// No plans yet (before the first `build`).
    pub fn empty() -> Plans {
        Plans {
            full: Plan::default(),
            last: None,
        }
    }

    /// Every plan.
    pub fn all(&self) -> impl Iterator<Item = &Plan> {
        std::iter::once(&self.full).chain(self.last.as_ref().map(|(_, p)| p))
    }

    /// Builds the plans the batches of `sizes` need (at most two).
    pub fn build(sizes: &[u32], plan: impl Fn(u32) -> Result<Plan>) -> Result<Plans> {
        let (first, last) = (sizes[0], *sizes.last().expect("at least one batch"));
        Ok(Plans {
            full: plan(first)?,
            last: if last != first {
                Some((last, plan(last)?))
            } else {
                None
            },
        })
    }

    /// The plan of a batch of `rows` examples.
    pub fn for_rows(&self, rows: u32) -> &Plan {
        match &self.last {
            Some((r, p)) if *r == rows => p,
            _ => &self.full,
        }
    }
}

/// The matmuls of a plan, as (product, the kernel that computes it), read from its dispatches: both products of
/// a pair, each with the pair's kernel and its own name (a pair labelled `fc4.weight_grad+input_grad` holds
/// `fc4.weight_grad` and `fc4.input_grad`).
pub fn products(plan: &Plan) -> impl Iterator<Item = (Product, String)> + '_ {
    plan.iter().flat_map(|d| {
        let (first, second) = match d.label.split_once('+') {
            Some((f, s)) => (
                f.to_string(),
                format!("{}{s}", &f[..f.rfind('.').map_or(0, |i| i + 1)]),
            ),
            None => (d.label.clone(), format!("{}.2", d.label)),
        };
        let parts = [(d.workload, first), (d.paired, second)];
        parts.into_iter().filter_map(move |(w, name)| {
            let w = w.filter(|w| w.family == crate::kernels::MATMUL.name)?;
            let product = Product {
                name,
                layout: Layout::from_code(w.codes[0])?,
                epilogue: EpilogueKind::from_code(w.codes[1])?,
                shape: (w.dims[0], w.dims[1], w.dims[2]),
                models: w.models,
            };
            Some((product, d.kernel.clone().unwrap_or_default()))
        })
    })
}

/// Loss totals over some examples (summed over pixels, latent dimensions and examples).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossSum {
    pub bce: f64,
    pub kl: f64,
    pub examples: u64,
}

impl LossSum {
    pub fn loss(&self) -> f64 {
        self.bce + self.kl
    }

    /// (loss, bce, kl) per example.
    pub fn per_example(&self) -> (f64, f64, f64) {
        let n = self.examples.max(1) as f64;
        (self.loss() / n, self.bce / n, self.kl / n)
    }

    /// Adds the loss log's rows for batches of `rows` examples (one row of [`TERMS`] floats per batch).
    pub fn add(&mut self, log: &[f32], rows: &[u32]) {
        self.add_model(log, rows, (0, 1));
    }

    /// [`LossSum::add`] for model `k` of `models` trained together: each batch's row holds [`TERMS`] floats per
    /// model, model by model.
    pub fn add_model(&mut self, log: &[f32], rows: &[u32], (k, models): (usize, usize)) {
        for (row, &r) in log.chunks_exact(TERMS * models).zip(rows) {
            let row = &row[k * TERMS..(k + 1) * TERMS];
            self.bce += row[LossTerm::Bce.column()] as f64;
            self.kl += row[LossTerm::Kl.column()] as f64;
            self.examples += r as u64;
        }
    }
}

/// The first non-finite value of a loss log holding rows of [`TERMS`] per model for `models` models: (row,
/// model, term).
pub fn first_non_finite(log: &[f32], models: usize) -> Option<(usize, usize, LossTerm)> {
    let at = log.iter().position(|v| !v.is_finite())?;
    let (row, term) = (at / TERMS, at % TERMS);
    Some((row / models, row % models, LossTerm::ALL[term]))
}
