//! The GPU context: the device and its limits, error scopes, buffers and the one readback path. Adapter choice is
//! in [`adapter`], shader modules, pipelines and dispatches in [`pipeline`].
//!
//! Recording never waits on the GPU. What does wait: [`Gpu::read`] (tests and log points), [`Gpu::wait`]
//! (benchmarks, end of an epoch) and, briefly, [`Gpu::scoped`], which resolves its error scopes before returning
//! (buffer and pipeline creation, a submission's validation; not the GPU's work).

pub mod adapter;
pub mod pipeline;

#[cfg(not(target_arch = "wasm32"))]
pub use adapter::list_adapters;
pub use adapter::{AdapterSummary, DEFAULT_WAIT_TIMEOUT, GpuOptions, parse_backends};
pub use pipeline::{Access, Dispatch, KernelSpec, Plan, RowTable, ShaderSource, Workload};

use std::collections::BTreeMap;
use std::fmt;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use adapter::{backend_names, instance};

/// A kernel's operand: a buffer and the element offset at which the data (a matrix, a vector) starts. In a
/// dispatch over several models, model i's copy starts `model_stride` elements after model i − 1's (0: one copy
/// that every model reads).
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: usize,
    pub model_stride: usize,
}

impl<'a> Operand<'a> {
    /// The operand at element `offset` of `buffer`, one copy for every model.
    pub fn at(buffer: &'a wgpu::Buffer, offset: usize) -> Self {
        Operand {
            buffer,
            offset,
            model_stride: 0,
        }
    }

    /// The same operand with one copy per model, `stride` elements apart.
    pub fn per_model(self, stride: usize) -> Self {
        Operand {
            model_stride: stride,
            ..self
        }
    }
}

impl<'a> From<&'a wgpu::Buffer> for Operand<'a> {
    fn from(buffer: &'a wgpu::Buffer) -> Self {
        Operand::at(buffer, 0)
    }
}

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
        // The step table's row and its models' window (`RowTable`).
        max_dynamic_uniform_buffers_per_pipeline_layout: 2,
        ..wgpu::Limits::downlevel_defaults()
    }
}

type ErrorLog = Arc<Mutex<Vec<String>>>;

/// An opened device with its queue and what we learned about the adapter.
pub struct Gpu {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    /// Dropping a queue waits, without limit, for the GPU to finish; after a hang it is leaked instead (see Drop).
    pub queue: ManuallyDrop<wgpu::Queue>,
    pub info: AdapterSummary,
    uncaptured: ErrorLog,
    lost: Arc<Mutex<Option<String>>>,
    /// The longest any wait may take ([`GpuOptions::wait_timeout`]).
    wait_timeout: Duration,
    /// Ends the process when a submission blocks past the wait timeout (see [`Watchdog`]).
    watchdog: Arc<Watchdog>,
    /// Set when a wait timed out: the GPU may never finish.
    hung: AtomicBool,
    pub(crate) pipelines: pipeline::SharedCache,
    /// Which kernel computes which product (product key → kernel name), where one was chosen: by tuning, from
    /// the tuning cache or from a checkpoint. The kernels layer reads it; an absent key takes its default.
    choices: Mutex<BTreeMap<String, String>>,
    /// A one-word storage buffer for a writable binding a kernel never touches ([`Gpu::unused_storage`]).
    unused: std::sync::OnceLock<wgpu::Buffer>,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu").field("info", &self.info).finish()
    }
}

