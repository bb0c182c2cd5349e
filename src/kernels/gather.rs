//! gather: a batch of dataset rows, picked through the epoch's index list and scaled to [0, 1]
//! (`shaders/gather.wgsl`).

use super::contract::GatherParams;
use super::{GATHER, StepTable, WG, check_room, grid};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::{Access, Dispatch, KernelSpec};
use crate::kernels::philox;

/// Dynamic binarization: each element becomes 1 with probability byte / 255, drawn from Philox under `seed` on
/// `stream` with the step table's `rng_step`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binarize {
    pub seed: u64,
    pub stream: u32,
}

/// A u8 dataset on the GPU: `rows` rows of `cols` bytes, packed four to a word.
#[derive(Debug)]
pub struct ByteMatrix {
    pub buffer: wgpu::Buffer,
    pub rows: u32,
    pub cols: u32,
}

impl ByteMatrix {
    pub fn upload(gpu: &Gpu, label: &str, bytes: &[u8], cols: u32) -> Result<ByteMatrix> {
        if cols == 0 || !bytes.len().is_multiple_of(cols as usize) {
            return Err(Error::shape(
                "gather",
                format!(
                    "{label}: {} bytes is not a whole number of {cols}-byte rows",
                    bytes.len()
                ),
            ));
        }
        if bytes.len() as u64 >= u32::MAX as u64 {
            return Err(Error::shape(
                "gather",
                format!(
                    "{label}: {} bytes; the kernel addresses at most 4 GiB",
                    bytes.len()
                ),
            ));
        }
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Ok(ByteMatrix {
            buffer: gpu.storage_init(label, &words)?,
            rows: (bytes.len() / cols as usize) as u32,
            cols,
        })
    }
}

/// Where [`gather_batches`] writes: `steps` batches of `rows` rows, batch g at element `g · stride` of x.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batches {
    pub rows: u32,
    pub steps: u32,
    pub stride: u32,
}

/// Records `x[r, c] = data[index[batch_offset + r], c] / 255` for `rows` rows, where `batch_offset` comes from
/// the step table row the dispatch is recorded with; binarized when `binarize` is given.
#[allow(clippy::too_many_arguments)]
pub fn gather(
    gpu: &Gpu,
    label: &str,
    data: &ByteMatrix,
    index: &wgpu::Buffer,
    x: &wgpu::Buffer,
    rows: u32,
    step: &StepTable,
    binarize: Option<Binarize>,
) -> Result<Dispatch> {
    let one = Batches {
        rows,
        steps: 1,
        stride: rows * data.cols,
    };
    gather_batches(gpu, label, data, index, x, one, step, binarize)
}

/// Records the batches of `at.steps` consecutive steps, starting with the step whose row of the step table the
/// dispatch is recorded with: batch g (that of the step g steps later, `batch_offset + g · rows` in the index list,
/// binarized with `rng_step + g`) into `x` at `g · at.stride`. Rows past the end of the index list are not
/// written (the epoch ends inside the batches).
#[allow(clippy::too_many_arguments)]
pub fn gather_batches(
    gpu: &Gpu,
    label: &str,
    data: &ByteMatrix,
    index: &wgpu::Buffer,
    x: &wgpu::Buffer,
    at: Batches,
    step: &StepTable,
    binarize: Option<Binarize>,
) -> Result<Dispatch> {
    gather_models(gpu, label, (data, index, x), at, step, binarize, None)
}

/// [`gather_batches`], and with `models` = (count, stride) each model's own batches, model k's `k × stride`
/// elements on, binarized (with `binarize`'s key and stream) where the model's row of the step table's window
/// says: for a sweep whose models differ in their binarization.
pub fn gather_models(
    gpu: &Gpu,
    label: &str,
    (data, index, x): (&ByteMatrix, &wgpu::Buffer, &wgpu::Buffer),
    at: Batches,
    step: &StepTable,
    binarize: Option<Binarize>,
    models: Option<(u32, u32)>,
) -> Result<Dispatch> {
    let batch = at.rows as u64 * data.cols as u64;
    if at.steps == 0 || batch == 0 || (at.steps > 1 && (at.stride as u64) < batch) {
        return Err(Error::shape(
            "gather",
            format!(
                "{label}: {} batches of {} rows {} elements apart",
                at.steps, at.rows, at.stride
            ),
        ));
    }
    let (count, model_stride) = models.unwrap_or((0, 0));
    let span = (at.steps as u64 - 1) * at.stride as u64 + batch;
    if count > 1 && (model_stride as u64) < span {
        return Err(Error::shape(
            "gather",
            format!("{label}: models {model_stride} elements apart cannot each hold {span}"),
        ));
    }
    if count > 0 && step.models != count {
        return Err(Error::shape(
            "gather",
            format!(
                "{label}: {count} models' batches with a step table for {}",
                step.models
            ),
        ));
    }
    let last = (at.steps as u64 - 1) * at.stride as u64
        + count.saturating_sub(1) as u64 * model_stride as u64;
    check_room("gather", label, "output", x, last, batch)?;
    let n = at.steps as u64 * batch;
    let spec = KernelSpec {
        module: &GATHER,
        entry: "gather",
        constants: vec![("BINARIZE", (binarize.is_some() && count == 0) as u8 as f64)],
        storage: &[Access::Read, Access::Read, Access::ReadWrite],
        uses_rows: true,
    };
    let params = GatherParams {
        rows: at.rows,
        cols: data.cols,
        data_rows: data.rows,
        stream: binarize.map_or(0, |b| b.stream),
        key_lo: binarize.map_or(0, |b| philox::key(b.seed)[0]),
        key_hi: binarize.map_or(0, |b| philox::key(b.seed)[1]),
        steps: at.steps,
        stride: at.stride,
        index_len: (index.size() / 4).min(u32::MAX as u64) as u32,
        models: count,
        model_stride,
        ..Default::default()
    };
    gpu.dispatch(
        label,
        &spec,
        &params,
        &[&data.buffer, index, x],
        {
            let [gx, gy, _] = grid(n, WG);
            [gx, gy, count.max(1)]
        },
        Some(&step.rows),
    )
    .map(|d| {
        let m = count.max(1) as f64;
        d.with_work(m * n as f64, m * 5.0 * n as f64)
    })
}

