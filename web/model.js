// model.js: the VAE's encoder and decoder on WebGPU, computed by the project's own matmul kernel.
//
// `vae web` writes the files this reads: model.json (sizes, where each layer is in params.bin, the kernel's
// contract), matmul.wgsl (shaders/matmul.wgsl after matmul_common.wgsl and the generated prelude, composed as
// the native program composes it) and params.bin (the checkpoint's parameters, little-endian f32, in the flat
// layout of src/model/mod.rs). Each layer is one dispatch of that kernel with the layout NT (Y = X·Wᵀ) and the
// epilogue the native forward pass uses (src/model/net.rs): bias + ReLU for fc1 and fc3, bias for the heads and
// fc4. The decoder's grey levels are σ(logits), taken on the host as `Inference::decode` takes them.
//
// Every GPU call goes through one queue of jobs, so the workspace's buffers serve one call at a time.

/// Why the page cannot run the model: `kind` is "missing" (no navigator.gpu), "insecure" (not a secure
/// context), "no-adapter" (requestAdapter gave null) or "device" (no device, or it was lost).
export class NoWebGPU extends Error {
  constructor(kind, message) {
    super(message);
    this.name = 'NoWebGPU';
    this.kind = kind;
  }
}

/// Fetches a site file next to this module, failing with a message that names it.
export async function fetchFile(name, as) {
  const url = new URL(name, import.meta.url);
  let res;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new Error(`could not fetch ${name}: ${e.message}`);
  }
  if (!res.ok) throw new Error(`could not fetch ${name}: HTTP ${res.status}`);
  return as === 'json' ? res.json() : as === 'text' ? res.text() : res.arrayBuffer();
}

/// The test set's latent means on the pad: {points: Float32Array (n, 2), labels: Uint8Array (n)}, or null.
export async function loadScatter(manifest) {
  const s = manifest.scatter;
  if (!s) return null;
  const bytes = await fetchFile(s.file, 'bytes');
  if (bytes.byteLength !== s.count * 9) {
    throw new Error(`${s.file} holds ${bytes.byteLength} bytes, not the ${s.count * 9} of ${s.count} points`);
  }
  return {
    points: new Float32Array(bytes, 0, s.count * 2),
    labels: new Uint8Array(bytes, s.count * 8, s.count),
  };
}

/// A device on this browser's GPU, or NoWebGPU saying why there is none.
async function openDevice(needBytes) {
  if (!('gpu' in navigator) || !navigator.gpu) {
    if (!window.isSecureContext) {
      throw new NoWebGPU('insecure', 'WebGPU is offered only to secure contexts (https, or http://localhost), ' +
        `and this page was opened from ${location.origin}.`);
    }
    throw new NoWebGPU('missing', 'This browser does not offer WebGPU (navigator.gpu is missing).');
  }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) {
    throw new NoWebGPU('no-adapter', 'This browser offers WebGPU, but no GPU adapter: WebGPU is turned off ' +
      'for this GPU or driver, or graphics acceleration is off.');
  }
  const limits = adapter.limits;
  if (needBytes > limits.maxStorageBufferBindingSize || needBytes > limits.maxBufferSize) {
    throw new NoWebGPU('device', `The model needs storage buffers of ${needBytes} bytes; this GPU allows ` +
      `${Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize)}.`);
  }
  // WebGPU's default limits (128 MiB bindings, 256 MiB buffers) hold any model of MNIST's size; ask for more
  // only where the parameters need it.
  const requiredLimits = needBytes <= 128 << 20 ? {} : {
    maxStorageBufferBindingSize: needBytes,
    maxBufferSize: Math.max(needBytes, 256 << 20),
  };
  const device = await adapter.requestDevice({ requiredLimits });
  const info = adapter.info || {};
  return { device, adapterName: [info.vendor, info.architecture, info.device, info.description]
    .filter(Boolean).join(' ') || 'an unnamed adapter' };
}

/// Maps a line of the composed module to its part (prelude or shaders/ file) and the line there.
function locate(parts, line) {
  let first = 1;
  for (const p of parts) {
    if (line < first + p.lines) return `${p.name}:${line - first + 1}`;
    first += p.lines;
  }
  return `line ${line}`;
}

