//! Shader modules, pipelines and dispatches: WGSL sources validated with naga (errors located by file and line),
//! a cache that builds each module, layout and pipeline once per device, [`Dispatch`] (one bound kernel launch,
//! recorded any number of times) and [`Plan`] (dispatches recorded together). Recording never waits on the GPU.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

use super::Gpu;
use crate::error::{Error, Result};

/// Generated WGSL put before a module's files, with the name its error locations use.
#[derive(Clone, Copy, Debug)]
pub struct Prelude {
    pub name: &'static str,
    pub source: fn() -> String,
}

/// One shader module's WGSL: an optional generated prelude, then files, concatenated (WGSL has no `#include`).
#[derive(Debug)]
pub struct ShaderSource {
    pub name: &'static str,
    pub prelude: Option<Prelude>,
    /// (path, text) of each file, in order.
    pub files: &'static [(&'static str, &'static str)],
}

impl ShaderSource {
    /// (name, text) of each part: the prelude, then the files.
    pub fn parts(&self) -> Vec<(&'static str, Cow<'static, str>)> {
        let mut parts: Vec<(&'static str, Cow<'static, str>)> = self
            .prelude
            .iter()
            .map(|p| (p.name, Cow::Owned((p.source)())))
            .collect();
        parts.extend(self.files.iter().map(|&(n, s)| {
            let text = crate::fault::shader_override(n).map_or(Cow::Borrowed(s), Cow::Owned);
            (n, text)
        }));
        if crate::fault::values("reject:").any(|m| m == self.name) {
            parts.push((REJECTED_PART.0, Cow::Borrowed(REJECTED_PART.1)));
        }
        parts
    }

    /// The module's WGSL: its parts joined by newlines.
    pub fn source(&self) -> String {
        self.parts()
            .iter()
            .map(|(_, s)| s.as_ref())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Maps a 1-based line of [`ShaderSource::source`] to (part, line in that part).
    pub fn locate(&self, line: u32) -> (&'static str, u32) {
        let parts = self.parts();
        let mut first = 1;
        for (name, src) in &parts {
            // Each part's newlines, plus the joining one that ends its last line.
            let lines = src.matches('\n').count() as u32 + 1;
            if line < first + lines {
                return (name, line - first + 1);
            }
            first += lines;
        }
        (parts.last().map_or(self.name, |p| p.0), line)
    }
}

/// Test-only (`reject:<module>`, see [`crate::fault`]): the part a module the adapter rejects ends with, a call
/// of a function that does not exist, so building the module fails the validation it starts with, as a module the
/// adapter cannot take does. The error names this part as where it is; it is no part of the program (the
/// kernel-choice cache's identity leaves it out).
pub const REJECTED_PART: (&str, &str) = (
    "VAE_TEST_FAULT reject",
    "fn vae_test_fault() { reject_this_module(); }",
);

/// A shader that naga rejected, located in its own file.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ShaderError {
    pub file: &'static str,
    pub line: u32,
    pub message: String,
}

/// The shader capabilities a device opened with `features` grants: a module that needs more (f64, f16,
/// subgroups the device was not opened with) fails validation here, as it would on such a device.
pub fn capabilities(features: wgpu::Features) -> naga::valid::Capabilities {
    let mut caps = naga::valid::Capabilities::empty();
    caps.set(
        naga::valid::Capabilities::SUBGROUP,
        features.contains(wgpu::Features::SUBGROUP),
    );
    caps
}

/// Parses and validates a module with naga, as wgpu will, without a GPU.
pub fn validate(
    source: &ShaderSource,
    capabilities: naga::valid::Capabilities,
) -> Result<naga::Module, ShaderError> {
    let text = source.source();
    let located = |loc: Option<naga::SourceLocation>, message: String| {
        let (file, line) = source.locate(loc.map_or(1, |l| l.line_number));
        ShaderError {
            file,
            line,
            message,
        }
    };
    let module = naga::front::wgsl::parse_str(&text)
        .map_err(|e| located(e.location(&text), e.emit_to_string(&text)))?;
    let mut validator =
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities);
    if capabilities.contains(naga::valid::Capabilities::SUBGROUP) {
        validator
            .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
            .subgroup_operations(naga::valid::SubgroupOperationSet::all());
    }
    validator
        .validate(&module)
        .map_err(|e| located(e.location(&text), e.emit_to_string(&text)))?;
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
    pub module: &'static ShaderSource,
    pub entry: &'static str,
    /// Values of the entry point's `override` constants.
    pub constants: Vec<(&'static str, f64)>,
    /// Storage bindings 1.. of group 0, in order.
    pub storage: &'static [Access],
    /// Whether group 1 is a [`RowTable`] (the step table).
    pub uses_rows: bool,
}

