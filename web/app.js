// app.js: the explorer's page. The latent pad (the test set's latent means behind a point that the decoder
// follows), sliders for every latent dimension, a drawing canvas whose encoding is marked on the pad (μ, and σ as
// an ellipse), interpolation between two points, and the `window.vae` API for scripts and tests.
//
// The pad shows a plane of latent space, from model.json: z = origin + a·axes[0] + b·axes[1] for pad
// coordinates (a, b). In 2-D that is the latent space itself; beyond 2-D the plane of the test means' first two
// principal components, where dragging moves z within the plane and keeps its part off the plane (which the
// sliders set); in 1-D, left–right is z₁ and the means are spread up–down by label.

import { NoWebGPU, fetchFile, loadScatter, openModel } from './model.js';

const $ = (id) => document.getElementById(id);

// Tableau's ten colours, one per label.
const COLOURS = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7',
  '#9c755f', '#bab0ac'];
const colour = (label) => COLOURS[label % COLOURS.length];
const SUB = '₀₁₂₃₄₅₆₇₈₉';
const sub = (n) => String(n).split('').map((d) => SUB[d]).join('');
const STEPS = 10; // images in the interpolation strip

// ---- The API for scripts and tests ------------------------------------------------------------------------------

let info = null;
let model = null;
let settle;
const ready = new Promise((resolve, reject) => { settle = { resolve, reject }; });
ready.catch(() => {}); // the page shows why it failed; whoever awaits `ready` still sees the rejection

/// `v` as a Float32Array of `n` finite numbers in [lo, hi], or a RangeError naming `what`.
function numbers(v, n, what, lo = -Infinity, hi = Infinity) {
  if (v == null || typeof v.length !== 'number' || v.length !== n) {
    throw new RangeError(`${what}: expected ${n} numbers, got ${v == null ? String(v) : v.length}`);
  }
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const x = Number(v[i]);
    if (!Number.isFinite(x) || x < lo || x > hi) {
      const range = lo > -Infinity ? ` in [${lo}, ${hi}]` : '';
      throw new RangeError(`${what}: element ${i} is ${v[i]}, not a finite number${range}`);
    }
    out[i] = x;
  }
  return out;
}

Object.defineProperty(window, 'vae', {
  enumerable: true,
  value: Object.freeze({
    /// Resolves (to `info`) once the model is on the GPU; rejects with the reason it cannot be.
    ready,
    /// Bernoulli means p(x|z) of one latent code z (`latent` numbers): a Float32Array of `pixels` in [0, 1].
    async decode(z) {
      await ready;
      return model.decodeMany(numbers(z, info.latent, 'vae.decode(z)'), 1);
    },
    /// q(z|x) of one image (`pixels` numbers in [0, 1]): {mu, logvar}, arrays of `latent` numbers.
    async encode(pixels) {
      await ready;
      const L = info.latent;
      const h = await model.encodeMany(numbers(pixels, info.pixels, 'vae.encode(pixels)', 0, 1), 1);
      return { mu: Array.from(h.subarray(0, L)), logvar: Array.from(h.subarray(L, 2 * L)) };
    },
    /// {latent, hidden, pixels, rows, cols}, once model.json is read (null before).
    get info() { return info && { ...info }; },
  }),
});

// ---- State ------------------------------------------------------------------------------------------------------

const S = {
  manifest: null,
  plane: null,
  scatter: null,
  z: null, // the point: Float32Array(latent)
  padY: 0, // a 1-D latent space's vertical pad coordinate (free: it decodes to nothing)
  a: null,
  b: null,
  drawn: null, // {mu, logvar} of the drawing
};

function status(text, isError = false) {
  const el = $('status');
  el.textContent = text;
  el.classList.toggle('error', isError);
}

// ---- The plane --------------------------------------------------------------------------------------------------

