// iwae: the importance-weighted estimate of log p(x) (Burda et al., 2015) with q(z|x) as the proposal.
//
// iw_log_weights — one workgroup per sample row r (rows = samples of one or more images):
//   logits, x: (rows, pixels) f32; heads: (rows, 2·latent) μ | log σ²; z, eps: (rows, latent)
//   log w[r] = log p(x|z) + log p(z) − log q(z|x)
//            = −BCE(logits_r, x_r) − ½·Σ z² + ½·Σ ε² + ½·Σ log σ²      (the (2π) terms cancel)
//   written to logw[p.out_off + r]. Dispatch: (rows, 1, 1) workgroups of 256.
//
// iw_logsumexp — one workgroup per image i, over its K = p.samples log-weights logw[i·K .. (i+1)·K]:
//   out[p.out_off + i] = max + log Σ exp(log w − max) − log K      (stable log-mean-exp)
//   Dispatch: (images, 1, 1) workgroups of 256.

struct Params {
    pixels: u32,
    latent: u32,
    samples: u32,
    out_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> target_x: array<f32>;
@group(0) @binding(3) var<storage, read> heads: array<f32>;
@group(0) @binding(4) var<storage, read> z: array<f32>;
@group(0) @binding(5) var<storage, read> eps: array<f32>;
@group(0) @binding(6) var<storage, read_write> logw: array<f32>;

@compute @workgroup_size(256)
fn iw_log_weights(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let r = wg.x;
    var bce = 0.0;
    for (var c = lid; c < p.pixels; c += 256u) {
        let l = logits[r * p.pixels + c];
        let x = target_x[r * p.pixels + c];
        bce += bce_term(l, x);
    }
    var lat = 0.0;
    for (var j = lid; j < p.latent; j += 256u) {
        let zz = z[r * p.latent + j];
        let e = eps[r * p.latent + j];
        lat += 0.5 * (e * e - zz * zz + heads[r * 2u * p.latent + p.latent + j]);
    }
    let total = workgroup_sum(lid, lat - bce);
    if lid == 0u {
        logw[p.out_off + r] = total;
    }
}

var<workgroup> peak: array<f32, 256>;

@group(0) @binding(1) var<storage, read> weights: array<f32>;
@group(0) @binding(2) var<storage, read_write> estimate: array<f32>;

@compute @workgroup_size(256)
fn iw_logsumexp(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let first = wg.x * p.samples;
    var m = -3.0e38;
    for (var k = lid; k < p.samples; k += 256u) {
        m = max(m, weights[first + k]);
    }
    peak[lid] = m;
    workgroupBarrier();
    for (var half = 128u; half > 0u; half >>= 1u) {
        if lid < half {
            peak[lid] = max(peak[lid], peak[lid + half]);
        }
        workgroupBarrier();
    }
    let top = peak[0];
    var s = 0.0;
    for (var k = lid; k < p.samples; k += 256u) {
        s += exp(weights[first + k] - top);
    }
    let total = workgroup_sum(lid, s);
    if lid == 0u {
        estimate[p.out_off + wg.x] = top + log(total) - log(f32(p.samples));
    }
}
