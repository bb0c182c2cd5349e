//! The matmul candidates: every kernel autotuning chooses between, with its shader module, entry point and
//! pipeline constants (`shaders/matmul.wgsl`, `matmul_tiled.wgsl`, `matmul_split.wgsl`).

use crate::gpu::{Gpu, ShaderSource};
use crate::kernels::contract::{Layout, MATMUL_TILE, MATMUL_TILE_BIG, WG};
use crate::kernels::{MATMUL, MATMUL_SPLIT, MATMUL_TILED};

/// A matmul kernel and its configuration: one of the candidates autotuning chooses between (and the portable
/// default when it does not). Every candidate computes every layout, epilogue and shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `matmul` (matmul.wgsl): 64×64 per workgroup, 4×4 per invocation, no workgroup memory.
    Reg64,
    /// `matmul_big`: 128×128 per workgroup, 8×8 per invocation, no workgroup memory; its vec4 variants
    /// (`matmul_nt4` / `nn4` / `tn4`) where the contiguous sizes and the offsets are multiples of 4.
    Reg128,
    /// `matmul_tiled8` / `4` / `2` (matmul_tiled.wgsl): a tile × tile block of C staged in bk-deep slices in
    /// workgroup memory, tile / 16 rows and columns per invocation.
    Tiled { tile: u32, bk: u32 },
    /// `matmul_split` (matmul_split.wgsl): rm × rn outputs per workgroup, each summed by WG / (rm·rn) invocations
    /// over interleaved k, reduced in a fixed-order tree; `k_fastest` puts one output's slices side by side.
    Split { rm: u32, rn: u32, k_fastest: bool },
}

impl Kernel {
    /// Every candidate, in the order tables list them.
    pub const CANDIDATES: [Kernel; 11] = [
        Kernel::Reg64,
        Kernel::Reg128,
        Kernel::Tiled { tile: 128, bk: 8 },
        Kernel::Tiled { tile: 128, bk: 16 },
        Kernel::Tiled { tile: 64, bk: 16 },
        Kernel::Tiled { tile: 32, bk: 32 },
        Kernel::Split {
            rm: 4,
            rn: 4,
            k_fastest: true,
        },
        Kernel::Split {
            rm: 4,
            rn: 4,
            k_fastest: false,
        },
        Kernel::Split {
            rm: 8,
            rn: 8,
            k_fastest: true,
        },
        Kernel::Split {
            rm: 2,
            rn: 2,
            k_fastest: true,
        },
        Kernel::Split {
            rm: 16,
            rn: 16,
            k_fastest: false,
        },
    ];

    /// The portable default (no tuning): the 128 tile on CPU (software) adapters, where loads are gathers and
    /// bigger register blocks pay, except where it would be a single workgroup (one CPU thread); the 64 tile
    /// elsewhere.
    pub fn default_for(gpu: &Gpu, m: u32, n: u32) -> Kernel {
        let cpu = gpu.info.device_type == wgpu::DeviceType::Cpu;
        if cpu && m.div_ceil(MATMUL_TILE_BIG) * n.div_ceil(MATMUL_TILE_BIG) >= 2 {
            Kernel::Reg128
        } else {
            Kernel::Reg64
        }
    }

    /// The name tables, caches and checkpoints use, e.g. `reg64`, `tiled64x64x16/4x4`, `split4x4k`.
    pub fn name(&self) -> String {
        match *self {
            Kernel::Reg64 => "reg64".into(),
            Kernel::Reg128 => "reg128".into(),
            Kernel::Tiled { tile, bk } => format!("tiled{tile}k{bk}"),
            Kernel::Split { rm, rn, k_fastest } => {
                format!("split{rm}x{rn}{}", if k_fastest { "k" } else { "m" })
            }
        }
    }

    /// The candidate named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Kernel> {
        Kernel::CANDIDATES.into_iter().find(|k| k.name() == name)
    }

    /// The output tile of one workgroup, (rows, columns).
    pub fn tile(&self) -> (u32, u32) {
        match *self {
            Kernel::Reg64 => (MATMUL_TILE, MATMUL_TILE),
            Kernel::Reg128 => (MATMUL_TILE_BIG, MATMUL_TILE_BIG),
            Kernel::Tiled { tile, .. } => (tile, tile),
            Kernel::Split { rm, rn, .. } => (rm, rn),
        }
    }

    /// Module, entry point and pipeline constants (beyond LAYOUT and EPILOGUE).
    pub fn pipeline(
        &self,
    ) -> (
        &'static ShaderSource,
        &'static str,
        Vec<(&'static str, f64)>,
    ) {
        match *self {
            Kernel::Reg64 => (&MATMUL, "matmul", vec![]),
            Kernel::Reg128 => (&MATMUL, "matmul_big", vec![]),
            Kernel::Tiled { tile, bk } => {
                let entry = match tile {
                    128 => "matmul_tiled8",
                    64 => "matmul_tiled4",
                    _ => "matmul_tiled2",
                };
                (&MATMUL_TILED, entry, vec![("BK", bk as f64)])
            }
            Kernel::Split { rm, rn, k_fastest } => {
                let slices = WG / (rm * rn);
                let c = vec![
                    ("RM", rm as f64),
                    ("RN", rn as f64),
                    ("SLICES", slices as f64),
                    ("K_FASTEST", k_fastest as u8 as f64),
                ];
                (&MATMUL_SPLIT, "matmul_split", c)
            }
        }
    }
}

/// Whether a test-only fault (`reject:<kernel>`, `wrong:<kernel>`; see [`crate::fault`]) is armed for `kernel`.
/// Unarmed (always, outside the tests) there is nothing to compare.
pub(super) fn fault_armed(prefix: &str, kernel: Kernel) -> bool {
    crate::fault::values(prefix).any(|name| Kernel::parse(name) == Some(kernel))
}

/// The pipeline constant `reject:<kernel>` adds: no shader declares it, so wgpu refuses to build the pipeline.
pub(super) const REJECTED_BY_TEST_FAULT: &str = "REJECTED_BY_VAE_TEST_FAULT";

/// The 128-tile kernel that reads its operands as `vec4`s, where the layout's contiguous dimensions and the
/// operands' offsets are multiples of 4: `matmul_nt4` (both operands along k), `matmul_nn4` (A along k, B along n),
/// `matmul_tn4` (A along m, B along n). On lavapipe a vec4 load costs about what a scalar gather does, so these
/// move four times the data per load (2× the scalar 128 tile at the model's shapes, BENCHMARKS.md). The split-K
/// kernels likewise for NT (`matmul_split_nt4`, both operands along k: the forward passes).
pub(super) fn vec4_kernel(
    kernel: Kernel,
    layout: Layout,
    (m, n, k): (u32, u32, u32),
    a_off: usize,
    b_off: usize,
    bias_grad: bool,
) -> Option<&'static str> {
    if !a_off.is_multiple_of(4) || !b_off.is_multiple_of(4) {
        return None;
    }
    if let Kernel::Split { .. } = kernel {
        return (layout == Layout::NT && k % 4 == 0 && !bias_grad).then_some("matmul_split_nt4");
    }
    if kernel != Kernel::Reg128 {
        return None;
    }
    match layout {
        Layout::NT if k % 4 == 0 && !bias_grad => Some("matmul_nt4"),
        Layout::NN if k % 4 == 0 && n % 4 == 0 && !bias_grad => Some("matmul_nn4"),
        Layout::TN if m % 4 == 0 && n % 4 == 0 => Some("matmul_tn4"),
        _ => None,
    }
}
