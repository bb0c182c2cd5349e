// The Train view: a VAE trained from scratch in this page by vae-wgpu's own trainer, the Rust library compiled to
// WebAssembly (web/trainer, built by scripts/build-web into vae_web.js and vae_web_bg.wasm), on the browser's
// WebGPU. This script only drives it and draws: each animation frame submits a batch of steps (never waiting),
// then awaits their losses (the GPU's answer comes through the event loop, so the page never blocks), and every
// half second or so asks for the pictures.
//
// The data are the IDX files `vae web` serves: train-images.idx, train-labels.idx, test-images.idx and
// test-labels.idx. The URL's query sets the model: ?hidden=400&latent=2&batch=128&seed=1&row=0.25,4,16 (row: the β
// of the models trained beside the main one; row= for none).

const $ = (id) => document.getElementById(id);
const COLOURS = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7',
  '#9c755f', '#bab0ac'];
const PICTURE_MS = 600; // how often the main model's pictures are redrawn
const FRAME_MS = 14; // the GPU time a frame's steps aim at

const query = new URLSearchParams(location.search);
const numberParam = (key, fallback) => (query.has(key) ? Number(query.get(key)) : fallback);
const DEFAULTS = {
  hidden: numberParam('hidden', 400),
  latent: numberParam('latent', 2),
  batch: numberParam('batch', 128),
  seed: numberParam('seed', 1),
  row: query.has('row') ? query.get('row').split(',').filter((s) => s.trim()).map(Number) : [0.25, 4, 16],
};

let wasm = null; // the module, once loaded
let data = null; // { train: [images, labels], test: [images, labels], n, rows, cols }
let settle;
const ready = new Promise((resolve, reject) => { settle = { resolve, reject }; });
ready.catch(() => {}); // reported on the page; scripts that await it get the reason

function status(text, isError = false) {
  const el = $('status');
  el.textContent = text;
  el.classList.toggle('error', isError);
}

