use vae_wgpu::kernels::StepParams;
use vae_wgpu::kernels::WG;
use vae_wgpu::kernels::accuracy::{strided_tree_additions, sum_error};
use vae_wgpu::kernels::reduce::{PartialsLayout, reduce, reduce_cpu};

use crate::{gpu, poisoned, read, rng, run, step_table, uniform_vec};

#[test]
fn reduce_terms_into_their_step_slot() {
    crate::both_reductions(|| {
        let gpu = gpu();
        let stride = 256usize;
        let counts = [1u32, 256, 37];
        let mut r = rng(5);
        let partials = uniform_vec(&mut r, 3 * stride, -1000.0, 1000.0);
        let pb = gpu.storage_init("partials", &partials).unwrap();
        let slots = 4;
        let log = poisoned(slots * counts.len());
        let rows: Vec<StepParams> = (0..slots as u32)
            .map(|s| StepParams {
                loss_slot: s,
                ..Default::default()
            })
            .collect();
        let table = step_table(&rows);
        let at = PartialsLayout {
            slots: 1,
            slot_stride: 0,
            stride: stride as u32,
            counts: &counts,
            models: 1,
        };
        let d = reduce(gpu, "reduce", &pb, at, &log, &table).unwrap();
        run(&[&d], 2);
        let got = read(&log, 0, slots * counts.len());
        let want = reduce_cpu(&partials, stride, &counts);
        for (t, w) in want.iter().enumerate() {
            let g = got[2 * counts.len() + t] as f64;
            // One workgroup strides over the term's partials, then sums a tree: WGSL's bound for that shape.
            let mag: f64 = partials[t * stride..t * stride + counts[t] as usize]
                .iter()
                .map(|v| v.abs() as f64)
                .sum();
            let additions = strided_tree_additions(counts[t] as u64, WG as u64, WG);
            let tol = sum_error(additions, mag);
            assert!((g - w).abs() <= tol, "term {t}: {g} want {w} (tol {tol:e})");
        }
        // Only row 2 of the log was written.
        for (i, v) in got.iter().enumerate() {
            if i / counts.len() != 2 {
                assert!(v.is_nan(), "log[{i}] written: {v}");
            }
        }
    });
}

/// One slot of partials: each term's `counts[t]` partials `stride` apart.
fn one_slot(stride: u32, counts: &[u32]) -> PartialsLayout<'_> {
    PartialsLayout {
        slots: 1,
        slot_stride: 0,
        stride,
        counts,
        models: 1,
    }
}

/// A submission of three steps ending at loss row 6 (its last step's row: partial_slot 2, loss_slot 6) in a
/// workspace of four slots: slots 0..=2 go to loss rows 4..=6, slot 3 (no step of this submission; stale
/// partials) nowhere, and no other row of the log is written.
#[test]
fn reduce_every_slot_of_a_submission_into_its_steps_rows() {
    crate::both_reductions(|| {
        let gpu = gpu();
        let (stride, slot_stride, slots) = (40usize, 100usize, 4usize);
        let counts = [33u32, 7];
        let mut r = rng(9);
        let partials = uniform_vec(&mut r, slots * slot_stride, -10.0, 10.0);
        let pb = gpu.storage_init("partials", &partials).unwrap();
        let log = poisoned(8 * counts.len());
        let table = step_table(&[StepParams {
            loss_slot: 6,
            partial_slot: 2,
            ..Default::default()
        }]);
        let at = PartialsLayout {
            slots: slots as u32,
            slot_stride: slot_stride as u32,
            stride: stride as u32,
            counts: &counts,
            models: 1,
        };
        run(&[&reduce(gpu, "reduce", &pb, at, &log, &table).unwrap()], 0);
        let got = read(&log, 0, 8 * counts.len());
        for row in 0..8 {
            for t in 0..counts.len() {
                let g = got[row * counts.len() + t];
                if !(4..=6).contains(&row) {
                    assert!(g.is_nan(), "loss row {row} term {t} written: {g}");
                    continue;
                }
                let slot = row - 4;
                let own = &partials[slot * slot_stride..][t * stride..][..counts[t] as usize];
                let want = reduce_cpu(own, 0, &[counts[t]])[0];
                let mag: f64 = own.iter().map(|v| v.abs() as f64).sum();
                let tol = sum_error(strided_tree_additions(counts[t] as u64, WG as u64, WG), mag);
                assert!(
                    (g as f64 - want).abs() <= tol,
                    "row {row} term {t}: {g} want {want} (tol {tol:e})"
                );
            }
        }
    });
}

#[test]
fn reduce_known_values() {
    crate::both_reductions(|| {
        let gpu = gpu();
        // Term 0: 256 ones; term 1: 1..=100 (5050), both exact in f32.
        let mut partials = vec![1f32; 512];
        for (i, p) in partials[256..].iter_mut().enumerate() {
            *p = if i < 100 { i as f32 + 1.0 } else { f32::NAN };
        }
        let pb = gpu.storage_init("partials", &partials).unwrap();
        let log = poisoned(2);
        let table = step_table(&[StepParams::default()]);
        run(
            &[&reduce(gpu, "reduce", &pb, one_slot(256, &[256, 100]), &log, &table).unwrap()],
            0,
        );
        // The NaNs past term 1's count must not be read.
        assert_eq!(read(&log, 0, 2), vec![256.0, 5050.0]);
    });
}

#[test]
fn reduce_more_partials_than_invocations() {
    crate::both_reductions(|| {
        // 1..=1000 in one term: each invocation strides over several partials. 500,500 is exact in f32.
        let gpu = gpu();
        let partials: Vec<f32> = (1..=1000).map(|i| i as f32).collect();
        let pb = gpu.storage_init("partials", &partials).unwrap();
        let log = poisoned(1);
        let table = step_table(&[StepParams::default()]);
        run(
            &[&reduce(gpu, "reduce", &pb, one_slot(1000, &[1000]), &log, &table).unwrap()],
            0,
        );
        assert_eq!(read(&log, 0, 1), vec![500_500.0]);
    });
}
