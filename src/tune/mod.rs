//! Autotuning: for each matmul of the training step, every candidate kernel is checked against the CPU reference
//! and timed on this adapter, and the fastest is chosen. The choices are cached on disk, keyed by the adapter, its
//! driver, the backend and the program version (with a hash of the shaders), so a second run starts at once.
//!
//! A candidate that fails anywhere (shader validation, pipeline creation, its check against the reference) is
//! unavailable: the table says why and the others compete. A cache that cannot be read, is corrupt or was written
//! for another adapter or program is ignored with a warning and rewritten; it can never select a kernel that does
//! not exist (names are parsed back into candidates) or one for another shape (keys are products).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::contract::MAX_PARTIALS;
use crate::kernels::loss::{PartialsAt, bce_logits, loss_groups};
use crate::kernels::matmul::{
    Epilogue, EpilogueKind, Kernel, Layout, Operand, Part, describe, error_bound, flops,
    is_device_fault, is_pair_key, matmul_cpu, matmul_pair_with, matmul_with, no_kernel, pair_key,
    product_key, unavailable,
};
use crate::kernels::philox::{Philox, stream};
use crate::kernels::{Reduction, StepTable};

/// One matmul of a training step, as its dispatch describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Product {
    /// The dispatch's label, e.g. `fc1.forward`.
    pub name: String,
    pub layout: Layout,
    pub epilogue: EpilogueKind,
    /// (m, n, k).
    pub shape: (u32, u32, u32),
}

impl Product {
    /// The product's key in the kernel choices.
    pub fn key(&self) -> String {
        product_key(self.layout, self.shape, self.epilogue)
    }

    /// The key without the batch dimension (m of a forward or input gradient, k of a weight gradient): the
    /// products of a full and a partial batch of one layer share it.
    pub fn batch_key(&self) -> String {
        let (m, n, k) = self.shape;
        let dims = match self.layout {
            Layout::TN => format!("{m}x{n}x*"),
            _ => format!("*x{n}x{k}"),
        };
        format!("{:?} {dims} {:?}", self.layout, self.epilogue)
    }
}

/// One timed matmul.
#[derive(Clone, Debug)]
pub struct MatmulRow {
    pub product: Product,
    pub kernel: Kernel,
    /// Largest |gpu − cpu| divided by its error bound γ_k·Σ|a||b| (≤ 1 passes).
    pub error_ratio: f64,
    pub median_us: f64,
    pub gflops: f64,
}

/// Times `product` with `kernel`: runs it once and checks the result against the CPU reference (on a sample of
/// rows for large shapes); that run is also the warm-up (a driver may finish compiling a pipeline on first use:
/// seen on NVIDIA, where first runs took up to 50× longer). Then `runs` timed submissions of `reps` dispatches each
/// (at least one of one dispatch, a quick first look), reporting the median per dispatch. A kernel that fails to
/// build or to match the reference is an error, never a row.
pub fn matmul_bench(
    gpu: &Gpu,
    kernel: Kernel,
    product: &Product,
    reps: u32,
    runs: u32,
) -> Result<MatmulRow> {
    dispatch_bench(gpu, kernel, std::slice::from_ref(product), reps, runs)
}

/// [`matmul_bench`] of one dispatch computing `parts`: one product, or a pair (a layer's weight gradient and
/// input gradient, which read the same A; see [`pairs`]), each part checked against its own CPU reference. A
/// pair's row is named by its dispatch label, with the first part's shape and both parts' arithmetic.
pub fn dispatch_bench(
    gpu: &Gpu,
    kernel: Kernel,
    parts: &[Product],
    reps: u32,
    runs: u32,
) -> Result<MatmulRow> {
    let first = &parts[0];
    let (m, _, k) = first.shape;
    let mut rng = Philox::new(42, stream::TEST_INPUT);
    let mut random = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.range(-1.0, 1.0)).collect() };
    // One A for all parts: a pair's two products read the same ∂Y, as (k, m) and (m, k).
    let a = random(m as usize * k as usize);
    let a_buf = gpu.storage_init(&format!("{}.a", first.name), &a)?;
    let operands = parts
        .iter()
        .map(|p| Operands::new(gpu, p, &mut random))
        .collect::<Result<Vec<_>>>()?;
    let label = match parts {
        [only] => only.name.clone(),
        [w, i] => pair_label(w, i),
        _ => unreachable!("a dispatch computes one product or a pair"),
    };
    let d = match operands.as_slice() {
        [only] => {
            let p = only.part(&a_buf);
            matmul_with(
                gpu, kernel, &label, p.layout, p.dims, p.a, p.b, p.c, p.epilogue,
            )?
        }
        [w, i] => matmul_pair_with(gpu, kernel, &label, w.part(&a_buf), i.part(&a_buf))?,
        _ => unreachable!("a dispatch computes one product or a pair"),
    };
    gpu.submit_pass(&label, |pass| d.record(pass, 0))?;
    let mut error_ratio = 0f64;
    for o in &operands {
        let ratio = o.error_ratio(gpu, &a)?;
        if ratio > 1.0 {
            return Err(Error::Mismatch {
                what: format!("{} with {}", o.product.name, kernel.name()),
                ratio,
            });
        }
        error_ratio = error_ratio.max(ratio);
    }

    // Timed submissions: GPU timestamps around the pass where the device has them.
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let t = gpu.timed_pass(&label, |pass| {
            for _ in 0..reps.max(1) {
                d.record(pass, 0);
            }
        })?;
        times.push(t.as_secs_f64() / reps.max(1) as f64);
    }
    let median = median(&mut times);
    let work: f64 = parts
        .iter()
        .map(|p| flops(p.shape.0, p.shape.1, p.shape.2))
        .sum();
    Ok(MatmulRow {
        product: Product {
            name: label,
            ..first.clone()
        },
        kernel,
        error_ratio,
        median_us: median * 1e6,
        gflops: work / median / 1e9,
    })
}

