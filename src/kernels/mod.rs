//! The WGSL kernels: one registry of embedded shader sources, the host/shader [`contract`], and a host wrapper and
//! CPU reference per family. Wrappers validate shapes and build bind groups once; recording a
//! [`Dispatch`](crate::gpu::Dispatch) into a compute pass costs a few calls and never waits on the GPU.
//!
//! A kernel family is one `.wgsl` file under `shaders/`, preceded by the contract's generated prelude and by any
//! shared pieces it uses (the step table, the Philox generator): WGSL has no `#include`, so a module's source is
//! the plain concatenation of its parts, and validation maps naga's line numbers back to the part they came from.

pub mod accuracy;
pub mod adam;
pub mod contract;
pub mod gather;
pub mod hang;
pub mod iwae;
pub mod loss;
pub mod matmul;
pub mod philox;
pub mod reduce;
pub mod reparam;
pub mod step;

use crate::error::{Error, Result};
use crate::gpu::pipeline::{Prelude, ShaderSource};

pub use contract::WG;
pub use step::{ModelStep, StepParams, StepTable};

/// Every module starts with the contract's constants and uniform structs.
const PRELUDE: Prelude = Prelude {
    name: "prelude (generated from src/kernels/contract.rs)",
    source: contract::prelude,
};

macro_rules! shader {
    ($name:literal) => {
        (
            concat!("shaders/", $name),
            include_str!(concat!("../../shaders/", $name)),
        )
    };
}

macro_rules! family {
    ($const:ident, $name:literal, [$($file:literal),+ $(,)?]) => {
        pub const $const: ShaderSource = ShaderSource {
            name: $name,
            prelude: Some(PRELUDE),
            files: &[$(shader!($file)),+],
        };
    };
}

family!(
    GATHER,
    "gather",
    ["step.wgsl", "philox.wgsl", "gather.wgsl"]
);
family!(
    MATMUL,
    "matmul",
    ["logistic.wgsl", "matmul_common.wgsl", "matmul.wgsl"]
);
family!(
    MATMUL_TILED,
    "matmul_tiled",
    ["logistic.wgsl", "matmul_common.wgsl", "matmul_tiled.wgsl"]
);
family!(
    MATMUL_SPLIT,
    "matmul_split",
    ["logistic.wgsl", "matmul_common.wgsl", "matmul_split.wgsl"]
);
family!(
    REPARAM,
    "reparam",
    [
        "step.wgsl",
        "workgroup_sum.wgsl",
        "philox.wgsl",
        "reparam.wgsl"
    ]
);
family!(PHILOX, "philox", ["philox.wgsl", "philox_words.wgsl"]);
family!(
    LOSS,
    "loss",
    [
        "step.wgsl",
        "workgroup_sum.wgsl",
        "logistic.wgsl",
        "loss.wgsl"
    ]
);
family!(
    REDUCE,
    "reduce",
    ["step.wgsl", "workgroup_sum.wgsl", "reduce.wgsl"]
);
family!(
    ADAM,
    "adam",
    [
        "step.wgsl",
        "workgroup_sum.wgsl",
        "logistic.wgsl",
        "adam.wgsl"
    ]
);
// The reducing families again, summing with subgroup operations (built only on devices with the SUBGROUP feature).
family!(
    LOSS_SUBGROUP,
    "loss_subgroup",
    [
        "step.wgsl",
        "workgroup_sum_subgroup.wgsl",
        "logistic.wgsl",
        "loss.wgsl"
    ]
);
family!(
    REPARAM_SUBGROUP,
    "reparam_subgroup",
    [
        "step.wgsl",
        "workgroup_sum_subgroup.wgsl",
        "philox.wgsl",
        "reparam.wgsl"
    ]
);
family!(
    ADAM_SUBGROUP,
    "adam_subgroup",
    [
        "step.wgsl",
        "workgroup_sum_subgroup.wgsl",
        "logistic.wgsl",
        "adam.wgsl"
    ]
);
family!(
    REDUCE_SUBGROUP,
    "reduce_subgroup",
    ["step.wgsl", "workgroup_sum_subgroup.wgsl", "reduce.wgsl"]
);
family!(
    IWAE_SUBGROUP,
    "iwae_subgroup",
    [
        "step.wgsl",
        "workgroup_sum_subgroup.wgsl",
        "logistic.wgsl",
        "iwae.wgsl"
    ]
);
family!(
    IWAE,
    "iwae",
    [
        "step.wgsl",
        "workgroup_sum.wgsl",
        "logistic.wgsl",
        "iwae.wgsl"
    ]
);

// Test-only: a kernel that keeps the GPU busy, standing in for a hang (the `hang-after-step` fault).
family!(HANG, "hang", ["hang.wgsl"]);

