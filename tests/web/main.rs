//! `vae web`: the latent-space explorer in a real browser (Debian's Chromium, headless, WebGPU on; on a machine
//! without a GPU that is SwiftShader), driven through the DevTools protocol, and its server and export.
//!
//! One browser serves every test (a tab each); the models are trained here, small and quick: a 28×28 one with a
//! 2-D latent space on MNIST, and a 14×14 one (MNIST halved, written as IDX files here) with a 3-D latent space,
//! whose pad is the plane of its means' principal components. These need MNIST in data/mnist/ and `chromium`
//! (`sudo apt-get install chromium`); they fail, never skip, without either.
//!
//! `VAE_WEB_CHECKPOINT=<checkpoint of MNIST>` runs the 28×28 checks on that checkpoint instead: that is how the
//! explorer's screenshot in docs/web.md is taken (the test writes it to target/tmp/web-explorer.png).

#[path = "../common/mod.rs"]
mod common;

mod cdp;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use cdp::{Browser, Page};
use common::{idx, mnist_dir, scratch};
use vae_wgpu::data::mnist;
use vae_wgpu::kernels::accuracy::{FLUSH, U};
use vae_wgpu::kernels::matmul::error_bound;
use vae_wgpu::model::ModelConfig;
use vae_wgpu::model::net::Net;
use vae_wgpu::model::{Linear, reference};
use vae_wgpu::training::checkpoint::Checkpoint;
use vae_wgpu::training::settings::Settings;
use vae_wgpu::training::trainer::{ModelRun, TrainConfig, Trainer};
use vae_wgpu::web::{self, Server};

const VAE: &str = env!("CARGO_BIN_EXE_vae");

/// Time allowed for the page to do one thing (load, decode, redraw) on a software GPU under a loaded machine.
const PAGE_WAIT: Duration = Duration::from_secs(30);

// ---- Fixtures ---------------------------------------------------------------------------------------------------

/// The browser, started once. Fails with how to install it when there is none.
fn browser() -> &'static Browser {
    static BROWSER: OnceLock<Browser> = OnceLock::new();
    BROWSER.get_or_init(|| {
        let program = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
        if let Err(e) = Command::new(&program).arg("--version").output() {
            panic!(
                "tests/web needs Chromium ({program}: {e}): install Debian's package with `sudo apt-get install \
                 chromium` (or set CHROMIUM to another Chromium or Chrome binary). These tests run the page in a \
                 real browser; they are not skipped without one."
            );
        }
        let browser = Browser::launch(&program, &scratch("chromium-profile"))
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        eprintln!("browser: {}", browser.version);
        browser
    })
}

/// `vae train` on `data` into a fresh directory; the checkpoint's path.
fn train(name: &str, data: &Path, args: &[&str]) -> PathBuf {
    let out = scratch(name);
    let o = Command::new(VAE)
        .args(["train", "--no-tune", "--epochs", "1", "--data"])
        .arg(data)
        .arg("--out")
        .arg(&out)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "vae train: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.join("checkpoint.safetensors")
}

/// The 28×28 model with a 2-D latent space (or `VAE_WEB_CHECKPOINT`'s).
fn mnist_model() -> &'static Path {
    static CK: OnceLock<PathBuf> = OnceLock::new();
    CK.get_or_init(|| match std::env::var_os("VAE_WEB_CHECKPOINT") {
        Some(ck) => PathBuf::from(ck),
        None => train(
            "web-mnist",
            &mnist_dir(),
            &[
                "--train-samples",
                "1024",
                "--test-samples",
                "100",
                "--hidden",
                "64",
                "--latent",
                "2",
            ],
        ),
    })
}

/// MNIST halved to 14×14 (each pixel the mean of a 2×2 block), 2,048 training and 300 test images, as IDX files.
fn mnist14() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let full = mnist::load(&mnist_dir()).unwrap();
        let dir = scratch("mnist14");
        std::fs::create_dir_all(&dir).unwrap();
        let halve = |split: &mnist::Split, n: usize| {
            let mut out = Vec::with_capacity(n * 196);
            for i in 0..n {
                let img = split.image(i);
                for r in 0..14 {
                    for c in 0..14 {
                        let at = |dr: usize, dc: usize| img[(2 * r + dr) * 28 + 2 * c + dc] as u32;
                        out.push(((at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1) + 2) / 4) as u8);
                    }
                }
            }
            out
        };
        for (split, n, images, labels) in [
            (
                &full.train,
                2048,
                "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte",
            ),
            (
                &full.test,
                300,
                "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte",
            ),
        ] {
            let pixels = halve(split, n);
            std::fs::write(
                dir.join(images),
                idx([0, 0, 8, 3], &[n as u32, 14, 14], &pixels),
            )
            .unwrap();
            std::fs::write(
                dir.join(labels),
                idx([0, 0, 8, 1], &[n as u32], &split.labels[..n]),
            )
            .unwrap();
        }
        dir
    })
}

/// The 14×14 model with a 3-D latent space and 48 hidden units (a size no tile divides).
fn small_model() -> &'static Path {
    static CK: OnceLock<PathBuf> = OnceLock::new();
    CK.get_or_init(|| {
        train(
            "web-14",
            mnist14(),
            &["--hidden", "48", "--latent", "3", "--batch-size", "64"],
        )
    })
}

/// The 28×28 model's site (with the Train view's module and 1,024 training images), served: its address.
fn mnist_site() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        serve(&web::Options {
            checkpoint: mnist_model().to_path_buf(),
            data: mnist_dir(),
            test_samples: Some(if std::env::var_os("VAE_WEB_CHECKPOINT").is_some() {
                10_000
            } else {
                500
            }),
            train_samples: TRAIN_VIEW_IMAGES,
            trainer: Some(trainer_module()),
            gpu: Default::default(),
        })
    })
}

/// The site `options` describe, served by the library's server on a thread of this process (so it ends with
/// the tests): its address.
fn serve(options: &web::Options) -> String {
    let site = web::prepare(options).unwrap();
    let server = Server::bind("127.0.0.1", 0).unwrap();
    let url = server.url().unwrap();
    std::thread::spawn(move || server.serve(site));
    url
}

/// The Train view's training subset in the 28×28 site (the "1,024 images").
const TRAIN_VIEW_IMAGES: usize = 1024;

