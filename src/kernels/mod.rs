//! The WGSL kernels: one registry of embedded shader sources, a pipeline cache, and [`Dispatch`], the unit every
//! host wrapper returns. Wrappers validate shapes and build bind groups once; recording a `Dispatch` into a compute
//! pass costs a few calls and never waits on the GPU.
//!
//! A kernel family is one `.wgsl` file under `shaders/`, optionally preceded by shared pieces (the step table, the
//! Philox generator): WGSL has no `#include`, so a module's source is the plain concatenation of its files, and
//! [`validate`] maps naga's line numbers back to the file they came from.

pub mod adam;
pub mod gather;
pub mod iwae;
pub mod loss;
pub mod matmul;
pub mod philox;
pub mod reduce;
pub mod reparam;
pub mod step;

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::gpu::Gpu;

pub use step::{StepParams, StepTable};

/// Threads per workgroup of the element-wise kernels (gather, reparameterization, loss, Adam).
pub const WG: u32 = 256;

/// One shader module: the files it is made of, in order.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub files: &'static [(&'static str, &'static str)],
}

macro_rules! shader {
    ($name:literal) => {
        (
            concat!("shaders/", $name),
            include_str!(concat!("../../shaders/", $name)),
        )
    };
}

pub const GATHER: Family = Family {
    name: "gather",
    files: &[
        shader!("step.wgsl"),
        shader!("philox.wgsl"),
        shader!("gather.wgsl"),
    ],
};
pub const MATMUL: Family = Family {
    name: "matmul",
    files: &[shader!("matmul.wgsl")],
};
pub const REPARAM: Family = Family {
    name: "reparam",
    files: &[
        shader!("step.wgsl"),
        shader!("philox.wgsl"),
        shader!("reparam.wgsl"),
    ],
};
pub const PHILOX: Family = Family {
    name: "philox",
    files: &[shader!("philox.wgsl"), shader!("philox_words.wgsl")],
};
pub const LOSS: Family = Family {
    name: "loss",
    files: &[
        shader!("step.wgsl"),
        shader!("workgroup_sum.wgsl"),
        shader!("logistic.wgsl"),
        shader!("loss.wgsl"),
    ],
};
pub const REDUCE: Family = Family {
    name: "reduce",
    files: &[
        shader!("step.wgsl"),
        shader!("workgroup_sum.wgsl"),
        shader!("reduce.wgsl"),
    ],
};
pub const ADAM: Family = Family {
    name: "adam",
    files: &[shader!("step.wgsl"), shader!("adam.wgsl")],
};

pub const IWAE: Family = Family {
    name: "iwae",
    files: &[
        shader!("workgroup_sum.wgsl"),
        shader!("logistic.wgsl"),
        shader!("iwae.wgsl"),
    ],
};

/// Every shader module the crate builds.
pub const FAMILIES: &[&Family] = &[
    &GATHER, &MATMUL, &REPARAM, &PHILOX, &LOSS, &REDUCE, &ADAM, &IWAE,
];

impl Family {
    /// The module's WGSL: its files concatenated.
    pub fn source(&self) -> String {
        self.files
            .iter()
            .map(|(_, src)| *src)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Maps a 1-based line of [`Family::source`] to (file, line in that file).
    pub fn locate(&self, line: u32) -> (&'static str, u32) {
        let mut first = 1;
        for (path, src) in self.files {
            // Each file's newlines, plus the joining one that ends its last line.
            let lines = src.matches('\n').count() as u32 + 1;
            if line < first + lines {
                return (path, line - first + 1);
            }
            first += lines;
        }
        let (path, _) = self.files.last().expect("a family has files");
        (path, line)
    }
}

/// A shader that naga rejected, located in its own file.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ShaderError {
    pub file: &'static str,
    pub line: u32,
    pub message: String,
}