impl KernelSpec {
    fn key(&self) -> String {
        format!(
            "{}::{}{:?}{:?}{}",
            self.module.name, self.entry, self.constants, self.storage, self.uses_rows
        )
    }
}

/// Modules, layouts and pipelines, each built once per device.
#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: HashMap<&'static str, wgpu::ShaderModule>,
    layouts: HashMap<Vec<Access>, wgpu::BindGroupLayout>,
    rows_layout: Option<wgpu::BindGroupLayout>,
    pipelines: HashMap<String, (wgpu::ComputePipeline, wgpu::BindGroupLayout)>,
}

pub(crate) type SharedCache = Mutex<PipelineCache>;

/// A uniform buffer of equal rows spaced by the device's offset alignment, bound as group 1 with a dynamic
/// offset, so that each recorded dispatch reads its own row (the step table: see `kernels::step`); beside it, a
/// window of [`WINDOW_SIZE`] bytes per row in a second uniform buffer, bound with its own dynamic offset (the
/// step's values for each model of a batched step).
#[derive(Debug)]
pub struct RowTable {
    pub buffer: wgpu::Buffer,
    /// Each row's window, `window_stride` bytes after the one before, the first `window_used` of each written.
    pub windows: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    stride: u32,
    window_stride: u32,
    window_used: u32,
    pub capacity: u32,
    row_size: usize,
}

/// The size of a [`RowTable`]'s rows: every table of this program holds one kind of row, the step table's.
pub const ROW_SIZE: usize = 32;

/// The size of a row's window as the shaders bind it: [`crate::kernels::contract::MAX_MODELS`] rows of
/// [`crate::kernels::ModelStep`].
pub const WINDOW_SIZE: usize = 8192;

impl RowTable {
    /// A table of `capacity` rows of [`ROW_SIZE`] bytes, and windows of `window` bytes per row (at most
    /// [`WINDOW_SIZE`]; 0: one window, never written, for the binding).
    pub fn new(gpu: &Gpu, label: &str, capacity: u32, window: u32) -> Result<RowTable> {
        assert!(
            window as usize <= WINDOW_SIZE,
            "a row window of {window} bytes"
        );
        let capacity = capacity.max(1);
        let align = gpu.device.limits().min_uniform_buffer_offset_alignment;
        let stride = align.max(ROW_SIZE as u32);
        let buffer = gpu.buffer(
            label,
            stride as u64 * capacity as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        )?;
        // Each row's window where it has one, the last bound for a whole WINDOW_SIZE.
        let window_stride = if window == 0 {
            0
        } else {
            window.next_multiple_of(align)
        };
        let windows = gpu.buffer(
            &format!("{label}.windows"),
            window_stride as u64 * (capacity as u64 - 1) + WINDOW_SIZE as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        )?;
        let layout = gpu.rows_layout();
        let entry = |binding, buffer, size: usize| wgpu::BindGroupEntry {
            binding,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer,
                offset: 0,
                size: wgpu::BufferSize::new(size as u64),
            }),
        };
        let bind_group = gpu.scoped(format_args!("binding {label}"), || {
            gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout: &layout,
                entries: &[entry(0, &buffer, ROW_SIZE), entry(1, &windows, WINDOW_SIZE)],
            })
        })?;
        Ok(RowTable {
            buffer,
            windows,
            bind_group,
            stride,
            window_stride,
            window_used: window,
            capacity,
            row_size: ROW_SIZE,
        })
    }

    /// Queues the windows of rows `first..`: `bytes` holds each row's `window` bytes in turn; they land at the
    /// next submit.
    pub fn write_windows(&self, gpu: &Gpu, first: u32, bytes: &[u8]) -> Result<()> {
        let used = self.window_used as usize;
        if used == 0 || !bytes.len().is_multiple_of(used) {
            return Err(Error::shape(
                "row table",
                format!("{} bytes of windows of {used} bytes", bytes.len()),
            ));
        }
        let rows = bytes.len() / used;
        if first as usize + rows > self.capacity as usize {
            return Err(Error::shape(
                "row table",
                format!(
                    "windows {first}..{} do not fit in a table of {} rows",
                    first as usize + rows,
                    self.capacity
                ),
            ));
        }
        let stride = self.window_stride as usize;
        let mut spaced = vec![0u8; (rows - 1) * stride + used];
        for (i, w) in bytes.chunks_exact(used).enumerate() {
            spaced[i * stride..i * stride + used].copy_from_slice(w);
        }
        let at = first as u64 * stride as u64;
        gpu.queue.write_buffer(&self.windows, at, &spaced);
        Ok(())
    }

    /// Queues rows `first..first + rows.len()`; they land at the next submit.
    pub fn write<T: bytemuck::Pod>(&self, gpu: &Gpu, first: u32, rows: &[T]) -> Result<()> {
        assert_eq!(size_of::<T>(), self.row_size, "row type of a row table");
        if first as usize + rows.len() > self.capacity as usize {
            return Err(Error::shape(
                "row table",
                format!(
                    "rows {first}..{} do not fit in a table of {} rows",
                    first as usize + rows.len(),
                    self.capacity
                ),
            ));
        }
        let mut bytes = vec![0u8; rows.len() * self.stride as usize];
        for (i, row) in rows.iter().enumerate() {
            let at = i * self.stride as usize;
            bytes[at..at + self.row_size].copy_from_slice(bytemuck::bytes_of(row));
        }
        gpu.queue
            .write_buffer(&self.buffer, first as u64 * self.stride as u64, &bytes);
        Ok(())
    }
}