async function fetchBytes(name) {
  const r = await fetch(name);
  if (!r.ok) throw new Error(`${name}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

/// The u32 dimensions of an IDX file's header.
function idxDims(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  return Array.from({ length: bytes[3] }, (_, i) => view.getUint32(4 + 4 * i));
}

// ---- A session, for the page and for scripts -------------------------------------------------------------------

/// Per-image loss terms of one step for each model: rows (BCE, KL summed over the batch, model by model) divided
/// by the step's batch size.
function perImage(rows, models, sizes) {
  const out = [];
  for (let i = 0; i < sizes.length; i++) {
    const step = [];
    for (let k = 0; k < models; k++) {
      const at = (i * models + k) * 2;
      step.push([rows[at] / sizes[i], rows[at + 1] / sizes[i]]);
    }
    out.push(step);
  }
  return out;
}

/// A session of the trainer with its bookkeeping: options as `start` takes them (see web/trainer/src/lib.rs).
class Trainer {
  constructor(session, options) {
    this.s = session;
    this.options = options;
    this.models = session.models();
    this.stepsPerEpoch = session.stepsPerEpoch();
    this.epochStep = 0; // steps of the current epoch read back
    this.step = 0;
    this.history = []; // per step: { step, epoch, models: [[bce, kl] per image] }
    this.epochs = []; // per epoch: [[loss, bce, kl] per image] per model
  }

  static async open(options) {
    const { train, test } = data;
    const session = await wasm.start(JSON.stringify(options), train[0], train[1], test[0], test[1]);
    return new Trainer(session, options);
  }

  /// The batch sizes of the next `count` steps of the epoch.
  sizes(count) {
    const { batch } = this.options;
    return Array.from({ length: count }, (_, i) => Math.min(batch, data.n - (this.epochStep + i) * batch));
  }

  /// Submits up to `most` steps and awaits their losses: one log point. Returns the steps taken.
  async advance(most) {
    let submitted = 0;
    while (submitted < most) {
      const n = this.s.submit(most - submitted);
      if (n === 0) break;
      submitted += n;
    }
    const out = await this.s.log();
    const count = out.rows.length / (2 * this.models);
    const steps = perImage(out.rows, this.models, this.sizes(count));
    const epoch = this.epochs.length + 1;
    for (const models of steps) this.history.push({ step: ++this.step, epoch, models });
    this.epochStep += count;
    if (out.epochDone) {
      const e = [];
      for (let k = 0; k < this.models; k++) e.push(Array.from(out.epochDone.subarray(3 * k, 3 * k + 3)));
      this.epochs.push(e);
      this.epochStep = 0;
    }
    return count;
  }

  /// Trains `epochs` whole epochs, `perLog` steps per log point (scripts and tests).
  async train(epochs, perLog = 8) {
    const target = this.epochs.length + epochs;
    while (this.epochs.length < target) await this.advance(perLog);
    return { epochs: this.epochs, history: this.history };
  }
}

// ---- Drawing ----------------------------------------------------------------------------------------------------

/// Grey images (each rows·cols values in [0, 1]) tiled `across` per row into `canvas`.
function tile(canvas, images, count, across, scale = 1) {
  const { rows, cols } = data;
  const down = Math.ceil(count / across);
  canvas.width = across * cols;
  canvas.height = down * rows;
  canvas.style.width = `${across * cols * scale}px`;
  const img = new ImageData(canvas.width, canvas.height);
  for (let t = 0; t < count; t++) {
    const x0 = (t % across) * cols;
    const y0 = Math.floor(t / across) * rows;
    for (let i = 0; i < rows * cols; i++) {
      const v = Math.round(Math.min(1, Math.max(0, images[t * rows * cols + i])) * 255);
      const at = 4 * ((y0 + Math.floor(i / cols)) * canvas.width + x0 + (i % cols));
      img.data.set([v, v, v, 255], at);
    }
  }
  canvas.getContext('2d').putImageData(img, 0, 0);
}

/// The loss curves of model 0, per image at each step: BCE + KL (the negative ELBO) and its two parts.
function drawLoss(history) {
  const canvas = $('loss');
  const ctx = canvas.getContext('2d');
  const [w, h] = [canvas.width, canvas.height];
  const pad = { l: 44, r: 10, t: 8, b: 22 };
  ctx.clearRect(0, 0, w, h);
  if (history.length < 2) return;
  const series = [
    { c: '#1d1d1f', v: (s) => s.models[0][0] + s.models[0][1] },
    { c: '#4e79a7', v: (s) => s.models[0][0] },
    { c: '#e15759', v: (s) => s.models[0][1] },
  ];
  // The y range leaves out the first steps' spike (the untrained model's 543 nats would flatten the rest).
  const skip = Math.min(history.length - 1, Math.ceil(history.length * 0.03));
  let hi = 0;
  for (const s of history.slice(skip)) for (const { v } of series) hi = Math.max(hi, v(s));
  hi = hi > 0 ? hi * 1.08 : 1;
  const x = (i) => pad.l + (i / (history.length - 1)) * (w - pad.l - pad.r);
  const y = (v) => pad.t + (1 - Math.min(v, hi) / hi) * (h - pad.t - pad.b);
  ctx.strokeStyle = '#dddcd6';
  ctx.fillStyle = '#6b6b70';
  ctx.font = '11px system-ui, sans-serif';
  ctx.lineWidth = 1;
  for (let g = 0; g <= 4; g++) {
    const v = (hi * g) / 4;
    ctx.beginPath();
    ctx.moveTo(pad.l, y(v));
    ctx.lineTo(w - pad.r, y(v));
    ctx.stroke();
    ctx.fillText(v.toFixed(0), 4, y(v) + 4);
  }
  ctx.fillText(`step ${history[history.length - 1].step}`, w - pad.r - 60, h - 6);
  ctx.lineWidth = 1.5;
  for (const { c, v } of series) {
    ctx.strokeStyle = c;
    ctx.beginPath();
    history.forEach((s, i) => (i ? ctx.lineTo(x(i), y(v(s))) : ctx.moveTo(x(i), y(v(s)))));
    ctx.stroke();
  }
}

/// The first two principal components of points (n × d, row-major), as two unit vectors and the mean; the
/// plane of z₁ and z₂ where d ≤ 2.
function principalPlane(mu, d) {
  const n = mu.length / d;
  const mean = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mean[j] += mu[i * d + j] / n;
  const axis = (j) => Float64Array.from({ length: d }, (_, i) => (i === j ? 1 : 0));
  if (d <= 2) return { mean, axes: [axis(0), d > 1 ? axis(1) : axis(0)], kind: d > 1 ? 'plane' : 'line' };
  const cov = Array.from({ length: d }, () => new Float64Array(d));
  for (let i = 0; i < n; i++) {
    for (let a = 0; a < d; a++) {
      for (let b = 0; b < d; b++) cov[a][b] += (mu[i * d + a] - mean[a]) * (mu[i * d + b] - mean[b]);
    }
  }
  // Power iteration, the second component deflated against the first.
  const top = (skip) => {
    let v = Float64Array.from({ length: d }, (_, i) => 1 + i * 0.1);
    for (let it = 0; it < 100; it++) {
      const next = new Float64Array(d);
      for (let a = 0; a < d; a++) for (let b = 0; b < d; b++) next[a] += cov[a][b] * v[b];
      if (skip) {
        let dot = 0;
        for (let a = 0; a < d; a++) dot += next[a] * skip[a];
        for (let a = 0; a < d; a++) next[a] -= dot * skip[a];
      }
      const norm = Math.hypot(...next) || 1;
      v = next.map((x) => x / norm);
    }
    return v;
  };
  const first = top(null);
  return { mean, axes: [first, top(first)], kind: 'pca' };
}

function drawScatter(p) {
  const canvas = $('scatter');
  const ctx = canvas.getContext('2d');
  const { latent, mu, labels } = p;
  const plane = principalPlane(mu, latent);
  const n = labels.length;
  const pts = new Float64Array(2 * n);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 2; c++) {
      let s = 0;
      for (let j = 0; j < latent; j++) s += (mu[i * latent + j] - plane.mean[j]) * plane.axes[c][j];
      pts[2 * i + c] = c === 1 && plane.kind === 'line' ? labels[i] - 4.5 : s;
    }
  }
  let extent = 1e-6;
  for (const v of pts) extent = Math.max(extent, Math.abs(v));
  extent *= 1.05;
  const [w, h] = [canvas.width, canvas.height];
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, w, h);
  for (let i = 0; i < n; i++) {
    ctx.fillStyle = COLOURS[labels[i] % COLOURS.length];
    ctx.globalAlpha = 0.75;
    ctx.fillRect(w / 2 + (pts[2 * i] / extent) * (w / 2) - 1.5, h / 2 - (pts[2 * i + 1] / extent) * (h / 2) - 1.5,
      3, 3);
  }
  ctx.globalAlpha = 1;
  $('scatter-hint').textContent = {
    plane: `z₁ across, z₂ up; ±${extent.toFixed(1)} at the edges.`,
    pca: `The plane of the means' first two principal components (${latent}-D latent space).`,
    line: 'A 1-D latent space: z₁ across, the label up.',
  }[plane.kind];
}

