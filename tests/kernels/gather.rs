use vae_wgpu::kernels::StepParams;
use vae_wgpu::kernels::gather::{
    Batches, Binarize, ByteMatrix, gather, gather_batches, gather_binarized_cpu, gather_cpu,
};

use crate::{gpu, poisoned, read, rng, run, step_table};

fn check(data_rows: u32, cols: u32, rows: u32, batch_offset: u32) {
    let gpu = gpu();
    let mut r = rng(data_rows as u64 * 1000 + cols as u64);
    let bytes: Vec<u8> = (0..data_rows * cols).map(|_| r.below(256) as u8).collect();
    let index = r.permutation(data_rows);
    let data = ByteMatrix::upload(gpu, "data", &bytes, cols).unwrap();
    let index_buf = gpu.storage_init("index", &index).unwrap();
    let x = poisoned((rows * cols) as usize + 7);
    let step = step_table(&[
        StepParams::default(),
        StepParams {
            batch_offset,
            ..Default::default()
        },
    ]);
    let d = gather(gpu, "gather", &data, &index_buf, &x, rows, &step, None).unwrap();
    run(&[&d], 1);
    let got = read(&x, 0, (rows * cols) as usize);
    let want = gather_cpu(
        &bytes,
        cols as usize,
        &index,
        batch_offset as usize,
        rows as usize,
    );
    // Exact on every conformant driver: the kernel computes byte / 255 correctly rounded from integer arithmetic
    // (`byte_to_unit` in shaders/gather.wgsl), not with an f32 division (which WGSL allows 2.5 ULP, and which
    // SwiftShader and NVIDIA round differently from lavapipe), and `gather_cpu` is that same correctly rounded
    // value (proved for all 256 bytes by the unit test in src/kernels/gather.rs).
    assert_eq!(
        got, want,
        "gather {data_rows}×{cols}, {rows} rows from {batch_offset}"
    );
    // Nothing past the batch was written.
    assert!(
        read(&x, (rows * cols) as usize, 7)
            .iter()
            .all(|v| v.is_nan())
    );
}

#[test]
fn gather_single_row() {
    check(5, 784, 1, 3);
}

#[test]
fn gather_rows_not_word_aligned() {
    // 29-byte rows start mid-word; 13 rows of 377 elements do not fill the last workgroup.
    check(37, 29, 13, 20);
}

#[test]
fn gather_real_batch() {
    check(1000, 784, 128, 872);
}

#[test]
fn gather_known_values() {
    let gpu = gpu();
    // Two rows of three bytes; the index picks row 1 then row 0.
    let data = ByteMatrix::upload(gpu, "data", &[0, 255, 51, 1, 2, 3], 3).unwrap();
    let index = gpu.storage_init("index", &[1u32, 0, 2]).unwrap();
    let x = poisoned(9);
    let step = step_table(&[StepParams::default()]);
    run(
        &[&gather(gpu, "gather", &data, &index, &x, 3, &step, None).unwrap()],
        0,
    );
    let got = read(&x, 0, 9);
    // Exact: the f32 nearest to each byte / 255, as Rust's correctly rounded division gives it (see `check`).
    assert_eq!(
        &got[..6],
        &[1.0 / 255.0, 2.0 / 255.0, 3.0 / 255.0, 0.0, 1.0, 0.2]
    );
    // Index 2 is one past the dataset's last row: the row is NaN, never some other row's data.
    assert!(got[6..].iter().all(|v| v.is_nan()), "{got:?}");
}

#[test]
fn gather_binarized_matches_cpu() {
    let gpu = gpu();
    let (data_rows, cols, rows, batch_offset, rng_step) = (300u32, 784u32, 77u32, 123u32, 42u32);
    let mut r = rng(77);
    let bytes: Vec<u8> = (0..data_rows * cols).map(|_| r.below(256) as u8).collect();
    let index = r.permutation(data_rows);
    let data = ByteMatrix::upload(gpu, "data", &bytes, cols).unwrap();
    let index_buf = gpu.storage_init("index", &index).unwrap();
    let x = poisoned((rows * cols) as usize);
    let step = step_table(&[StepParams {
        batch_offset,
        rng_step,
        ..Default::default()
    }]);
    let b = Binarize { seed: 9, stream: 5 };
    run(
        &[&gather(
            gpu,
            "gather.binarize",
            &data,
            &index_buf,
            &x,
            rows,
            &step,
            Some(b),
        )
        .unwrap()],
        0,
    );
    let got = read(&x, 0, (rows * cols) as usize);
    let want = gather_binarized_cpu(
        &bytes,
        cols as usize,
        &index,
        batch_offset as usize,
        rows as usize,
        b,
        rng_step,
    );
    assert!(
        got.iter().all(|&v| v == 0.0 || v == 1.0),
        "binarized values must be 0 or 1"
    );
    // Exact: the uniforms are bit-identical (exact integer and power-of-two arithmetic, see shaders/philox.wgsl)
    // and so is byte / 255 (see `check`), so every comparison u < byte / 255 comes out the same on every driver.
    let flips = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(
        flips,
        0,
        "{flips} of {} elements differ from the CPU",
        got.len()
    );
    // Bytes 0 and 255 are never flipped; the mean tracks the grey level.
    let mean_x: f64 = want.iter().map(|&v| v as f64).sum::<f64>() / want.len() as f64;
    let mean_p: f64 = gather_cpu(
        &bytes,
        cols as usize,
        &index,
        batch_offset as usize,
        rows as usize,
    )
    .iter()
    .map(|&v| v as f64)
    .sum::<f64>()
        / want.len() as f64;
    assert!(
        (mean_x - mean_p).abs() < 0.01,
        "binarized mean {mean_x} vs grey mean {mean_p}"
    );
}