impl Gpu {
    /// The layout of a row table's bind group (group 1), shared by every kernel that reads one.
    fn rows_layout(&self) -> wgpu::BindGroupLayout {
        let mut cache = self.cache();
        cache
            .rows_layout
            .get_or_insert_with(|| {
                self.device
                    .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                        label: Some("rows.layout"),
                        entries: &[(0, ROW_SIZE), (1, WINDOW_SIZE)].map(|(binding, size)| {
                            wgpu::BindGroupLayoutEntry {
                                binding,
                                visibility: wgpu::ShaderStages::COMPUTE,
                                ty: wgpu::BindingType::Buffer {
                                    ty: wgpu::BufferBindingType::Uniform,
                                    has_dynamic_offset: true,
                                    min_binding_size: wgpu::BufferSize::new(size as u64),
                                },
                                count: None,
                            }
                        }),
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
        let rows_layout = spec.uses_rows.then(|| self.rows_layout());
        let module = self.module(spec.module)?;
        let layout = self.group0_layout(spec.storage);
        let built = self.scoped(
            format_args!("building pipeline {}::{}", spec.module.name, spec.entry),
            || {
                let mut groups = vec![Some(&layout)];
                groups.extend(rows_layout.as_ref().map(Some));
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

    fn module(&self, source: &'static ShaderSource) -> Result<wgpu::ShaderModule> {
        if let Some(m) = self.cache().modules.get(source.name) {
            return Ok(m.clone());
        }
        // Validate first so a broken shader is reported by file and line rather than as a wgpu error.
        let context = || format!("compiling shader module {}", source.name);
        validate(source, capabilities(self.device.features())).map_err(|e| Error::Validation {
            context: context(),
            message: e.to_string(),
        })?;
        let text = source.source();
        let module = self.scoped(context(), || {
            self.device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(source.name),
                    source: wgpu::ShaderSource::Wgsl(text.into()),
                })
        })?;
        self.cache().modules.insert(source.name, module.clone());
        Ok(module)
    }

    fn group0_layout(&self, storage: &[Access]) -> wgpu::BindGroupLayout {
        let mut cache = self.cache();
        if let Some(l) = cache.layouts.get(storage) {
            return l.clone();
        }
        let buffer = |binding: u32, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let mut entries = vec![buffer(0, wgpu::BufferBindingType::Uniform)];
        for (i, access) in storage.iter().enumerate() {
            entries.push(buffer(
                i as u32 + 1,
                wgpu::BufferBindingType::Storage {
                    read_only: *access == Access::Read,
                },
            ));
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
    /// buffer of its own and binds `buffers` (storage bindings 1.. in the order of `spec.storage`) and, for a
    /// kernel that reads one, the row table `rows`.
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        label: &str,
        spec: &KernelSpec,
        params: &P,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
        rows: Option<&RowTable>,
    ) -> Result<Dispatch> {
        assert_eq!(
            buffers.len(),
            spec.storage.len(),
            "{label}: binding count does not match the kernel's layout"
        );
        assert_eq!(spec.uses_rows, rows.is_some(), "{label}: row table use");
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
            rows: rows.map(|t| (t.bind_group.clone(), [t.stride, t.window_stride])),
            workgroups,
            flops: 0.0,
            bytes: 0.0,
            workload: None,
            paired: None,
            kernel: None,
        })
    }

    /// Records `plans` in order into one compute pass, each with its row of the row table, and submits; does not
    /// wait.
    pub fn submit_plans<'p>(
        &self,
        label: &str,
        plans: impl IntoIterator<Item = (&'p Plan, u32)>,
    ) -> Result<wgpu::SubmissionIndex> {
        self.submit_pass(label, |pass| {
            for (plan, row) in plans {
                plan.record(pass, row);
            }
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, PipelineCache> {
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a dispatch computes, for tools that re-run or re-tune it (the benchmarks read the products of the real
/// step plan from here): the kernel family, its problem size and its variant codes (for matmul: (m, n, k) and
/// (layout, epilogue), see `kernels::contract`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Workload {
    pub family: &'static str,
    pub dims: [u32; 3],
    pub codes: [u32; 2],
    /// Models the dispatch computes at once (1 but in a sweep's batched step).
    pub models: u32,
}

/// One kernel launch, bound and sized, ready to be recorded any number of times.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub label: String,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    /// The row table's bind group and its row stride, for kernels that read per-step values.
    rows: Option<(wgpu::BindGroup, [u32; 2])>,
    pub workgroups: [u32; 3],
    /// The kernel's useful work: floating-point operations and bytes moved (for `vae profile`'s GFLOP/s, GB/s).
    pub flops: f64,
    pub bytes: f64,
    pub workload: Option<Workload>,
    /// The second product of a pair (a layer's input gradient beside its weight gradient), same kernel.
    pub paired: Option<Workload>,
    /// The kernel variant that computes it, where there are several (a matmul candidate's name).
    pub kernel: Option<String>,
}

impl Dispatch {
    /// Records what the dispatch computes, and with which kernel variant.
    pub fn with_workload(mut self, workload: Workload, kernel: String) -> Dispatch {
        self.workload = Some(workload);
        self.kernel = Some(kernel);
        self
    }

    /// Records the second product of a pair, computed by the same kernel.
    pub fn with_pair(mut self, workload: Workload) -> Dispatch {
        self.paired = Some(workload);
        self
    }

    /// Records what the kernel does, for throughput figures.
    pub fn with_work(mut self, flops: f64, bytes: f64) -> Dispatch {
        self.flops = flops;
        self.bytes = bytes;
        self
    }

    /// Records the dispatch; `row` picks the row of the row table it reads (ignored by kernels that read none).
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, row: u32) {
        pass.push_debug_group(&self.label);
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        if let Some((group, [stride, window])) = &self.rows {
            pass.set_bind_group(1, group, &[row * stride, row * window]);
        }
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
        pass.pop_debug_group();
    }
}

/// Dispatches recorded together, in order: one training step, one evaluation batch, one decode.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub dispatches: Vec<Dispatch>,
}

impl Plan {
    /// Records every dispatch, each reading row `row` of the row table.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, row: u32) {
        for d in &self.dispatches {
            d.record(pass, row);
        }
    }

    pub fn len(&self) -> usize {
        self.dispatches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Dispatch> {
        self.dispatches.iter()
    }

    pub fn then(mut self, more: Plan) -> Plan {
        self.dispatches.extend(more.dispatches);
        self
    }
}

impl From<Vec<Dispatch>> for Plan {
    fn from(dispatches: Vec<Dispatch>) -> Self {
        Plan { dispatches }
    }
}

impl<'a> IntoIterator for &'a Plan {
    type Item = &'a Dispatch;
    type IntoIter = std::slice::Iter<'a, Dispatch>;
    fn into_iter(self) -> Self::IntoIter {
        self.dispatches.iter()
    }
}
