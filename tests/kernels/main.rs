//! GPU kernels against their CPU references, on whatever adapter wgpu finds (lavapipe in CI).
//!
//! Every test poisons its outputs with NaN before the run, so an element a kernel fails to write fails the
//! comparison; inputs are seeded (Philox, stream TEST_INPUT) so a failure reproduces.

#[path = "../common/mod.rs"]
mod common;

mod adam;
mod gather;
mod iwae;
mod loss;
mod matmul;
mod matmul_models;
mod reduce;
mod reparam;

use vae_wgpu::gpu::Dispatch;
use vae_wgpu::kernels::philox::{Philox, stream};
use vae_wgpu::kernels::{Reduction, StepParams, StepTable};

pub use common::gpu;

/// Runs `f` once with each reduction the device has (the workgroup-memory tree always, subgroups where the
/// device has the feature), so both paths of the reducing kernels are tested.
pub fn both_reductions(f: impl Fn()) {
    for r in Reduction::available(gpu()) {
        r.scoped(&f);
    }
}

/// Seeded test inputs.
pub fn rng(seed: u64) -> Philox {
    Philox::new(seed, stream::TEST_INPUT)
}

pub fn uniform_vec(rng: &mut Philox, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.range(lo, hi)).collect()
}

/// A step table whose rows are `rows`; kernels that need no per-step value get one zero row.
pub fn step_table(rows: &[StepParams]) -> StepTable {
    let gpu = gpu();
    let table = StepTable::new(gpu, rows.len() as u32).expect("step table");
    table.write(gpu, 0, rows).expect("step rows");
    table
}

/// Records `dispatches` in order into one pass (each with step-table row `slot`), submits, and checks for errors.
pub fn run(dispatches: &[&Dispatch], slot: u32) {
    gpu()
        .submit_pass("test", |pass| {
            for d in dispatches {
                d.record(pass, slot);
            }
        })
        .expect("submit");
}

pub fn poisoned(len: usize) -> wgpu::Buffer {
    let gpu = gpu();
    let b = gpu.storage::<f32>("test.output", len).expect("buffer");
    gpu.fill(&b, f32::NAN);
    b
}

pub fn read(buf: &wgpu::Buffer, offset: usize, len: usize) -> Vec<f32> {
    gpu().read(buf, offset, len).expect("readback")
}

/// Fails unless every `got[i]` is within `tol(i)` of `want[i]` (NaN always fails), listing the first mismatches.
#[track_caller]
pub fn assert_close_by(what: &str, got: &[f32], want: &[f32], tol: impl Fn(usize) -> f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut bad = Vec::new();
    let mut count = 0;
    for i in 0..got.len() {
        let (g, w) = (got[i] as f64, want[i] as f64);
        let ok = (g - w).abs() <= tol(i) || (g == w);
        if !ok || g.is_nan() {
            count += 1;
            if bad.len() < 8 {
                bad.push(format!("[{i}] got {g:e} want {w:e} (tol {:e})", tol(i)));
            }
        }
    }
    assert!(
        count == 0,
        "{what}: {count} of {} elements differ:\n  {}",
        got.len(),
        bad.join("\n  ")
    );
}

/// `|got − want| ≤ atol + rtol·|want|` element-wise.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f64, rtol: f64) {
    assert_close_by(what, got, want, |i| atol + rtol * (want[i] as f64).abs());
}
