//! The browser's module: vae-wgpu's own trainer, model, kernels and evaluation (the library in `src/`, the
//! same code `vae train` runs) on the browser's WebGPU, exported to JavaScript through wasm-bindgen for the Train
//! view of `vae web` (`web/train.js`). `scripts/build-web` builds it into `target/web/`.
//!
//! This file only translates: JavaScript's calls become the library's, and the library's answers become typed
//! arrays. What differs from the native program is when the host waits: never here. Steps are submitted without
//! waiting ([`Trainer::submit_some`]) and their losses come back through the event loop
//! ([`Trainer::log_async`]); the page decides how many steps go in each animation frame.
//!
//! Several models can train together in one batched step (the sweep's, `vae sweep`): model 0 follows the page's
//! sliders, the others are the β row. Each computes what it would alone.
#![cfg(target_arch = "wasm32")]
// A call that awaits the GPU holds the session's state for its whole length, on purpose: another call meanwhile
// fails with "the session is busy" (a `try_borrow`) instead of seeing an epoch half logged.
#![allow(clippy::await_holding_refcell_ref)]

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use js_sys::{Float32Array, Object, Reflect, Uint8Array};
use serde_json::Value;
use wasm_bindgen::prelude::*;

use vae_wgpu::data::mnist::{self, Split};
use vae_wgpu::error::Error;
use vae_wgpu::kernels::contract::TERMS;
use vae_wgpu::kernels::gather::ByteMatrix;
use vae_wgpu::model::ModelConfig;
use vae_wgpu::model::inference::Inference;
use vae_wgpu::model::net::Net;
use vae_wgpu::training::checkpoint::Checkpoint;
use vae_wgpu::training::eval::{EvalConfig, Evaluator};
use vae_wgpu::training::plans::LossSum;
use vae_wgpu::training::settings::Settings;
use vae_wgpu::training::trainer::{ModelRun, Stepping, TrainConfig, Trainer};
use vae_wgpu::{Gpu, GpuOptions};

/// The library's error as JavaScript sees it: its message (which names the problem and the fix).
fn js(e: Error) -> JsValue {
    JsValue::from(js_sys::Error::new(&e.to_string()))
}

fn invalid(message: impl Into<String>) -> JsValue {
    js(Error::Invalid(message.into()))
}

/// Sets `key` of `object` (a plain object the page reads).
fn set(object: &Object, key: &str, value: impl Into<JsValue>) {
    Reflect::set(object, &JsValue::from_str(key), &value.into())
        .expect("setting a plain object's key");
}

/// The per-image loss, BCE and KL of `sum`.
fn per_image(sum: &LossSum) -> Float32Array {
    let n = sum.examples.max(1) as f64;
    Float32Array::from(
        &[
            (sum.loss() / n) as f32,
            (sum.bce / n) as f32,
            (sum.kl / n) as f32,
        ][..],
    )
}

/// What the page asks for, from its JSON (every key optional; the defaults are `vae train`'s).
struct Options {
    settings: Settings,
    /// The β row: models trained beside model 0, each with its own β (and model 0's other settings).
    row: Vec<f32>,
    log_interval: u32,
}

