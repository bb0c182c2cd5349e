//! A test-only kernel that keeps the GPU busy for seconds (shaders/hang.wgsl), submitted by the
//! `hang-after-step` fault so a test can see what the program does when a wait on the GPU never ends.

use super::HANG;
use super::contract::HangParams;
use crate::error::Result;
use crate::gpu::{Access, Gpu, KernelSpec};

/// Workgroups of the hang kernel: a grid of GROUPS × ROWS (GROUPS is the most one dimension may have on every
/// device). Minutes of work on a software driver, where each invocation's loops are cut short.
const GROUPS: u32 = 65535;
const ROWS: u32 = 16;

/// Submits the hang kernel and returns without waiting.
pub fn submit(gpu: &Gpu) -> Result<()> {
    let out = gpu.storage::<u32>("hang.out", (GROUPS * ROWS) as usize)?;
    let spec = KernelSpec {
        module: &HANG,
        entry: "hang",
        constants: vec![],
        storage: &[Access::ReadWrite],
        uses_rows: false,
    };
    let params = HangParams {
        // 65535² ≈ 4·10⁹ steps in each of 65535 workgroups.
        iterations: 65535,
        ..Default::default()
    };
    let hang = gpu.dispatch("hang", &spec, &params, &[&out], [GROUPS, ROWS, 1], None)?;
    gpu.submit_pass("hang", |pass| hang.record(pass, 0))?;
    Ok(())
}
