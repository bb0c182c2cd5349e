// iwae: the importance-weighted estimate of log p(x) (Burda et al., 2015) with q(z|x) as the proposal.
//
// iw_log_weights — one workgroup per sample row r (rows = samples of one or more images):
//   logits, x: (rows, pixels) f32; heads: (rows, 2·latent) μ | log σ²; z, eps: (rows, latent)
//   log w[r] = log p(x|z) + log p(z) − log q(z|x)
//            = −BCE(logits_r, x_r) − ½·Σ z² + ½·Σ ε² + ½·Σ log σ²      (the (2π) terms cancel)
//   written to logw[step.batch_offset + r]: a chunk's rows go where the chunk starts among the sample rows, so one
//   prebuilt dispatch serves every chunk, each recorded with its own step-table row. Dispatch: (rows, 1, 1)
//   workgroups of WG.
//
// iw_logsumexp — one workgroup per image i, over its K = p.samples log-weights logw[i·K .. (i+1)·K]:
//   out[step.batch_offset + i] = max + log Σ exp(log w − max) − log K      (stable log-mean-exp)
//   Dispatch: (images, 1, 1) workgroups of WG.

@group(0) @binding(0) var<uniform> p: IwaeParams;

@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> target_x: array<f32>;
@group(0) @binding(3) var<storage, read> heads: array<f32>;
@group(0) @binding(4) var<storage, read> z: array<f32>;
@group(0) @binding(5) var<storage, read> eps: array<f32>;
@group(0) @binding(6) var<storage, read_write> logw: array<f32>;

@compute @workgroup_size(WG)
fn iw_log_weights(lane: Lane, @builtin(workgroup_id) wg: vec3<u32>) {
    let lid = lane.index;
    let r = wg.x;
    var bce = 0.0;
    for (var c = lid; c < p.pixels; c += WG) {
        let l = logits[r * p.pixels + c];
        let x = target_x[r * p.pixels + c];
        bce += bce_term(l, x);
    }
    var lat = 0.0;
    for (var j = lid; j < p.latent; j += WG) {
        let zz = z[r * p.latent + j];
        let e = eps[r * p.latent + j];
        lat += 0.5 * (e * e - zz * zz + heads[r * 2u * p.latent + p.latent + j]);
    }
    let total = workgroup_sum(lane, lat - bce);
    if lid == 0u {
        logw[step.batch_offset + r] = total;
    }
}

var<workgroup> peak: array<f32, WG>;

@group(0) @binding(1) var<storage, read> weights: array<f32>;
@group(0) @binding(2) var<storage, read_write> estimate: array<f32>;

@compute @workgroup_size(WG)
fn iw_logsumexp(lane: Lane, @builtin(workgroup_id) wg: vec3<u32>) {
    let lid = lane.index;
    let first = wg.x * p.samples;
    var m = -3.0e38;
    for (var k = lid; k < p.samples; k += WG) {
        m = max(m, weights[first + k]);
    }
    peak[lid] = m;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half >>= 1u) {
        if lid < half {
            peak[lid] = max(peak[lid], peak[lid + half]);
        }
        workgroupBarrier();
    }
    let top = peak[0];
    var s = 0.0;
    for (var k = lid; k < p.samples; k += WG) {
        s += exp(weights[first + k] - top);
    }
    let total = workgroup_sum(lane, s);
    if lid == 0u {
        estimate[step.batch_offset + wg.x] = top + log(total) - log(f32(p.samples));
    }
}