/// The Train view's module, built by scripts/build-web (scripts/test builds it); fails with how to build it.
fn trainer_module() -> PathBuf {
    let dir = web::default_trainer_dir();
    for (file, _) in web::site::TRAINER_FILES {
        assert!(
            dir.join(file).is_file(),
            "the Train view's module is not built ({} is missing): run scripts/build-web (scripts/test does, and \
             sets up what it needs: the wasm32-unknown-unknown target and wasm-bindgen-cli). These tests train in \
             a real browser; they are not skipped without it.",
            dir.join(file).display()
        );
    }
    dir
}

/// A plain static file server of `dir` (as any web server would host an export): its address.
fn static_server(dir: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let Some(head) = read_head(&mut stream) else {
                continue;
            };
            let path = head
                .split(' ')
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            let path = if path.is_empty() {
                "index.html".to_string()
            } else {
                path
            };
            let file = (!path.contains('/') && !path.contains("..")).then(|| dir.join(&path));
            let response = match file.and_then(|f| std::fs::read(f).ok()) {
                Some(body) => {
                    let kind = match path.rsplit('.').next() {
                        Some("html") => "text/html",
                        Some("js") => "text/javascript",
                        Some("css") => "text/css",
                        Some("json") => "application/json",
                        _ => "application/octet-stream",
                    };
                    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
                    r.extend(body);
                    r
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    url
}

fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).ok().filter(|&n| n > 0)?;
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(head).ok()
}

/// `vae web` as a child process, killed when dropped.
struct Served {
    child: Child,
    url: String,
}

