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
// Dispatch: one invocation per parameter, WG (256) per workgroup, on a 2-D grid (`grid` in src/kernels/mod.rs).

@group(0) @binding(0) var<uniform> p: AdamParams;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(WG)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WG;
    if i >= p.n {
        return;
    }
    let g = grad[i];
    let m1 = p.beta1 * m[i] + (1.0 - p.beta1) * g;
    let v1 = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
    m[i] = m1;
    v[i] = v1;
    param[i] -= step.adam_step_size * m1 / (sqrt(v1) * step.adam_inv_sqrt_bc2 + p.eps);
}
