// logistic: the Bernoulli log-likelihood pieces shared by the loss and IWAE kernels.

// log(1 + e) for e in [0, 1]. WGSL has no log1p, and log(1 + e) loses e's low bits once 1 + e rounds; the classic
// fix e·log(1 + e)/((1 + e) − 1) is undone by drivers that fold (1 + e) − 1 into e (SPIR-V float ops are not
// marked exact; lavapipe does). So: a series below 1/64 (error below e⁶/6, under 1e-9 relative), log above it
// (absolute error of a few ulp of 1, under 1e-5 relative there).
fn log1p_small(e: f32) -> f32 {
    if e < 0.015625 {
        return e * (1.0 - e * (0.5 - e * (1.0 / 3.0 - e * (0.25 - e * 0.2))));
    }
    return log(1.0 + e);
}

// σ(l) without overflow for any l.
fn sigmoid(l: f32) -> f32 {
    if l >= 0.0 {
        return 1.0 / (1.0 + exp(-l));
    }
    let e = exp(l);
    return e / (1.0 + e);
}

// One pixel's binary cross-entropy with logits, −[x·log σ(l) + (1 − x)·log(1 − σ(l))], stable for any l.
fn bce_term(l: f32, x: f32) -> f32 {
    return max(l, 0.0) - l * x + log1p_small(exp(-abs(l)));
}
