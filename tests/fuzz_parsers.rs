//! Property tests: arbitrary and mutated bytes never panic the IDX or checkpoint parsers; they fail with an error
//! that starts with the file's full path, or parse into something consistent (the data's length is the product of
//! the dimensions; every tensor has the model's length), and unmutated files parse back to what was written.
//! (Deterministic: Philox-driven mutations of valid files and random bytes.)

mod common;
use common::gz;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use vae_wgpu::data::mnist::{parse_idx, read_maybe_gz};
use vae_wgpu::kernels::philox::{Philox, stream};
use vae_wgpu::model::ModelConfig;
use vae_wgpu::training::checkpoint::Checkpoint;

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// A mutation of `base`: flipped bits, overwritten bytes, truncation, extension or a spliced header.
fn mutate(r: &mut Philox, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + r.below(4) {
        match r.below(5) {
            0 if !v.is_empty() => {
                let i = r.below(v.len() as u32) as usize;
                v[i] ^= 1 << r.below(8);
            }
            1 if !v.is_empty() => {
                let i = r.below(v.len().min(16) as u32) as usize;
                v[i] = r.below(256) as u8;
            }
            2 => v.truncate(r.below(v.len() as u32 + 1) as usize),
            3 => v.extend((0..r.below(9)).map(|_| r.below(256) as u8)),
            _ => {
                let n = r.below(12) as usize;
                for b in v.iter_mut().take(n) {
                    *b = r.below(256) as u8;
                }
            }
        }
    }
    v
}

#[test]
fn idx_parser_never_panics_and_its_answers_are_right() {
    let mut r = Philox::new(1, stream::TEST_INPUT);
    let image_data: Vec<u8> = (0..60).collect();
    let images = idx(&[3, 4, 5], &image_data);
    let labels = idx(&[3], &[1, 2, 3]);
    let dir = std::env::temp_dir().join(format!("vae-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut unmutated, mut mutated_parsed) = (0, 0);
    for case in 0..4000 {
        let base = match case % 4 {
            0 => images.clone(),
            1 => labels.clone(),
            2 => gz(&images),
            _ => (0..r.below(64)).map(|_| r.below(256) as u8).collect(),
        };
        let pristine = case % 7 == 0 && case % 4 != 3;
        let bytes = if case % 7 == 0 {
            base
        } else {
            mutate(&mut r, &base)
        };
        let ndims = if case % 2 == 0 { 3 } else { 1 };
        let path = dir.join(if case % 3 == 0 { "x.gz" } else { "x" });
        std::fs::write(&path, &bytes).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            read_maybe_gz(&path).and_then(|raw| parse_idx(&path, &raw, ndims))
        }));
        match outcome {
            Err(_) => panic!("case {case}: the IDX parser panicked on {bytes:02x?}"),
            Ok(Ok((dims, data))) => {
                // A successful parse describes its data exactly.
                assert_eq!(dims.len(), ndims, "case {case}");
                assert_eq!(
                    dims.iter().product::<usize>(),
                    data.len(),
                    "case {case}: {dims:?}"
                );
                if pristine {
                    // Unmutated files (of the right rank) parse back to what was written.
                    let want: (Vec<usize>, &[u8]) = match case % 4 {
                        1 => (vec![3], &[1, 2, 3]),
                        _ => (vec![3, 4, 5], &image_data),
                    };
                    assert_eq!((dims, data.as_slice()), (want.0, want.1), "case {case}");
                    unmutated += 1;
                } else {
                    mutated_parsed += 1;
                }
            }
            Ok(Err(e)) => {
                let e = e.to_string();
                let name = path.display().to_string();
                assert!(
                    e.starts_with(&name),
                    "case {case}: the error does not name {name}: {e}"
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    // Mutated inputs that still parse (data bytes flipped, a gzip name on plain data...) are checked above too:
    // the property is exercised beyond the pristine files.
    assert!(unmutated > 50, "only {unmutated} pristine files parsed");
    assert!(
        mutated_parsed > 50,
        "only {mutated_parsed} mutated inputs parsed"
    );
}

#[test]
fn checkpoint_parser_never_panics_and_its_answers_are_right() {
    let model = ModelConfig::new(16, 5, 2).unwrap();
    let original = common::checkpoint(model, 1);
    let valid = original.to_bytes().unwrap();
    // The unmutated file parses back to the original.
    let back = Checkpoint::from_bytes(Path::new("ck.safetensors"), &valid).unwrap();
    assert_eq!(back, original);
    let mut r = Philox::new(2, stream::TEST_INPUT);
    let mut mutated_parsed = 0;
    for case in 0..3000 {
        let bytes = match case % 5 {
            4 => (0..r.below(200)).map(|_| r.below(256) as u8).collect(),
            _ => mutate(&mut r, &valid),
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            Checkpoint::from_bytes(Path::new("ck.safetensors"), &bytes)
        }));
        match outcome {
            Err(_) => panic!("case {case}: the checkpoint parser panicked"),
            Ok(Ok(c)) => {
                // Whatever loads is a whole model: every tensor the layout's length.
                let n = c.model.layout().len;
                assert_eq!(
                    (c.params.len(), c.m.len(), c.v.len()),
                    (n, n, n),
                    "case {case}"
                );
                if bytes != valid {
                    mutated_parsed += 1;
                }
            }
            Ok(Err(e)) => {
                let e = e.to_string();
                assert!(e.starts_with("ck.safetensors: "), "case {case}: {e}");
            }
        }
    }
    // Mutations that only touch tensor data or the end of the file still load (and were checked above).
    assert!(mutated_parsed > 0, "no mutated checkpoint parsed");
}