impl Options {
    fn parse(json: &str) -> Result<Options, JsValue> {
        let v: Value = serde_json::from_str(json)
            .map_err(|e| invalid(format!("the options are not JSON: {e}")))?;
        let d = Settings::DEFAULT;
        let num = |key: &str, default: f64| -> Result<f64, JsValue> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| invalid(format!("option {key}: {x} is not a number"))),
            }
        };
        let count = |key: &str, default: u32| -> Result<u32, JsValue> {
            let x = num(key, default as f64)?;
            if x < 1.0 || x.fract() != 0.0 || x > u32::MAX as f64 {
                return Err(invalid(format!(
                    "option {key}: {x} must be a whole number, at least 1"
                )));
            }
            Ok(x as u32)
        };
        let seed = num("seed", d.seed as f64)? as u64;
        let settings = Settings {
            batch_size: count("batch", 128)?,
            latent: count("latent", d.latent)?,
            hidden: count("hidden", d.hidden)?,
            lr: num("lr", d.lr as f64)? as f32,
            seed,
            data_seed: v.get("dataSeed").and_then(Value::as_u64),
            beta: num("beta", d.beta as f64)? as f32,
            kl_warmup: num("klWarmup", d.kl_warmup as f64)? as f32,
            binarize: v.get("binarize").and_then(Value::as_bool).unwrap_or(false),
            train_samples: None,
            test_samples: None,
        };
        let row = match v.get("row") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|b| {
                    b.as_f64()
                        .map(|b| b as f32)
                        .ok_or_else(|| invalid(format!("option row: {b} is not a β")))
                })
                .collect::<Result<_, _>>()?,
            Some(x) => {
                return Err(invalid(format!(
                    "option row: {x} is not a list of β values"
                )));
            }
        };
        Ok(Options {
            settings,
            row,
            log_interval: count("logInterval", 8)?,
        })
    }

    fn runs(&self) -> Vec<ModelRun> {
        let s = &self.settings;
        let first = ModelRun {
            seed: s.seed,
            beta: s.beta,
            kl_warmup: s.kl_warmup,
            lr: s.lr,
            binarize: s.binarize,
        };
        std::iter::once(first)
            .chain(self.row.iter().map(|&beta| ModelRun { beta, ..first }))
            .collect()
    }
}

/// The pictures of one model: its parameters copied (on the GPU) into a single-model network, with the test
/// subset's evaluation, reconstructions and prior samples ([`Evaluator`]) and its latent means ([`Inference`]).
struct Pictures {
    inference: &'static Inference<'static>,
    eval: Evaluator<'static>,
    test: ByteMatrix,
    indices: Vec<u32>,
}

struct State {
    gpu: &'static Gpu,
    net: &'static Net,
    options: Options,
    train: Split,
    test: Split,
    trainer: Trainer<'static>,
    stepping: Option<Stepping>,
    /// Epochs completed since the last restart, and each one's training loss per model (metrics.csv).
    epochs: Vec<Vec<LossSum>>,
    pictures: Pictures,
}

thread_local! {
    /// The browser's device, opened once per page: networks and pictures hold it for the page's life.
    static GPU: RefCell<Option<&'static Gpu>> = const { RefCell::new(None) };
}

async fn gpu() -> Result<&'static Gpu, JsValue> {
    if let Some(gpu) = GPU.with(|g| *g.borrow()) {
        return Ok(gpu);
    }
    let gpu: &'static Gpu = Box::leak(Box::new(
        Gpu::new_async(GpuOptions::default()).await.map_err(js)?,
    ));
    GPU.with(|g| *g.borrow_mut() = Some(gpu));
    Ok(gpu)
}

fn split(name: &str, images: &[u8], labels: &[u8]) -> Result<Split, JsValue> {
    let (i, l) = (format!("{name}-images.idx"), format!("{name}-labels.idx"));
    mnist::split_from_bytes((Path::new(&i), images), (Path::new(&l), labels)).map_err(js)
}

/// Every model's initial parameters, from its seed (as `vae train --seed` draws them).
fn initial(config: ModelConfig, runs: &[ModelRun]) -> Vec<Vec<f32>> {
    runs.iter().map(|r| config.init(r.seed)).collect()
}

fn trainer(
    gpu: &'static Gpu,
    net: &'static Net,
    o: &Options,
    train: &Split,
) -> Result<Trainer<'static>, JsValue> {
    let config = TrainConfig::new(net.config, &o.settings, o.log_interval);
    Trainer::batched(gpu, net, config, o.runs(), train).map_err(js)
}

fn busy() -> JsValue {
    invalid("the session is busy: await the previous call first")
}

/// The state, for a call about model `k` (which must be one of its models).
fn model_state(state: &Rc<RefCell<State>>, k: u32) -> Result<std::cell::Ref<'_, State>, JsValue> {
    let st = state.try_borrow().map_err(|_| busy())?;
    if k >= st.net.models {
        return Err(invalid(format!("model {k} of {}", st.net.models)));
    }
    Ok(st)
}

/// A training session in the page: one network of one or more models, trained a few steps at a time.
#[wasm_bindgen]
pub struct Session(Rc<RefCell<State>>);