/// Pad coordinates (a, b) of latent point z.
function toPad(z) {
  const { origin, axes, kind } = S.plane;
  let a = 0;
  let b = 0;
  for (let j = 0; j < z.length; j++) {
    a += (z[j] - origin[j]) * axes[0][j];
    b += (z[j] - origin[j]) * axes[1][j];
  }
  return [a, kind === 'line' ? S.padY : b];
}

/// The point moved to pad coordinates (a, b), keeping its part off the plane.
function movedTo(z, a, b) {
  const { axes, kind } = S.plane;
  const [a0, b0] = toPad(z);
  const out = Float32Array.from(z);
  for (let j = 0; j < z.length; j++) {
    out[j] += (a - a0) * axes[0][j] + (kind === 'line' ? 0 : (b - b0) * axes[1][j]);
  }
  if (kind === 'line') S.padY = b;
  return out;
}

// ---- Drawing images ---------------------------------------------------------------------------------------------

/// Paints grey levels `p` (rows·cols in [0, 1]) into `canvas` at column `x`.
function paint(canvas, p, x = 0) {
  const { rows, cols } = info;
  const img = new ImageData(cols, rows);
  for (let i = 0; i < rows * cols; i++) {
    const v = Math.round(Math.min(1, Math.max(0, p[i])) * 255);
    img.data.set([v, v, v, 255], 4 * i);
  }
  canvas.getContext('2d').putImageData(img, x, 0);
}

function blank(canvas) {
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
}

/// Runs `job` for the latest request only: requests made while one runs replace each other, so a fast drag never
/// queues stale work. `job` gets the request's value. While work is wanted or running, `el` is marked
/// `data-busy` (scripts and tests wait for it to go).
function latest(job, el) {
  let wanted = null;
  let running = false;
  return async (value) => {
    wanted = { value };
    el.dataset.busy = '1';
    if (running) return;
    running = true;
    try {
      while (wanted) {
        const w = wanted;
        wanted = null;
        try {
          await job(w.value);
        } catch (e) {
          status(e instanceof NoWebGPU ? e.message : `The GPU call failed: ${e.message}`, true);
        }
      }
    } finally {
      running = false;
      delete el.dataset.busy;
    }
  };
}

let decodeMs = null;
let statusShown = 0;
const decodePoint = latest(async (z) => {
  if (!model) return;
  const t0 = performance.now();
  const p = await model.decodeMany(z, 1);
  const ms = performance.now() - t0;
  decodeMs = decodeMs === null ? ms : 0.8 * decodeMs + 0.2 * ms;
  paint($('decoded'), p);
  $('decoded').dataset.z = JSON.stringify(Array.from(z));
  if (performance.now() - statusShown > 250) {
    statusShown = performance.now();
    status(`Decoding with WebGPU on ${model.adapterName}: ${decodeMs.toFixed(1)} ms per image.`);
  }
}, $('decoded'));

// ---- The pad ----------------------------------------------------------------------------------------------------

const pad = $('pad');
let padLayer = null; // the means and the axes, drawn once per size

function padView() {
  const [x0, x1] = S.manifest.pad.x;
  const [y0, y1] = S.manifest.pad.y;
  const W = pad.width;
  const H = pad.height;
  return {
    x: (a) => ((a - x0) / (x1 - x0)) * W,
    y: (b) => (1 - (b - y0) / (y1 - y0)) * H,
    a: (x) => x0 + (x / W) * (x1 - x0),
    b: (y) => y1 - (y / H) * (y1 - y0),
    sx: W / (x1 - x0),
    sy: H / (y1 - y0),
    x0, x1, y0, y1, W, H,
  };
}

