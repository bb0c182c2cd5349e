//! A graphics-debugger capture around the profiled steps (`vae profile --capture`).
//!
//! RenderDoc is driven through its in-app API, found only when RenderDoc already runs inside the process
//! (`renderdoccmd capture`, the RenderDoc UI's launcher, or its Vulkan layer enabled): wgpu's own hook does this
//! only in builds with debug assertions, so a release `vae` under RenderDoc would otherwise capture nothing.
//! Without RenderDoc, wgpu's hook serves the debuggers it knows (Xcode's Metal capture, PIX).

use renderdoc::{RenderDoc, V141};

use crate::gpu::Gpu;

/// A capture in progress.
pub struct Capture {
    renderdoc: Option<RenderDoc<V141>>,
}

impl Capture {
    /// Starts capturing everything the device does from here on.
    pub fn start(gpu: &Gpu) -> Capture {
        match RenderDoc::<V141>::new() {
            Ok(mut rd) => {
                // Null device and window: RenderDoc's wildcard, the one device this program opened.
                rd.start_frame_capture(std::ptr::null(), std::ptr::null());
                Capture {
                    renderdoc: Some(rd),
                }
            }
            Err(_) => {
                // SAFETY: wgpu asks that no other capture be in progress on this device; this is the only one.
                unsafe { gpu.device.start_graphics_debugger_capture() };
                Capture { renderdoc: None }
            }
        }
    }

    /// Ends the capture; says where it went, in words.
    pub fn finish(self, gpu: &Gpu) -> String {
        match self.renderdoc {
            Some(mut rd) => {
                rd.end_frame_capture(std::ptr::null(), std::ptr::null());
                match rd.get_num_captures().checked_sub(1).and_then(|i| rd.get_capture(i)) {
                    Some((path, _)) => format!("RenderDoc capture written to {}", path.display()),
                    None => "RenderDoc ran but wrote no capture (its log, e.g. /tmp/RenderDoc/, says why)".into(),
                }
            }
            None => {
                // SAFETY: pairs with the start above.
                unsafe { gpu.device.stop_graphics_debugger_capture() };
                "capture handed to wgpu's graphics-debugger hook (Xcode, PIX); RenderDoc is not loaded in this \
                 process: run under `renderdoccmd capture` or the RenderDoc UI"
                    .into()
            }
        }
    }
}