/// Opens the GPU and builds a session: the training and test subsets come as the bytes of their IDX files (what
/// `vae web` serves), the options as JSON (`hidden`, `latent`, `batch`, `lr`, `beta`, `klWarmup`, `seed`,
/// `dataSeed`, `binarize`, `logInterval`, and `row`, the β values of the models beside model 0).
#[wasm_bindgen]
pub async fn start(
    options: String,
    train_images: Vec<u8>,
    train_labels: Vec<u8>,
    test_images: Vec<u8>,
    test_labels: Vec<u8>,
) -> Result<Session, JsValue> {
    let options = Options::parse(&options)?;
    let train = split("train", &train_images, &train_labels)?;
    let test = split("test", &test_images, &test_labels)?;
    if train.pixels() != test.pixels() {
        return Err(invalid("the training and test images differ in size"));
    }
    let gpu = gpu().await?;
    let s = &options.settings;
    let config = ModelConfig {
        pixels: train.pixels() as u32,
        hidden: s.hidden,
        latent: s.latent,
    };
    let runs = options.runs();
    let params = initial(config, &runs);
    let views: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
    let net: &'static Net = Box::leak(Box::new(Net::batched(gpu, config, &views).map_err(js)?));
    let trainer = trainer(gpu, net, &options, &train)?;
    let inference: &'static Inference = Box::leak(Box::new(
        Inference::new(gpu, config, &params[0], test.n as u32, s.seed).map_err(js)?,
    ));
    let eval = Evaluator::new(gpu, &inference.net, EvalConfig::from(s), &test).map_err(js)?;
    let pictures = Pictures {
        inference,
        eval,
        test: ByteMatrix::upload(gpu, "pictures.test", &test.images, config.pixels).map_err(js)?,
        indices: (0..test.n as u32).collect(),
    };
    Ok(Session(Rc::new(RefCell::new(State {
        gpu,
        net,
        options,
        train,
        test,
        trainer,
        stepping: None,
        epochs: Vec::new(),
        pictures,
    }))))
}

impl Session {
    fn state(&self) -> Result<std::cell::RefMut<'_, State>, JsValue> {
        self.0.try_borrow_mut().map_err(|_| busy())
    }

    /// Runs `f` on the state after the current call, as a promise.
    fn promise<F>(&self, f: impl FnOnce(Rc<RefCell<State>>) -> F + 'static) -> js_sys::Promise
    where
        F: std::future::Future<Output = Result<JsValue, JsValue>> + 'static,
    {
        let state = self.0.clone();
        wasm_bindgen_futures::future_to_promise(f(state))
    }
}

#[wasm_bindgen]
impl Session {
    /// The adapter the session runs on, as `vae devices` names it.
    pub fn adapter(&self) -> String {
        let info = &self.0.borrow().gpu.info;
        let driver = [info.driver.as_str(), info.driver_info.as_str()].join(" ");
        match driver.trim() {
            "" => format!("{} ({:?})", info.name, info.backend),
            d => format!("{} ({:?}; {d})", info.name, info.backend),
        }
    }

    /// Models trained together (1 + the β row).
    pub fn models(&self) -> u32 {
        self.0.borrow().net.models
    }

    #[wasm_bindgen(js_name = stepsPerEpoch)]
    pub fn steps_per_epoch(&self) -> u32 {
        self.0.borrow().trainer.steps_per_epoch()
    }

    /// Adam steps taken (read back).
    pub fn step(&self) -> u32 {
        self.0.borrow().trainer.step
    }

    /// Epochs completed.
    pub fn epoch(&self) -> u32 {
        self.0.borrow().epochs.len() as u32
    }