function renderPadLayer() {
  const dpr = window.devicePixelRatio || 1;
  const side = Math.round((pad.clientWidth || 520) * dpr);
  pad.width = side;
  pad.height = side;
  padLayer = document.createElement('canvas');
  padLayer.width = side;
  padLayer.height = side;
  const ctx = padLayer.getContext('2d');
  const v = padView();
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, side, side);
  // Whole-number grid lines where there are few enough, the zero lines darker.
  ctx.lineWidth = dpr;
  const grid = (lo, hi, line) => {
    if (hi - lo > 24) return;
    for (let t = Math.ceil(lo); t <= Math.floor(hi); t++) {
      ctx.strokeStyle = t === 0 ? '#c8c7c0' : '#eeede8';
      line(t);
    }
  };
  grid(v.x0, v.x1, (t) => { ctx.beginPath(); ctx.moveTo(v.x(t), 0); ctx.lineTo(v.x(t), side); ctx.stroke(); });
  if (S.plane.kind !== 'line') {
    grid(v.y0, v.y1, (t) => { ctx.beginPath(); ctx.moveTo(0, v.y(t)); ctx.lineTo(side, v.y(t)); ctx.stroke(); });
  }
  if (S.scatter) {
    const { points, labels } = S.scatter;
    const r = Math.max(1.2, 1.4 * dpr);
    const byLabel = new Map();
    labels.forEach((l, i) => { if (!byLabel.has(l)) byLabel.set(l, []); byLabel.get(l).push(i); });
    ctx.globalAlpha = 0.55;
    for (const [label, indices] of byLabel) {
      ctx.fillStyle = colour(label);
      for (const i of indices) ctx.fillRect(v.x(points[2 * i]) - r, v.y(points[2 * i + 1]) - r, 2 * r, 2 * r);
    }
    ctx.globalAlpha = 1;
  }
  ctx.fillStyle = '#6b6b70';
  ctx.font = `${12 * dpr}px system-ui, sans-serif`;
  ctx.textAlign = 'right';
  ctx.fillText(S.plane.labels[0], side - 6 * dpr, side - 6 * dpr);
  ctx.textAlign = 'left';
  ctx.fillText(S.plane.labels[1], 6 * dpr, 16 * dpr);
}

/// The 2×2 covariance, in pad coordinates, of a diagonal Gaussian with variances `s` (projected onto the plane).
function padCovariance(s) {
  const [u, w] = S.plane.axes;
  let c00 = 0;
  let c01 = 0;
  let c11 = 0;
  for (let j = 0; j < s.length; j++) {
    c00 += u[j] * u[j] * s[j];
    c01 += u[j] * w[j] * s[j];
    c11 += w[j] * w[j] * s[j];
  }
  return [c00, c01, c11];
}

