// adam: one bias-corrected Adam step (Kingma & Ba, 2015, as torch.optim.Adam computes it) over one flat buffer
// that holds every weight and bias, so the whole optimizer is one dispatch.
//
//   param, m, v: (n) f32, read and written; grad: (n) f32
//   m ← β1·m + (1 − β1)·g
//   v ← β2·v + (1 − β2)·g²
//   param ← param − step_size · m / (√v · inv_sqrt_bc2 + ε)
//
// with step_size = lr / (1 − β1ᵗ) and inv_sqrt_bc2 = 1 / √(1 − β2ᵗ) taken from the step table row the dispatch
// is recorded with, so steps recorded back to back each use their own t with no host write in between.
// Dispatch: ceil(n / p.per) invocations, WG (256) per workgroup, on a 2-D grid (`grid` in src/kernels/mod.rs);
// each invocation updates p.per parameters, its own index and those a whole grid of invocations past it, so
// neighbouring invocations always touch neighbouring elements (8; adam_with_bce on CPU adapters as many as
// leave a few workgroups per core: `ADAM_PER` and `software_grid` in src/kernels).
//
// adam_with_bce, the training step's last dispatch, also takes the step's reconstruction loss: fc4.forward's
// epilogue (EPI_BIAS_BCE, matmul_common.wgsl) left the logits and already wrote the loss's gradient, so only its
// value is left, and it rides in this dispatch instead of a launch of its own. The first p.bce_groups workgroups
// each sum their share of bce_term(logits, x) (x from target_x[p.x_off], the step's x slot) with bce_logits' own
// strided loop and tree (loss.wgsl), so the value is the same to the bit, and write it to
// bce_partials[step.partial_slot · p.slot_stride + p.partial_off + w].
// Its grid has at least p.bce_groups workgroups; every workgroup also takes its share of Adam.
//
// Several models at once (a batched step, p.models): their states lie one after another, model k's at
// k·p.n_stride, so Adam runs over all of them as one flat buffer of models·n_stride elements (each element's
// arithmetic is what it is alone; the n_stride − n padding elements after each model have a zero gradient and
// stay as they are); with p.per_model, element i's step size and correction come from model i / n_stride's row
// of the step row's window of model rows (step_models[k], step.wgsl), else from step. adam_with_bce's BCE takes
// p.bce_groups workgroups per model: workgroup w sums for model k = w / bce_groups, from its logits at
// k·p.logits_stride and its images at k·p.x_stride past p.x_off, into partial slot step.partial_slot·p.models + k.

@group(0) @binding(0) var<uniform> p: AdamParams;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> logits: array<f32>;
@group(0) @binding(6) var<storage, read> target_x: array<f32>;
@group(0) @binding(7) var<storage, read_write> bce_partials: array<f32>;

fn adam_element(i: u32) {
    if i >= p.models * p.n_stride {
        return;
    }
    var step_size = step.adam_step_size;
    var inv_sqrt_bc2 = step.adam_inv_sqrt_bc2;
    if p.models > 1u || p.per_model != 0u {
        let k = i / p.n_stride;
        if i - k * p.n_stride >= p.n {
            return;
        }
        if p.per_model != 0u {
            let row = step_models[k];
            step_size = row.adam_step_size;
            inv_sqrt_bc2 = row.adam_inv_sqrt_bc2;
        }
    }
    let g = grad[i];
    let m1 = p.beta1 * m[i] + (1.0 - p.beta1) * g;
    let v1 = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
    m[i] = m1;
    v[i] = v1;
    param[i] -= step_size * m1 / (sqrt(v1) * inv_sqrt_bc2 + p.eps);
}

// Adam on the p.per elements of invocation `first` of a grid of `groups` workgroups.
fn adam_elements(first: u32, groups: vec3<u32>) {
    let total = groups.x * groups.y * WG;
    for (var j = 0u; j < p.per; j++) {
        adam_element(first + j * total);
    }
}

@compute @workgroup_size(WG)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    adam_elements(gid.x + gid.y * groups.x * WG, groups);
}

@compute @workgroup_size(WG)
fn adam_with_bce(
    lane: Lane,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let w = wg.x + wg.y * groups.x;
    if w < p.bce_groups * p.models {
        let k = w / p.bce_groups;
        let b = w - k * p.bce_groups;
        let l_at = k * p.logits_stride;
        let x_at = p.x_off + k * p.x_stride;
        let n = p.bce_rows * p.bce_cols;
        var sum = 0.0;
        for (var i = b * WG + lane.index; i < n; i += p.bce_groups * WG) {
            sum += bce_term(logits[l_at + i], target_x[x_at + i]);
        }
        let total = workgroup_sum(lane, sum);
        if lane.index == 0u {
            bce_partials[(step.partial_slot * p.models + k) * p.slot_stride + p.partial_off + b] = total;
        }
    }
    adam_elements(w * WG + lane.index, groups);
}