    /// Sets model `k`'s β, learning rate and KL warm-up (epochs): they take effect from the next epoch.
    #[wasm_bindgen(js_name = setModel)]
    pub fn set_model(&self, k: u32, beta: f32, lr: f32, kl_warmup: f32) -> Result<(), JsValue> {
        let mut st = self.state()?;
        if k >= st.net.models {
            return Err(invalid(format!("model {k} of {}", st.net.models)));
        }
        if !(beta >= 0.0 && lr > 0.0 && kl_warmup >= 0.0 && beta.is_finite() && lr.is_finite()) {
            return Err(invalid(format!(
                "β {beta}, learning rate {lr}, warm-up {kl_warmup}: out of range"
            )));
        }
        let run = &mut st.trainer.runs[k as usize];
        (run.beta, run.lr, run.kl_warmup) = (beta, lr, kl_warmup);
        if k == 0 {
            let s = &mut st.options.settings;
            (s.beta, s.lr, s.kl_warmup) = (beta, lr, kl_warmup);
        }
        Ok(())
    }

    /// Submits up to `count` training steps, starting the next epoch where one ended; returns how many went (0
    /// when the steps submitted fill a log interval or end the epoch: call `log` next). Never waits.
    pub fn submit(&self, count: u32) -> Result<u32, JsValue> {
        let mut st = self.state()?;
        let st = &mut *st;
        if st.stepping.is_none() {
            let epoch = st.epochs.len() as u32 + 1;
            st.stepping = Some(st.trainer.start_epoch(epoch).map_err(js)?);
        }
        let stepping = st.stepping.as_mut().expect("an epoch in progress");
        st.trainer.submit_some(stepping, count).map_err(js)
    }

    /// Steps submitted and not yet read back.
    #[wasm_bindgen(js_name = inFlight)]
    pub fn in_flight(&self) -> u32 {
        self.0
            .borrow()
            .stepping
            .as_ref()
            .map_or(0, |s| s.in_flight() as u32)
    }

    /// The log point (a promise): the losses of the steps submitted since the last one, read back. Resolves to
    /// `{ rows, models, epochDone }`: `rows` holds BCE and KL of each step (summed over its batch), model by model;
    /// `epochDone`, once an epoch ends, its training loss per image per model (loss, BCE, KL each).
    pub fn log(&self) -> js_sys::Promise {
        self.promise(|state| async move {
            let mut st = state.try_borrow_mut().map_err(|_| busy())?;
            let st = &mut *st;
            let out = Object::new();
            set(&out, "models", st.net.models);
            let Some(stepping) = st.stepping.as_mut().filter(|s| s.in_flight() > 0) else {
                set(&out, "rows", Float32Array::new_with_length(0));
                set(&out, "epochDone", JsValue::NULL);
                return Ok(out.into());
            };
            let (rows, done) = st.trainer.log_async(stepping).await.map_err(js)?;
            set(&out, "rows", Float32Array::from(&rows[..]));
            match done {
                Some(sums) => {
                    let all: Vec<f32> = sums.iter().flat_map(|s| per_image(s).to_vec()).collect();
                    set(&out, "epochDone", Float32Array::from(&all[..]));
                    st.epochs.push(sums);
                    st.stepping = None;
                }
                None => set(&out, "epochDone", JsValue::NULL),
            }
            Ok(out.into())
        })
    }

    /// Model `k`'s pictures (a promise), from its parameters now: `{ testLoss, x, recon, samples, mu, labels }`:
    /// the test subset's loss per image (loss, BCE, KL), the first test images and their reconstructions, the
    /// prior's decoded samples (each n × pixels Bernoulli means), and every test image's latent mean μ with its
    /// label.
    pub fn pictures(&self, k: u32) -> js_sys::Promise {
        self.promise(move |state| async move {
            let st = model_state(&state, k)?;
            let p = &st.pictures;
            let len = st.net.layout.len;
            let gpu = st.gpu;
            let copy = gpu.scoped("copying a model's parameters for its pictures", || {
                let mut encoder = gpu.device.create_command_encoder(&Default::default());
                let at = (st.net.model_offset(k) * 4) as u64;
                encoder.copy_buffer_to_buffer(
                    &st.net.params,
                    at,
                    &p.inference.net.params,
                    0,
                    (len * 4) as u64,
                );
                gpu.submit("pictures.params", encoder.finish())
            });
            copy.map_err(js)?;
            let test_loss = p.eval.evaluate_async().await.map_err(js)?;
            let (x, recon) = p.eval.reconstructions_async().await.map_err(js)?;
            let samples = p.eval.samples_async().await.map_err(js)?;
            let encoded = p
                .inference
                .encode_async(&p.test, &p.indices)
                .await
                .map_err(js)?;
            let out = Object::new();
            set(&out, "testLoss", per_image(&test_loss));
            set(&out, "x", Float32Array::from(&x[..]));
            set(&out, "recon", Float32Array::from(&recon[..]));
            set(&out, "samples", Float32Array::from(&samples[..]));
            set(&out, "mu", Float32Array::from(&encoded.mu[..]));
            set(&out, "labels", Uint8Array::from(&st.test.labels[..]));
            set(&out, "latent", st.net.config.latent);
            set(&out, "rows", st.test.rows as u32);
            set(&out, "cols", st.test.cols as u32);
            Ok(out.into())
        })
    }

