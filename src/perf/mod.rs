//! Measuring speed: benchmarks (each kernel checked against its CPU reference before it is timed) and the
//! per-kernel profile of training steps.

pub mod bench;
pub mod capture;
pub mod profile;