/// Creates the kernel's shader module and its two pipelines (NT with each epilogue), failing with the
/// compiler's messages located in their source files.
async function buildPipelines(device, kernel, source) {
  const module = device.createShaderModule({ label: kernel.module, code: source });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === 'error');
  if (errors.length) {
    throw new Error(`the browser rejected ${kernel.file}: ` +
      errors.map((m) => `${locate(kernel.parts, m.lineNum)}: ${m.message}`).join('; '));
  }
  const entries = kernel.bindings.map((b) => ({
    binding: b.binding,
    visibility: GPUShaderStage.COMPUTE,
    buffer: { type: b.type },
  }));
  const bindGroupLayout = device.createBindGroupLayout({ label: 'matmul.layout', entries });
  const layout = device.createPipelineLayout({ bindGroupLayouts: [bindGroupLayout] });
  const pipeline = (epilogue) => device.createComputePipelineAsync({
    label: `matmul NT ${epilogue}`,
    layout,
    compute: {
      module,
      entryPoint: kernel.entry,
      constants: { ...kernel.constants, LAYOUT: kernel.layout.NT, EPILOGUE: kernel.epilogue[epilogue] },
    },
  });
  const [Bias, BiasRelu] = await Promise.all([pipeline('Bias'), pipeline('BiasRelu')]);
  return { bindGroupLayout, pipelines: { Bias, BiasRelu } };
}

/// Loads the model onto this browser's GPU.
export async function openModel(manifest) {
  const [source, paramBytes] = await Promise.all([
    fetchFile(manifest.kernel.file, 'text'),
    fetchFile(manifest.params.file, 'bytes'),
  ]);
  if (paramBytes.byteLength !== manifest.params.count * 4) {
    throw new Error(`${manifest.params.file} holds ${paramBytes.byteLength} bytes, not the ` +
      `${manifest.params.count * 4} of ${manifest.params.count} parameters`);
  }
  const { device, adapterName } = await openDevice(paramBytes.byteLength);
  const model = new Model(device, manifest, adapterName);
  await model.init(source, paramBytes);
  return model;
}

const ROWS = 16; // rows of the workspace: a decode or encode of more is done in chunks of this many

export class Model {
  constructor(device, manifest, adapterName) {
    this.device = device;
    this.manifest = manifest;
    this.info = manifest.info;
    this.adapterName = adapterName;
    this.lost = null;
    this.queue = Promise.resolve();
    device.lost.then((e) => { this.lost = e.message || e.reason || 'the device was lost'; });
  }