/// The fusions the training step makes or not by device, each a choice "fused" or "apart" under its key in the
/// device's kernel choices: [`reparam::DECODE_KEY`] and [`adam::ADAM_BCE_KEY`].
pub const FUSIONS: [&str; 2] = [reparam::DECODE_KEY, adam::ADAM_BCE_KEY];

/// Whether the fusion `key` (one of [`FUSIONS`]) is made: the device's choice where it has one (a checkpoint's,
/// for exact resume, or one set by hand), else on GPUs, where a launch saved is a dependent launch's latency. On
/// CPU adapters, where launches cost little, both measured slower (BENCHMARKS.md), but the step must keep
/// within [`MAX_STEP_DISPATCHES`]: there `adam+bce`, the cheaper, is made (on [`software_grid`]'s few
/// workgroups, level with the two apart at batch 128 on lavapipe, 12–15 ms slower at batch 1) and
/// `reparam+fc3` (about 11 ms slower) is not.
pub fn fused(gpu: &crate::gpu::Gpu, key: &str) -> bool {
    match gpu.choice(key).as_deref() {
        Some("fused") => true,
        Some("apart") => false,
        _ => key == adam::ADAM_BCE_KEY || gpu.info.device_type != wgpu::DeviceType::Cpu,
    }
}

/// On CPU adapters, the workgroups of the kernels that stride over their elements and have a barrier (the loss
/// kernels' trees, adam+bce): two per core of this machine, whose cores a CPU adapter runs on. llvmpipe runs a
/// kernel that has a barrier as coroutines, at a cost per workgroup: adam+bce on 2 vCPUs took 34–37 ms with
/// 319 workgroups, 25–29 with 80 and 19–22 with 5, and bce.forward 1.7–1.9 ms with 4 against 11 with 256
/// (BENCHMARKS.md). `None` on GPUs, whose kernels need the invocations to fill the device.
pub fn software_grid(gpu: &crate::gpu::Gpu) -> Option<u32> {
    (gpu.info.device_type == wgpu::DeviceType::Cpu).then(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        2 * cores as u32
    })
}

/// The workgroups a kernel that strides over its elements gets where `groups` would fill a GPU: on CPU adapters
/// at most [`software_grid`].
pub fn strided_groups(gpu: &crate::gpu::Gpu, groups: u32) -> u32 {
    software_grid(gpu).map_or(groups, |g| groups.min(g))
}

/// The most dispatches a training step records (the gather ahead and the loss reduction, recorded once per many
/// steps, not counted): every fusion is made or not, and tuning runs a layer's gradient pair as two dispatches,
/// within this bound.
pub const MAX_STEP_DISPATCHES: usize = 10;

/// Every shader module the crate builds.
pub const FAMILIES: &[&ShaderSource] = &[
    &GATHER,
    &MATMUL,
    &MATMUL_TILED,
    &MATMUL_SPLIT,
    &REPARAM,
    &PHILOX,
    &LOSS,
    &REDUCE,
    &ADAM,
    &IWAE,
    &LOSS_SUBGROUP,
    &REPARAM_SUBGROUP,
    &ADAM_SUBGROUP,
    &REDUCE_SUBGROUP,
    &IWAE_SUBGROUP,
    &HANG,
];

std::thread_local! {
    static SCOPED_REDUCTION: std::cell::Cell<Option<Reduction>> = const { std::cell::Cell::new(None) };
}

/// How the reducing kernels (loss, reparam, adam's BCE, reduce, iwae) sum a workgroup's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// A tree in workgroup memory (workgroup_sum.wgsl): every device.
    Workgroup,
    /// subgroupAdd, then the subgroups' sums (workgroup_sum_subgroup.wgsl): devices with the SUBGROUP feature.
    Subgroup,
}

impl Reduction {
    /// The key of the choice in the device's kernel choices.
    pub const KEY: &'static str = "reduction";

    pub fn name(self) -> &'static str {
        match self {
            Reduction::Workgroup => "workgroup",
            Reduction::Subgroup => "subgroup",
        }
    }

    /// The reductions this device can run.
    pub fn available(gpu: &crate::gpu::Gpu) -> Vec<Reduction> {
        let mut v = vec![Reduction::Workgroup];
        if gpu.device.features().contains(wgpu::Features::SUBGROUP) {
            v.push(Reduction::Subgroup);
        }
        v
    }

    /// The reduction dispatches built now use: the one [`Reduction::scoped`] sets on this thread, else the
    /// device's choice (tuned, cached, from a checkpoint), else subgroups where the device has them.
    pub fn for_gpu(gpu: &crate::gpu::Gpu) -> Reduction {
        let available = Reduction::available(gpu);
        if let Some(r) = SCOPED_REDUCTION.get().filter(|r| available.contains(r)) {
            return r;
        }
        match gpu.choice(Reduction::KEY).as_deref() {
            Some("workgroup") => Reduction::Workgroup,
            _ => *available.last().expect("workgroup is always available"),
        }
    }

    /// Runs `f` with the dispatches it builds on this thread using `self` (where the device has it): to build or
    /// test both paths side by side without touching the device's choices.
    pub fn scoped<T>(self, f: impl FnOnce() -> T) -> T {
        let before = SCOPED_REDUCTION.replace(Some(self));
        let out = f();
        SCOPED_REDUCTION.set(before);
        out
    }

    /// The module of a reducing family with this reduction.
    pub fn module(self, workgroup: &'static ShaderSource) -> &'static ShaderSource {
        match (self, workgroup.name) {
            (Reduction::Subgroup, "loss") => &LOSS_SUBGROUP,
            (Reduction::Subgroup, "reparam") => &REPARAM_SUBGROUP,
            (Reduction::Subgroup, "adam") => &ADAM_SUBGROUP,
            (Reduction::Subgroup, "reduce") => &REDUCE_SUBGROUP,
            (Reduction::Subgroup, "iwae") => &IWAE_SUBGROUP,
            _ => workgroup,
        }
    }
}