impl Served {
    /// Starts `vae web <args> --port 0` and waits for the address it prints.
    fn start(args: &[&str]) -> Served {
        let mut child = Command::new(VAE)
            .arg("web")
            .args(args)
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) else {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            let _ = child.kill();
            panic!("vae web printed no address: {line:?}; stderr: {err}");
        };
        assert!(
            line.starts_with("serving the latent-space explorer of "),
            "{line}"
        );
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "not on loopback by default: {line}"
        );
        Served {
            url: url.to_string(),
            child,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw HTTP request: (status code, content type, body).
fn request(url: &str, request_line: &str) -> (u16, String, Vec<u8>) {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{request_line}\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let kind = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or("")
        .to_string();
    (status, kind, response[split + 4..].to_vec())
}

// ---- The CPU reference and its tolerances ----------------------------------------------------------------------

/// A JSON array of f32 values written exactly (as the f64s they are), so that the page's Float32Array holds them
/// bit for bit.
fn js_array(v: &[f32]) -> String {
    serde_json::to_string(&v.iter().map(|&x| x as f64).collect::<Vec<_>>()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The bound on |computed − exact| of each output of a layer y = act(W·x + b) computed by the kernel in f32
/// from inputs that are off by at most `x_err` (per input), where `x_abs` bounds the inputs' magnitudes:
///
///   error_bound(k)·(Σᵢ |Wᵢ|·(|xᵢ| + eᵢ) + |b|)   the kernel's own rounding: a k-term dot product in any order,
///                                              fused or not (γₖ), the bias add and the final rounding (2u);
///                                              Higham §3.1, `error_bound` in src/kernels/matmul.rs
///   + Σᵢ |Wᵢ|·eᵢ                                 the inputs' errors carried through (ReLU is 1-Lipschitz)
///   + (k + 1)·FLUSH                              WGSL may flush subnormal terms to zero
fn layer_error(p: &[f32], l: Linear, x_abs: &[f64], x_err: &[f64]) -> Vec<f64> {
    let k = l.inp as usize;
    (0..l.out as usize)
        .map(|o| {
            let w = &p[l.weight + o * k..l.weight + (o + 1) * k];
            let mut rounding = (p[l.bias() + o] as f64).abs();
            let mut carried = 0.0;
            for i in 0..k {
                rounding += (w[i] as f64).abs() * (x_abs[i] + x_err[i]);
                carried += (w[i] as f64).abs() * x_err[i];
            }
            error_bound(k) * rounding + carried + (k + 1) as f64 * FLUSH
        })
        .collect()
}

/// y = relu(W·x + b) of one layer in f64 (the magnitudes the bounds need).
fn relu_layer(p: &[f32], l: Linear, x: &[f64]) -> Vec<f64> {
    let k = l.inp as usize;
    (0..l.out as usize)
        .map(|o| {
            let s: f64 = (0..k).map(|i| p[l.weight + o * k + i] as f64 * x[i]).sum();
            (s + p[l.bias() + o] as f64).max(0.0)
        })
        .collect()
}

/// Compares `got` with `want` element by element within `tol`; reports the worst ratio and the first failures.
#[track_caller]
fn assert_close(what: &str, got: &[f64], want: &[f64], tol: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst: f64 = 0.0;
    let mut bad = Vec::new();
    for i in 0..got.len() {
        let err = (got[i] - want[i]).abs();
        let ratio = if err == 0.0 { 0.0 } else { err / tol[i] };
        worst = worst.max(if got[i].is_finite() {
            ratio
        } else {
            f64::INFINITY
        });
        // NaN fails too: it is not within any tolerance.
        let within = err <= tol[i];
        if !within && bad.len() < 5 {
            bad.push(format!(
                "[{i}] got {} want {} (tolerance {:.3e})",
                got[i], want[i], tol[i]
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: differs from the CPU reference: {}",
        bad.join(", ")
    );
    worst
}

/// Checks `window.vae.decode` at `zs` against the f64 reference decoder, per pixel within the bound derived
/// below; returns the worst error as a fraction of its bound.
fn check_decode(page: &Page, ck: &Checkpoint, zs: &[Vec<f32>]) -> f64 {
    let model = ck.model;
    let params: Vec<f64> = ck.params.iter().map(|&v| v as f64).collect();
    let layout = model.layout();
    let mut worst: f64 = 0.0;
    for z in zs {
        let got = floats(&page.eval(&format!(
            "window.vae.decode({}).then(Array.from)",
            js_array(z)
        )));
        let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        let logits = reference::decode(model, &params, &z64, 1);
        let want: Vec<f64> = logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect();
        // fc3 from exact inputs (z is sent bit for bit), then fc4 from fc3's rounded outputs.
        let e3 = layer_error(
            &ck.params,
            layout.fc3,
            &z64.iter().map(|v| v.abs()).collect::<Vec<_>>(),
            &vec![0.0; z.len()],
        );
        let h3 = relu_layer(&ck.params, layout.fc3, &z64);
        let e4 = layer_error(&ck.params, layout.fc4, &h3, &e3);
        // p = σ(logit): σ' ≤ ¼; the page takes σ in f64 and stores it as f32 (relative u), and the f64
        // reference's own rounding is far below 1e-12.
        let tol: Vec<f64> = e4
            .iter()
            .zip(&want)
            .map(|(e, p)| 0.25 * e + U * p + 1e-12)
            .collect();
        worst = worst.max(assert_close(&format!("decode({z:?})"), &got, &want, &tol));
    }
    worst
}

/// The bound on the GPU encoder's error in each of μ | log σ² of image `x` (exact f32 inputs): fc1 from exact
/// inputs, then the heads from fc1's rounded outputs, each as [`layer_error`] derives.
fn encode_error(ck: &Checkpoint, x: &[f64]) -> Vec<f64> {
    let layout = ck.model.layout();
    let e1 = layer_error(&ck.params, layout.fc1, x, &vec![0.0; x.len()]);
    let h1 = relu_layer(&ck.params, layout.fc1, x);
    layer_error(&ck.params, layout.heads, &h1, &e1)
}

/// Checks `window.vae.encode` of `images` (grey levels / 255) against the f64 reference encoder, μ and log σ²
/// each within [`encode_error`]; returns the worst error as a fraction of its bound.
fn check_encode(page: &Page, ck: &Checkpoint, images: &[&[u8]]) -> f64 {
    let model = ck.model;
    let params: Vec<f64> = ck.params.iter().map(|&v| v as f64).collect();
    let l = model.latent as usize;
    let mut worst: f64 = 0.0;
    for (n, img) in images.iter().enumerate() {
        let x: Vec<f32> = img.iter().map(|&b| b as f32 / 255.0).collect();
        let got = page.eval(&format!(
            "window.vae.encode(new Float32Array({}))",
            js_array(&x)
        ));
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let want = reference::encode(model, &params, &x64, 1);
        let eh = encode_error(ck, &x64);
        worst = worst.max(assert_close(
            &format!("encode(image {n}).mu"),
            &floats(&got["mu"]),
            &want[..l],
            &eh[..l],
        ));
        worst = worst.max(assert_close(
            &format!("encode(image {n}).logvar"),
            &floats(&got["logvar"]),
            &want[l..],
            &eh[l..],
        ));
    }
    worst
}

// ---- Page helpers -----------------------------------------------------------------------------------------------

/// The grey levels a canvas shows (its red channel).
fn canvas_pixels(page: &Page, id: &str) -> Vec<u8> {
    let v = page.eval(&format!(
        "(() => {{ const c = document.getElementById('{id}');
            return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 4 === 0)); }})()"
    ));
    floats(&v).into_iter().map(|x| x as u8).collect()
}

/// The centre of element `id` and its size, in CSS pixels.
fn rect(page: &Page, id: &str) -> (f64, f64, f64, f64) {
    let r = page.eval(&format!(
        "(() => {{ const r = document.getElementById('{id}').getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2, r.width, r.height]; }})()"
    ));
    let r = floats(&r);
    (r[0], r[1], r[2], r[3])
}

/// Waits until the decoded image shows the point (the latest decode has landed), and returns the point.
fn settled(page: &Page) -> Vec<f64> {
    let z = page.wait_for(
        "document.body.dataset.state === 'ready' && !document.getElementById('decoded').dataset.busy \
         && document.getElementById('decoded').dataset.z === document.getElementById('pad').dataset.z \
         && document.getElementById('decoded').dataset.z",
        PAGE_WAIT,
    );
    floats(&serde_json::from_str(z.as_str().unwrap()).unwrap())
}

/// Checks that the decoded canvas shows `decode(z)` of the current point: its grey levels are round(255·p),
/// p from window.vae.decode of the same point (the same kernel on the same inputs: equal to the bit).
fn canvas_shows_the_point(page: &Page, z: &[f64]) {
    let p = floats(&page.eval(&format!("window.vae.decode({}).then(Array.from)", json!(z))));
    let shown = canvas_pixels(page, "decoded");
    let want: Vec<u8> = p
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    assert_eq!(
        shown, want,
        "the decoded canvas does not show decode(z) of the point {z:?}"
    );
}

#[track_caller]
fn no_errors(page: &Page) {
    let errors = page.errors();
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");
}

// ---- Tests ------------------------------------------------------------------------------------------------------

#[test]
fn the_page_decodes_and_encodes_like_the_cpu_and_follows_the_mouse() {
    let t0 = Instant::now();
    let ck = Checkpoint::load(mnist_model()).unwrap();
    let url = mnist_site();
    let page = browser().new_page(1280, 1000);
    page.navigate(url);
    let info = page.eval("window.vae.ready.then(() => window.vae.info)");
    assert_eq!(
        info,
        json!({ "latent": 2, "hidden": ck.model.hidden, "pixels": 784, "rows": 28, "cols": 28 }),
        "window.vae.info"
    );
    eprintln!(
        "{}",
        page.eval("document.getElementById('status').textContent")
    );

    // decode and encode against the CPU reference (points inside, at the edge of and far outside the means).
    let zs = [
        vec![0.0f32, 0.0],
        vec![1.5, -0.75],
        vec![-2.25, 3.0],
        vec![0.1, 0.3],
        vec![-7.5, 9.0],
    ];
    let worst_decode = check_decode(&page, &ck, &zs);
    let test = mnist::load(&mnist_dir()).unwrap().test;
    let worst_encode = check_encode(&page, &ck, &[test.image(0), test.image(1), test.image(7)]);
    eprintln!("worst error / bound: decode {worst_decode:.2e}, encode {worst_encode:.2e}");
    // Wrong input is refused with a message naming the size, not decoded.
    let err = page.try_eval("window.vae.decode([1])").unwrap_err();
    assert!(
        err.contains("RangeError") && err.contains("expected 2 numbers"),
        "{err}"
    );
    let err = page
        .try_eval("window.vae.encode(new Float32Array(784).fill(2))")
        .unwrap_err();
    assert!(err.contains("in [0, 1]"), "{err}");

    // Dragging the pad (real mouse events) moves the point and redraws the decoded image.
    let before_z = settled(&page);
    let before = canvas_pixels(&page, "decoded");
    let (cx, cy, w, h) = rect(&page, "pad");
    page.drag((cx, cy), (cx + 0.3 * w, cy - 0.25 * h), 8);
    let after_z = settled(&page);
    // The point is where the mouse was released (0.8 across, 0.25 down the pad), in the pad's extent, to a CSS
    // pixel (mouse events may land on whole pixels).
    let pad = page.eval("fetch('model.json').then(r => r.json()).then(m => m.pad)");
    let (x, y) = (floats(&pad["x"]), floats(&pad["y"]));
    let want = [x[0] + 0.8 * (x[1] - x[0]), y[1] - 0.25 * (y[1] - y[0])];
    for (j, range) in [(0, x[1] - x[0]), (1, y[1] - y[0])] {
        assert!(
            (after_z[j] - want[j]).abs() <= 1.01 * range / w,
            "released at {want:?}, the point is at {after_z:?} (it was at {before_z:?})"
        );
    }
    let after = canvas_pixels(&page, "decoded");
    let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert!(
        changed > 50,
        "dragging the pad changed {changed} of 784 pixels"
    );
    canvas_shows_the_point(&page, &after_z);

    // Drawing a digit: its encoding is μ of the encoder's input as the page prepared it, marked on the pad.
    let (dx, dy, dw, dh) = rect(&page, "draw");
    page.drag(
        (dx + 0.05 * dw, dy - 0.35 * dh),
        (dx - 0.05 * dw, dy + 0.35 * dh),
        12,
    );
    let mu = page.wait_for(
        "!document.getElementById('recon').dataset.busy && document.getElementById('recon').dataset.mu",
        PAGE_WAIT,
    );
    let mu = floats(&serde_json::from_str(mu.as_str().unwrap()).unwrap());
    let seen = page.eval("JSON.parse(document.getElementById('seen').dataset.pixels)");
    assert!(
        floats(&seen).iter().filter(|&&v| v > 0.5).count() > 10,
        "the encoder's input has no ink"
    );
    let again = page.eval(&format!("window.vae.encode({seen}).then(r => r.mu)"));
    assert_eq!(
        floats(&again),
        mu,
        "μ on the pad is encode() of the drawing"
    );
    assert_eq!(
        page.eval("document.getElementById('go-mu').disabled"),
        json!(false)
    );
    page.eval("document.getElementById('go-mu').click()");
    assert_eq!(settled(&page), mu, "the point moves to μ");

    // Interpolation: the strip holds A..B; the slider puts the point on the line.
    let ab = page.wait_for(
        "!document.getElementById('strip').dataset.busy && document.getElementById('strip').dataset.ab",
        PAGE_WAIT,
    );
    let ab: Vec<Vec<f64>> = serde_json::from_str(ab.as_str().unwrap()).unwrap();
    page.eval("(() => { const t = document.getElementById('t'); t.value = 0.5; t.dispatchEvent(new Event('input')); })()");
    let mid = settled(&page);
    for j in 0..2 {
        let want = ab[0][j] + 0.5 * (ab[1][j] - ab[0][j]);
        assert!(
            (mid[j] - want).abs() < 1e-5,
            "the point at t = 0.5 is {mid:?}, not between {ab:?}"
        );
    }

    no_errors(&page);
    let png = page.screenshot();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "the screenshot is a PNG");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-explorer.png");
    std::fs::write(&shot, png).unwrap();
    eprintln!(
        "screenshot: {} ({:.1} s)",
        shot.display(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn an_exported_14x14_model_with_3_latent_dimensions_works_when_served() {
    let t0 = Instant::now();
    let ck_path = small_model();
    let ck = Checkpoint::load(ck_path).unwrap();
    let out = scratch("web-export").join("site");
    let export = |dir: &Path| {
        Command::new(VAE)
            .args(["web", "--checkpoint", ck_path.to_str().unwrap(), "--data"])
            .arg(mnist14())
            .arg("--trainer")
            .arg(trainer_module())
            .arg("--export")
            .arg(dir)
            .output()
            .unwrap()
    };
    let o = export(&out);
    assert!(
        o.status.success(),
        "vae web --export: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    let site = [
        "app.js",
        "index.html",
        "matmul.wgsl",
        "model.js",
        "model.json",
        "params.bin",
        "scatter.bin",
        "style.css",
        "test-images.idx",
        "test-labels.idx",
        "train-images.idx",
        "train-labels.idx",
        "train.html",
        "train.js",
        "vae_web.js",
        "vae_web_bg.wasm",
    ];
    assert_eq!(names, site, "the exported files");
    // The Train view's data are the dataset's first images, as IDX files.
    let data = mnist::load(mnist14()).unwrap();
    let train = std::fs::read(out.join("train-images.idx")).unwrap();
    assert_eq!(
        train,
        data.train.take(Some(10_000)).to_idx().0,
        "the exported training images"
    );
    // The shader is the project's own, composed from shaders/ as the native program composes it.
    let wgsl = std::fs::read_to_string(out.join("matmul.wgsl")).unwrap();
    assert!(
        wgsl.contains(include_str!("../../shaders/matmul.wgsl")),
        "matmul.wgsl is not shaders/matmul.wgsl"
    );
    assert!(wgsl.contains(include_str!("../../shaders/matmul_common.wgsl")));
    // A second export into the now non-empty directory is refused and changes nothing.
    let o = export(&out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is not empty") && !stderr.contains("internal error"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), site.len());

    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join("model.json")).unwrap()).unwrap();
    assert_eq!(manifest["plane"]["kind"], "pca");
    let url = static_server(out.clone());
    let page = browser().new_page(1280, 1000);
    page.navigate(&url);
    let info = page.eval("window.vae.ready.then(() => window.vae.info)");
    assert_eq!(
        info,
        json!({ "latent": 3, "hidden": 48, "pixels": 196, "rows": 14, "cols": 14 })
    );

    let zs = [
        vec![0.0f32, 0.0, 0.0],
        vec![1.25, -0.5, 2.0],
        vec![-3.0, 0.75, -1.5],
    ];
    let worst_decode = check_decode(&page, &ck, &zs);
    let test = mnist::load(mnist14()).unwrap().test;
    let worst_encode = check_encode(&page, &ck, &[test.image(0), test.image(5)]);
    eprintln!("worst error / bound: decode {worst_decode:.2e}, encode {worst_encode:.2e}");

    // The scatter is the test set's means (the f64 reference encoder here) on the manifest's plane, and that
    // plane is their principal one: it holds as much of their variance as their first two components.
    let model = ck.model;
    let params: Vec<f64> = ck.params.iter().map(|&v| v as f64).collect();
    let x: Vec<f64> = test
        .images
        .iter()
        .map(|&b| (b as f32 / 255.0) as f64)
        .collect();
    let heads = reference::encode(model, &params, &x, test.n);
    let mu: Vec<f64> = heads.chunks(6).flat_map(|h| h[..3].to_vec()).collect();
    let origin = floats(&manifest["plane"]["origin"]);
    let axes: Vec<Vec<f64>> = manifest["plane"]["axes"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let scatter = std::fs::read(out.join("scatter.bin")).unwrap();
    assert_eq!(scatter.len(), test.n * 9);
    // The largest distance between a GPU mean and its reference (Euclidean, from the per-dimension bounds).
    let mut max_dist: f64 = 0.0;
    for i in 0..test.n {
        assert_eq!(scatter[8 * test.n + i], test.labels[i], "label {i}");
        let e = encode_error(&ck, &x[i * 196..(i + 1) * 196]);
        max_dist = max_dist.max(e[..3].iter().map(|v| v * v).sum::<f64>().sqrt());
        for (c, axis) in axes.iter().enumerate() {
            let at = 8 * i + 4 * c;
            let shown = f32::from_le_bytes(scatter[at..at + 4].try_into().unwrap()) as f64;
            let want: f64 = (0..3).map(|j| (mu[3 * i + j] - origin[j]) * axis[j]).sum();
            // The GPU's μ is within the encoder's bound of the reference's; the projection (in f64, on the
            // manifest's own origin and axes) carries Σ|axis|·e, and its store as f32 adds u relative.
            let tol = (0..3).map(|j| axis[j].abs() * e[j]).sum::<f64>() + U * shown.abs() + 1e-12;
            assert!(
                (shown - want).abs() <= tol,
                "point {i} coordinate {c}: {shown} vs {want} (tolerance {tol:.3e})"
            );
        }
    }
    let pca =
        vae_wgpu::output::plots::Pca::fit(&mu.iter().map(|&v| v as f32).collect::<Vec<_>>(), 3);
    let variance = |axis: &[f64]| {
        (0..test.n)
            .map(|i| {
                (0..3)
                    .map(|j| (mu[3 * i + j] - pca.mean[j]) * axis[j])
                    .sum::<f64>()
                    .powi(2)
            })
            .sum::<f64>()
            / test.n as f64
    };
    let total: f64 = (0..3)
        .map(|j| {
            variance(&[
                (j == 0) as u8 as f64,
                (j == 1) as u8 as f64,
                (j == 2) as u8 as f64,
            ])
        })
        .sum();
    let held = (variance(&axes[0]) + variance(&axes[1])) / total;
    // Each GPU mean is within E = max_dist of its reference, so a centred point moves by at most 2E, and the
    // variance along any plane by at most D = 2·(4E·√total + 4E²) (per unit axis: 2·2E·rms + (2E)², rms ≤
    // √total). The manifest's plane is the best for the GPU's means and the reference's PCA for its own, so
    // the reference's variance in the two planes differs by at most 2D. Plus 1e-4 of the total for power
    // iteration's convergence (500 iterations, the same algorithm on both sides).
    let d = 2.0 * (4.0 * max_dist * total.sqrt() + 4.0 * max_dist * max_dist);
    let tol = 2.0 * d / total + 1e-4;
    let best = pca.share[0] + pca.share[1];
    assert!(
        (held - best).abs() <= tol,
        "the pad's plane holds {held:.6} of the means' variance, their first two components {best:.6} \
         (tolerance {tol:.2e})"
    );

    // One slider per latent dimension; moving the third redraws the image.
    assert_eq!(
        page.eval("document.querySelectorAll('#sliders input[type=range]').length"),
        json!(3)
    );
    let before_z = settled(&page);
    let before = canvas_pixels(&page, "decoded");
    page.eval("(() => { const s = document.getElementById('z3'); s.value = 2.5; s.dispatchEvent(new Event('input')); })()");
    let after_z = settled(&page);
    assert_eq!(
        (after_z[0], after_z[1], after_z[2]),
        (before_z[0], before_z[1], 2.5)
    );
    assert_ne!(
        canvas_pixels(&page, "decoded"),
        before,
        "the slider did not change the image"
    );
    canvas_shows_the_point(&page, &after_z);
    // Dragging the pad moves the point within the plane only: what the sliders set off the plane stays.
    let (cx, cy, w, h) = rect(&page, "pad");
    page.drag((cx, cy), (cx - 0.2 * w, cy + 0.3 * h), 6);
    let dragged = settled(&page);
    let step: Vec<f64> = (0..3).map(|j| dragged[j] - after_z[j]).collect();
    let in_plane: f64 = axes
        .iter()
        .map(|a| (0..3).map(|j| step[j] * a[j]).sum::<f64>().powi(2))
        .sum();
    let norm: f64 = step.iter().map(|s| s * s).sum();
    assert!(norm > 0.01, "the drag did not move the point");
    assert!(
        (norm - in_plane).abs() < 1e-4 * norm.max(1.0),
        "the drag left the plane: {step:?}"
    );

    no_errors(&page);
    eprintln!("14×14 export served ({:.1} s)", t0.elapsed().as_secs_f64());
}

/// The page where WebGPU is taken away: the message, the means still drawn, nothing thrown.
/// Alert `id` is shown and says each of `expected`.
#[track_caller]
fn assert_alert(page: &Page, id: &str, expected: &[&str], what: &str) {
    let shown = page.eval(&format!(
        "(() => {{ const m = document.getElementById('{id}'); return !m.hidden && m.offsetHeight > 0 && m.innerText; }})()"
    ));
    let text = shown
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not shown"));
    for e in expected {
        assert!(text.contains(e), "{what} lacks {e:?}: {text}");
    }
}

fn without_webgpu(script: &str, why: &str) {
    let page = browser().new_page(1280, 1000);
    page.before_load(script);
    page.navigate(mnist_site());
    let state = page.wait_for("document.body.dataset.state", PAGE_WAIT);
    assert_eq!(state, "no-webgpu", "with {script}");
    let what = format!("the no-WebGPU message ({script})");
    let expected = [
        why,
        "To enable WebGPU",
        "chrome://flags/#enable-unsafe-webgpu",
        "about:config",
        "Safari",
    ];
    assert_alert(&page, "no-webgpu", &expected, &what);
    let err = page.try_eval("window.vae.ready").unwrap_err();
    assert!(
        err.contains("NoWebGPU"),
        "window.vae.ready rejects with the reason: {err}"
    );
    assert_eq!(
        page.eval("window.vae.info.rows"),
        json!(28),
        "window.vae.info without WebGPU"
    );
    // The means are still drawn: the pad has the labels' colours.
    let colours = page.eval(
        "(() => { const c = document.getElementById('pad'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const s = new Set(); for (let i = 0; i < d.length; i += 4) s.add(d[i] << 16 | d[i + 1] << 8 | d[i + 2]); return s.size; })()",
    );
    assert!(
        colours.as_u64().unwrap() > 20,
        "the pad is blank without WebGPU ({colours} colours)"
    );
    // The pad still answers the mouse.
    let before = page.eval("document.getElementById('pad').dataset.z");
    let (cx, cy, w, _) = rect(&page, "pad");
    page.drag((cx, cy), (cx + 0.2 * w, cy), 3);
    assert_ne!(
        page.eval("document.getElementById('pad').dataset.z"),
        before
    );
    no_errors(&page);

    // The Train view says so too, trains nothing, and window.vaeTrain.ready rejects.
    let page = browser().new_page(1280, 1000);
    page.before_load(script);
    page.navigate(&format!("{}train.html", mnist_site()));
    let state = page.wait_for("document.body.dataset.state", PAGE_WAIT);
    assert_eq!(state, "no-webgpu", "the Train view with {script}");
    let what = format!("the Train view's no-WebGPU message ({script})");
    assert_alert(
        &page,
        "no-webgpu",
        &[
            "WebGPU",
            "chrome://flags/#enable-unsafe-webgpu",
            "localhost",
        ],
        &what,
    );
    let err = page.try_eval("window.vaeTrain.ready").unwrap_err();
    assert!(
        err.contains("WebGPU"),
        "window.vaeTrain.ready rejects with the reason: {err}"
    );
    no_errors(&page);
}

#[test]
fn a_1d_latent_space_is_a_line_on_the_pad() {
    let ck_path = train(
        "web-1d",
        mnist14(),
        &["--hidden", "16", "--latent", "1", "--batch-size", "64"],
    );
    let ck = Checkpoint::load(&ck_path).unwrap();
    let url = serve(&web::Options {
        checkpoint: ck_path.clone(),
        data: mnist14().to_path_buf(),
        test_samples: None,
        train_samples: 256,
        trainer: None,
        gpu: Default::default(),
    });
    let page = browser().new_page(1280, 1000);
    page.navigate(&url);
    let info = page.eval("window.vae.ready.then(() => window.vae.info)");
    assert_eq!(
        info,
        json!({ "latent": 1, "hidden": 16, "pixels": 196, "rows": 14, "cols": 14 })
    );
    let kind = page.eval("fetch('model.json').then(r => r.json()).then(m => m.plane.kind)");
    assert_eq!(kind, "line");
    check_decode(&page, &ck, &[vec![0.0], vec![-1.5], vec![2.25]]);
    let test = mnist::load(mnist14()).unwrap().test;
    check_encode(&page, &ck, &[test.image(3)]);
    // Left–right is z₁; up–down decodes to nothing.
    let before = settled(&page);
    let (cx, cy, w, h) = rect(&page, "pad");
    page.drag((cx, cy), (cx + 0.25 * w, cy - 0.3 * h), 4);
    let after = settled(&page);
    let x = floats(&page.eval("fetch('model.json').then(r => r.json()).then(m => m.pad.x)"));
    let want = x[0] + 0.75 * (x[1] - x[0]);
    assert!(
        after.len() == 1 && (after[0] - want).abs() <= 1.01 * (x[1] - x[0]) / w,
        "released at z₁ = {want}, the point moved from {before:?} to {after:?}"
    );
    canvas_shows_the_point(&page, &after);
    no_errors(&page);

    // This site was built without the Train view's module: its page says how to build it.
    let page = browser().new_page(1280, 1000);
    page.navigate(&format!("{url}train.html"));
    assert_eq!(
        page.wait_for("document.body.dataset.state", PAGE_WAIT),
        "no-module"
    );
    let text = page.eval("document.getElementById('no-module').innerText");
    assert!(
        text.as_str().is_some_and(
            |t| t.contains("scripts/build-web") && t.contains("wasm32-unknown-unknown")
        ),
        "the Train view without its module: {text}"
    );
    let (status, _, _) = request(&url, "GET /vae_web_bg.wasm HTTP/1.1");
    assert_eq!(status, 404, "a site built without the module serves none");
}

#[test]
fn without_webgpu_the_page_says_so_and_still_draws_the_means() {
    // navigator.gpu exists in Chromium even without an adapter: take it away before the page loads...
    without_webgpu(
        "delete Navigator.prototype.gpu; delete navigator.gpu;",
        "does not offer WebGPU",
    );
    // ...and, separately, leave it but have it find no adapter.
    without_webgpu(
        "GPU.prototype.requestAdapter = function () { return Promise.resolve(null); };",
        "no GPU adapter",
    );
}

#[test]
fn the_server_serves_only_the_site_and_reports_a_busy_port() {
    let ck = mnist_model().to_str().unwrap().to_string();
    let data = mnist_dir();
    let served = Served::start(&[
        "--checkpoint",
        &ck,
        "--data",
        data.to_str().unwrap(),
        "--test-samples",
        "100",
    ]);
    let url = &served.url;
    let (status, kind, body) = request(url, "GET / HTTP/1.1");
    assert_eq!((status, kind.as_str()), (200, "text/html; charset=utf-8"));
    assert!(String::from_utf8_lossy(&body).contains("<script type=\"module\" src=\"app.js\">"));
    assert_eq!(
        request(url, "GET /app.js HTTP/1.1").1,
        "text/javascript; charset=utf-8"
    );
    assert_eq!(request(url, "GET /model.json?x=1 HTTP/1.1").0, 200);
    assert_eq!(request(url, "HEAD /matmul.wgsl HTTP/1.1").2, b"");
    for target in [
        "/../Cargo.toml",
        "/..%2fCargo.toml",
        "/%2e%2e/Cargo.toml",
        "/%2E%2E%2FCargo.toml",
        "/web/../../Cargo.toml",
        "//etc/passwd",
        "/etc/passwd",
        "/%2Fetc%2Fpasswd",
        "http://127.0.0.1/index.html",
        "/..\\Cargo.toml",
        "/shaders/matmul.wgsl",
        "/src/main.rs",
        "/checkpoint.safetensors",
        "/missing.js",
        "/index.html%00.js",
    ] {
        let (status, _, body) = request(url, &format!("GET {target} HTTP/1.1"));
        assert_eq!(status, 404, "GET {target}");
        assert!(
            String::from_utf8_lossy(&body).starts_with("404 not found"),
            "GET {target}"
        );
    }
    assert_eq!(request(url, "POST / HTTP/1.1").0, 405);
    assert_eq!(request(url, "GET / SPDY/3").0, 400);

    // A second server on the same port: a clear error naming the port and the option, at once, exit code 1.
    let port = url.trim_end_matches('/').rsplit(':').next().unwrap();
    let t = Instant::now();
    let o = Command::new(VAE)
        .args(["web", "--checkpoint", &ck, "--port", port])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("port {port} is already in use")) && stderr.contains("--port"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("internal error") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the busy port was reported only after {:?}",
        t.elapsed()
    );
}

#[test]
fn bad_input_is_refused_with_a_message() {
    let dir = scratch("web-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(VAE).arg("web").args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success(), "vae web {args:?} succeeded");
        assert!(
            !stderr.contains("internal error") && !stderr.contains("panicked"),
            "{stderr}"
        );
        stderr
    };
    let missing = dir.join("missing.safetensors");
    let err = run(&["--checkpoint", missing.to_str().unwrap(), "--port", "0"]);
    assert!(err.contains("missing.safetensors"), "{err}");
    let err = run(&[
        "--checkpoint",
        mnist_model().to_str().unwrap(),
        "--port",
        "70000",
    ]);
    assert!(err.contains("70000"), "{err}");
    let err = run(&[
        "--checkpoint",
        mnist_model().to_str().unwrap(),
        "--host",
        "not a host",
        "--port",
        "0",
    ]);
    assert!(err.contains("--host"), "{err}");
    // The 28×28 model with the 14×14 test set: the data does not fit the model.
    let err = run(&[
        "--checkpoint",
        mnist_model().to_str().unwrap(),
        "--data",
        mnist14().to_str().unwrap(),
        "--export",
    ]
    .into_iter()
    .chain([dir.join("site").to_str().unwrap()])
    .collect::<Vec<_>>());
    assert!(err.contains("784-pixel") && err.contains("--data"), "{err}");
    assert!(!dir.join("site").exists(), "a refused export wrote files");
}

/// Per epoch, per model, (loss, BCE, KL) per image: `epochs` epochs of the models `runs` (model 0 with
/// `settings`' β) trained together natively, in this process, on the first `n` MNIST training images: what the
/// Train view's session of the same options computes.
fn native_epochs(
    settings: &Settings,
    runs: &[ModelRun],
    n: usize,
    epochs: u32,
) -> Vec<Vec<[f64; 3]>> {
    let gpu = common::gpu();
    let train = mnist::load(&mnist_dir()).unwrap().train.take(Some(n));
    let model = ModelConfig {
        pixels: 784,
        hidden: settings.hidden,
        latent: settings.latent,
    };
    let params: Vec<Vec<f32>> = runs.iter().map(|r| model.init(r.seed)).collect();
    let views: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
    let net = Net::batched(gpu, model, &views).unwrap();
    let config = TrainConfig::new(model, settings, 8);
    let mut trainer = Trainer::batched(gpu, &net, config, runs.to_vec(), &train).unwrap();
    (1..=epochs)
        .map(|e| {
            let sums = trainer
                .train_epoch(e, |_, _| {})
                .unwrap()
                .finished()
                .unwrap();
            sums.iter()
                .map(|s| {
                    let n = s.examples as f64;
                    [s.loss() / n, s.bce / n, s.kl / n]
                })
                .collect()
        })
        .collect()
}

#[test]
fn the_train_view_trains_as_the_native_trainer_does_and_beta_pulls_the_kl_down() {
    let t0 = Instant::now();
    let url = mnist_site();
    const EPOCHS: u32 = 3; // 8 steps of 128 images each: 24 steps
    const BETA_ROW: f32 = 8.0;
    let settings = Settings {
        hidden: 64,
        latent: 2,
        batch_size: 128,
        seed: 1,
        ..Settings::DEFAULT
    };
    let first = ModelRun {
        seed: 1,
        beta: 1.0,
        kl_warmup: 0.0,
        lr: settings.lr,
        binarize: false,
    };
    let runs = [
        first,
        ModelRun {
            beta: BETA_ROW,
            ..first
        },
    ];
    let want = native_epochs(&settings, &runs, TRAIN_VIEW_IMAGES, EPOCHS);

    let page = browser().new_page(1280, 1000);
    // `idle`: the page's own session stays put; this test's session trains instead.
    page.navigate(&format!("{url}train.html?idle"));
    let adapter = page.eval("window.vaeTrain.ready.then((r) => r.adapter)");
    eprintln!("the page trains on {adapter}");
    // Model 0 as `vae train --hidden 64 --latent 2 --seed 1` trains it; model 1 beside it in the same dispatches
    // at β = 8: the batched step's two models, as natively above.
    let got = page.eval(&format!(
        "window.vaeTrain.session({{ hidden: 64, latent: 2, batch: 128, seed: 1, row: [{BETA_ROW}], logInterval: 8 }})
            .then((t) => t.train({EPOCHS}, 4)).then((r) => r.epochs)"
    ));
    let got: Vec<Vec<[f64; 3]>> = serde_json::from_value(got).unwrap();
    assert_eq!(got.len(), EPOCHS as usize);
    // The bound. Each step's loss is a sum of non-negative terms (each image's 784 BCE terms and its KL), whose
    // f32 evaluation in any order is within γ of the exact sum relative to it; the longest chain in a term is
    // fc1's 784-term dot product, then fc4's (hidden): γ = (784 + hidden)·u per step, f32's u = 2⁻²⁴. Drivers
    // differ in order and fusion (Tint and naga, SwiftShader and lavapipe), so each step's parameters differ by
    // what that rounding does to the gradients: over t steps (Adam's update is normalized, so a step moves the
    // parameters no further than the learning rate, and differences add at most step by step over so short a
    // run) the epoch's loss is within t·γ of the other's, relative to the loss; KL gets the same absolute room.
    let u = f32::EPSILON as f64 / 2.0;
    let gamma = (784.0 + settings.hidden as f64) * u;
    let steps = TRAIN_VIEW_IMAGES.div_ceil(128) as f64;
    let mut worst: f64 = 0.0;
    for (e, (g, w)) in got.iter().zip(&want).enumerate() {
        for k in 0..runs.len() {
            let bound = (e + 1) as f64 * steps * gamma * w[k][0];
            for (term, name) in ["loss", "BCE", "KL"].iter().enumerate() {
                let diff = (g[k][term] - w[k][term]).abs();
                worst = worst.max(diff / bound);
                assert!(
                    diff <= bound,
                    "epoch {} model {k} (β {}): the page's {name} per image is {}, the native trainer's {} (bound {bound:.2e})",
                    e + 1,
                    runs[k].beta,
                    g[k][term],
                    w[k][term]
                );
            }
        }
        eprintln!("epoch {}: page {:?}, native {:?}", e + 1, g, w);
    }
    eprintln!("worst difference / bound: {worst:.2e}");
    // The loss falls, and β pulls the KL down: at β = 8 the KL ends far below its β = 1 value.
    let last = &got[EPOCHS as usize - 1];
    assert!(last[0][0] < got[0][0][0], "the loss did not fall: {got:?}");
    assert!(
        last[1][2] < 0.5 * last[0][2],
        "KL at β = 8 ({}) is not below its β = 1 value ({})",
        last[1][2],
        last[0][2]
    );
    no_errors(&page);

    // The page's own session: live curves, pictures and the β row while it trains, and a checkpoint that
    // `vae eval` loads.
    let page = browser().new_page(1280, 1000);
    page.navigate(&format!("{url}train.html?hidden=64&row=0.25,4,16"));
    page.eval("window.vaeTrain.ready");
    // Polled here: on a software GPU two epochs of four models with their pictures outlast one DevTools call.
    // VAE_WEB_TRAIN_EPOCHS=<n> trains n epochs before the screenshot (the README's: 30).
    let epochs: u64 = std::env::var("VAE_WEB_TRAIN_EPOCHS").map_or(2, |v| v.parse().unwrap());
    let started = Instant::now();
    loop {
        let state = page.eval(
            "[Number(document.body.dataset.step ?? 0), window.vaeTrain.trainer.epochs.length,
              document.body.dataset.state, document.getElementById('status').textContent,
              document.getElementById('progress').textContent]",
        );
        if state[1].as_u64().unwrap_or(0) >= epochs {
            eprintln!(
                "the page's session: {state} after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(state[2] == "training", "the page stopped training: {state}");
        assert!(
            started.elapsed() < PAGE_WAIT * 4 * epochs as u32,
            "the page's session is too slow: {state}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    no_errors(&page);
    let losses = page.eval("window.vaeTrain.trainer.epochs.map((e) => e[0][0])");
    let losses = floats(&losses);
    assert!(
        losses[1] < losses[0],
        "the page's loss did not fall: {losses:?}"
    );
    for id in ["loss", "scatter", "recon", "samples", "row-1", "row-3"] {
        let lit = canvas_pixels(&page, id)
            .iter()
            .filter(|&&v| v != 0 && v != 255)
            .count();
        assert!(lit > 0, "the page's {id} canvas shows nothing");
    }
    let png = page.screenshot();
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-train.png");
    std::fs::write(&shot, png).unwrap();
    eprintln!("screenshot: {}", shot.display());
    // Its checkpoint, between epochs: `vae eval` reads it.
    let bytes = page.eval("window.vaeTrain.checkpoint().then((b) => Array.from(b))");
    let bytes: Vec<u8> = serde_json::from_value(bytes).unwrap();
    let ck_path = scratch("web-train-ck").with_extension("safetensors");
    std::fs::write(&ck_path, &bytes).unwrap();
    let ck = Checkpoint::load(&ck_path).unwrap();
    assert_eq!((ck.model.hidden, ck.model.latent), (64, 2));
    let o = Command::new(VAE)
        .args(["eval", "--test-samples", "100", "--checkpoint"])
        .arg(&ck_path)
        .arg("--data")
        .arg(mnist_dir())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "vae eval of the page's checkpoint: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("vae eval: {}", String::from_utf8_lossy(&o.stdout).trim());
    no_errors(&page);
    eprintln!("{:.1} s", t0.elapsed().as_secs_f64());
}

/// Not a check, a measurement (`cargo test --release --test web -- --ignored --nocapture page_epoch`): one epoch
/// of the 784-400-2 model at batch 128 on `VAE_WEB_BENCH_IMAGES` images (4,096 unless set), trained in the page
/// (the browser's WebGPU: SwiftShader here) and natively in this process (lavapipe here), each the best of two
/// epochs after a first one that builds the pipelines. Prints a table.
#[test]
#[ignore]
fn page_epoch_against_native() {
    let n: usize = std::env::var("VAE_WEB_BENCH_IMAGES").map_or(4096, |v| v.parse().unwrap());
    let url = serve(&web::Options {
        checkpoint: mnist_model().to_path_buf(),
        data: mnist_dir(),
        test_samples: Some(100),
        train_samples: n,
        trainer: Some(trainer_module()),
        gpu: Default::default(),
    });
    let page = browser().new_page(1280, 1000);
    page.navigate(&format!("{url}train.html?idle"));
    let adapter = page.eval("window.vaeTrain.ready.then((r) => r.adapter)");
    page.eval("window.vaeTrain.session({ hidden: 400, latent: 2, batch: 128, seed: 1, row: [], logInterval: 64 }).then((t) => { window.bench = t; })");
    let mut page_ms = f64::INFINITY;
    for _ in 0..3 {
        let ms = page.eval("(async () => { const t0 = performance.now(); await window.bench.train(1, 16); return performance.now() - t0; })()");
        page_ms = page_ms.min(ms.as_f64().unwrap());
    }
    let gpu = common::gpu();
    let train = mnist::load(&mnist_dir()).unwrap().train.take(Some(n));
    let settings = Settings {
        hidden: 400,
        latent: 2,
        batch_size: 128,
        seed: 1,
        ..Settings::DEFAULT
    };
    let model = ModelConfig {
        pixels: 784,
        hidden: 400,
        latent: 2,
    };
    let net = Net::new(gpu, model, &model.init(1)).unwrap();
    let mut trainer =
        Trainer::new(gpu, &net, TrainConfig::new(model, &settings, 64), &train).unwrap();
    let mut native_ms = f64::INFINITY;
    for e in 1..=3 {
        let t0 = Instant::now();
        trainer
            .train_epoch(e, |_, _| {})
            .unwrap()
            .finished()
            .unwrap();
        native_ms = native_ms.min(t0.elapsed().as_secs_f64() * 1e3);
    }
    println!("| 784-400-2, batch 128, {n} images | epoch (ms) | per 60,000 images (s) |");
    println!("|---|---|---|");
    for (what, ms) in [
        (format!("page, {adapter}"), page_ms),
        (format!("native, {}", gpu.info.name), native_ms),
    ] {
        println!(
            "| {what} | {ms:.0} | {:.1} |",
            ms * 60_000.0 / n as f64 / 1e3
        );
    }
    println!("page / native: {:.2}", page_ms / native_ms);
}