  async init(source, paramBytes) {
    const { device, manifest } = this;
    const { latent: L, hidden: H, pixels: P } = this.info;
    device.pushErrorScope('validation');
    const { bindGroupLayout, pipelines } = await buildPipelines(device, manifest.kernel, source);
    this.pipelines = pipelines;
    const storage = (label, floats, extra = 0) => device.createBuffer({
      label, size: Math.max(4, floats * 4), usage: GPUBufferUsage.STORAGE | extra,
    });
    const C = GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    this.params = storage('params', paramBytes.byteLength / 4, GPUBufferUsage.COPY_DST);
    device.queue.writeBuffer(this.params, 0, paramBytes);
    this.x = storage('x', ROWS * P, C);
    this.h1 = storage('h1', ROWS * H);
    this.heads = storage('heads', ROWS * 2 * L, C);
    this.z = storage('z', ROWS * L, C);
    this.h3 = storage('h3', ROWS * H);
    this.logits = storage('logits', ROWS * P, C);
    this.spare = storage('unpaired', 1);
    this.readback = device.createBuffer({
      label: 'readback', size: ROWS * Math.max(P, 2 * L) * 4,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const L4 = manifest.layers;
    // Each layer as `net.rs` computes it: (input, layer, output, epilogue).
    this.layers = {};
    for (const [name, input, output, epilogue] of [
      ['fc1', this.x, this.h1, 'BiasRelu'],
      ['heads', this.h1, this.heads, 'Bias'],
      ['fc3', this.z, this.h3, 'BiasRelu'],
      ['fc4', this.h3, this.logits, 'Bias'],
    ]) {
      const uniform = device.createBuffer({
        label: `${name}.params`, size: manifest.kernel.params.size * manifest.kernel.params.count,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      });
      // A pair's second product is never computed here: its B and operand repeat the first's (read-only), its
      // C is a spare buffer (writable bindings must not alias).
      const buffers = {
        params: uniform, a: input, b: this.params, c: output, aux: this.params,
        b2: this.params, c2: this.spare, aux2: this.params,
      };
      const bindGroup = device.createBindGroup({
        label: name, layout: bindGroupLayout,
        entries: manifest.kernel.bindings.map((b) => ({ binding: b.binding, resource: { buffer: buffers[b.name] } })),
      });
      this.layers[name] = { ...L4[name], uniform, bindGroup, epilogue };
    }
    const error = await device.popErrorScope();
    if (error) throw new Error(`WebGPU refused the model's pipelines or buffers: ${error.message}`);
  }

  /// Queues `job` after every earlier one; the result is the job's.
  run(job) {
    const result = this.queue.then(() => {
      if (this.lost) throw new NoWebGPU('device', `The GPU device was lost (${this.lost}); reload the page.`);
      return job();
    });
    this.queue = result.catch(() => {});
    return result;
  }

  /// Records one layer for `rows` rows: its MatmulParams, then one dispatch of the kernel.
  layer(pass, name, rows) {
    const l = this.layers[name];
    const { kernel } = this.manifest;
    const values = { m: rows, n: l.out, k: l.in, a_off: 0, b_off: l.weight, c_off: 0, aux_off: l.bias, bias_off: 0 };
    const data = new DataView(new ArrayBuffer(kernel.params.size));
    for (const f of kernel.params.fields) {
      const v = values[f.name] ?? 0;
      if (f.type === 'f32') data.setFloat32(f.offset, v, true);
      else data.setUint32(f.offset, v, true);
    }
    this.device.queue.writeBuffer(l.uniform, 0, data.buffer);
    pass.setPipeline(this.pipelines[l.epilogue]);
    pass.setBindGroup(0, l.bindGroup);
    pass.dispatchWorkgroups(Math.ceil(l.out / kernel.tile.cols), Math.ceil(rows / kernel.tile.rows), 1);
  }

  /// Runs `layers` on `rows` rows whose input is `input` (written to `inBuffer`), and reads `count` floats of
  /// `outBuffer` back.
  async pass(layers, rows, inBuffer, input, outBuffer, count) {
    const { device } = this;
    device.queue.writeBuffer(inBuffer, 0, input);
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    for (const name of layers) this.layer(pass, name, rows);
    pass.end();
    encoder.copyBufferToBuffer(outBuffer, 0, this.readback, 0, count * 4);
    device.queue.submit([encoder.finish()]);
    await this.readback.mapAsync(GPUMapMode.READ, 0, count * 4);
    const out = new Float32Array(this.readback.getMappedRange(0, count * 4).slice(0));
    this.readback.unmap();
    return out;
  }

  /// Bernoulli means p(x|z) of `n` latent codes `z` (n·latent floats), as n·pixels floats.
  decodeMany(z, n) {
    const { latent: L, pixels: P } = this.info;
    return this.run(async () => {
      const out = new Float32Array(n * P);
      for (let r = 0; r < n; r += ROWS) {
        const rows = Math.min(ROWS, n - r);
        const logits = await this.pass(['fc3', 'fc4'], rows, this.z,
          Float32Array.from(z.subarray(r * L, (r + rows) * L)), this.logits, rows * P);
        for (let i = 0; i < logits.length; i++) out[r * P + i] = 1 / (1 + Math.exp(-logits[i]));
      }
      return out;
    });
  }

  /// μ | log σ² of q(z|x) for `n` images `x` (n·pixels floats in [0, 1]), as n·2·latent floats.
  encodeMany(x, n) {
    const { latent: L, pixels: P } = this.info;
    return this.run(async () => {
      const out = new Float32Array(n * 2 * L);
      for (let r = 0; r < n; r += ROWS) {
        const rows = Math.min(ROWS, n - r);
        out.set(await this.pass(['fc1', 'heads'], rows, this.x,
          Float32Array.from(x.subarray(r * P, (r + rows) * P)), this.heads, rows * 2 * L), r * 2 * L);
      }
      return out;
    });
  }
}