/// Parses and validates a family with naga, as wgpu will, without a GPU.
pub fn validate(family: &Family) -> Result<naga::Module, ShaderError> {
    let source = family.source();
    let located = |loc: Option<naga::SourceLocation>, message: String| {
        let (file, line) = family.locate(loc.map_or(1, |l| l.line_number));
        ShaderError {
            file,
            line,
            message,
        }
    };
    let module = naga::front::wgsl::parse_str(&source)
        .map_err(|e| located(e.location(&source), e.emit_to_string(&source)))?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| located(e.location(&source), e.emit_to_string(&source)))?;
    Ok(module)
}

/// How a kernel binds a buffer of group 0. Binding 0 is always the kernel's uniform parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    ReadWrite,
}

/// Everything that identifies one compute pipeline.
#[derive(Clone, Debug)]
pub struct KernelSpec {
    pub family: &'static Family,
    pub entry: &'static str,
    /// Values of the entry point's `override` constants.
    pub constants: Vec<(&'static str, f64)>,
    /// Storage bindings 1.. of group 0, in order.
    pub storage: &'static [Access],
    /// Whether group 1 is the step table (see [`StepTable`]).
    pub uses_step: bool,
}

impl KernelSpec {
    fn key(&self) -> String {
        format!(
            "{}::{}{:?}{:?}{}",
            self.family.name, self.entry, self.constants, self.storage, self.uses_step
        )
    }
}

/// Modules, layouts and pipelines, each built once per device.
#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: HashMap<&'static str, wgpu::ShaderModule>,
    layouts: HashMap<Vec<Access>, wgpu::BindGroupLayout>,
    step_layout: Option<wgpu::BindGroupLayout>,
    pipelines: HashMap<String, (wgpu::ComputePipeline, wgpu::BindGroupLayout)>,
}

pub(crate) type SharedCache = Mutex<PipelineCache>;