/// One product's operands for [`dispatch_bench`], on the device and on the host (for the check): B and the
/// epilogue's operand random, C poisoned.
struct Operands {
    product: Product,
    b: Vec<f32>,
    aux: Vec<f32>,
    b_buf: wgpu::Buffer,
    aux_buf: wgpu::Buffer,
    c_buf: wgpu::Buffer,
    x_buf: wgpu::Buffer,
    grad_buf: wgpu::Buffer,
}

impl Operands {
    fn new(
        gpu: &Gpu,
        product: &Product,
        random: &mut impl FnMut(usize) -> Vec<f32>,
    ) -> Result<Operands> {
        let (m, n, k) = product.shape;
        let (mu, nu, ku) = (m as usize, n as usize, k as usize);
        let name = product.name.as_str();
        let b = random(ku * nu);
        // The epilogue's operand: a bias of n, or a ReLU mask of m × n (half of it zero).
        let aux = match product.epilogue {
            EpilogueKind::Bias | EpilogueKind::BiasRelu | EpilogueKind::BiasBce => random(nu),
            EpilogueKind::ReluMask | EpilogueKind::KlGrad => random(mu * nu),
            EpilogueKind::None | EpilogueKind::BiasGrad => vec![0.0],
        };
        // C, then the bias gradient's m elements after it; under KlGrad, C is (m, 2n) and the product is added to
        // its first n columns, which start at zero so that they hold the product itself.
        let c_buf = gpu.storage::<f32>(&format!("{name}.c"), 2 * mu * nu + mu)?;
        let kl_grad = product.epilogue == EpilogueKind::KlGrad;
        gpu.fill(&c_buf, if kl_grad { 0.0 } else { f32::NAN });
        // The BCE epilogue's images and gradient (its logits are C, checked as a bias add's).
        let bce_len = if product.epilogue == EpilogueKind::BiasBce {
            mu * nu
        } else {
            1
        };
        Ok(Operands {
            product: product.clone(),
            b_buf: gpu.storage_init(&format!("{name}.b"), &b)?,
            aux_buf: gpu.storage_init(&format!("{name}.aux"), &aux)?,
            c_buf,
            x_buf: gpu.storage_init(&format!("{name}.x"), &vec![0.5f32; bce_len])?,
            grad_buf: gpu.storage::<f32>(&format!("{name}.dlogits"), bce_len)?,
            b,
            aux,
        })
    }

    /// The product as a dispatch's part, reading A from `a`.
    fn part<'a>(&'a self, a: &'a wgpu::Buffer) -> Part<'a> {
        let (m, n, _) = self.product.shape;
        let aux = Operand::from(&self.aux_buf);
        let epilogue = match self.product.epilogue {
            EpilogueKind::None => Epilogue::None,
            EpilogueKind::Bias => Epilogue::Bias(aux),
            EpilogueKind::BiasRelu => Epilogue::BiasRelu(aux),
            EpilogueKind::ReluMask => Epilogue::ReluMask(aux),
            EpilogueKind::BiasGrad => Epilogue::BiasGrad {
                offset: m as usize * n as usize,
            },
            EpilogueKind::KlGrad => Epilogue::KlGrad(aux),
            EpilogueKind::BiasBce => Epilogue::BiasBce {
                bias: aux,
                x: (&self.x_buf).into(),
                grad: (&self.grad_buf).into(),
            },
        };
        Part {
            layout: self.product.layout,
            dims: self.product.shape,
            a: a.into(),
            b: (&self.b_buf).into(),
            c: (&self.c_buf).into(),
            epilogue,
        }
    }

