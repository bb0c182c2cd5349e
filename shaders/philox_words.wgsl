// philox_words: the raw generator, for comparing the GPU with src/philox.rs bit for bit.
//
//   counters: (n) vec4<u32>
//   words:    (n, 8) u32: the four output words of counter i under key (key_lo, key_hi), then the bits of their
//             four uniforms (philox_uniform)
//
// Dispatch: one invocation per counter, WG (256) per workgroup, (ceil(n / WG), 1, 1).

@group(0) @binding(0) var<uniform> p: PhiloxWordsParams;
@group(0) @binding(1) var<storage, read> counters: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> words: array<u32>;

@compute @workgroup_size(WG)
fn philox_words(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if i >= p.n {
        return;
    }
    let w = philox4x32_10(counters[i], vec2<u32>(p.key_lo, p.key_hi));
    for (var k = 0u; k < 4u; k++) {
        words[8u * i + k] = w[k];
        words[8u * i + 4u + k] = bitcast<u32>(philox_uniform(w[k]));
    }
}
