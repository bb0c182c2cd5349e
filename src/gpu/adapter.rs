//! Choosing an adapter: the options (explicit, then wgpu's environment variables, then defaults), the backend
//! list, and what `vae devices` prints for each adapter.

use std::fmt;

use crate::error::{Error, Result};

/// Which adapter to open. Explicit fields win over wgpu's usual environment variables
/// (`WGPU_BACKEND`, `WGPU_ADAPTER_NAME`, `WGPU_POWER_PREF`), which win over the defaults.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Backends to consider, e.g. "vulkan" or "vulkan,metal".
    pub backend: Option<String>,
    /// A case-insensitive substring of the adapter's name, e.g. "llvmpipe" or "H200".
    pub adapter: Option<String>,
    /// "high", "low" or "none"; the default prefers a discrete GPU.
    pub power: Option<String>,
    /// Ask for GPU timestamp queries where the adapter has them (`vae profile`).
    pub timestamps: bool,
    /// How long any wait on the GPU may take before the program calls it a hang ([`DEFAULT_WAIT_TIMEOUT`]).
    pub wait_timeout: Option<std::time::Duration>,
    /// Name every pass, dispatch and buffer for graphics debuggers (wgpu's `InstanceFlags::DEBUG`, which
    /// release builds leave off; `WGPU_DEBUG=1` turns it on too). `vae profile --capture` asks for it.
    pub debug_labels: bool,
}

/// The default for [`GpuOptions::wait_timeout`]: far above any wait this program makes on a working device (a
/// log point's steps, an evaluation, the 8192² benchmark on a software driver), far below forever.
pub const DEFAULT_WAIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

impl GpuOptions {
    /// The options wgpu's environment variables ask for, with `self`'s explicit values on top.
    pub fn with_env(self) -> Self {
        let env = |key: &str| std::env::var(key).ok().filter(|v| !v.trim().is_empty());
        GpuOptions {
            backend: self.backend.or_else(|| env("WGPU_BACKEND")),
            adapter: self.adapter.or_else(|| env("WGPU_ADAPTER_NAME")),
            power: self.power.or_else(|| env("WGPU_POWER_PREF")),
            timestamps: self.timestamps,
            wait_timeout: self.wait_timeout,
            debug_labels: self.debug_labels,
        }
    }

    pub(crate) fn backends(&self) -> Result<wgpu::Backends> {
        match &self.backend {
            None => Ok(wgpu::Backends::all()),
            Some(list) => parse_backends(list),
        }
    }

    pub(crate) fn power_preference(&self) -> Result<wgpu::PowerPreference> {
        match self.power.as_deref().map(|p| p.trim().to_lowercase()) {
            None => Ok(wgpu::PowerPreference::HighPerformance),
            Some(p) => match p.as_str() {
                "high" => Ok(wgpu::PowerPreference::HighPerformance),
                "low" => Ok(wgpu::PowerPreference::LowPower),
                "none" => Ok(wgpu::PowerPreference::None),
                _ => Err(Error::RequestDevice {
                    adapter: "(none chosen yet)".into(),
                    message: format!("unknown power preference {p:?}: use high, low or none"),
                }),
            },
        }
    }
}

/// Parses a comma-separated backend list strictly: an unknown name is an error, not a silent fallback.
pub fn parse_backends(list: &str) -> Result<wgpu::Backends> {
    let enabled = wgpu::Instance::enabled_backend_features();
    let mut backends = wgpu::Backends::empty();
    for name in list.split(',').map(|s| s.trim().to_lowercase()) {
        let b = match name.as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            _ => wgpu::Backends::empty(),
        };
        if b.is_empty() || !enabled.contains(b) {
            return Err(Error::UnknownBackend {
                name,
                enabled: backend_names(enabled),
            });
        }
        backends |= b;
    }
    Ok(backends)
}

pub(crate) fn backend_names(b: wgpu::Backends) -> String {
    let mut names = Vec::new();
    for (flag, name) in [
        (wgpu::Backends::VULKAN, "vulkan"),
        (wgpu::Backends::METAL, "metal"),
        (wgpu::Backends::DX12, "dx12"),
        (wgpu::Backends::GL, "gl"),
    ] {
        if b.contains(flag) {
            names.push(name);
        }
    }
    names.join(", ")
}

/// What `vae devices` prints for one adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub driver_info: String,
}

impl From<wgpu::AdapterInfo> for AdapterSummary {
    fn from(info: wgpu::AdapterInfo) -> Self {
        AdapterSummary {
            name: info.name,
            backend: info.backend,
            device_type: info.device_type,
            driver: info.driver,
            driver_info: info.driver_info,
        }
    }
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?}, {:?}, driver {} {})",
            self.name, self.backend, self.device_type, self.driver, self.driver_info
        )
    }
}

pub(crate) fn instance(backends: wgpu::Backends, debug_labels: bool) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    if debug_labels {
        desc.flags |= wgpu::InstanceFlags::DEBUG;
    }
    wgpu::Instance::new(desc)
}

#[cfg(not(target_arch = "wasm32"))]
/// Every adapter wgpu can see on the given backends (all of this build's when `None`).
pub fn list_adapters(options: &GpuOptions) -> Result<Vec<AdapterSummary>> {
    let backends = options.backends()?;
    let adapters = pollster::block_on(instance(backends, false).enumerate_adapters(backends));
    Ok(adapters
        .into_iter()
        .map(|a| AdapterSummary::from(a.get_info()))
        .collect())
}