    /// Starts again from fresh parameters (each model's from its seed), with the settings the sliders hold now.
    pub fn restart(&self) -> Result<(), JsValue> {
        let mut st = self.state()?;
        let st = &mut *st;
        let runs = st.trainer.runs.clone();
        let params = initial(st.net.config, &runs);
        let zeros = vec![0f32; st.net.layout.len];
        for (k, p) in params.iter().enumerate() {
            let at = (st.net.model_offset(k as u32) * 4) as u64;
            st.gpu
                .queue
                .write_buffer(&st.net.params, at, bytemuck::cast_slice(p));
        }
        // The old trainer goes first (its buffers with it); the new one starts at step 0 with zero moments.
        st.stepping = None;
        st.epochs.clear();
        st.trainer = trainer(st.gpu, st.net, &st.options, &st.train)?;
        st.trainer.runs = runs;
        for k in 0..st.net.models {
            st.trainer.restore_model(k, &zeros, &zeros).map_err(js)?;
        }
        Ok(())
    }

    /// Model `k`'s checkpoint (a promise of its bytes): the safetensors file `vae train` writes, which `vae eval`,
    /// `vae web` and PyTorch (safetensors) load. Written between epochs, like `vae train`'s.
    pub fn checkpoint(&self, k: u32) -> js_sys::Promise {
        self.promise(move |state| async move {
            let st = model_state(&state, k)?;
            if st.stepping.is_some() {
                return Err(invalid(
                    "an epoch is in progress: a checkpoint is written between epochs",
                ));
            }
            let run = st.trainer.runs[k as usize];
            let params = st.trainer.params_of_async(k).await.map_err(js)?;
            let (m, v) = st.trainer.moments_of_async(k).await.map_err(js)?;
            let settings = Settings {
                seed: run.seed,
                beta: run.beta,
                lr: run.lr,
                kl_warmup: run.kl_warmup,
                data_seed: Some(st.trainer.config.data_seed),
                train_samples: Some(st.train.n),
                test_samples: Some(st.test.n),
                ..st.options.settings.clone()
            };
            let mut metrics = String::from("epoch,train_loss,train_bce,train_kl\n");
            for (e, sums) in st.epochs.iter().enumerate() {
                let s = &sums[k as usize];
                let n = s.examples.max(1) as f64;
                metrics += &format!("{},{},{},{}\n", e + 1, s.loss() / n, s.bce / n, s.kl / n);
            }
            let ck = Checkpoint {
                model: st.net.config,
                params,
                m,
                v,
                step: st.trainer.step,
                epoch: st.epochs.len() as u32,
                epoch_step: 0,
                partial: LossSum::default(),
                partial_seconds: 0.0,
                settings,
                image: Some((st.train.rows as u32, st.train.cols as u32)),
                metrics,
                kernels: Default::default(),
            };
            let bytes = ck.to_bytes().map_err(js)?;
            Ok(Uint8Array::from(&bytes[..]).into())
        })
    }
}

#[wasm_bindgen(start)]
fn main() {
    // Panics (bugs) reach the page's console with their message, not as "unreachable executed".
    std::panic::set_hook(Box::new(|info| {
        web_sys_log(&format!("vae-web panicked: {info}"));
    }));
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn web_sys_log(message: &str);
}

/// BCE and KL are the loss log's columns.
const _: () = assert!(TERMS == 2);
