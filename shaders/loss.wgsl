// loss: the two terms of the negative ELBO, each fused with its gradient, summed (not averaged) over the batch.
//
// bce_logits — Bernoulli reconstruction loss on the decoder's logits l against the image x in [0, 1]:
//   logits, x, dlogits: (rows, cols) f32
//   loss  = Σ max(l, 0) − l·x + log(1 + exp(−|l|))      (stable for any l: bce_term in logistic.wgsl)
//   dlogits = σ(l) − x                                   (the gradient of the summed loss)
//
// kl_backward — KL(q(z|x) ‖ N(0, I)) fused with the reparameterization backward:
//   heads, dheads: (rows, 2·latent) f32, μ in columns 0..latent, log σ² after; eps, dz: (rows, latent) f32
//   loss  = ½ Σ (μ² + σ² − 1 − log σ²)                  (the KL itself, unweighted)
//   ∂μ       = ∂z + w·μ
//   ∂log σ²  = ½·∂z·ε·σ + w·½·(σ² − 1)                   (w = step.kl_weight, 1 for the plain ELBO)
//
// Both write one loss partial per workgroup to partials[p.partial_off + workgroup] (WGSL has no f32 atomics);
// `reduce` sums them. With the pipeline constant GRAD = false they compute the loss only (evaluation).
// Each entry point numbers its own bindings from 1 (the two never share a pipeline).
// Dispatch: (groups, 1, 1) workgroups of WG with groups = min(ceil(n / WG), MAX_PARTIALS) (`loss_groups`); each
// invocation strides over the n elements by WG·groups, then the workgroup sums its values in workgroup memory.

override GRAD: bool = true;

@group(0) @binding(0) var<uniform> p: LossParams;

@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> target_x: array<f32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> bce_partials: array<f32>;

@compute @workgroup_size(WG)
fn bce_logits(
    lane: Lane,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let lid = lane.index;
    let n = p.rows * p.cols;
    var sum = 0.0;
    for (var i = wg.x * WG + lid; i < n; i += groups.x * WG) {
        let l = logits[i];
        let x = target_x[i];
        sum += bce_term(l, x);
        if GRAD {
            dlogits[i] = sigmoid(l) - x;
        }
    }
    let total = workgroup_sum(lane, sum);
    if lid == 0u {
        bce_partials[p.partial_off + wg.x] = total;
    }
}

@group(0) @binding(1) var<storage, read> heads: array<f32>;
@group(0) @binding(2) var<storage, read> eps: array<f32>;
@group(0) @binding(3) var<storage, read> dz: array<f32>;
@group(0) @binding(4) var<storage, read_write> dheads: array<f32>;
@group(0) @binding(5) var<storage, read_write> kl_partials: array<f32>;

@compute @workgroup_size(WG)
fn kl_backward(
    lane: Lane,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let lid = lane.index;
    let latent = p.cols;
    let n = p.rows * latent;
    var sum = 0.0;
    for (var i = wg.x * WG + lid; i < n; i += groups.x * WG) {
        let r = i / latent;
        let j = i - r * latent;
        let mu_at = r * 2u * latent + j;
        let lv_at = mu_at + latent;
        let mu = heads[mu_at];
        let log_var = heads[lv_at];
        let var_ = exp(log_var);
        sum += 0.5 * (mu * mu + var_ - 1.0 - log_var);
        if GRAD {
            let w = step.kl_weight;
            let g = dz[i];
            dheads[mu_at] = g + w * mu;
            dheads[lv_at] = 0.5 * g * eps[i] * sqrt(var_) + w * 0.5 * (var_ - 1.0);
        }
    }
    let total = workgroup_sum(lane, sum);
    if lid == 0u {
        kl_partials[p.partial_off + wg.x] = total;
    }
}
