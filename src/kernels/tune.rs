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
    Epilogue, EpilogueKind, Kernel, Layout, Operand, describe, error_bound, flops, is_device_fault,
    matmul_cpu, matmul_with, no_kernel, product_key, unavailable,
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
    let (m, n, k) = product.shape;
    let (mu, nu, ku) = (m as usize, n as usize, k as usize);
    let name = product.name.as_str();
    let mut rng = Philox::new(42, stream::TEST_INPUT);
    let mut random = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.range(-1.0, 1.0)).collect() };
    let (a, b) = (random(mu * ku), random(ku * nu));
    // The epilogue's operand: a bias of n, or a ReLU mask of m × n (half of it zero).
    let aux = match product.epilogue {
        EpilogueKind::Bias | EpilogueKind::BiasRelu | EpilogueKind::BiasBce => random(nu),
        EpilogueKind::ReluMask | EpilogueKind::KlGrad => random(mu * nu),
        EpilogueKind::None | EpilogueKind::BiasGrad => vec![0.0],
    };
    let a_buf = gpu.storage_init(&format!("{name}.a"), &a)?;
    let b_buf = gpu.storage_init(&format!("{name}.b"), &b)?;
    let aux_buf = gpu.storage_init(&format!("{name}.aux"), &aux)?;
    // C, then the bias gradient's m elements after it; under KlGrad, C is (m, 2n) and the product is added to its
    // first n columns, which start at zero so that they hold the product itself.
    let kl_grad = product.epilogue == EpilogueKind::KlGrad;
    let c_buf = gpu.storage::<f32>(&format!("{name}.c"), 2 * mu * nu + mu)?;
    gpu.fill(&c_buf, if kl_grad { 0.0 } else { f32::NAN });
    let aux_op = Operand::from(&aux_buf);
    // The BCE epilogue's images and gradient (its logits are C, checked as a bias add's).
    let bce_len = if product.epilogue == EpilogueKind::BiasBce {
        mu * nu
    } else {
        1
    };
    let x_buf = gpu.storage_init(&format!("{name}.x"), &vec![0.5f32; bce_len])?;
    let grad_buf = gpu.storage::<f32>(&format!("{name}.dlogits"), bce_len)?;
    let epilogue = match product.epilogue {
        EpilogueKind::None => Epilogue::None,
        EpilogueKind::Bias => Epilogue::Bias(aux_op),
        EpilogueKind::BiasRelu => Epilogue::BiasRelu(aux_op),
        EpilogueKind::ReluMask => Epilogue::ReluMask(aux_op),
        EpilogueKind::BiasGrad => Epilogue::BiasGrad { offset: mu * nu },
        EpilogueKind::KlGrad => Epilogue::KlGrad(aux_op),
        EpilogueKind::BiasBce => Epilogue::BiasBce {
            bias: aux_op,
            x: (&x_buf).into(),
            grad: (&grad_buf).into(),
        },
    };
    let layout = product.layout;
    let d = matmul_with(
        gpu,
        kernel,
        name,
        layout,
        (m, n, k),
        (&a_buf).into(),
        (&b_buf).into(),
        (&c_buf).into(),
        epilogue,
    )?;
    gpu.submit_pass(name, |pass| d.record(pass, 0))?;
    // C, and the bias gradient's m row sums where the epilogue writes them.
    let bias_grad = product.epilogue == EpilogueKind::BiasGrad;
    let mut got: Vec<f32> = gpu.read(&c_buf, 0, mu * nu + if bias_grad { mu } else { 0 })?;
    if kl_grad {
        // The product is in the first n of each row of 2n.
        let wide: Vec<f32> = gpu.read(&c_buf, 0, 2 * mu * nu)?;
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
    let a_rows = pick_rows(&a, ku, layout == Layout::TN);
    let mask_rows = match product.epilogue {
        EpilogueKind::ReluMask => pick_rows(&aux, nu, false),
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
    let want = matmul_cpu(layout, sub, &a_rows, &b, cpu_epilogue);
    let bound = matmul_cpu(layout, sub, &abs(&a_rows), &abs(&b), Epilogue::None);
    let gamma = error_bound(ku);
    let bias_abs = |j: usize| match product.epilogue {
        EpilogueKind::Bias | EpilogueKind::BiasRelu | EpilogueKind::BiasBce => aux[j].abs() as f64,
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
    if error_ratio > 1.0 {
        return Err(Error::Mismatch {
            what: format!("{name} with {}", kernel.name()),
            ratio: error_ratio,
        });
    }

    // Timed submissions: GPU timestamps around the pass where the device has them.
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let t = gpu.timed_pass(name, |pass| {
            for _ in 0..reps.max(1) {
                d.record(pass, 0);
            }
        })?;
        times.push(t.as_secs_f64() / reps.max(1) as f64);
    }
    let median = median(&mut times);
    Ok(MatmulRow {
        product: product.clone(),
        kernel,
        error_ratio,
        median_us: median * 1e6,
        gflops: flops(m, n, k) / median / 1e9,
    })
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

/// Every candidate's row for every product, and the choices (product key → kernel name).
#[derive(Clone, Debug, Default)]
pub struct Tuned {
    pub rows: Vec<TuneRow>,
    pub choices: BTreeMap<String, String>,
}

/// [`matmul_bench`], with a failure the candidate's own made a row (see [`unavailable`]). A lost or hung device
/// is no candidate's verdict: every later one would fail too, so it ends tuning.
pub fn bench_candidate(
    gpu: &Gpu,
    kernel: Kernel,
    product: &Product,
    reps: u32,
    runs: u32,
) -> Result<std::result::Result<MatmulRow, String>> {
    match matmul_bench(gpu, kernel, product, reps, runs) {
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
    let quick = candidates
        .iter()
        .map(|&k| Ok((k, bench_candidate(gpu, k, product, 1, 1)?)))
        .collect::<Result<Vec<_>>>()?;
    let best = quick
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().map(|r| r.median_us))
        .fold(f64::INFINITY, f64::min);
    let mut rows = quick
        .into_iter()
        .map(|(kernel, outcome)| {
            let outcome = match outcome {
                Ok(r) if r.median_us <= 2.0 * best => {
                    let reps = (2000.0 / r.median_us.max(1.0)).clamp(1.0, 64.0) as u32;
                    bench_candidate(gpu, kernel, product, reps, runs)?
                }
                other => other,
            };
            Ok(TuneRow {
                product: product.clone(),
                kernel,
                outcome,
                chosen: false,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let fastest = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.outcome.as_ref().ok().map(|o| (i, o.median_us)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((i, _)) = fastest {
        rows[i].chosen = true;
    }
    Ok(rows)
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
}

/// Tunes every distinct product of `products` over every candidate. Products that differ from an earlier one only
/// in the batch dimension (a run's last, partial batch after its full ones) take the earlier one's choice
/// without being measured: they run once an epoch, and tuning them would double the time tuning takes. A product
/// whose every candidate is unavailable gets no choice ([`Tuned::complete`] says so); fails only if the device
/// is lost or hung.
pub fn tune(gpu: &Gpu, products: &[Product], runs: u32) -> Result<Tuned> {
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
        groups: loss_groups(n as u64),
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

/// Whether `kernel` is a valid choice for `key`: a matmul candidate, or a reduction for the reduction key.
pub fn known_choice(key: &str, kernel: &str) -> bool {
    if key == Reduction::KEY {
        return kernel == Reduction::Workgroup.name() || kernel == Reduction::Subgroup.name();
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
/// product, else tuned (and the cache rewritten), or the fixed defaults. Warnings go to `warn`.
pub fn choose(
    gpu: &Gpu,
    products: &[Product],
    mode: &TuneMode,
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
    let missing: Vec<Product> = products
        .iter()
        .filter(|p| !known.contains_key(&p.key()))
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
    let tuned = tune(gpu, &missing, 3)?;
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
