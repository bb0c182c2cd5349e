//! The GPU context: the device and its limits, error scopes, buffers and the one readback path. Adapter choice is
//! in [`adapter`], shader modules, pipelines and dispatches in [`pipeline`].
//!
//! Recording never waits on the GPU. What does wait: [`Gpu::read`] (tests and log points), [`Gpu::wait`]
//! (benchmarks, end of an epoch) and, briefly, [`Gpu::scoped`], which resolves its error scopes before returning
//! (buffer and pipeline creation, a submission's validation; not the GPU's work).

pub mod adapter;
pub mod pipeline;

pub use adapter::{AdapterSummary, GpuOptions, list_adapters, parse_backends};
pub use pipeline::{Access, Dispatch, KernelSpec, Plan, RowTable, ShaderSource, Workload};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use adapter::{backend_names, instance};

/// The features a device is opened with where the adapter has them: subgroups always, timestamps when asked (for
/// `vae profile`, benchmarks and tuning). Shader modules validate against the capabilities these grant, no more.
pub const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::TIMESTAMP_QUERY
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    .union(wgpu::Features::SUBGROUP);

/// Of [`OPTIONAL_FEATURES`], those requested on every device that has them (timestamps only when asked).
const ALWAYS_REQUESTED: wgpu::Features = wgpu::Features::SUBGROUP;

/// The limits every kernel of this crate may rely on. Buffer and binding sizes are raised to what the adapter
/// offers when the device is opened, so large datasets fit where the hardware allows.
pub fn required_limits() -> wgpu::Limits {
    wgpu::Limits {
        max_storage_buffers_per_shader_stage: 8,
        max_compute_invocations_per_workgroup: 256,
        max_compute_workgroup_size_x: 256,
        max_compute_workgroup_size_y: 256,
        max_compute_workgroup_storage_size: 16 << 10,
        max_dynamic_uniform_buffers_per_pipeline_layout: 1,
        ..wgpu::Limits::downlevel_defaults()
    }
}

type ErrorLog = Arc<Mutex<Vec<String>>>;

/// An opened device with its queue and what we learned about the adapter.
pub struct Gpu {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: AdapterSummary,
    uncaptured: ErrorLog,
    lost: Arc<Mutex<Option<String>>>,
    pub(crate) pipelines: pipeline::SharedCache,
    /// Which kernel computes which product (product key → kernel name), where one was chosen: by tuning, from
    /// the tuning cache or from a checkpoint. The kernels layer reads it; an absent key takes its default.
    choices: Mutex<BTreeMap<String, String>>,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu").field("info", &self.info).finish()
    }
}