impl Gpu {
    /// The layout of the step table's bind group (group 1), shared by every kernel that reads it.
    pub(crate) fn step_layout(&self) -> wgpu::BindGroupLayout {
        let mut cache = self.cache();
        cache
            .step_layout
            .get_or_insert_with(|| {
                self.device
                    .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                        label: Some("step.layout"),
                        entries: &[wgpu::BindGroupLayoutEntry {
                            binding: 0,
                            visibility: wgpu::ShaderStages::COMPUTE,
                            ty: wgpu::BindingType::Buffer {
                                ty: wgpu::BufferBindingType::Uniform,
                                has_dynamic_offset: true,
                                min_binding_size: wgpu::BufferSize::new(
                                    size_of::<StepParams>() as u64
                                ),
                            },
                            count: None,
                        }],
                    })
            })
            .clone()
    }

    /// The pipeline for `spec` and its group-0 layout, compiled on first use.
    pub(crate) fn pipeline(
        &self,
        spec: &KernelSpec,
    ) -> Result<(wgpu::ComputePipeline, wgpu::BindGroupLayout)> {
        let key = spec.key();
        if let Some(found) = self.cache().pipelines.get(&key) {
            return Ok(found.clone());
        }
        let step_layout = spec.uses_step.then(|| self.step_layout());
        let module = self.module(spec.family)?;
        let layout = self.group0_layout(spec.storage);
        let built = self.scoped(
            format_args!("building pipeline {}::{}", spec.family.name, spec.entry),
            || {
                let mut groups = vec![Some(&layout)];
                groups.extend(step_layout.as_ref().map(Some));
                let pipeline_layout =
                    self.device
                        .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                            label: Some(spec.entry),
                            bind_group_layouts: &groups,
                            immediate_size: 0,
                        });
                self.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(spec.entry),
                        layout: Some(&pipeline_layout),
                        module: &module,
                        entry_point: Some(spec.entry),
                        compilation_options: wgpu::PipelineCompilationOptions {
                            constants: &spec.constants,
                            zero_initialize_workgroup_memory: false,
                        },
                        cache: None,
                    })
            },
        )?;
        let entry = (built, layout);
        self.cache().pipelines.insert(key, entry.clone());
        Ok(entry)
    }

    fn module(&self, family: &'static Family) -> Result<wgpu::ShaderModule> {
        if let Some(m) = self.cache().modules.get(family.name) {
            return Ok(m.clone());
        }
        // Validate first so a broken shader is reported by file and line rather than as a wgpu error.
        validate(family).map_err(|e| Error::Validation {
            context: format!("compiling shader family {}", family.name),
            message: e.to_string(),
        })?;
        let source = family.source();
        let module = self.scoped(
            format_args!("compiling shader family {}", family.name),
            || {
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(family.name),
                        source: wgpu::ShaderSource::Wgsl(source.into()),
                    })
            },
        )?;
        self.cache().modules.insert(family.name, module.clone());
        Ok(module)
    }

    fn group0_layout(&self, storage: &[Access]) -> wgpu::BindGroupLayout {
        let mut cache = self.cache();
        if let Some(l) = cache.layouts.get(storage) {
            return l.clone();
        }
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }];
        for (i, access) in storage.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: *access == Access::Read,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("kernel.layout"),
                entries: &entries,
            });
        cache.layouts.insert(storage.to_vec(), layout.clone());
        layout
    }

    /// Builds a ready-to-record dispatch: compiles (or finds) the pipeline, writes `params` into a uniform
    /// buffer of its own and binds `buffers` (storage bindings 1.. in the order of `spec.storage`).
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        label: &str,
        spec: &KernelSpec,
        params: &P,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
        step: Option<&StepTable>,
    ) -> Result<Dispatch> {
        assert_eq!(
            buffers.len(),
            spec.storage.len(),
            "{label}: binding count does not match the kernel's layout"
        );
        assert_eq!(spec.uses_step, step.is_some(), "{label}: step table use");
        let max = self.device.limits().max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > max) {
            return Err(Error::TooLarge {
                op: "dispatch",
                what: format!("{label}: {workgroups:?} workgroups"),
                needed: *workgroups.iter().max().unwrap_or(&0) as u64,
                limit: max as u64,
                limit_name: "max_compute_workgroups_per_dimension",
                hint: "use smaller sizes".into(),
            });
        }
        for b in buffers {
            self.check_binding_size("dispatch", b)?;
        }
        let (pipeline, layout) = self.pipeline(spec)?;
        let uniform = self.uniform_init(&format!("{label}.params"), params)?;
        let bind_group = self.scoped(format_args!("binding {label}"), || {
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: uniform.as_entire_binding(),
            }];
            for (i, b) in buffers.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: b.as_entire_binding(),
                });
            }
            self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout: &layout,
                entries: &entries,
            })
        })?;
        Ok(Dispatch {
            label: label.to_string(),
            pipeline,
            bind_group,
            step: step.map(|s| (s.bind_group.clone(), s.stride)),
            workgroups,
            flops: 0.0,
            bytes: 0.0,
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, PipelineCache> {
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One kernel launch, bound and sized, ready to be recorded any number of times.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub label: String,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    /// The step table's bind group and its row stride, for kernels that read per-step values.
    step: Option<(wgpu::BindGroup, u32)>,
    pub workgroups: [u32; 3],
    /// The kernel's useful work: floating-point operations and bytes moved (for `vae profile`'s GFLOP/s, GB/s).
    pub flops: f64,
    pub bytes: f64,
}

impl Dispatch {
    /// Records what the kernel does, for throughput figures.
    pub fn with_work(mut self, flops: f64, bytes: f64) -> Dispatch {
        self.flops = flops;
        self.bytes = bytes;
        self
    }

    /// Records the dispatch; `slot` picks the row of the step table it reads (ignored by kernels that read none).
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, slot: u32) {
        pass.push_debug_group(&self.label);
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        if let Some((group, stride)) = &self.step {
            pass.set_bind_group(1, group, &[slot * stride]);
        }
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
        pass.pop_debug_group();
    }
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