function drawPad() {
  if (!padLayer) return;
  const ctx = pad.getContext('2d');
  const v = padView();
  const dpr = window.devicePixelRatio || 1;
  ctx.drawImage(padLayer, 0, 0);
  // The interpolation line.
  if (S.a && S.b) {
    const [ax, ay] = toPad(S.a);
    const [bx, by] = toPad(S.b);
    ctx.strokeStyle = '#1d1d1f';
    ctx.lineWidth = 1.5 * dpr;
    ctx.setLineDash([5 * dpr, 4 * dpr]);
    ctx.beginPath();
    ctx.moveTo(v.x(ax), v.y(ay));
    ctx.lineTo(v.x(bx), v.y(by));
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.font = `bold ${13 * dpr}px system-ui, sans-serif`;
    ctx.fillStyle = '#1d1d1f';
    ctx.textAlign = 'center';
    ctx.fillText('A', v.x(ax), v.y(ay) - 8 * dpr);
    ctx.fillText('B', v.x(bx), v.y(by) - 8 * dpr);
  }
  // The drawing's μ, and σ as its 1σ and 2σ ellipses.
  if (S.drawn) {
    const { mu, logvar } = S.drawn;
    const [mx, my] = toPad(mu);
    const [c00, c01, c11] = padCovariance(logvar.map(Math.exp));
    // Eigen-decomposition of the symmetric 2×2 covariance.
    const mean = (c00 + c11) / 2;
    const d = Math.sqrt(((c00 - c11) / 2) ** 2 + c01 * c01);
    const l1 = mean + d;
    const l2 = Math.max(0, mean - d);
    const angle = Math.atan2(l1 - c00, c01 || 1e-30);
    ctx.strokeStyle = '#d9480f';
    for (const k of [1, 2]) {
      ctx.save();
      ctx.translate(v.x(mx), v.y(my));
      ctx.scale(v.sx, -v.sy);
      ctx.rotate(c01 === 0 ? (c00 >= c11 ? 0 : Math.PI / 2) : angle);
      ctx.beginPath();
      const flat = S.plane.kind === 'line' ? 0.15 : 0;
      ctx.ellipse(0, 0, k * Math.sqrt(l1), Math.max(k * Math.sqrt(l2), flat), 0, 0, 2 * Math.PI);
      ctx.restore();
      ctx.lineWidth = (k === 1 ? 2 : 1) * dpr;
      ctx.stroke();
    }
    ctx.lineWidth = 2 * dpr;
    ctx.beginPath();
    const c = 6 * dpr;
    ctx.moveTo(v.x(mx) - c, v.y(my) - c); ctx.lineTo(v.x(mx) + c, v.y(my) + c);
    ctx.moveTo(v.x(mx) - c, v.y(my) + c); ctx.lineTo(v.x(mx) + c, v.y(my) - c);
    ctx.stroke();
    ctx.fillStyle = '#d9480f';
    ctx.font = `${12 * dpr}px system-ui, sans-serif`;
    ctx.textAlign = 'left';
    ctx.fillText('μ', v.x(mx) + 8 * dpr, v.y(my) + 14 * dpr);
  }
  // The point.
  const [px, py] = toPad(S.z);
  ctx.beginPath();
  ctx.arc(v.x(px), v.y(py), 7 * dpr, 0, 2 * Math.PI);
  ctx.fillStyle = '#fff';
  ctx.fill();
  ctx.lineWidth = 3 * dpr;
  ctx.strokeStyle = '#1d1d1f';
  ctx.stroke();
  ctx.beginPath();
  ctx.arc(v.x(px), v.y(py), 3 * dpr, 0, 2 * Math.PI);
  ctx.fillStyle = '#d9480f';
  ctx.fill();
}

/// Moves the point to `z`: the pad, the sliders, the label and the decoded image follow.
function setZ(z) {
  S.z = z;
  pad.dataset.z = JSON.stringify(Array.from(z));
  const sliders = $('sliders').querySelectorAll('input');
  sliders.forEach((s, j) => {
    s.value = z[j];
    s.nextElementSibling.textContent = z[j].toFixed(2);
  });
  $('z-label').textContent = `z = (${Array.from(z, (x) => x.toFixed(2)).join(', ')})`;
  drawPad();
  decodePoint(Float32Array.from(z));
}

function padPointer() {
  let dragging = null;
  const move = (e) => {
    const rect = pad.getBoundingClientRect();
    const v = padView();
    const x = ((e.clientX - rect.left) / rect.width) * v.W;
    const y = ((e.clientY - rect.top) / rect.height) * v.H;
    setZ(movedTo(S.z, v.a(x), v.b(y)));
  };
  pad.addEventListener('pointerdown', (e) => {
    dragging = e.pointerId;
    pad.setPointerCapture(e.pointerId);
    move(e);
    e.preventDefault();
  });
  pad.addEventListener('pointermove', (e) => { if (dragging === e.pointerId) move(e); });
  const end = (e) => {
    if (dragging !== e.pointerId) return;
    dragging = null;
    if (pad.hasPointerCapture(e.pointerId)) pad.releasePointerCapture(e.pointerId);
  };
  pad.addEventListener('pointerup', end);
  pad.addEventListener('pointercancel', end);
}

