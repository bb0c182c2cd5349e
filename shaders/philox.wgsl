// philox: the Philox4x32-10 counter-based generator (Salmon et al., SC'11), the one behind cuRAND and PyTorch's
// CUDA randn, and the conversions to uniform and normal floats. Prepended to the families that draw noise; its CPU
// twin is src/philox.rs, and the two agree bit for bit on the words and the uniforms.
//
// A draw is a pure function of (counter, key): key = the run's seed, counter = (element, step, stream, 0), so any
// element of any step can be drawn again on the GPU or the CPU, in any order.

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;

// The high and low words of the 64-bit product a·b. WGSL has no 64-bit integers: build the high word from 16-bit
// partial products (each fits in 32 bits, and so does every sum below).
fn philox_mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a_lo = a & 0xffffu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xffffu;
    let b_hi = b >> 16u;
    let lo_lo = a_lo * b_lo;
    let lo_hi = a_lo * b_hi;
    let hi_lo = a_hi * b_lo;
    let middle = (lo_lo >> 16u) + (lo_hi & 0xffffu) + (hi_lo & 0xffffu);
    let hi = a_hi * b_hi + (lo_hi >> 16u) + (hi_lo >> 16u) + (middle >> 16u);
    return vec2<u32>(hi, a * b);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        if round > 0u {
            k += vec2<u32>(PHILOX_W0, PHILOX_W1);
        }
        let p0 = philox_mulhilo(PHILOX_M0, c.x);
        let p1 = philox_mulhilo(PHILOX_M1, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}

// A uniform float in (0, 1): the top 23 bits as an odd multiple of 2^-24. Every step is exact in f32 (no rounding,
// so no dependence on the device's rounding mode), 0 and 1 are never produced, and the CPU gets the same bits.
// The scales are hex float literals, exact by construction (exp2 would be allowed 3 + 2|x| ULP of error).
fn philox_uniform(word: u32) -> f32 {
    return f32(word >> 9u) * 0x1p-23f + 0x1p-24f;
}

// A standard normal by Box–Muller from two words: sqrt(-2 ln u0) · cos(π (2 u1 - 1)). The angle stays in (-π, π),
// where Vulkan, Metal and D3D bound the error of cos; 2 u1 - 1 is exact. Near u0 = 1 those APIs bound log's error
// only absolutely (2^-21), which could make -2 ln u0 slightly negative: clamp rather than take sqrt of it.
fn philox_normal(w0: u32, w1: u32) -> f32 {
    let u0 = philox_uniform(w0);
    let u1 = philox_uniform(w1);
    let radius = sqrt(max(-2.0 * log(u0), 0.0));
    return radius * cos(3.14159265358979 * (2.0 * u1 - 1.0));
}