function buildLegend() {
  $('legend').replaceChildren(...COLOURS.map((c, d) => {
    const s = document.createElement('span');
    s.style.setProperty('--c', c);
    s.textContent = String(d);
    return s;
  }));
}

// ---- The page ---------------------------------------------------------------------------------------------------

const ui = {
  trainer: null,
  running: false,
  paused: false,
  lastPictures: 0,
  rowTurn: 0,
  perFrame: 1,
  generation: 0, // bumped by Restart: a loop of an older generation stops
  epochMs: [], // wall time of each epoch of the page's session
  onEpochEnd: null, // called (and cleared) at the next epoch boundary, where training pauses
};

const sliders = {
  beta: { el: 'beta', value: (v) => 2 ** v, show: (x) => (x < 1 ? x.toFixed(3) : x.toFixed(2)) },
  lr: { el: 'lr', value: (v) => 10 ** v, show: (x) => x.toExponential(1) },
  warmup: { el: 'warmup', value: (v) => v, show: (x) => x.toFixed(1) },
};

function sliderValues() {
  const out = {};
  for (const [key, s] of Object.entries(sliders)) {
    out[key] = s.value(Number($(s.el).value));
    $(`${s.el}-out`).textContent = s.show(out[key]);
  }
  return out;
}

/// The sliders' values to model 0, effective from the next epoch.
function applySliders() {
  const { beta, lr, warmup } = sliderValues();
  if (ui.trainer) ui.trainer.s.setModel(0, beta, lr, warmup);
}

function nextFrame() {
  return new Promise((resolve) => requestAnimationFrame(() => resolve()));
}

