//! `vae profile`: per-kernel GPU time of training steps from timestamp queries (wgpu-profiler: one timed compute
//! pass per dispatch), a table with throughput from each kernel's known work, a Chrome/Perfetto trace, and an
//! optional graphics-debugger capture around the profiled steps.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use wgpu_profiler::{GpuProfiler, GpuProfilerSettings, GpuTimerQueryResult};

use super::capture::Capture;
use crate::error::{Error, Result};
use crate::gpu::Plan;
use crate::training::trainer::Trainer;
use crate::tune::median;

/// One kernel's row of the table.
#[derive(Clone, Debug)]
pub struct KernelRow {
    pub label: String,
    pub calls: usize,
    pub mean_us: f64,
    pub median_us: f64,
    /// Share of the summed kernel time of a step.
    pub share: f64,
    pub gflops: f64,
    pub gbps: f64,
}

/// What `vae profile` measured.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Per-kernel rows, largest share first; empty without timestamp support.
    pub kernels: Vec<KernelRow>,
    /// Wall-clock time per step of the same steps recorded back to back in one pass (no timestamps).
    pub wall_step_us: f64,
    /// Host time to record and submit one step (without waiting), from the same back-to-back run.
    pub host_step_us: f64,
    /// Summed GPU kernel time per step (timestamps), when available.
    pub gpu_step_us: Option<f64>,
    /// Dispatches one training step records.
    pub dispatches: usize,
    /// Dispatches recorded once per submission (the loss reduction), and the steps a submission holds.
    pub per_submission: (usize, u32),
    /// Dispatches recorded once per so many steps (the gather of their input batches), and how many steps.
    pub per_gather: (usize, u32),
    pub steps: u32,
    /// Where the graphics-debugger capture went, in words (`--capture` only).
    pub captured: Option<String>,
}

fn profiler_err(e: impl std::fmt::Display) -> Error {
    Error::Internal {
        context: "profiling".into(),
        message: e.to_string(),
    }
}

/// Profiles `steps` training steps: first timed per kernel (when the device has timestamp queries), then as
/// ordinary steps by wall clock. `trace` receives the Chrome trace; `capture` wraps both in a graphics-debugger
/// capture (RenderDoc, Xcode, PIX when the program runs under one).
pub fn profile(
    trainer: &mut Trainer,
    steps: u32,
    trace: Option<&Path>,
    capture: bool,
) -> Result<Profile> {
    let gpu = trainer.gpu;
    let sizes = trainer.begin_epoch(1)?;
    // Step s of the profile is step s of the epoch (wrapping): its row of the step table and its plan.
    let row = |s: u32| s % sizes.len() as u32;
    let plan = |s: u32| trainer.step_plan(sizes[row(s) as usize]);
    // As training records them: each step's plan (after the gather of the next batches where its batch is the
    // first of them) and, after the last step of a submission (its partials' slot is the last, or the profile
    // ends there), the reduction of the submission's loss partials.
    let slots = trainer.steps_per_submission();
    let reduce = trainer.reduce_plan();
    let recorded = |s: u32| {
        let mut v: Vec<_> = trainer.recorded(row(s), sizes[row(s) as usize]).collect();
        let last_of_submission = (row(s) + 1) % slots == 0 || row(s) + 1 == sizes.len() as u32;
        if last_of_submission || s + 1 == steps {
            v.push((reduce, row(s)));
        }
        v
    };
    // Warm-up: pipelines are built, caches filled.
    gpu.submit_plans(
        "profile.warmup",
        recorded(0).into_iter().chain([(reduce, 0)]),
    )?;
    gpu.wait()?;
    let capture = capture.then(|| Capture::start(gpu));
    let (kernels, gpu_step_us) = if gpu.has_timestamps() {
        let frames = timed_steps(gpu, steps, recorded)?;
        if let Some(path) = trace {
            write_trace(path, &frames)?;
        }
        let all = trainer
            .gather_plan()
            .clone()
            .then(plan(0).clone())
            .then(reduce.clone());
        let (rows, per_step) = kernel_rows(&frames, &all, steps);
        (rows, Some(per_step))
    } else {
        (Vec::new(), None)
    };
    // The same steps as training records them: one pass, back to back. The host's part is the time to record
    // and submit them (the call returns without waiting); the wall clock runs until the GPU is done.
    let start = Instant::now();
    gpu.submit_plans("profile.wall", (0..steps).flat_map(recorded))?;
    let host_step_us = start.elapsed().as_secs_f64() * 1e6 / steps as f64;
    gpu.wait()?;
    let wall_step_us = start.elapsed().as_secs_f64() * 1e6 / steps as f64;
    let dispatches = plan(0).len();
    let captured = capture.map(|c| c.finish(gpu));
    Ok(Profile {
        kernels,
        wall_step_us,
        host_step_us,
        gpu_step_us,
        dispatches,
        per_submission: (reduce.len(), slots),
        per_gather: (trainer.gather_plan().len(), trainer.gathered_ahead()),
        steps,
        captured,
    })
}