impl Gpu {
    /// Opens the adapter that `options` (then the environment) asks for.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(options: GpuOptions) -> Result<Gpu> {
        pollster::block_on(Self::new_async(options))
    }

    /// [`Gpu::new`] for a caller that must not block (the browser, where the adapter and the device come from
    /// the event loop).
    pub async fn new_async(options: GpuOptions) -> Result<Gpu> {
        let options = options.with_env();
        let backends = options.backends()?;
        let instance = instance(backends, options.debug_labels);
        let adapter = match &options.adapter {
            Some(name) => {
                let wanted = name.to_lowercase();
                let adapters = instance.enumerate_adapters(backends).await;
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
            None => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: options.power_preference()?,
                    force_fallback_adapter: false,
                    compatible_surface: None,
                    apply_limit_buckets: false,
                })
                .await
                .map_err(|e| Error::NoAdapter {
                    wanted: format!("backends {}: {e}", backend_names(backends)),
                })?,
        };
        let mut gpu = Self::open_async(adapter, options.timestamps).await?;
        if let Some(t) = options.wait_timeout {
            gpu.wait_timeout = t;
            gpu.watchdog = Watchdog::start(t);
        }
        Ok(gpu)
    }

    /// Opens a device on `adapter` with [`required_limits`], failing with the names of any limits it lacks;
    /// with `timestamps`, also the timestamp-query features the adapter has.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(adapter: wgpu::Adapter, timestamps: bool) -> Result<Gpu> {
        pollster::block_on(Self::open_async(adapter, timestamps))
    }

    /// [`Gpu::open`] without blocking.
    pub async fn open_async(adapter: wgpu::Adapter, timestamps: bool) -> Result<Gpu> {
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

        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
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
            })
            .await
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
            *lost_flag.lock().unwrap_or_else(|p| p.into_inner()) = Some(match message.trim() {
                "" => format!("{reason:?}"),
                m => format!("{reason:?}: {m}"),
            });
        });

        Ok(Gpu {
            adapter,
            device,
            queue: ManuallyDrop::new(queue),
            info,
            uncaptured,
            lost,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            watchdog: Watchdog::start(DEFAULT_WAIT_TIMEOUT),
            hung: AtomicBool::new(false),
            pipelines: Default::default(),
            choices: Default::default(),
            unused: Default::default(),
        })
    }

    /// A one-word storage buffer to bind where a kernel has a writable binding it never touches (an unpaired
    /// matmul's second output). WebGPU forbids two writable bindings of one dispatch to overlap, so such a slot
    /// cannot repeat another's buffer, as native drivers would allow.
    pub fn unused_storage(&self) -> Result<&wgpu::Buffer> {
        if let Some(b) = self.unused.get() {
            return Ok(b);
        }
        let buffer = self.storage::<f32>("unused", 1)?;
        Ok(self.unused.get_or_init(|| buffer))
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

    /// Every kernel choice the device holds now, by key (a resumed sweep sets them again).
    pub fn choices_snapshot(&self) -> Vec<(String, String)> {
        self.choices_lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
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

    /// The reason the device was lost, if it was.
    fn lost_reason(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `e`, or the device's loss where that is what caused it: once a device is lost, every call on it fails
    /// (validation, mapping, polling), and the loss is what the user needs to hear about. wgpu reports the loss
    /// from its next poll, so poll once (without waiting) first.
    fn lost_or(&self, e: Error) -> Error {
        let _ = self.device.poll(wgpu::PollType::Poll);
        match self.lost_reason() {
            Some(reason) => Error::DeviceLost { reason },
            None => e,
        }
    }

    /// Fails if the device was lost or an error escaped every error scope since the last check.
    pub fn check(&self) -> Result<()> {
        if let Some(reason) = self.lost_reason() {
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

    /// `f`, and the errors caught so far. In the browser an error scope's answer comes only from the event
    /// loop, which a synchronous call cannot wait for: there the errors arrive through the uncaptured-error
    /// handler instead, and the next check (every readback makes one) reports them.
    #[cfg(target_arch = "wasm32")]
    pub fn scoped<T>(&self, _context: impl fmt::Display, f: impl FnOnce() -> T) -> Result<T> {
        let out = f();
        self.check()?;
        Ok(out)
    }

    /// Runs `f` inside validation, out-of-memory and internal error scopes and turns what they catch into an
    /// [`Error`] that says what we were doing (`context`). (In the browser: the version above.)
    #[cfg(not(target_arch = "wasm32"))]
    pub fn scoped<T>(&self, context: impl fmt::Display, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let errors = [validation.pop(), internal.pop(), oom.pop()];
        for pending in errors {
            if let Some(e) = pollster::block_on(pending) {
                let e = match Error::from_wgpu(&context, e) {
                    Error::OutOfMemory {
                        context,
                        asked,
                        device,
                        advice,
                    } => Error::OutOfMemory {
                        context,
                        asked,
                        device: format!("{device}; {}", self.memory_report()),
                        advice,
                    },
                    e => e,
                };
                return Err(self.lost_or(e));
            }
        }
        self.check()?;
        Ok(out)
    }

    /// What the device says about its memory, in words: this program's allocations and the memory blocks they
    /// sit in (where the backend reports them), and the largest buffer it allows.
    pub fn memory_report(&self) -> String {
        let largest = crate::error::bytes(self.device.limits().max_buffer_size);
        match self.device.generate_allocator_report() {
            Some(r) => format!(
                "the device reports {} allocated by this program in {} of memory blocks (largest buffer {largest})",
                crate::error::bytes(r.total_allocated_bytes),
                crate::error::bytes(r.total_reserved_bytes)
            ),
            None => format!("the backend reports no memory use (largest buffer {largest})"),
        }
    }

    /// The test-only memory faults: `memory:<bytes>`, a device with only that much memory, so an allocation past
    /// it fails as on a full device (checked against this program's allocations as the device reports them);
    /// `oom:<label prefix>` (or `oom:<label prefix>#<n>`), the first (n-th) allocation of a buffer so labelled
    /// fails.
    fn simulated_memory(&self, label: &str, bytes: u64) -> Result<()> {
        if !crate::fault::any_armed() {
            return Ok(());
        }
        let used = || {
            let _ = self.device.poll(wgpu::PollType::Poll); // frees what was dropped and is done
            self.device
                .generate_allocator_report()
                .map_or(0, |r| r.total_allocated_bytes)
        };
        let full = |advice: &str| Error::OutOfMemory {
            context: format!("creating buffer {label:?}"),
            asked: Some(bytes),
            device: format!(
                "{} (a full device simulated by {})",
                self.memory_report(),
                crate::fault::VARIABLE
            ),
            advice: advice.into(),
        };
        for value in crate::fault::values("oom:") {
            let (prefix, n) = match value.split_once('#') {
                Some((prefix, n)) => (prefix, n.parse().unwrap_or(1)),
                None => (value, 1),
            };
            if label.starts_with(prefix) && crate::fault::nth(&format!("oom:{value}"), n) {
                return Err(full(crate::error::OOM_ADVICE));
            }
        }
        for cap in crate::fault::values("memory:").filter_map(|v| v.parse::<u64>().ok()) {
            if used() + bytes > cap {
                return Err(Error::OutOfMemory {
                    context: format!("creating buffer {label:?}"),
                    asked: Some(bytes),
                    device: format!(
                        "{} (a device of {} simulated by {})",
                        self.memory_report(),
                        crate::error::bytes(cap),
                        crate::fault::VARIABLE
                    ),
                    advice: crate::error::OOM_ADVICE.into(),
                });
            }
        }
        Ok(())
    }

    /// A buffer of `bytes` bytes, checked against the device's size limit first so the error names it.
    pub fn buffer(
        &self,
        label: &str,
        bytes: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        self.check_buffer_size(label, bytes)?;
        self.simulated_memory(label, bytes)?;
        self.scoped(format_args!("creating buffer {label:?}"), || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.max(4).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT),
                usage,
                mapped_at_creation: false,
            })
        })
        .map_err(|e| e.asking(bytes))
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
        self.simulated_memory(label, bytes.len() as u64)?;
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
        .map_err(|e| e.asking(bytes.len() as u64))
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
            self.submit(label, encoder.finish())
        })
    }

    /// Records work into one compute pass, submits it and waits: the pass's GPU time from timestamp queries where
    /// the device was opened with them (`GpuOptions::timestamps`), else the wall-clock time of submit and wait.
    /// For benchmarks and tuning, never a training step.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn timed_pass(
        &self,
        label: &str,
        record: impl FnOnce(&mut wgpu::ComputePass<'_>),
    ) -> Result<std::time::Duration> {
        if !self.has_timestamps() {
            let start = web_time::Instant::now();
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
            self.submit(label, encoder.finish());
        })?;
        let t: Vec<u64> = self.read(&ticks, 0, 2)?;
        let ns = t[1].saturating_sub(t[0]) as f64 * self.queue.get_timestamp_period() as f64;
        Ok(std::time::Duration::from_secs_f64(ns * 1e-9))
    }

    /// Submits `commands` to the queue; does not wait. Some drivers (lavapipe) block here while earlier work
    /// runs, where no poll timeout can reach: the watchdog covers that.
    pub fn submit(&self, what: &str, commands: wgpu::CommandBuffer) -> wgpu::SubmissionIndex {
        self.watchdog.guard(what, || self.queue.submit([commands]))
    }

    /// What the watchdog adds to its message if it has to end the process (e.g. where the last checkpoint is).
    pub fn set_hang_note(&self, note: impl Into<String>) {
        *self.watchdog.note.lock().unwrap_or_else(|p| p.into_inner()) = note.into();
    }

    /// Waits until all submitted work is done. For benchmarks and shutdown; a training step never calls it.
    pub fn wait(&self) -> Result<()> {
        self.wait_for(None, || "completion of submitted work".into())
    }

    /// Waits until submission `index` (`what`, for the message) is done: the trainer's pacing between
    /// submissions, never inside one.
    pub fn wait_for_submission(&self, index: wgpu::SubmissionIndex, what: &str) -> Result<()> {
        self.wait_for(Some(index), || format!("completion of {what}"))
    }

    /// Waits for submission `index` (all submitted work if `None`), at most the wait timeout: past it the GPU is
    /// taken to be hung, and the error says so. Every wait on the GPU in this program comes here.
    fn wait_for(
        &self,
        index: Option<wgpu::SubmissionIndex>,
        what: impl Fn() -> String,
    ) -> Result<()> {
        let waited = self.device.poll(wgpu::PollType::Wait {
            submission_index: index,
            timeout: Some(self.wait_timeout),
        });
        match waited {
            Ok(_) => self.check(),
            Err(wgpu::PollError::Timeout) => {
                self.hung.store(true, Ordering::SeqCst);
                Err(self.lost_or(Error::GpuTimeout {
                    what: what(),
                    seconds: self.wait_timeout.as_secs_f64(),
                }))
            }
            Err(e) => Err(self.lost_or(Error::Readback {
                what: what(),
                message: e.to_string(),
            })),
        }
    }

    /// Frees the memory of buffers already dropped: wgpu keeps a buffer that an initial upload or a
    /// `write_buffer` touched until a submission carries that write and completes. Called before allocating
    /// again after an out-of-memory error, so that the retry sees the memory the failed attempt held.
    pub fn release_dropped(&self) -> Result<()> {
        let index = self.submit(
            "releasing dropped buffers",
            self.device
                .create_command_encoder(&Default::default())
                .finish(),
        );
        self.wait_for(Some(index), || "the release of dropped buffers".into())
    }

    /// Overwrites a whole buffer with `value` (e.g. NaN to poison outputs before a test run).
    pub fn fill<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, value: T) {
        let n = buffer.size() as usize / size_of::<T>();
        self.queue
            .write_buffer(buffer, 0, bytemuck::cast_slice(&vec![value; n]));
    }

    /// Copies `len` elements of `T` starting at element `offset` back to the host, waiting for all submitted
    /// work. The only place that waits on the GPU: tests and log points use it, never a training step.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read<T: bytemuck::Pod>(
        &self,
        buffer: &wgpu::Buffer,
        offset: usize,
        len: usize,
    ) -> Result<Vec<T>> {
        let Some(staged) = self.stage::<T>(buffer, offset, len)? else {
            return Ok(Vec::new());
        };
        let (sender, receiver) = futures_intrusive::channel::shared::oneshot_channel();
        staged.staging.map_async(wgpu::MapMode::Read, .., move |r| {
            sender.send(r).ok();
        });
        self.wait_for(Some(staged.index.clone()), || staged.what.clone())?;
        let mapped = pollster::block_on(receiver.receive());
        staged.finish(mapped)
    }

    /// [`Gpu::read`] for a caller that must not block: in the browser the copy's mapping resolves through the
    /// event loop, awaited here; natively it is [`Gpu::read`] (so code shared by both targets awaits it).
    pub async fn read_async<T: bytemuck::Pod>(
        &self,
        buffer: &wgpu::Buffer,
        offset: usize,
        len: usize,
    ) -> Result<Vec<T>> {
        #[cfg(not(target_arch = "wasm32"))]
        return self.read(buffer, offset, len);
        #[cfg(target_arch = "wasm32")]
        {
            let Some(staged) = self.stage::<T>(buffer, offset, len)? else {
                return Ok(Vec::new());
            };
            let (sender, receiver) = futures_intrusive::channel::shared::oneshot_channel();
            staged.staging.map_async(wgpu::MapMode::Read, .., move |r| {
                sender.send(r).ok();
            });
            let mapped = receiver.receive().await;
            self.check()?;
            staged.finish(mapped)
        }
    }

    /// The first half of a readback: `len` elements of `T` from element `offset` of `buffer` copied into a
    /// staging buffer (submitted, not waited for); `None` when `len` is 0.
    fn stage<T: bytemuck::Pod>(
        &self,
        buffer: &wgpu::Buffer,
        offset: usize,
        len: usize,
    ) -> Result<Option<Staged>> {
        let what = format!("{len} elements of {buffer:?}");
        let start = (offset * size_of::<T>()) as u64;
        let bytes = (len * size_of::<T>()) as u64;
        if start + bytes > buffer.size() {
            return Err(Error::Readback {
                what,
                message: format!(
                    "range {start}..{} is outside the buffer's {} bytes",
                    start + bytes,
                    buffer.size()
                ),
            });
        }
        if len == 0 {
            return Ok(None);
        }
        // Copies must start and end on 4-byte boundaries: widen the window, then cut the answer out of it.
        let lo = start - start % wgpu::COPY_BUFFER_ALIGNMENT;
        let hi = (start + bytes).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        let staging = self.buffer(
            "readback.staging",
            hi - lo,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        let index = self.scoped(format_args!("copying {what} for readback"), || {
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("readback"),
                });
            encoder.copy_buffer_to_buffer(buffer, lo, &staging, 0, hi - lo);
            self.submit("readback", encoder.finish())
        })?;
        Ok(Some(Staged {
            staging,
            index,
            what,
            skip: (start - lo) as usize,
            bytes: bytes as usize,
        }))
    }
}