#[test]
fn gather_more_than_65535_workgroups() {
    // 22,000 rows of 784 = 17.2 M elements: past 65,535 workgroups of 256 the grid needs its second dimension,
    // and a wrong flat index there leaves the tail unwritten (gather rewrites equal values, so only a large
    // enough tail shows it).
    let gpu = gpu();
    let (data_rows, cols, rows) = (10u32, 784u32, 22_000u32);
    let mut r = rng(1);
    let bytes: Vec<u8> = (0..data_rows * cols).map(|_| r.below(256) as u8).collect();
    let index: Vec<u32> = (0..rows).map(|i| (i * 7) % data_rows).collect();
    let data = ByteMatrix::upload(gpu, "data", &bytes, cols).unwrap();
    let ib = gpu.storage_init("index", &index).unwrap();
    let n = (rows * cols) as usize;
    let x = poisoned(n + 7);
    let step = step_table(&[StepParams::default()]);
    run(
        &[&gather(gpu, "gather.large", &data, &ib, &x, rows, &step, None).unwrap()],
        0,
    );
    let want = gather_cpu(&bytes, cols as usize, &index, 0, rows as usize);
    // Exact, as in `check`.
    crate::assert_close("gather 22000×784", &read(&x, 0, n), &want, 0.0, 0.0);
    assert!(
        read(&x, n, 7).iter().all(|v| v.is_nan()),
        "wrote past the batch"
    );
}

/// The batches of several steps in one dispatch, as the trainer gathers ahead: batch g is that of the step g
/// steps after the recorded row (index list from `batch_offset + g · rows`, binarized with `rng_step + g`), at
/// `g · stride`; the index list ends inside the last batch, whose rows past it stay unwritten, as do the gaps
/// between batches.
fn check_batches(binarize: Option<Binarize>) {
    let gpu = gpu();
    let (data_rows, cols, rows, steps) = (200u32, 29u32, 13u32, 4u32);
    let (index_len, batch_offset, rng_step) = (150u32, 110u32, 7u32);
    let stride = (rows * cols).next_multiple_of(64);
    let mut r = rng(4);
    let bytes: Vec<u8> = (0..data_rows * cols).map(|_| r.below(256) as u8).collect();
    let index: Vec<u32> = r.permutation(data_rows)[..index_len as usize].to_vec();
    let data = ByteMatrix::upload(gpu, "data", &bytes, cols).unwrap();
    let index_buf = gpu.storage_init("index", &index).unwrap();
    let len = (steps * stride) as usize;
    let x = poisoned(len + 7);
    let step = step_table(&[
        StepParams::default(),
        StepParams {
            batch_offset,
            rng_step,
            ..Default::default()
        },
    ]);
    let at = Batches {
        rows,
        steps,
        stride,
    };
    let d = gather_batches(
        gpu,
        "gather.ahead",
        &data,
        &index_buf,
        &x,
        at,
        &step,
        binarize,
    );
    run(&[&d.unwrap()], 1);
    let got = read(&x, 0, len + 7);
    for g in 0..steps {
        let first = batch_offset + g * rows;
        // Rows of this batch before the index list ends (the last batch has one).
        let have = rows.min(index_len.saturating_sub(first));
        let args = (
            &bytes[..],
            cols as usize,
            &index[..],
            first as usize,
            have as usize,
        );
        let want = match binarize {
            None => gather_cpu(args.0, args.1, args.2, args.3, args.4),
            Some(b) => {
                gather_binarized_cpu(args.0, args.1, args.2, args.3, args.4, b, rng_step + g)
            }
        };
        let start = (g * stride) as usize;
        // Exact, as in `check` and `gather_binarized_matches_cpu`.
        assert_eq!(
            &got[start..start + want.len()],
            &want[..],
            "batch {g} ({binarize:?})"
        );
        let unwritten = &got[start + want.len()..start + stride as usize];
        assert!(
            unwritten.iter().all(|v| v.is_nan()),
            "batch {g}: wrote past its {have} rows"
        );
    }
    assert!(
        got[len..].iter().all(|v| v.is_nan()),
        "wrote past the batches"
    );
}

#[test]
fn gather_batches_of_several_steps() {
    check_batches(None);
    check_batches(Some(Binarize { seed: 3, stream: 8 }));
}

/// Batches that overlap, no batches, or an output too small for the last one: an error naming the problem, no
/// dispatch.
#[test]
fn gather_batches_rejects_bad_layouts() {
    let gpu = gpu();
    let data = ByteMatrix::upload(gpu, "data", &[0u8; 40], 10).unwrap();
    let index = gpu.storage_init("index", &[0u32, 1, 2, 3]).unwrap();
    let x = poisoned(64);
    let step = step_table(&[StepParams::default()]);
    let bad = [
        (
            Batches {
                rows: 2,
                steps: 0,
                stride: 20,
            },
            "0 batches",
        ),
        (
            Batches {
                rows: 2,
                steps: 2,
                stride: 19,
            },
            "19 elements apart",
        ),
        (
            Batches {
                rows: 2,
                steps: 4,
                stride: 20,
            },
            "needs elements 60..80",
        ),
    ];
    for (at, want) in bad {
        let e = gather_batches(gpu, "gather.bad", &data, &index, &x, at, &step, None)
            .err()
            .unwrap_or_else(|| panic!("{at:?} was accepted"))
            .to_string();
        assert!(e.contains(want), "{at:?}: {e}");
    }
}
