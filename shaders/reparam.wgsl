// reparam: the reparameterization trick, z = μ + ε·σ with σ = exp(½·log σ²) and ε ~ N(0, I) from Philox.
// (Its backward, fused with the KL term, is `kl_backward` in loss.wgsl.)
//
//   heads: (rows, 2·latent) f32, the encoder's two heads side by side: μ in columns 0..latent, log σ² after
//   z:     (rows, latent) f32
//   eps:   (rows, latent) f32, the ε drawn, kept for the backward pass
//
// ε of element i = r·latent + j is philox_normal of counter (i, step.rng_step, stream, 0) under key = the seed, so
// the CPU (and a resumed run) can draw it again. Dispatch: one invocation per element of z, WG (256) per workgroup, on a
// 2-D grid.

@group(0) @binding(0) var<uniform> p: ReparamParams;
@group(0) @binding(1) var<storage, read> heads: array<f32>;
@group(0) @binding(2) var<storage, read_write> z: array<f32>;
@group(0) @binding(3) var<storage, read_write> eps: array<f32>;

@compute @workgroup_size(WG)
fn reparam_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WG;
    if i >= p.rows * p.latent {
        return;
    }
    let r = i / p.latent;
    let j = i - r * p.latent;
    let mu = heads[r * 2u * p.latent + j];
    let log_var = heads[r * 2u * p.latent + p.latent + j];
    let w = philox4x32_10(vec4<u32>(i, step.rng_step, p.stream, 0u), vec2<u32>(p.key_lo, p.key_hi));
    let e = philox_normal(w.x, w.y);
    z[i] = mu + e * exp(0.5 * log_var);
    eps[i] = e;
}
