//! Property tests: arbitrary and mutated bytes never panic the IDX or checkpoint parsers; they parse or fail with
//! an error naming the file. (Deterministic: Philox-driven mutations of valid files and random bytes.)

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
fn idx_parser_never_panics() {
    let mut r = Philox::new(1, stream::TEST_INPUT);
    let images = idx(&[3, 4, 5], &(0..60).collect::<Vec<u8>>());
    let labels = idx(&[3], &[1, 2, 3]);
    let dir = std::env::temp_dir().join(format!("vae-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut parsed = 0;
    for case in 0..4000 {
        let base = match case % 4 {
            0 => images.clone(),
            1 => labels.clone(),
            2 => gz(&images),
            _ => (0..r.below(64)).map(|_| r.below(256) as u8).collect(),
        };
        let bytes = if case % 7 == 0 {
            base
        } else {
            mutate(&mut r, &base)
        };
        let ndims = if case % 2 == 0 { 3 } else { 1 };
        let path = dir.join(if case % 3 == 0 { "x.gz" } else { "x" });
        std::fs::write(&path, &bytes).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            read_maybe_gz(&path).and_then(|raw| parse_idx(&path, &raw, ndims).map(|_| ()))
        }));
        match outcome {
            Err(_) => panic!("case {case}: the IDX parser panicked on {bytes:02x?}"),
            Ok(Ok(())) => parsed += 1,
            Ok(Err(e)) => assert!(
                e.to_string().contains("x"),
                "case {case}: the error does not name the file: {e}"
            ),
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    // The valid inputs among them parse, so the property is not vacuous.
    assert!(parsed > 100, "only {parsed} cases parsed");
}

#[test]
fn checkpoint_parser_never_panics() {
    let model = ModelConfig::new(16, 5, 2).unwrap();
    let valid = common::checkpoint(model, 1).to_bytes().unwrap();
    let mut r = Philox::new(2, stream::TEST_INPUT);
    let mut ok = 0;
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
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => assert!(e.to_string().contains("ck.safetensors"), "case {case}: {e}"),
        }
    }
    // Some mutations only touch tensor data: those still load.
    assert!(ok > 0);
}