impl Gpu {
    /// Opens the adapter that `options` (then the environment) asks for.
    pub fn new(options: GpuOptions) -> Result<Gpu> {
        let options = options.with_env();
        let backends = options.backends()?;
        let instance = instance(backends);
        let adapter = match &options.adapter {
            Some(name) => {
                let wanted = name.to_lowercase();
                let adapters = pollster::block_on(instance.enumerate_adapters(backends));
                let listed: Vec<String> = adapters
                    .iter()
                    .map(|a| format!("{:?}", a.get_info().name))
                    .collect();
                if adapters.is_empty() {
                    return Err(Error::NoAdapter {
                        wanted: format!("backends {}", backend_names(backends)),
                    });
                }
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&wanted))
                    .ok_or_else(|| Error::UnknownAdapter {
                        name: name.clone(),
                        available: listed.join(", "),
                    })?
            }
            None => pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: options.power_preference()?,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            }))
            .map_err(|e| Error::NoAdapter {
                wanted: format!("backends {}: {e}", backend_names(backends)),
            })?,
        };
        Self::open(adapter, options.timestamps)
    }

    /// Opens a device on `adapter` with [`required_limits`], failing with the names of any limits it lacks;
    /// with `timestamps`, also the timestamp-query features the adapter has.
    pub fn open(adapter: wgpu::Adapter, timestamps: bool) -> Result<Gpu> {
        let info = AdapterSummary::from(adapter.get_info());
        let available = adapter.limits();
        let mut required = required_limits();
        let mut missing = Vec::new();
        required.check_limits_with_fail_fn(&available, false, |name, want, have| {
            missing.push(format!("{name} (needs {want}, has {have})"))
        });
        if !missing.is_empty() {
            return Err(Error::AdapterTooSmall {
                adapter: info.name.clone(),
                missing: missing.join(", "),
            });
        }
        required.max_buffer_size = available.max_buffer_size;
        required.max_storage_buffer_binding_size = available.max_storage_buffer_binding_size;

        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("vae-wgpu"),
            required_features: adapter.features()
                & if timestamps {
                    OPTIONAL_FEATURES
                } else {
                    ALWAYS_REQUESTED
                },
            required_limits: required,
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::RequestDevice {
            adapter: info.name.clone(),
            message: e.to_string(),
        })?;

        // wgpu's default handler panics on an error outside any scope; keep it as a value instead, reported by
        // the next call that checks (`scoped`, `read`).
        let uncaptured: ErrorLog = Arc::default();
        let log = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.to_string());
        }));
        let lost = Arc::new(Mutex::new(None));
        let lost_flag = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *lost_flag.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(format!("{reason:?}: {message}"));
        });

        Ok(Gpu {
            adapter,
            device,
            queue,
            info,
            uncaptured,
            lost,
            pipelines: Default::default(),
            choices: Default::default(),
        })
    }

    /// The kernel chosen for `key`, if any.
    pub fn choice(&self, key: &str) -> Option<String> {
        self.choices_lock().get(key).cloned()
    }

    /// Adds kernel choices (dispatches built from now on use them).
    pub fn set_choices(&self, choices: impl IntoIterator<Item = (String, String)>) {
        self.choices_lock().extend(choices);
    }

    /// Forgets every kernel choice: dispatches built from now on take the defaults.
    pub fn clear_choices(&self) {
        self.choices_lock().clear();
    }

    fn choices_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.choices.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether compute passes can carry GPU timestamps.
    pub fn has_timestamps(&self) -> bool {
        self.device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Fails if the device was lost or an error escaped every error scope since the last check.
    pub fn check(&self) -> Result<()> {
        if let Some(reason) = self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(Error::DeviceLost { reason });
        }
        let mut log = self.uncaptured.lock().unwrap_or_else(|p| p.into_inner());
        if !log.is_empty() {
            let message = log.join("; ");
            log.clear();
            return Err(Error::Validation {
                context: "running GPU work (error outside any scope)".into(),
                message,
            });
        }
        Ok(())
    }

    /// Runs `f` inside validation, out-of-memory and internal error scopes and turns what they catch into an
    /// [`Error`] that says what we were doing (`context`).
    pub fn scoped<T>(&self, context: impl fmt::Display, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let errors = [validation.pop(), internal.pop(), oom.pop()];
        for pending in errors {
            if let Some(e) = pollster::block_on(pending) {
                return Err(Error::from_wgpu(&context, e));
            }
        }
        self.check()?;
        Ok(out)
    }

    /// A buffer of `bytes` bytes, checked against the device's size limit first so the error names it.
    pub fn buffer(
        &self,
        label: &str,
        bytes: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        self.check_buffer_size(label, bytes)?;
        self.scoped(format_args!("creating buffer {label:?}"), || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.max(4).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT),
                usage,
                mapped_at_creation: false,
            })
        })
    }

    /// A storage buffer (readable, writable, copyable both ways) of `len` elements of `T`.
    pub fn storage<T: bytemuck::Pod>(&self, label: &str, len: usize) -> Result<wgpu::Buffer> {
        self.buffer(
            label,
            (len * size_of::<T>()) as u64,
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        )
    }

    /// A storage buffer holding `data`.
    pub fn storage_init<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> Result<wgpu::Buffer> {
        self.init(
            label,
            bytemuck::cast_slice(data),
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        )
    }

    /// A uniform buffer holding `data`.
    pub fn uniform_init<T: bytemuck::Pod>(&self, label: &str, data: &T) -> Result<wgpu::Buffer> {
        self.init(
            label,
            bytemuck::bytes_of(data),
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        )
    }

    fn init(&self, label: &str, bytes: &[u8], usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        self.check_buffer_size(label, bytes.len() as u64)?;
        // Zero-length buffers cannot be bound; pad to one word (a kernel never reads past its logical length).
        let padded;
        let bytes = if bytes.len().is_multiple_of(4) && !bytes.is_empty() {
            bytes
        } else {
            let mut v = bytes.to_vec();
            v.resize(bytes.len().max(4).next_multiple_of(4), 0);
            padded = v;
            &padded
        };
        self.scoped(format_args!("creating buffer {label:?}"), || {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytes,
                    usage,
                })
        })
    }

    fn check_buffer_size(&self, label: &str, bytes: u64) -> Result<()> {
        let limit = self.device.limits().max_buffer_size;
        if bytes > limit {
            return Err(Error::TooLarge {
                op: "allocating a buffer",
                what: format!("buffer {label:?}"),
                needed: bytes,
                limit,
                limit_name: "max_buffer_size",
                hint: "use smaller sizes or an adapter with more memory".into(),
            });
        }
        Ok(())
    }

    /// Fails with a message naming `max_storage_buffer_binding_size` when a buffer is too large to bind whole.
    pub fn check_binding_size(&self, op: &'static str, buffer: &wgpu::Buffer) -> Result<()> {
        let limit = self.device.limits().max_storage_buffer_binding_size;
        if buffer.size() > limit {
            return Err(Error::TooLarge {
                op,
                what: format!("binding a {}-byte storage buffer", buffer.size()),
                needed: buffer.size(),
                limit,
                limit_name: "max_storage_buffer_binding_size",
                hint: "use smaller sizes or an adapter that allows larger storage bindings".into(),
            });
        }
        Ok(())
    }

    /// Records work into a fresh encoder inside one compute pass and submits it; does not wait.
    pub fn submit_pass(
        &self,
        label: &str,
        record: impl FnOnce(&mut wgpu::ComputePass<'_>),
    ) -> Result<wgpu::SubmissionIndex> {
        self.scoped(format_args!("recording {label:?}"), || {
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(label),
                    timestamp_writes: None,
                });
                record(&mut pass);
            }
            self.queue.submit([encoder.finish()])
        })
    }

    /// Records work into one compute pass, submits it and waits: the pass's GPU time from timestamp queries where
    /// the device was opened with them (`GpuOptions::timestamps`), else the wall-clock time of submit and wait.
    /// For benchmarks and tuning, never a training step.
    pub fn timed_pass(
        &self,
        label: &str,
        record: impl FnOnce(&mut wgpu::ComputePass<'_>),
    ) -> Result<std::time::Duration> {
        if !self.has_timestamps() {
            let start = std::time::Instant::now();
            self.submit_pass(label, record)?;
            self.wait()?;
            return Ok(start.elapsed());
        }
        let ticks = self.buffer(
            "timed_pass.ticks",
            16,
            wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        )?;
        self.scoped(format_args!("recording {label:?}"), || {
            let queries = self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("timed_pass.queries"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(label),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &queries,
                        beginning_of_pass_write_index: Some(0),
                        end_of_pass_write_index: Some(1),
                    }),
                });
                record(&mut pass);
            }
            encoder.resolve_query_set(&queries, 0..2, &ticks, 0);
            self.queue.submit([encoder.finish()]);
        })?;
        let t: Vec<u64> = self.read(&ticks, 0, 2)?;
        let ns = t[1].saturating_sub(t[0]) as f64 * self.queue.get_timestamp_period() as f64;
        Ok(std::time::Duration::from_secs_f64(ns * 1e-9))
    }

    /// Waits until all submitted work is done. For benchmarks and shutdown; a training step never calls it.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Readback {
                what: "completion of submitted work".into(),
                message: e.to_string(),
            })?;
        self.check()
    }

    /// Overwrites a whole buffer with `value` (e.g. NaN to poison outputs before a test run).
    pub fn fill<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, value: T) {
        let n = buffer.size() as usize / size_of::<T>();
        self.queue
            .write_buffer(buffer, 0, bytemuck::cast_slice(&vec![value; n]));
    }

    /// Copies `len` elements of `T` starting at element `offset` back to the host, waiting for all submitted
    /// work. The only place that waits on the GPU: tests and log points use it, never a training step.
    pub fn read<T: bytemuck::Pod>(
        &self,
        buffer: &wgpu::Buffer,
        offset: usize,
        len: usize,
    ) -> Result<Vec<T>> {
        let what = || format!("{len} elements of {:?}", buffer);
        let start = (offset * size_of::<T>()) as u64;
        let bytes = (len * size_of::<T>()) as u64;
        if start + bytes > buffer.size() {
            return Err(Error::Readback {
                what: what(),
                message: format!(
                    "range {start}..{} is outside the buffer's {} bytes",
                    start + bytes,
                    buffer.size()
                ),
            });
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        // Copies must start and end on 4-byte boundaries: widen the window, then cut the answer out of it.
        let lo = start - start % wgpu::COPY_BUFFER_ALIGNMENT;
        let hi = (start + bytes).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        let staging = self.buffer(
            "readback.staging",
            hi - lo,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        let index = self.scoped(format_args!("copying {} for readback", what()), || {
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("readback"),
                });
            encoder.copy_buffer_to_buffer(buffer, lo, &staging, 0, hi - lo);
            self.queue.submit([encoder.finish()])
        })?;
        let (sender, receiver) = futures_intrusive::channel::shared::oneshot_channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            sender.send(r).ok();
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| Error::Readback {
                what: what(),
                message: e.to_string(),
            })?;
        self.check()?;
        match pollster::block_on(receiver.receive()) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                return Err(Error::Readback {
                    what: what(),
                    message: e.to_string(),
                });
            }
            None => {
                return Err(Error::Readback {
                    what: what(),
                    message: "the map callback never ran".into(),
                });
            }
        }
        let out = {
            let view = staging.get_mapped_range(..).map_err(|e| Error::Readback {
                what: what(),
                message: e.to_string(),
            })?;
            let skip = (start - lo) as usize;
            bytemuck::pod_collect_to_vec(&view[skip..skip + bytes as usize])
        };
        staging.unmap();
        Ok(out)
    }
}