    /// The largest |gpu − cpu| of C (on a sample of rows for large shapes) divided by its error bound
    /// γ_k·Σ|a||b|, after the dispatch ran on A = `a`.
    fn error_ratio(&self, gpu: &Gpu, a: &[f32]) -> Result<f64> {
        let product = &self.product;
        let (m, n, k) = product.shape;
        let (mu, nu, ku) = (m as usize, n as usize, k as usize);
        let (b, aux, layout) = (&self.b, &self.aux, product.layout);
        // C, and the bias gradient's m row sums where the epilogue writes them.
        let bias_grad = product.epilogue == EpilogueKind::BiasGrad;
        let mut got: Vec<f32> =
            gpu.read(&self.c_buf, 0, mu * nu + if bias_grad { mu } else { 0 })?;
        if product.epilogue == EpilogueKind::KlGrad {
            // The product is in the first n of each row of 2n.
            let wide: Vec<f32> = gpu.read(&self.c_buf, 0, 2 * mu * nu)?;
            got = wide
                .chunks(2 * nu)
                .flat_map(|row| row[..nu].to_vec())
                .collect();
        }

        // Check a sample of rows (all of them for small shapes): the CPU reference is O(mnk) in f64, so about 64
        // rows, or 8 for the largest products.
        let sample = if nu * ku > 1 << 24 { 8 } else { 64 };
        let rows: Vec<usize> = (0..mu).step_by((mu / sample).max(1)).collect();
        let pick_rows = |v: &[f32], cols: usize, transposed: bool| -> Vec<f32> {
            // The rows of a (rows_of, cols) matrix used by `rows`, in the layout's storage order.
            if transposed {
                (0..cols)
                    .flat_map(|kk| rows.iter().map(move |&i| v[kk * mu + i]))
                    .collect()
            } else {
                rows.iter()
                    .flat_map(|&i| v[i * cols..(i + 1) * cols].iter().copied())
                    .collect()
            }
        };
        let a_rows = pick_rows(a, ku, layout == Layout::TN);
        let mask_rows = match product.epilogue {
            EpilogueKind::ReluMask => pick_rows(aux, nu, false),
            _ => Vec::new(),
        };
        let cpu_epilogue = match product.epilogue {
            EpilogueKind::Bias | EpilogueKind::BiasBce => Epilogue::Bias(aux.as_slice()),
            EpilogueKind::BiasRelu => Epilogue::BiasRelu(aux.as_slice()),
            EpilogueKind::ReluMask => Epilogue::ReluMask(mask_rows.as_slice()),
            _ => Epilogue::None,
        };
        let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
        let sub = (rows.len(), nu, ku);
        let want = matmul_cpu(layout, sub, &a_rows, b, cpu_epilogue);
        let bound = matmul_cpu(layout, sub, &abs(&a_rows), &abs(b), Epilogue::None);
        let gamma = error_bound(ku);
        let bias_abs = |j: usize| match product.epilogue {
            EpilogueKind::Bias | EpilogueKind::BiasRelu | EpilogueKind::BiasBce => {
                aux[j].abs() as f64
            }
            _ => 0.0,
        };
        let mut error_ratio = 0f64;
        for (r, &i) in rows.iter().enumerate() {
            for j in 0..nu {
                let g = got[i * nu + j] as f64;
                let tol = gamma * (bound[r * nu + j] as f64 + bias_abs(j));
                let e = (g - want[r * nu + j] as f64).abs() / tol.max(1e-30);
                error_ratio = error_ratio.max(if g.is_nan() { f64::INFINITY } else { e });
            }
        }
        if bias_grad {
            // The row sums Σ_k A(i, k), every row (O(mk), cheap): a k-term sum, bound γ_k·Σ|A|.
            let a_at = |i: usize, kk: usize| match layout {
                Layout::TN => a[kk * mu + i],
                _ => a[i * ku + kk],
            } as f64;
            for i in 0..mu {
                let want: f64 = (0..ku).map(|kk| a_at(i, kk)).sum();
                let tol = gamma * (0..ku).map(|kk| a_at(i, kk).abs()).sum::<f64>();
                let g = got[mu * nu + i] as f64;
                let e = (g - want).abs() / tol.max(1e-30);
                error_ratio = error_ratio.max(if g.is_nan() { f64::INFINITY } else { e });
            }
        }
        Ok(error_ratio)
    }
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

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

/// One candidate for one product: its timing, or why it is unavailable.
#[derive(Clone, Debug)]
pub struct TuneRow {
    pub product: Product,
    pub kernel: Kernel,
    pub outcome: std::result::Result<MatmulRow, String>,
    pub chosen: bool,
}

/// Every candidate's row for every product, each pair's verdict, and the choices (product or pair key → kernel
/// name, or [`UNPAIRED`] for a pair).
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
    /// The chosen kernel, or [`UNPAIRED`].
    pub choice: String,
    /// Whether the pair was faster apart but is one dispatch all the same, the step having no room for another
    /// (see [`tune`]).
    pub bound: bool,
}