/// The features a device is opened with at most (`Gpu::open`), hence the shader capabilities every module must
/// validate with.
pub fn program_features() -> wgpu::Features {
    crate::gpu::OPTIONAL_FEATURES
}

/// Fails unless `buffer` holds 4-byte elements `first .. first + elems`: every wrapper checks its buffers with this
/// once, when it builds the dispatch, so a kernel never runs on a buffer too small for its shape.
pub(crate) fn check_room(
    op: &'static str,
    label: &str,
    what: &str,
    buffer: &wgpu::Buffer,
    first: u64,
    elems: u64,
) -> Result<()> {
    if buffer.size() < (first + elems) * 4 {
        return Err(Error::shape(
            op,
            format!(
                "{label}: {what} needs elements {first}..{} but its buffer holds {} bytes",
                first + elems,
                buffer.size()
            ),
        ));
    }
    Ok(())
}

/// Workgroup counts for `n` invocations of `wg` threads, split over x and y so that neither exceeds 65,535
/// (the WebGPU minimum). Kernels rebuild the flat index as `gid.x + gid.y * num_workgroups.x * wg`.
pub fn grid(n: u64, wg: u32) -> [u32; 3] {
    let groups = n.div_ceil(wg as u64).max(1);
    let x = groups.min(65_535);
    let y = groups.div_ceil(x);
    [x as u32, y as u32, 1]
}

/// How the models of a batched dispatch lie in their buffers (the training step of several models at once; see
/// `model::net`): `count` models, model k's copy of each per-model buffer `k × stride` elements after model 0's,
/// the stride by kind: `params` for parameters, gradients and Adam's moments, `h` for a hidden layer's
/// activations, `z` for the latent ones (z, ε, ½·ε·σ; μ | log σ² and their gradient take `2 × z`), `px` for the
/// pixels' (logits, ∂logits). The images of a batch are one copy for every model. With `per_model`, each
/// model's Adam step size, KL weight and noise key come from the step table's model rows
/// ([`StepTable::with_models`]); a single model's dispatches read them from its step row and its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Models {
    pub count: u32,
    pub per_model: bool,
    pub params: u32,
    pub h: u32,
    pub z: u32,
    pub px: u32,
}

impl Models {
    /// One model, its values from its step row: what every dispatch outside a batched step records.
    pub const ONE: Models = Models {
        count: 1,
        per_model: false,
        params: 0,
        h: 0,
        z: 0,
        px: 0,
    };

    /// Fails unless the step table has model rows for these models, where they read them.
    pub(crate) fn check(&self, op: &'static str, label: &str, step: &StepTable) -> Result<()> {
        if self.count == 0 {
            return Err(Error::shape(op, format!("{label}: zero models")));
        }
        if self.per_model && step.models != self.count {
            return Err(Error::shape(
                op,
                format!(
                    "{label}: {} models read their values from a step table with model rows for {}",
                    self.count, step.models
                ),
            ));
        }
        if !self.per_model && self.count > 1 {
            return Err(Error::shape(
                op,
                format!(
                    "{label}: {} models would share one step row's values; they read model rows",
                    self.count
                ),
            ));
        }
        Ok(())
    }
}

/// Whether `kernel` is a valid choice for `key`: a matmul candidate, or a reduction for the reduction key, or
/// [`UNPAIRED`](matmul::UNPAIRED) for a pair, or `fused` or `apart` for one of [`FUSIONS`].
pub fn known_choice(key: &str, kernel: &str) -> bool {
    if key == Reduction::KEY {
        return kernel == Reduction::Workgroup.name() || kernel == Reduction::Subgroup.name();
    }
    if matmul::is_pair_key(key) && kernel == matmul::UNPAIRED {
        return true;
    }
    if FUSIONS.contains(&key) {
        return kernel == "fused" || kernel == "apart";
    }
    matmul::Kernel::parse(kernel).is_some()
}