function buildSliders() {
  const box = $('sliders');
  S.manifest.ranges.forEach(([lo, hi], j) => {
    const label = document.createElement('label');
    label.textContent = `z${sub(j + 1)}`;
    const input = document.createElement('input');
    Object.assign(input, { type: 'range', min: lo, max: hi, step: 0.01, id: `z${j + 1}` });
    label.htmlFor = input.id;
    const out = document.createElement('output');
    input.addEventListener('input', () => {
      const z = Float32Array.from(S.z);
      z[j] = Number(input.value);
      setZ(z);
    });
    box.append(label, input, out);
  });
}

function buildLegend() {
  const box = $('legend');
  if (!S.scatter) {
    box.textContent = 'No test-set means: the site was built without test images.';
    return;
  }
  const counts = new Map();
  for (const l of S.scatter.labels) counts.set(l, (counts.get(l) || 0) + 1);
  [...counts.keys()].sort((p, q) => p - q).forEach((l) => {
    const s = document.createElement('span');
    s.style.setProperty('--c', colour(l));
    s.textContent = String(l);
    box.append(s);
  });
}

// ---- Drawing a digit --------------------------------------------------------------------------------------------

const draw = $('draw');

function clearDrawing() {
  blank(draw);
  S.drawn = null;
  blank($('seen'));
  blank($('recon'));
  delete $('recon').dataset.mu;
  $('mu-label').textContent = '';
  $('go-mu').disabled = true;
  drawPad();
}

/// The drawing as the encoder's input, prepared as MNIST's digits were: the ink's bounding box scaled to fit
/// 20/28 of the image (keeping its aspect), then moved so that its centre of mass is the image's centre.
function drawingPixels() {
  const { rows, cols } = info;
  const w = draw.width;
  const h = draw.height;
  const ink = draw.getContext('2d').getImageData(0, 0, w, h).data;
  let [x0, y0, x1, y1] = [w, h, -1, -1];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (ink[4 * (y * w + x)] > 24) {
        x0 = Math.min(x0, x); x1 = Math.max(x1, x);
        y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
    }
  }
  const out = new Float32Array(rows * cols);
  if (x1 < 0) return null;
  const fit = Math.max(1, Math.round((Math.min(rows, cols) * 20) / 28));
  const scale = fit / Math.max(x1 - x0 + 1, y1 - y0 + 1);
  const dw = (x1 - x0 + 1) * scale;
  const dh = (y1 - y0 + 1) * scale;
  const small = document.createElement('canvas');
  small.width = cols;
  small.height = rows;
  const ctx = small.getContext('2d');
  blank(small);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(draw, x0, y0, x1 - x0 + 1, y1 - y0 + 1, (cols - dw) / 2, (rows - dh) / 2, dw, dh);
  const px = ctx.getImageData(0, 0, cols, rows).data;
  const grey = new Float32Array(rows * cols);
  let [m, mx, my] = [0, 0, 0];
  for (let i = 0; i < rows * cols; i++) {
    grey[i] = px[4 * i] / 255;
    m += grey[i];
    mx += grey[i] * ((i % cols) + 0.5);
    my += grey[i] * (Math.floor(i / cols) + 0.5);
  }
  const sx = Math.round(cols / 2 - mx / m);
  const sy = Math.round(rows / 2 - my / m);
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < cols; x++) {
      const fx = x - sx;
      const fy = y - sy;
      if (fx >= 0 && fx < cols && fy >= 0 && fy < rows) out[y * cols + x] = grey[fy * cols + fx];
    }
  }
  return out;
}