/// Runs `steps` steps with one timed compute pass per dispatch (`step(s)` gives the plans step s records, each
/// with its row) and
/// returns the finished frames, one per step.
fn timed_steps<'p>(
    gpu: &crate::gpu::Gpu,
    steps: u32,
    step: impl Fn(u32) -> Vec<(&'p Plan, u32)>,
) -> Result<Vec<GpuTimerQueryResult>> {
    let settings = GpuProfilerSettings {
        max_num_pending_frames: steps as usize + 2,
        ..Default::default()
    };
    let mut profiler = GpuProfiler::new(&gpu.device, settings).map_err(profiler_err)?;
    for s in 0..steps {
        let recorded = step(s);
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("profile.step"),
            });
        {
            let mut scope = profiler.scope(format!("step {s}"), &mut encoder);
            for (plan, row) in recorded {
                for d in plan {
                    let mut pass = scope.scoped_compute_pass(d.label.clone());
                    d.record(&mut pass, row);
                }
            }
        }
        profiler.resolve_queries(&mut encoder);
        gpu.submit("profile", encoder.finish());
        profiler.end_frame().map_err(profiler_err)?;
    }
    gpu.wait()?;
    let period = gpu.queue.get_timestamp_period();
    let mut frames = Vec::new();
    while let Some(mut f) = profiler.process_finished_frame(period) {
        frames.append(&mut f);
    }
    Ok(frames)
}

fn write_trace(path: &Path, frames: &[GpuTimerQueryResult]) -> Result<()> {
    wgpu_profiler::chrometrace::write_chrometrace(path, frames).map_err(|e| Error::Io {
        what: format!("writing the trace {}", path.display()),
        message: e.to_string(),
    })
}

/// Per-kernel rows from the frames of `steps` steps, largest share first, and the summed kernel time per step.
/// Each kernel's work per call comes from `plan`'s dispatches.
fn kernel_rows(frames: &[GpuTimerQueryResult], plan: &Plan, steps: u32) -> (Vec<KernelRow>, f64) {
    let mut times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for step in frames {
        for k in &step.nested_queries {
            if let Some(t) = &k.time {
                let us = (t.end - t.start) * 1e6;
                times.entry(k.label.clone()).or_default().push(us);
            }
        }
    }
    let work: BTreeMap<&str, (f64, f64)> = plan
        .iter()
        .map(|d| (d.label.as_str(), (d.flops, d.bytes)))
        .collect();
    let per_step: f64 = times.values().flatten().sum::<f64>() / steps as f64;
    let mut rows: Vec<KernelRow> = times
        .into_iter()
        .map(|(label, mut v)| {
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let calls = v.len();
            let med = median(&mut v);
            // Labels that occur several times per step (none today) would share one work figure.
            let (flops, bytes) = work.get(label.as_str()).copied().unwrap_or_default();
            KernelRow {
                share: mean * (calls as f64 / steps as f64) / per_step,
                gflops: flops / (med * 1e-6) / 1e9,
                gbps: bytes / (med * 1e-6) / 1e9,
                label,
                calls,
                mean_us: mean,
                median_us: med,
            }
        })
        .collect();
    rows.sort_by(|a, b| b.share.total_cmp(&a.share));
    (rows, per_step)
}
