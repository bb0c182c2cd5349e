// reparam: the reparameterization trick, z = μ + ε·σ with σ = exp(½·log σ²) and ε ~ N(0, I) from Philox, fused with
// the KL term KL(q(z|x) ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²), which needs the same μ and log σ², and with the
// KL's own part of the heads' gradient (training, pipeline constant GRAD):
//
//   heads:   (rows, 2·latent) f32, the encoder's two heads side by side: μ in columns 0..latent, log σ² after
//   z:       (rows, latent) f32
//   eps:     (rows, latent) f32, the ε drawn (kept for tests and tools)
//   dheads:  (rows, 2·latent) f32, GRAD only: w·μ and w·½·(σ² − 1), the KL's gradient (w = step.kl_weight); the
//            decoder's backward adds ∂z's part in its fc3 input-gradient epilogue (EPI_KL_GRAD, matmul_common.wgsl)
//   coef:    (rows, latent) f32, GRAD only: ½·ε·σ, the factor of ∂z in ∂log σ²
//   partials: one KL partial per workgroup at partials[step.partial_slot · p.slot_stride + p.partial_off + wg]
//            (one model; several: below)
//   weights, h3: reparam_decode only (below); reparam_forward binds any buffers there
//
// So the backward of reparameterization and KL, ∂μ = ∂z + w·μ and ∂log σ² = ½·∂z·ε·σ + w·½·(σ² − 1), costs no
// dispatch of its own. ε of element i = r·latent + j is philox_normal of counter (i, step.rng_step, stream, 0)
// under key = the seed, so the CPU (and a resumed run) can draw it again.
//
// Several models at once (a batched step, p.models of them): model k is the grid's z (so each model's workgroups
// and loops are exactly those of the model alone, and it computes the same bits); its heads start at
// k·2·p.z_stride, its z, ε and ½·ε·σ at k·p.z_stride, its h3 at k·p.h_stride and its decoder weights
// p.param_stride·k further on; its partials take slot step.partial_slot·p.models + k. With p.per_model, its KL
// weight and key come from step_models[k] (its row in the step row's window, step.wgsl), not step and p.
//
// Entry points, each dispatched as (groups, 1, models) workgroups of WG, 1 <= groups <= MAX_PARTIALS; each
// workgroup sums its KL terms into its partial at the end (WGSL has no f32 atomics):
//
//   reparam_forward  each invocation strides over the n = rows·latent elements by WG·groups.
//   reparam_decode   also the decoder's first layer, h3 = max(z·W3ᵀ + b3, 0) (fc3.forward, W3 (hidden, latent) at
//                    weights[p.w_off], b3 at weights[p.b_off], h3 (rows, hidden)): workgroup g takes the rows
//                    r = g, g + groups, …, draws their z, then (after one barrier) computes their h3 from it, so
//                    fc3's forward needs no dispatch of its own (z still goes to memory, for fc3's weight gradient).

override GRAD: bool = true;

@group(0) @binding(0) var<uniform> p: ReparamParams;
@group(0) @binding(1) var<storage, read> heads: array<f32>;
@group(0) @binding(2) var<storage, read_write> z: array<f32>;
@group(0) @binding(3) var<storage, read_write> eps: array<f32>;
@group(0) @binding(4) var<storage, read_write> dheads: array<f32>;
@group(0) @binding(5) var<storage, read_write> coef: array<f32>;
@group(0) @binding(6) var<storage, read_write> partials: array<f32>;

@group(0) @binding(7) var<storage, read> weights: array<f32>;
@group(0) @binding(8) var<storage, read_write> h3: array<f32>;

// What differs between the models of a batched dispatch: model k's key and KL weight, and where its elements
// start (z's copy; the heads' is twice as far).
struct Model {
    key: vec2<u32>,
    kl_weight: f32,
    z_at: u32,
}

fn model(k: u32) -> Model {
    if p.per_model != 0u {
        let row = step_models[k];
        return Model(vec2<u32>(row.key_lo, row.key_hi), row.kl_weight, k * p.z_stride);
    }
    return Model(vec2<u32>(p.key_lo, p.key_hi), step.kl_weight, k * p.z_stride);
}

// Draws element i = r·latent + j of model m: writes z, ε and (GRAD) the KL's gradient and ½·ε·σ; returns its KL
// term.
fn draw(m: Model, i: u32) -> f32 {
    let latent = p.latent;
    let r = i / latent;
    let j = i - r * latent;
    let mu_at = 2u * m.z_at + r * 2u * latent + j;
    let lv_at = mu_at + latent;
    let mu = heads[mu_at];
    let log_var = heads[lv_at];
    let w = philox4x32_10(vec4<u32>(i, step.rng_step, p.stream, 0u), m.key);
    let e = philox_normal(w.x, w.y);
    let sigma = exp(0.5 * log_var);
    z[m.z_at + i] = mu + e * sigma;
    eps[m.z_at + i] = e;
    let var_ = exp(log_var);
    if GRAD {
        let kw = m.kl_weight;
        dheads[mu_at] = kw * mu;
        dheads[lv_at] = kw * 0.5 * (var_ - 1.0);
        coef[m.z_at + i] = 0.5 * e * sigma;
    }
    return 0.5 * (mu * mu + var_ - 1.0 - log_var);
}

fn store_partial(lane: Lane, wg: u32, k: u32, sum: f32) {
    let total = workgroup_sum(lane, sum);
    if lane.index == 0u {
        partials[(step.partial_slot * p.models + k) * p.slot_stride + p.partial_off + wg] = total;
    }
}

@compute @workgroup_size(WG)
fn reparam_forward(
    lane: Lane,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let m = model(wg.z);
    let n = p.rows * p.latent;
    var sum = 0.0;
    for (var i = wg.x * WG + lane.index; i < n; i += groups.x * WG) {
        sum += draw(m, i);
    }
    store_partial(lane, wg.x, wg.z, sum);
}

@compute @workgroup_size(WG)
fn reparam_decode(
    lane: Lane,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let m = model(wg.z);
    let zs = m.z_at;
    let hs = wg.z * p.h_stride;
    let ws = wg.z * p.param_stride;
    let latent = p.latent;
    let g = groups.x;
    // This workgroup's rows r = wg.x + t·g, t < mine.
    let mine = (p.rows + g - 1u - min(wg.x, p.rows)) / g;
    var sum = 0.0;
    for (var e = lane.index; e < mine * latent; e += WG) {
        let t = e / latent;
        sum += draw(m, (wg.x + t * g) * latent + e - t * latent);
    }
    // The rows' z, written above by this workgroup's invocations, visible to all of them.
    storageBarrier();
    for (var q = lane.index; q < mine * p.hidden; q += WG) {
        let t = q / p.hidden;
        let o = q - t * p.hidden;
        let r = wg.x + t * g;
        let w = ws + p.w_off + o * latent;
        var acc = 0.0;
        for (var l = 0u; l < latent; l++) {
            acc = fma(z[zs + r * latent + l], weights[w + l], acc);
        }
        h3[hs + r * p.hidden + o] = max(acc + weights[ws + p.b_off + o], 0.0);
    }
    store_partial(lane, wg.x, wg.z, sum);
}