async function drawPictures() {
  const t = ui.trainer;
  const p = await t.s.pictures(0);
  tile($('recon'), [...p.x, ...p.recon], 16, 8, 2);
  tile($('samples'), p.samples, 64, 8, 2);
  drawScatter(p);
  const [loss, bce, kl] = p.testLoss;
  $('loss-label').textContent = `test: loss ${loss.toFixed(1)} = BCE ${bce.toFixed(1)} + KL ${kl.toFixed(2)} nats ` +
    `per image (β = 1) · step ${t.step}, epoch ${t.epochs.length + 1}`;
  // One model of the β row per redraw, in turn.
  if (t.models > 1) {
    const k = 1 + (ui.rowTurn++ % (t.models - 1));
    const q = await t.s.pictures(k);
    tile($(`row-${k}`), q.samples, 16, 4, 1);
    const [l2, b2, k2] = q.testLoss;
    $(`row-${k}-label`).textContent = `β ${DEFAULTS.row[k - 1]}: BCE ${b2.toFixed(1)}, KL ${k2.toFixed(2)}` +
      ` (${l2.toFixed(1)})`;
  }
}

function buildRow(models) {
  $('row-card').hidden = models < 2;
  $('row').replaceChildren(...DEFAULTS.row.map((beta, i) => {
    const f = document.createElement('figure');
    const c = document.createElement('canvas');
    c.id = `row-${i + 1}`;
    c.className = 'digit';
    const cap = document.createElement('figcaption');
    cap.id = `row-${i + 1}-label`;
    cap.textContent = `β ${beta}`;
    f.append(c, cap);
    return f;
  }));
}

async function loop(generation) {
  const t = ui.trainer;
  let epochStart = performance.now();
  while (generation === ui.generation) {
    if (ui.paused) {
      await nextFrame();
      continue;
    }
    const t0 = performance.now();
    const epochs = t.epochs.length;
    const count = await t.advance(ui.perFrame);
    const ms = performance.now() - t0;
    if (generation !== ui.generation) return;
    // Steps per frame follow the GPU: about FRAME_MS of work each, so the page stays smooth on a fast GPU and
    // a slow one still takes a step a frame.
    if (count > 0 && ms < FRAME_MS / 2) ui.perFrame = Math.min(ui.perFrame * 2, 64);
    else if (ms > FRAME_MS * 2 && ui.perFrame > 1) ui.perFrame = Math.max(1, Math.floor(ui.perFrame / 2));
    if (t.epochs.length > epochs) {
      ui.epochMs.push(performance.now() - epochStart);
      epochStart = performance.now();
      $('download').disabled = false;
      if (ui.onEpochEnd) {
        setPaused(true);
        ui.onEpochEnd();
        ui.onEpochEnd = null;
      }
    }
    const done = t.epochs.length;
    const lastEpoch = ui.epochMs.length ? ` · last epoch ${(ui.epochMs[ui.epochMs.length - 1] / 1000).toFixed(1)} s` : '';
    $('progress').textContent = `epoch ${done + 1}, step ${t.step} (${t.stepsPerEpoch} a epoch, ` +
      `${ui.perFrame} a frame)${lastEpoch}`;
    if (performance.now() - ui.lastPictures > PICTURE_MS) {
      ui.lastPictures = performance.now();
      drawLoss(t.history);
      await drawPictures();
    }
    document.body.dataset.step = String(t.step);
    await nextFrame();
  }
}

async function restart() {
  ui.generation++;
  const t = ui.trainer;
  t.s.restart();
  applySliders();
  ui.trainer = new Trainer(t.s, t.options);
  ui.epochMs = [];
  $('download').disabled = true;
  loop(ui.generation).catch(failed);
}

/// Pauses the page's training at the next epoch boundary (at once where it is paused at one): resolves then.
function pauseAtEpochEnd() {
  if (ui.paused && ui.trainer.epochStep === 0) return Promise.resolve();
  ui.paused = false;
  return new Promise((resolve) => { ui.onEpochEnd = resolve; });
}

function setPaused(paused) {
  ui.paused = paused;
  $('pause').textContent = paused ? 'Resume' : 'Pause';
}

/// The page's model as a checkpoint: written between epochs, as `vae train` writes them.
async function checkpointBytes() {
  const wasPaused = ui.paused;
  status('Writing a checkpoint at the end of this epoch…');
  await pauseAtEpochEnd();
  const bytes = await ui.trainer.s.checkpoint(0);
  setPaused(wasPaused);
  return bytes;
}