/// The choice that runs a pair's two products as two dispatches, each with its own kernel.
pub const UNPAIRED: &str = "unpaired";

/// The label of the dispatch that computes `weight_grad` and `input_grad` (`fc4.weight_grad+input_grad`).
pub fn pair_label(weight_grad: &Product, input_grad: &Product) -> String {
    let short = input_grad
        .name
        .rsplit('.')
        .next()
        .unwrap_or(&input_grad.name);
    format!("{}+{short}", weight_grad.name)
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

/// [`dispatch_bench`], with a failure the candidate's own made a row (see [`unavailable`]). A lost or hung
/// device is no candidate's verdict: every later one would fail too, so it ends tuning.
pub fn bench_candidate(
    gpu: &Gpu,
    kernel: Kernel,
    product: &Product,
    reps: u32,
    runs: u32,
) -> Result<std::result::Result<MatmulRow, String>> {
    bench_parts(gpu, kernel, std::slice::from_ref(product), reps, runs)
}

/// [`bench_candidate`] of one dispatch computing `parts` (a product, or a pair: see [`dispatch_bench`]).
pub fn bench_parts(
    gpu: &Gpu,
    kernel: Kernel,
    parts: &[Product],
    reps: u32,
    runs: u32,
) -> Result<std::result::Result<MatmulRow, String>> {
    match dispatch_bench(gpu, kernel, parts, reps, runs) {
        Ok(row) => Ok(Ok(row)),
        Err(e) if is_device_fault(&e) => Err(e),
        Err(e) => Ok(Err(unavailable(&e))),
    }
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

/// Each candidate computing `parts` in one dispatch, timed in [`tune_product`]'s two rounds.
fn time_candidates(
    gpu: &Gpu,
    parts: &[Product],
    candidates: &[Kernel],
    runs: u32,
) -> Result<Vec<(Kernel, std::result::Result<MatmulRow, String>)>> {
    let quick = candidates
        .iter()
        .map(|&k| Ok((k, bench_parts(gpu, k, parts, 1, 1)?)))
        .collect::<Result<Vec<_>>>()?;
    let best = fastest(&quick).map_or(f64::INFINITY, |(_, us)| us);
    quick
        .into_iter()
        .map(|(kernel, outcome)| {
            let outcome = match outcome {
                Ok(r) if r.median_us <= 2.0 * best => {
                    let reps = (2000.0 / r.median_us.max(1.0)).clamp(1.0, 64.0) as u32;
                    bench_parts(gpu, kernel, parts, reps, runs)?
                }
                other => other,
            };
            Ok((kernel, outcome))
        })
        .collect()
}

/// The fastest timed kernel of `rows`, with its median µs.
fn fastest(rows: &[(Kernel, std::result::Result<MatmulRow, String>)]) -> Option<(Kernel, f64)> {
    rows.iter()
        .filter_map(|(k, r)| r.as_ref().ok().map(|r| (*k, r.median_us)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
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
fn pair_batch_key(weight_grad: &Product, input_grad: &Product) -> String {
    format!("{} + {}", weight_grad.batch_key(), input_grad.batch_key())
}

/// Tunes every distinct product of `products` over every candidate, then each pair among them ([`pairs`]) as one
/// dispatch over every kernel both can use. A pair runs as two dispatches ([`UNPAIRED`]), each product with its
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

/// Times the BCE loss kernel (the step's largest reduction) over `n` elements with reduction `r`: the median of
/// `runs` timed submissions of a few dispatches, after a warm-up.
pub fn time_reduction(gpu: &Gpu, r: Reduction, n: u32, runs: u32) -> Result<f64> {
    let mut rng = Philox::new(43, stream::TEST_INPUT);
    let v: Vec<f32> = (0..n).map(|_| rng.range(-4.0, 4.0)).collect();
    let logits = gpu.storage_init("tune.logits", &v)?;
    let x = gpu.storage_init("tune.x", &v)?;
    let grad = gpu.storage::<f32>("tune.dlogits", n as usize)?;
    let partials = gpu.storage::<f32>("tune.partials", MAX_PARTIALS as usize)?;
    let at = PartialsAt {
        buffer: &partials,
        offset: 0,
        slot_stride: 0,
        slots: 1,
        groups: crate::kernels::strided_groups(gpu, loss_groups(n as u64)),
    };
    // One step-table row of zeros (a new buffer is zeroed): the partials' slot 0.
    let step = StepTable::new(gpu, 1)?;
    let shape = (1, n);
    let d = r.scoped(|| bce_logits(gpu, "tune.bce", &logits, &x, &grad, at, shape, true, &step))?;
    gpu.submit_pass("tune.bce", |pass| d.record(pass, 0))?;
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let t = gpu.timed_pass("tune.bce", |pass| {
            for _ in 0..4 {
                d.record(pass, 0);
            }
        })?;
        times.push(t.as_secs_f64() / 4.0);
    }
    Ok(median(&mut times))
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

/// What the cache is keyed by: the adapter, its driver, the backend and the program (version and shaders).
pub fn identity(gpu: &Gpu) -> String {
    let i = &gpu.info;
    format!(
        "adapter={} | driver={} {} | backend={:?} | program=vae-wgpu {} shaders {:016x}",
        i.name,
        i.driver,
        i.driver_info,
        i.backend,
        env!("CARGO_PKG_VERSION"),
        shaders_hash()
    )
}

/// FNV-1a over every shader module's text: a changed kernel invalidates the cache.
fn shaders_hash() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for family in crate::kernels::FAMILIES {
        // The module's source, without what a test-only fault adds (a driver's rejection is not the program).
        let parts = family.parts();
        let texts: Vec<&str> = parts
            .iter()
            .filter(|(name, _)| *name != crate::gpu::pipeline::REJECTED_PART.0)
            .map(|(_, text)| text.as_ref())
            .collect();
        for b in texts.join("\n").bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The default cache file for this adapter: `<user cache dir>/vae-wgpu/kernels-<hash of the identity>.txt`.
pub fn default_cache_path(identity: &str) -> Option<PathBuf> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in identity.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    Some(
        dirs::cache_dir()?
            .join("vae-wgpu")
            .join(format!("kernels-{h:016x}.txt")),
    )
}

const HEADER: &str =
    "# vae-wgpu kernel choices, written by tuning (vae tune); delete this file to tune again";

/// Reads a cache file written for `identity`. Ok(None) when there is none; Err(warning) when it is unusable.
pub fn read_cache(
    path: &Path,
    identity: &str,
) -> std::result::Result<Option<BTreeMap<String, String>>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it ({e})")),
    };
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err("it is not a kernel-choice cache (unexpected first line)".into());
    }
    match lines.next().and_then(|l| l.strip_prefix("identity ")) {
        Some(id) if id == identity => {}
        Some(id) => {
            return Err(format!(
                "it was written for another adapter or program ({id})"
            ));
        }
        None => return Err("its identity line is missing".into()),
    }
    let mut choices = BTreeMap::new();
    for (i, line) in lines.enumerate() {
        let (key, kernel) = line
            .split_once('\t')
            .ok_or_else(|| format!("line {} is not `product<TAB>kernel`", i + 3))?;
        if !known_choice(key, kernel) {
            return Err(format!("line {} names no known kernel ({kernel:?})", i + 3));
        }
        choices.insert(key.to_string(), kernel.to_string());
    }
    Ok(Some(choices))
}

/// Whether `kernel` is a valid choice for `key`: a matmul candidate, or a reduction for the reduction key, or
/// [`UNPAIRED`] for a pair, or `fused` or `apart` for one of [`crate::kernels::FUSIONS`].
pub fn known_choice(key: &str, kernel: &str) -> bool {
    if key == Reduction::KEY {
        return kernel == Reduction::Workgroup.name() || kernel == Reduction::Subgroup.name();
    }
    if is_pair_key(key) && kernel == UNPAIRED {
        return true;
    }
    if crate::kernels::FUSIONS.contains(&key) {
        return kernel == "fused" || kernel == "apart";
    }
    Kernel::parse(kernel).is_some()
}

/// Writes the cache (atomically; the directory is created).
pub fn write_cache(path: &Path, identity: &str, choices: &BTreeMap<String, String>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            what: format!("creating {}", dir.display()),
            message: e.to_string(),
        })?;
    }
    let mut text = format!("{HEADER}\nidentity {identity}\n");
    for (k, v) in choices {
        text.push_str(&format!("{k}\t{v}\n"));
    }
    write_atomic(path, text.as_bytes())
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