const encodeDrawing = latest(async () => {
  const x = drawingPixels();
  if (!x) return;
  paint($('seen'), x);
  if (!model) return;
  const L = info.latent;
  const h = await model.encodeMany(x, 1);
  const mu = Array.from(h.subarray(0, L));
  const logvar = Array.from(h.subarray(L, 2 * L));
  const recon = await model.decodeMany(Float32Array.from(mu), 1);
  paint($('recon'), recon);
  S.drawn = { mu, logvar };
  $('recon').dataset.mu = JSON.stringify(mu);
  $('seen').dataset.pixels = JSON.stringify(Array.from(x));
  const sigma = logvar.map((l) => Math.exp(l / 2));
  $('mu-label').textContent = `μ = (${mu.map((v) => v.toFixed(2)).join(', ')})  ` +
    `σ = (${sigma.map((v) => v.toFixed(2)).join(', ')})`;
  $('go-mu').disabled = false;
  drawPad();
}, $('recon'));

function drawPointer() {
  const ctx = draw.getContext('2d');
  let last = null;
  let pointer = null;
  const at = (e) => {
    const rect = draw.getBoundingClientRect();
    return [((e.clientX - rect.left) / rect.width) * draw.width, ((e.clientY - rect.top) / rect.height) * draw.height];
  };
  const stroke = (to) => {
    ctx.strokeStyle = '#fff';
    ctx.lineWidth = draw.width * 0.085;
    ctx.lineCap = 'round';
    ctx.lineJoin = 'round';
    ctx.beginPath();
    ctx.moveTo(...last);
    ctx.lineTo(...to);
    ctx.stroke();
    last = to;
  };
  draw.addEventListener('pointerdown', (e) => {
    pointer = e.pointerId;
    draw.setPointerCapture(e.pointerId);
    last = at(e);
    stroke(last);
    e.preventDefault();
  });
  draw.addEventListener('pointermove', (e) => {
    if (pointer !== e.pointerId) return;
    stroke(at(e));
    encodeDrawing();
  });
  const end = (e) => {
    if (pointer !== e.pointerId) return;
    pointer = null;
    encodeDrawing();
  };
  draw.addEventListener('pointerup', end);
  draw.addEventListener('pointercancel', end);
  $('clear').addEventListener('click', clearDrawing);
  $('go-mu').addEventListener('click', () => { if (S.drawn) setZ(Float32Array.from(S.drawn.mu)); });
}

// ---- Interpolation ----------------------------------------------------------------------------------------------

const strip = $('strip');

const decodeStrip = latest(async ([a, b]) => {
  if (!model) return;
  const L = info.latent;
  const z = new Float32Array(STEPS * L);
  for (let s = 0; s < STEPS; s++) {
    const t = s / (STEPS - 1);
    for (let j = 0; j < L; j++) z[s * L + j] = a[j] + t * (b[j] - a[j]);
  }
  const p = await model.decodeMany(z, STEPS);
  for (let s = 0; s < STEPS; s++) paint(strip, p.subarray(s * info.pixels, (s + 1) * info.pixels), s * info.cols);
  strip.dataset.ab = JSON.stringify([Array.from(a), Array.from(b)]);
}, $('strip'));

function setEnds(a, b) {
  S.a = a;
  S.b = b;
  drawPad();
  decodeStrip([Float32Array.from(a), Float32Array.from(b)]);
}

function alongLine(t) {
  const z = new Float32Array(info.latent);
  for (let j = 0; j < z.length; j++) z[j] = S.a[j] + t * (S.b[j] - S.a[j]);
  setZ(z);
}