async function download() {
  const bytes = await checkpointBytes();
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
  a.download = `page-epoch${ui.trainer.epochs.length}.safetensors`;
  a.click();
  status(`Checkpoint of epoch ${ui.trainer.epochs.length}: \`vae eval --checkpoint ${a.download}\` and ` +
    `\`vae web --checkpoint ${a.download}\` read it.`);
}

function failed(e) {
  status(`Training stopped: ${e.message ?? e}`, true);
  document.body.dataset.state = 'error';
}

async function main() {
  buildLegend();
  sliderValues();
  if (!navigator.gpu) {
    $('no-webgpu-why').textContent = 'This browser offers no WebGPU (navigator.gpu is missing).';
    $('no-webgpu').hidden = false;
    document.body.dataset.state = 'no-webgpu';
    $('about').textContent = 'No WebGPU here.';
    settle.reject(new Error('no WebGPU'));
    return;
  }
  const adapter = await navigator.gpu.requestAdapter().catch(() => null);
  if (!adapter) {
    $('no-webgpu-why').textContent = 'This browser has WebGPU but offers no adapter (a GPU blocklist, or ' +
      'graphics acceleration off).';
    $('no-webgpu').hidden = false;
    document.body.dataset.state = 'no-webgpu';
    $('about').textContent = 'No WebGPU adapter here.';
    settle.reject(new Error('no WebGPU adapter'));
    return;
  }
  try {
    status('Loading the trainer and the data…');
    try {
      wasm = await import('./vae_web.js');
      await wasm.default();
    } catch (e) {
      $('no-module').hidden = false;
      document.body.dataset.state = 'no-module';
      $('about').textContent = 'The Train view\'s module is not built.';
      status('');
      settle.reject(new Error(`the Train view's module is not built (${e.message})`));
      return;
    }
    const files = await Promise.all(['train-images.idx', 'train-labels.idx', 'test-images.idx', 'test-labels.idx']
      .map(fetchBytes));
    const [n, rows, cols] = idxDims(files[0]);
    data = { train: [files[0], files[1]], test: [files[2], files[3]], n, rows, cols, nTest: idxDims(files[2])[0] };
    const { beta, lr, warmup } = sliderValues();
    const options = { ...DEFAULTS, beta, lr, klWarmup: warmup, logInterval: 64 };
    ui.trainer = await Trainer.open(options);
  } catch (e) {
    failed(e);
    settle.reject(e);
    return;
  }
  const t = ui.trainer;
  const { hidden, latent, batch } = DEFAULTS;
  $('about').textContent = `A ${data.rows * data.cols}-${hidden}-${latent} VAE, trained from scratch on ` +
    `${data.n.toLocaleString('en')} MNIST images (batch ${batch}; ${data.nTest.toLocaleString('en')} test images ` +
    `for the pictures)` + (t.models > 1 ? `, beside ${t.models - 1} models of the β row` : '') + '.';
  // The browser names its adapter in GPUAdapterInfo; wgpu's name for it can be empty there.
  const ai = adapter.info ?? {};
  const named = [ai.vendor, ai.architecture, ai.device, ai.description].filter(Boolean).join(' · ');
  const adapterName = named || t.s.adapter();
  $('adapter').textContent = `WebGPU adapter: ${adapterName}`;
  buildRow(t.models);
  for (const s of Object.values(sliders)) $(s.el).addEventListener('input', applySliders);
  $('pause').addEventListener('click', () => setPaused(!ui.paused));
  $('restart').addEventListener('click', () => restart().catch(failed));
  $('download').addEventListener('click', () => download().catch(failed));
  $('pause').disabled = false;
  $('restart').disabled = false;
  status('');
  document.body.dataset.state = 'training';
  settle.resolve({ adapter: adapterName });
  if (!query.has('idle')) loop(ui.generation).catch(failed);
}

window.vaeTrain = Object.freeze({
  /// Resolves once the module, the GPU and the data are loaded ({ adapter }); rejects with why not.
  ready,
  /// A session of its own (not the page's): options as web/trainer's `start` takes them, with the page's data.
  session: (options) => Trainer.open(options),
  /// The page's session: its per-step history and per-epoch losses.
  get trainer() { return ui.trainer; },
  get epochMs() { return [...ui.epochMs]; },
  /// The page's model as checkpoint bytes (a Uint8Array), written at the next epoch boundary.
  checkpoint: () => checkpointBytes(),
});

main();
