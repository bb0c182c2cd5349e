//! One error type for the library. Every message says what failed and, where there is one, what to do about it.

use std::fmt;

/// How to get a Vulkan driver on a machine without a GPU; quoted wherever no adapter is found.
pub const SOFTWARE_VULKAN_HINT: &str = "On a machine without a GPU, install Mesa's software Vulkan driver \
     (lavapipe): `sudo apt-get install mesa-vulkan-drivers` on Debian/Ubuntu, \
     `sudo dnf install mesa-vulkan-drivers` on Fedora. `vae devices` lists what wgpu can see.";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no GPU adapter found ({wanted}). {SOFTWARE_VULKAN_HINT}")]
    NoAdapter { wanted: String },

    #[error(
        "no adapter matches {name:?}; the adapters wgpu can see are: {available}. Pass one of them to --adapter (or WGPU_ADAPTER_NAME), or leave it out to let wgpu choose"
    )]
    UnknownAdapter { name: String, available: String },

    #[error(
        "unknown backend {name:?}: use one of vulkan, metal, dx12 (or a comma-separated list); this build has {enabled}"
    )]
    UnknownBackend { name: String, enabled: String },

    #[error(
        "adapter {adapter:?} is missing what the kernels need: {missing}. Choose another adapter with --adapter or WGPU_ADAPTER_NAME (`vae devices` lists them)"
    )]
    AdapterTooSmall { adapter: String, missing: String },

    #[error("could not open a device on {adapter:?}: {message}")]
    RequestDevice { adapter: String, message: String },

    #[error("wgpu validation error while {context}: {message}")]
    Validation { context: String, message: String },

    #[error(
        "the GPU ran out of memory while {context}{}: {device}. {advice}",
        asked.map(|b| format!(", asking for {}", bytes(b))).unwrap_or_default()
    )]
    OutOfMemory {
        context: String,
        /// Bytes the failing allocation asked for, where known.
        asked: Option<u64>,
        /// What the device says about its memory.
        device: String,
        /// What to change, as precisely as the caller knows (the largest setting that fits, where it was found).
        advice: String,
    },

    #[error("internal GPU error while {context}: {message}")]
    Internal { context: String, message: String },

    #[error(
        "the GPU device was lost ({reason}): the driver reset or crashed, or the GPU was removed. Check the GPU (driver log, dmesg, nvidia-smi), then start the program again"
    )]
    DeviceLost { reason: String },

    #[error(
        "the GPU did not finish {what} within {seconds} s, so the program takes it to be hung (a driver hang, or a device far slower than expected); if it is only slow, raise the limit with --gpu-timeout SECONDS"
    )]
    GpuTimeout { what: String, seconds: f64 },

    /// A GPU fault that stopped a training run, with where it stopped and what was saved.
    #[error("{cause}\n  {at}; {saved}")]
    Stopped {
        cause: Box<Error>,
        at: String,
        saved: String,
    },

    #[error("reading back {what} from the GPU failed: {message}")]
    Readback { what: String, message: String },

    #[error("{path}: {message}")]
    Data { path: String, message: String },

    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },

    #[error(
        "{op}: {what} needs {needed} bytes but the device allows {limit} bytes ({limit_name}); {hint}"
    )]
    TooLarge {
        op: &'static str,
        what: String,
        needed: u64,
        limit: u64,
        limit_name: &'static str,
        hint: String,
    },

    #[error("the {what} loss became non-finite at step {step} (epoch {epoch}), seen at the log point after step {seen}: training diverged and stopped there. Lower the learning rate (--lr {lr} now; try {}), or resume from the last checkpoint with a smaller --lr in a new run", lr / 10.0)]
    NonFinite {
        step: u32,
        /// The last step of the log interval whose losses showed it: the run stopped after it.
        seen: u32,
        epoch: u32,
        what: &'static str,
        lr: f32,
    },

    #[error(
        "{what}: the GPU result differs from the CPU reference ({}); the driver may have miscompiled this kernel",
        times_the_bound(*ratio)
    )]
    Mismatch {
        what: String,
        /// Largest |gpu − cpu| over its error bound (infinite where an output is not finite).
        ratio: f64,
    },

    #[error(
        "no matmul kernel works for {product} on {adapter}: every candidate is unavailable ({reasons}). Update the GPU driver, or choose another adapter with --adapter (`vae devices` lists them)"
    )]
    NoKernel {
        product: String,
        adapter: String,
        reasons: String,
    },

    #[error("{what}: {message}")]
    Io { what: String, message: String },

    #[error("interrupted: {0}")]
    Interrupted(String),

    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to do about running out of device memory, where nothing more precise is known.
pub const OOM_ADVICE: &str =
    "Use a smaller --batch-size or --hidden, fewer examples, or a device with more memory";

/// A byte count for messages, in bytes, KiB, MiB or GiB.
pub fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} bytes"),
        1024..0x10_0000 => format!("{:.1} KiB", n as f64 / 1024.0),
        0x10_0000..0x4000_0000 => format!("{:.1} MiB", n as f64 / 0x10_0000 as f64),
        _ => format!("{:.2} GiB", n as f64 / 0x4000_0000 as f64),
    }
}

/// A mismatch's size: `12.3× the error bound`, or that an output is NaN or infinite (or was never written).
pub fn times_the_bound(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{ratio:.1}× the error bound")
    } else {
        "an output is NaN, infinite or unwritten".into()
    }
}

impl Error {
    /// An out-of-memory error with the size that was asked for; other errors unchanged.
    pub fn asking(self, bytes: u64) -> Self {
        match self {
            Error::OutOfMemory {
                context,
                device,
                advice,
                ..
            } => Error::OutOfMemory {
                context,
                asked: Some(bytes),
                device,
                advice,
            },
            e => e,
        }
    }

    /// An out-of-memory error with `advice` in place of its own; other errors unchanged.
    pub fn advising(self, new: String) -> Self {
        match self {
            Error::OutOfMemory {
                context,
                asked,
                device,
                ..
            } => Error::OutOfMemory {
                context,
                asked,
                device,
                advice: new,
            },
            e => e,
        }
    }

    /// Converts a wgpu error caught by an error scope, with what we were doing at the time.
    pub fn from_wgpu(context: impl fmt::Display, err: wgpu::Error) -> Self {
        let context = context.to_string();
        match err {
            wgpu::Error::OutOfMemory { source } => Error::OutOfMemory {
                context,
                asked: None,
                device: format!("the driver says {source}"),
                advice: OOM_ADVICE.into(),
            },
            wgpu::Error::Validation { description, .. } => Error::Validation {
                context,
                message: description,
            },
            wgpu::Error::Internal { description, .. } => Error::Internal {
                context,
                message: description,
            },
        }
    }

    pub(crate) fn shape(op: &'static str, message: impl Into<String>) -> Self {
        Error::Shape {
            op,
            message: message.into(),
        }
    }
}