function interpolation() {
  strip.width = STEPS * info.cols;
  strip.height = info.rows;
  blank(strip);
  $('set-a').addEventListener('click', () => setEnds(Float32Array.from(S.z), S.b));
  $('set-b').addEventListener('click', () => setEnds(S.a, Float32Array.from(S.z)));
  $('t').addEventListener('input', (e) => alongLine(Number(e.target.value)));
  strip.addEventListener('click', (e) => {
    const rect = strip.getBoundingClientRect();
    const s = Math.min(STEPS - 1, Math.max(0, Math.floor(((e.clientX - rect.left) / rect.width) * STEPS)));
    const t = s / (STEPS - 1);
    $('t').value = t;
    alongLine(t);
  });
  // Start between the centres of the first two labels' means (or across the pad, without means).
  const origin = Float32Array.from(S.plane.origin);
  const at = (a, b) => movedTo(origin, a, b);
  let ends = null;
  if (S.scatter) {
    const sums = new Map();
    const { points, labels } = S.scatter;
    labels.forEach((l, i) => {
      const s = sums.get(l) || [0, 0, 0];
      sums.set(l, [s[0] + points[2 * i], s[1] + points[2 * i + 1], s[2] + 1]);
    });
    const keys = [...sums.keys()].sort((p, q) => p - q);
    if (keys.length >= 2) {
      ends = keys.slice(0, 2).map((k) => { const [x, y, n] = sums.get(k); return at(x / n, y / n); });
    }
  }
  if (!ends) {
    const v = S.manifest.pad;
    const mid = (v.y[0] + v.y[1]) / 2;
    ends = [at(v.x[0] + 0.25 * (v.x[1] - v.x[0]), mid), at(v.x[0] + 0.75 * (v.x[1] - v.x[0]), mid)];
  }
  S.padY = 0;
  setEnds(ends[0], ends[1]);
}

// ---- Start ------------------------------------------------------------------------------------------------------

function describe(m, scatter) {
  const { latent, hidden, pixels, rows, cols } = m.info;
  const ck = m.checkpoint;
  const means = scatter ? `${scatter.labels.length.toLocaleString('en')} test-set latent means` :
    'no test-set means (built without test images)';
  $('about').textContent = `${pixels}-${hidden}-${latent} VAE on ${rows}×${cols} images · ${ck.name}, ` +
    `epoch ${ck.epoch} (step ${ck.step}) · ${means}`;
  const hint = {
    latent: latent === 2 ? 'Drag the point: the decoder follows, on the GPU.' :
      'The pad is the plane of z₁ and z₂ (no test means to find a better one); the sliders move every dimension.',
    pca: `The pad is the plane of the test means' first two principal components; dragging moves the point in it, ` +
      'and the sliders move each latent dimension.',
    line: 'A 1-D latent space: left–right is z₁; the means are spread up–down by their label.',
  }[m.plane.kind];
  $('pad-hint').textContent = hint;
}

async function main() {
  let manifest;
  let scatter;
  try {
    manifest = await fetchFile('model.json', 'json');
    scatter = await loadScatter(manifest);
  } catch (e) {
    $('about').textContent = `The explorer's files could not be read: ${e.message}`;
    document.body.dataset.state = 'error';
    settle.reject(e);
    return;
  }
  info = { ...manifest.info };
  S.manifest = manifest;
  S.plane = manifest.plane;
  S.scatter = scatter;
  S.z = Float32Array.from(S.plane.origin);
  describe(manifest, scatter);
  for (const id of ['decoded', 'seen', 'recon']) {
    $(id).width = info.cols;
    $(id).height = info.rows;
    blank($(id));
  }
  blank(draw);
  buildSliders();
  buildLegend();
  renderPadLayer();
  padPointer();
  drawPointer();
  interpolation();
  setZ(S.z);
  window.addEventListener('resize', () => { renderPadLayer(); drawPad(); });

  try {
    status('Loading the model onto the GPU…');
    model = await openModel(manifest);
  } catch (e) {
    if (e instanceof NoWebGPU) {
      $('no-webgpu-why').textContent = e.message;
      $('no-webgpu').hidden = false;
      status('');
      document.body.dataset.state = 'no-webgpu';
    } else {
      status(`The model could not be loaded: ${e.message}`, true);
      document.body.dataset.state = 'error';
    }
    settle.reject(e);
    return;
  }
  status(`Decoding with WebGPU on ${model.adapterName}.`);
  document.body.dataset.state = 'ready';
  settle.resolve({ ...info });
  setZ(S.z);
  setEnds(S.a, S.b);
}

main();