/// A readback's copy on its way: the staging buffer, the submission that fills it and where the answer is in it.
struct Staged {
    staging: wgpu::Buffer,
    /// What a native readback waits for (the browser awaits the mapping instead).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    index: wgpu::SubmissionIndex,
    what: String,
    /// Bytes before the answer (copies start on 4-byte boundaries), and the answer's bytes.
    skip: usize,
    bytes: usize,
}

impl Staged {
    /// The second half: the mapped staging buffer's answer, or the mapping's error.
    fn finish<T: bytemuck::Pod>(
        self,
        mapped: Option<std::result::Result<(), wgpu::BufferAsyncError>>,
    ) -> Result<Vec<T>> {
        let what = &self.what;
        match mapped {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                return Err(Error::Readback {
                    what: what.clone(),
                    message: e.to_string(),
                });
            }
            None => {
                return Err(Error::Readback {
                    what: what.clone(),
                    message: "the map callback never ran".into(),
                });
            }
        }
        let out = {
            let view = self
                .staging
                .get_mapped_range(..)
                .map_err(|e| Error::Readback {
                    what: what.clone(),
                    message: e.to_string(),
                })?;
            bytemuck::pod_collect_to_vec(&view[self.skip..self.skip + self.bytes])
        };
        self.staging.unmap();
        Ok(out)
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        if !self.hung.load(Ordering::SeqCst) {
            // SAFETY: the queue is not used after this, and dropped only here.
            unsafe { ManuallyDrop::drop(&mut self.queue) };
        }
        // After a hang the queue is leaked: dropping it would wait for the GPU without limit, turning the clean
        // error the user was given into a process that never exits.
    }
}

