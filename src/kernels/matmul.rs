//! matmul: the products of a linear layer's forward and backward passes with fused epilogues
//! (`shaders/matmul.wgsl`). Weights are (out, in), PyTorch's layout.

use super::{Access, Dispatch, KernelSpec, MATMUL, check_room};
use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Which kernel of `shaders/matmul.wgsl` computes a product: the output tile of one workgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    /// `matmul`: 64×64 per workgroup, 4×4 per invocation. For GPUs: many workgroups even at batch 128.
    T64,
    /// `matmul_big`: 128×128 per workgroup, 8×8 per invocation. For CPU rasterizers, where loads are gathers.
    T128,
}

impl Tile {
    /// The tile for an adapter: T128 on CPU (software) adapters, T64 elsewhere.
    pub fn for_gpu(gpu: &Gpu) -> Tile {
        if gpu.info.device_type == wgpu::DeviceType::Cpu {
            Tile::T128
        } else {
            Tile::T64
        }
    }

    /// The tile for one product of an m × n output on this adapter: [`Tile::for_gpu`], except that a product
    /// the 128 tile would cover with a single workgroup (one CPU thread) takes the 64 tile (heads.forward at
    /// batch 128: 1.7 → 3.2 GFLOP/s on lavapipe).
    pub fn for_shape(gpu: &Gpu, m: u32, n: u32) -> Tile {
        match Tile::for_gpu(gpu) {
            Tile::T128 if m.div_ceil(128) * n.div_ceil(128) < 2 => Tile::T64,
            t => t,
        }
    }
    pub fn size(self) -> u32 {
        match self {
            Tile::T64 => 64,
            Tile::T128 => 128,
        }
    }
    fn entry(self) -> &'static str {
        match self {
            Tile::T64 => "matmul",
            Tile::T128 => "matmul_big",
        }
    }
}

/// Which operand is transposed, in the order of the layer's passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Forward, Y = X·Wᵀ: A (m, k), B given as W (n, k).
    NT,
    /// Input gradient, ∂X = ∂Y·W: A (m, k), B (k, n).
    NN,
    /// Weight gradient, ∂W = ∂Yᵀ·X: A given as ∂Y (k, m), B (k, n).
    TN,
}

impl Layout {
    fn code(self) -> f64 {
        match self {
            Layout::NT => 0.0,
            Layout::NN => 1.0,
            Layout::TN => 2.0,
        }
    }
}

/// A matrix operand: a buffer and the element offset at which the matrix starts.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: usize,
}

impl<'a> From<&'a wgpu::Buffer> for Operand<'a> {
    fn from(buffer: &'a wgpu::Buffer) -> Self {
        Operand { buffer, offset: 0 }
    }
}

