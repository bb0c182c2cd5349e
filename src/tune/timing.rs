//! Timing one matmul dispatch (a product, or a layer's gradient pair) with one candidate kernel: checked against
//! the CPU reference first, then timed on the GPU's clock where the adapter has timestamps.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Operand};
use crate::kernels::contract::MAX_PARTIALS;
use crate::kernels::loss::{PartialsAt, bce_logits, loss_groups};
use crate::kernels::matmul::{
    Epilogue, EpilogueKind, Kernel, Layout, Part, Product, error_bound, flops, is_device_fault,
    matmul_cpu, matmul_pair_with, matmul_with, unavailable,
};
use crate::kernels::philox::{Philox, stream};
use crate::kernels::{Reduction, StepTable};
use crate::model::net::model_stride;

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
    // One A for all parts: a pair's two products read the same ∂Y, as (k, m) and (m, k). Several models (a
    // sweep's product) each read their own copy of every operand, as in the batched step.
    let a = random(m as usize * k as usize);
    let a_buf = gpu.storage_init(&format!("{}.a", first.name), &copies(&a, first.models))?;
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

/// `models` copies of `v`, each [`model_stride`] of its length after the one before (as a batched step lays
/// models out); `v` itself for one model.
fn copies(v: &[f32], models: u32) -> Vec<f32> {
    if models <= 1 {
        return v.to_vec();
    }
    let stride = model_stride(v.len());
    let mut all = vec![0f32; stride * models as usize];
    for c in all.chunks_mut(stride) {
        c[..v.len()].copy_from_slice(v);
    }
    all
}

/// The model stride of an operand of `len` elements for `models` models (0: one copy).
fn stride_of(len: usize, models: u32) -> usize {
    if models <= 1 { 0 } else { model_stride(len) }
}

/// One product's operands for [`dispatch_bench`], on the device and on the host (for the check): B and the
/// epilogue's operand random, C poisoned; for several models, a copy of each per model (model 0's checked).
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
        let models = product.models.max(1);
        let c_len = 2 * mu * nu + mu;
        let c_buf = gpu.storage::<f32>(
            &format!("{name}.c"),
            stride_of(c_len, models).max(c_len) * models as usize,
        )?;
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
            b_buf: gpu.storage_init(&format!("{name}.b"), &copies(&b, models))?,
            aux_buf: gpu.storage_init(&format!("{name}.aux"), &copies(&aux, models))?,
            c_buf,
            // The images are one batch for every model, as in the step.
            x_buf: gpu.storage_init(&format!("{name}.x"), &vec![0.5f32; bce_len])?,
            grad_buf: gpu.storage::<f32>(
                &format!("{name}.dlogits"),
                stride_of(bce_len, models).max(bce_len) * models as usize,
            )?,
            b,
            aux,
        })
    }

    /// The product as a dispatch's part, reading A from `a`.
    fn part<'a>(&'a self, a: &'a wgpu::Buffer) -> Part<'a> {
        let (m, n, k) = self.product.shape;
        let (mu, nu, ku) = (m as usize, n as usize, k as usize);
        let models = self.product.models.max(1);
        let per = |buffer: &'a wgpu::Buffer, len: usize| {
            Operand::from(buffer).per_model(stride_of(len, models))
        };
        let aux = per(&self.aux_buf, self.aux.len());
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
                grad: per(&self.grad_buf, mu * nu),
            },
        };
        Part {
            layout: self.product.layout,
            dims: self.product.shape,
            a: per(a, mu * ku),
            b: per(&self.b_buf, self.b.len()),
            c: per(&self.c_buf, 2 * mu * nu + mu),
            epilogue,
            models,
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

/// The label of the dispatch that computes `weight_grad` and `input_grad` (`fc4.weight_grad+input_grad`).
pub fn pair_label(weight_grad: &Product, input_grad: &Product) -> String {
    let short = input_grad
        .name
        .rsplit('.')
        .next()
        .unwrap_or(&input_grad.name);
    format!("{}+{short}", weight_grad.name)
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

/// Each candidate computing `parts` in one dispatch, timed in [`tune_product`]'s two rounds.
pub(super) fn time_candidates(
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
pub(super) fn fastest(
    rows: &[(Kernel, std::result::Result<MatmulRow, String>)],
) -> Option<(Kernel, f64)> {
    rows.iter()
        .filter_map(|(k, r)| r.as_ref().ok().map(|r| (*k, r.median_us)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
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