/// CPU reference: the same rows, in f64 then rounded, as `ToTensor` computes them.
pub fn gather_cpu(
    data: &[u8],
    cols: usize,
    index: &[u32],
    batch_offset: usize,
    rows: usize,
) -> Vec<f32> {
    let mut x = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let row = index[batch_offset + r] as usize;
        for c in 0..cols {
            x.push((data[row * cols + c] as f64 / 255.0) as f32);
        }
    }
    x
}

/// CPU reference for the binarized gather: x = 1 where the Philox uniform of counter
/// (i, rng_step, stream, 0) is below byte / 255 (computed in f32 as the kernel does), else 0.
pub fn gather_binarized_cpu(
    data: &[u8],
    cols: usize,
    index: &[u32],
    batch_offset: usize,
    rows: usize,
    b: Binarize,
    rng_step: u32,
) -> Vec<f32> {
    let key = philox::key(b.seed);
    gather_cpu(data, cols, index, batch_offset, rows)
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let u =
                philox::uniform(philox::philox4x32_10([i as u32, rng_step, b.stream, 0], key)[0]);
            if u < x { 1.0 } else { 0.0 }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::gather_cpu;

    /// Rust twin of `byte_to_unit` in shaders/gather.wgsl: the same u32 steps, so that its arithmetic is checked
    /// here for every byte.
    fn byte_to_unit(v: u32) -> f32 {
        if v == 0 {
            return 0.0;
        }
        let b = 31 - v.leading_zeros(); // WGSL's firstLeadingBit
        let mut n = v << (31 - b);
        let mut s = 31 - b;
        if n >= 255 << 24 {
            n >>= 1;
            s -= 1;
        }
        let mut q = n / 255;
        if 2 * (n % 255) > 255 {
            q += 1;
        }
        if q == 1 << 24 {
            q = 1 << 23;
            s -= 1;
        }
        f32::from_bits(((127 + 23 - s) << 23) | (q - (1 << 23)))
    }

    /// |255·y − v|·2^64, exact: a positive f32 of at least 2^-40 is an integer multiple of 2^-64.
    fn error(v: u8, y: f32) -> i128 {
        let (bits, exp) = (y.to_bits(), (y.to_bits() >> 23) as i32 & 0xff);
        assert!(exp >= 127 - 40, "{y} is too small for this check");
        let mantissa = ((bits & 0x7f_ffff) | 0x80_0000) as i128;
        let scaled = mantissa << (exp - 150 + 64); // y · 2^64
        (255 * scaled - ((v as i128) << 64)).abs()
    }

    #[test]
    fn gather_cpu_is_correctly_rounded() {
        let bytes: Vec<u8> = (0..=255).collect();
        let x = gather_cpu(&bytes, 256, &[0], 0, 1);
        assert_eq!((x[0], x[255]), (0.0, 1.0));
        for v in 1..=255u8 {
            let got = x[v as usize];
            // The reference equals the kernel's integer method bit for bit ...
            assert_eq!(
                got.to_bits(),
                byte_to_unit(v as u32).to_bits(),
                "byte {v}: f64 reference {got:e}, integer method {:e}",
                byte_to_unit(v as u32)
            );
            // ... and both are the f32 nearest to v / 255: strictly nearer than either neighbouring f32 (no ties,
            // since 255 is odd), so any correct rounding of the division gives these same bits.
            let (below, above) = (
                f32::from_bits(got.to_bits() - 1),
                f32::from_bits(got.to_bits() + 1),
            );
            assert!(
                error(v, got) < error(v, below) && error(v, got) < error(v, above),
                "byte {v}: {got:e} is not the f32 nearest to {v}/255"
            );
        }
    }

    #[test]
    fn byte_to_unit_known_values() {
        // 3/255 = 0.0117647058823…: the f32 nearest is 0.011764706 (0x3c40c0c1); 0.011764707 is one ulp above.
        assert_eq!(byte_to_unit(3).to_bits(), 0x3c40_c0c1);
        assert_eq!(byte_to_unit(51), 0.2);
        assert_eq!(byte_to_unit(255), 1.0);
        assert_eq!(byte_to_unit(0), 0.0);
    }
}
