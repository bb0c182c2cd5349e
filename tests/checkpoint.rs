//! Checkpoint files: PyTorch's names and shapes, a faithful round trip, and clear refusals.

use std::path::Path;

use vae_wgpu::model::ModelConfig;
use vae_wgpu::training::checkpoint::Checkpoint;
use vae_wgpu::training::settings::Settings;

fn sample(latent: u32) -> Checkpoint {
    let model = ModelConfig::new(784, 400, latent).unwrap();
    let params = model.init(3);
    let n = params.len();
    Checkpoint {
        model,
        m: (0..n).map(|i| i as f32 * 1e-6).collect(),
        v: (0..n).map(|i| (i % 97) as f32 * 1e-9).collect(),
        params,
        step: 938,
        epoch: 2,
        epoch_step: 17,
        partial: vae_wgpu::training::plans::LossSum {
            bce: 1234.5678901234567,
            kl: 0.1,
            examples: 2176,
        },
        partial_seconds: 1.5,
        settings: Settings {
            latent,
            seed: 3,
            lr: 3e-4,
            train_samples: Some(2048),
            ..Settings::DEFAULT
        },
        image: Some((28, 28)),
        metrics: "epoch,train_loss\n1,200.5\n".into(),
        kernels: [(
            "NT 128x400x784 BiasRelu".to_string(),
            "split4x4k".to_string(),
        )]
        .into(),
    }
}

#[test]
fn names_and_shapes_are_pytorchs() {
    let bytes = sample(20).to_bytes().unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let want: [(&str, &[usize]); 10] = [
        ("fc1.weight", &[400, 784]),
        ("fc1.bias", &[400]),
        ("fc21.weight", &[20, 400]),
        ("fc21.bias", &[20]),
        ("fc22.weight", &[20, 400]),
        ("fc22.bias", &[20]),
        ("fc3.weight", &[400, 20]),
        ("fc3.bias", &[400]),
        ("fc4.weight", &[784, 400]),
        ("fc4.bias", &[784]),
    ];
    for (name, shape) in want {
        let t = st.tensor(name).unwrap();
        assert_eq!(
            (t.dtype(), t.shape()),
            (safetensors::Dtype::F32, shape),
            "{name}"
        );
    }
    // Model tensors plus two Adam moments each, nothing else.
    assert_eq!(st.names().len(), 30);
    // fc22.bias is the second half of the stacked heads' bias, i.e. log σ²'s.
    let c = sample(20);
    let l = c.model.layout();
    let got: Vec<f32> = st
        .tensor("fc22.bias")
        .unwrap()
        .data()
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(got, c.params[l.heads.bias() + 20..l.heads.bias() + 40]);
}

#[test]
fn round_trip_is_exact() {
    let c = sample(2);
    let back = Checkpoint::from_bytes(Path::new("x"), &c.to_bytes().unwrap()).unwrap();
    assert_eq!(back, c);
}

#[test]
fn truncated_or_foreign_files_are_refused_clearly() {
    let bytes = sample(2).to_bytes().unwrap();
    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        let e = Checkpoint::from_bytes(Path::new("ck.safetensors"), &bytes[..cut])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ck.safetensors") && e.contains("not a readable safetensors file"),
            "cut {cut}: {e}"
        );
    }
    let e = Checkpoint::from_bytes(Path::new("x.png"), b"\x89PNG\r\n\x1a\n....")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a readable safetensors file"), "{e}");
    // A safetensors file that is not ours.
    let t =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0u8; 4]).unwrap();
    let foreign = safetensors::serialize([("w", t)], None).unwrap();
    let e = Checkpoint::from_bytes(Path::new("f"), &foreign)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a vae-wgpu checkpoint"), "{e}");
}

#[test]
fn metadata_is_checked_once_on_load() {
    let c = sample(2);
    let meta_without = |keys: &[&str]| {
        let bytes = c.to_bytes().unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        for k in keys {
            meta.remove(*k);
        }
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        safetensors::serialize(st.tensors(), Some(meta)).unwrap()
    };
    // A setting every tool needs, missing: refused, naming the key.
    let e = Checkpoint::from_bytes(Path::new("ck"), &meta_without(&["batch_size"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"batch_size\" is missing"), "{e}");
    // A checkpoint from before the image shape was recorded loads, without one; half a shape is refused.
    let old = Checkpoint::from_bytes(Path::new("ck"), &meta_without(&["rows", "cols"])).unwrap();
    assert_eq!((old.image, &old.settings), (None, &c.settings));
    let e = Checkpoint::from_bytes(Path::new("ck"), &meta_without(&["rows"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"rows\""), "{e}");
}