/// Watches the queue submissions of one device: when one has been blocked for longer than the wait timeout (a
/// driver that runs submissions in the caller's thread, hung), it prints why and ends the process, since the
/// thread inside the driver cannot be woken. Files are written whole (renamed into place), so the last checkpoint
/// is intact. Waits proper (polls) have their own timeout and return an error instead.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))] // it has nothing to watch there
pub(crate) struct Watchdog {
    timeout: Duration,
    /// What is blocked, and since when.
    busy: Mutex<Option<(web_time::Instant, String)>>,
    note: Mutex<String>,
}

impl Watchdog {
    /// Starts the watching thread, which ends when the device's context is dropped.
    fn start(timeout: Duration) -> Arc<Watchdog> {
        let dog = Arc::new(Watchdog {
            timeout,
            busy: Mutex::new(None),
            note: Mutex::new(String::new()),
        });
        // The browser's queue never blocks the caller, and a page has no threads to watch with.
        #[cfg(not(target_arch = "wasm32"))]
        {
            let weak = Arc::downgrade(&dog);
            let tick = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
            std::thread::spawn(move || {
                while let Some(dog) = weak.upgrade() {
                    dog.bark_if_stuck();
                    drop(dog);
                    std::thread::sleep(tick);
                }
            });
        }
        dog
    }

    fn guard<T>(&self, what: &str, f: impl FnOnce() -> T) -> T {
        *self.busy.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((web_time::Instant::now(), what.to_string()));
        let out = f();
        *self.busy.lock().unwrap_or_else(|p| p.into_inner()) = None;
        out
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    fn bark_if_stuck(&self) {
        let busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((since, what)) = busy.as_ref()
            && since.elapsed() > self.timeout
        {
            let e = Error::GpuTimeout {
                what: format!("submitting {what:?} (the driver blocked while earlier work ran)"),
                seconds: self.timeout.as_secs_f64(),
            };
            let note = self.note.lock().unwrap_or_else(|p| p.into_inner());
            eprintln!("error: {e}");
            if !note.is_empty() {
                eprintln!("  {note}");
            }
            std::process::exit(1);
        }
    }
}