/// What happens to each output after the product.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue<'a> {
    None,
    /// `+ bias[n]`.
    Bias(Operand<'a>),
    /// `max(· + bias[n], 0)`.
    BiasRelu(Operand<'a>),
    /// Keep the output where `mask[m, n] > 0` (the ReLU backward; mask is the layer's forward output).
    ReluMask(Operand<'a>),
    /// Also write the row sums of A (with [`Layout::TN`], the bias gradient) at this element offset of C's buffer.
    BiasGrad {
        offset: usize,
    },
}

impl Epilogue<'_> {
    fn code(&self) -> f64 {
        match self {
            Epilogue::None => 0.0,
            Epilogue::Bias(_) => 1.0,
            Epilogue::BiasRelu(_) => 2.0,
            Epilogue::ReluMask(_) => 3.0,
            Epilogue::BiasGrad { .. } => 4.0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    aux_off: u32,
    bias_off: u32,
}

/// The 128-tile kernel that reads its operands as `vec4`s, where the layout's contiguous dimensions and the
/// operands' offsets are multiples of 4: `matmul_nt4` (both operands along k), `matmul_nn4` (A along k, B along n),
/// `matmul_tn4` (A along m, B along n). On lavapipe a vec4 load costs about what a scalar gather does, so these
/// move four times the data per load (2× the scalar 128 tile at the model's shapes, BENCHMARKS.md).
fn vec4_kernel(
    tile: Tile,
    layout: Layout,
    (m, n, k): (u32, u32, u32),
    a_off: usize,
    b_off: usize,
    epilogue: &Epilogue,
) -> Option<&'static str> {
    if tile != Tile::T128 || !a_off.is_multiple_of(4) || !b_off.is_multiple_of(4) {
        return None;
    }
    let bias_grad = matches!(epilogue, Epilogue::BiasGrad { .. });
    match layout {
        Layout::NT if k % 4 == 0 && !bias_grad => Some("matmul_nt4"),
        Layout::NN if k % 4 == 0 && n % 4 == 0 && !bias_grad => Some("matmul_nn4"),
        Layout::TN if m % 4 == 0 && n % 4 == 0 => Some("matmul_tn4"),
        _ => None,
    }
}

/// Floating-point operations of one product (a multiply-add counts two).
pub fn flops(m: u32, n: u32, k: u32) -> f64 {
    2.0 * m as f64 * n as f64 * k as f64
}

fn check_fits(label: &str, what: &str, op: Operand, elems: u64) -> Result<()> {
    check_room("matmul", label, what, op.buffer, op.offset as u64, elems)
}

/// Records C (m, n) = A·B (+ epilogue) with the tile for this adapter and shape ([`Tile::for_shape`]). Shapes
/// are checked against the buffers here, once.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    gpu: &Gpu,
    label: &str,
    layout: Layout,
    dims: (u32, u32, u32),
    a: Operand,
    b: Operand,
    c: Operand,
    epilogue: Epilogue,
) -> Result<Dispatch> {
    let cols = dims.1 + matches!(epilogue, Epilogue::BiasGrad { .. }) as u32;
    let tile = Tile::for_shape(gpu, dims.0, cols);
    matmul_tiled(gpu, tile, label, layout, dims, a, b, c, epilogue)
}

/// [`matmul`] with an explicit kernel.
#[allow(clippy::too_many_arguments)]
pub fn matmul_tiled(
    gpu: &Gpu,
    tile: Tile,
    label: &str,
    layout: Layout,
    (m, n, k): (u32, u32, u32),
    a: Operand,
    b: Operand,
    c: Operand,
    epilogue: Epilogue,
) -> Result<Dispatch> {
    if m == 0 || n == 0 || k == 0 {
        return Err(Error::shape(
            "matmul",
            format!("{label}: sizes must be positive, got m={m} n={n} k={k}"),
        ));
    }
    let (m64, n64, k64) = (m as u64, n as u64, k as u64);
    check_fits(label, "A", a, m64 * k64)?;
    check_fits(label, "B", b, k64 * n64)?;
    check_fits(label, "C", c, m64 * n64)?;
    let (aux, bias_off) = match epilogue {
        Epilogue::None => (
            Operand {
                buffer: a.buffer,
                offset: 0,
            },
            0,
        ),
        Epilogue::Bias(bias) | Epilogue::BiasRelu(bias) => {
            check_fits(label, "bias", bias, n64)?;
            (bias, 0)
        }
        Epilogue::ReluMask(mask) => {
            check_fits(label, "mask", mask, m64 * n64)?;
            (mask, 0)
        }
        Epilogue::BiasGrad { offset } => {
            check_fits(label, "bias gradient", Operand { offset, ..c }, m64)?;
            (
                Operand {
                    buffer: a.buffer,
                    offset: 0,
                },
                offset,
            )
        }
    };
    let offsets = [a.offset, b.offset, c.offset, aux.offset, bias_off];
    if offsets.iter().any(|&o| o > u32::MAX as usize) {
        return Err(Error::shape(
            "matmul",
            format!("{label}: element offsets must fit in 32 bits"),
        ));
    }
    let params = Params {
        m,
        n,
        k,
        a_off: a.offset as u32,
        b_off: b.offset as u32,
        c_off: c.offset as u32,
        aux_off: aux.offset as u32,
        bias_off: bias_off as u32,
    };
    let vec4_entry = vec4_kernel(tile, layout, (m, n, k), a.offset, b.offset, &epilogue);
    let spec = KernelSpec {
        family: &MATMUL,
        entry: vec4_entry.unwrap_or(tile.entry()),
        constants: vec![("LAYOUT", layout.code()), ("EPILOGUE", epilogue.code())],
        storage: &[Access::Read, Access::Read, Access::ReadWrite, Access::Read],
        uses_step: false,
    };
    // The vec4 kernels compute the bias gradient without the extra column.
    let cols = if matches!(epilogue, Epilogue::BiasGrad { .. }) && vec4_entry.is_none() {
        n + 1
    } else {
        n
    };
    let workgroups = [cols.div_ceil(tile.size()), m.div_ceil(tile.size()), 1];
    gpu.dispatch(
        label,
        &spec,
        &params,
        &[a.buffer, b.buffer, c.buffer, aux.buffer],
        workgroups,
        None,
    )
    .map(|d| {
        d.with_work(
            flops(m, n, k),
            4.0 * (m64 * k64 + k64 * n64 + m64 * n64) as f64,
        )
    })
}

/// What the CPU reference applies after the product; mirrors [`Epilogue`] on host slices.
#[derive(Clone, Copy, Debug)]
pub enum EpilogueCpu<'a> {
    None,
    Bias(&'a [f32]),
    BiasRelu(&'a [f32]),
    ReluMask(&'a [f32]),
}

/// CPU reference: C (m, n) = A·B in f64 with the epilogue, A and B stored as `layout` says.
pub fn matmul_cpu(
    layout: Layout,
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    epilogue: EpilogueCpu,
) -> Vec<f32> {
    let at = |i: usize, kk: usize| match layout {
        Layout::TN => a[kk * m + i],
        _ => a[i * k + kk],
    } as f64;
    let bt = |kk: usize, j: usize| match layout {
        Layout::NT => b[j * k + kk],
        _ => b[kk * n + j],
    } as f64;
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for kk in 0..k {
                s += at(i, kk) * bt(kk, j);
            }
            c[i * n + j] = match epilogue {
                EpilogueCpu::None => s,
                EpilogueCpu::Bias(bias) => s + bias[j] as f64,
                EpilogueCpu::BiasRelu(bias) => (s + bias[j] as f64).max(0.0),
                EpilogueCpu::ReluMask(mask) => {
                    if mask[i * n + j] > 0.0 {
                        s
                    } else {
                        0.0
                    }
                }
            } as f32;
        }
    }
    c
}

/// CPU reference for the bias gradient: the column sums of ∂Y (rows, cols), in f64.
pub fn bias_grad_cpu(dy: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .map(|j| (0..rows).map(|i| dy[i * cols + j] as f64).sum::<f64>() as f32)
        .collect()
}
