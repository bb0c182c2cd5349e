//! What WGSL promises about f32 arithmetic (the accuracy table of the WGSL specification, §15.7.4.1), as the
//! error bounds that tests and benchmarks derive their tolerances from. A tolerance tighter than these encodes one
//! driver's rounding, not the language, and fails on another conformant driver; one much looser hides bugs.
//!
//! The table, for f32: `+`, `−`, `×` are correctly rounded (relative error ≤ u); `x / y` is within 2.5 ULP;
//! `exp(x)` and `exp2(x)` within 3 + 2·|x| ULP; `log(x)` within 2⁻²¹ absolute for x in [0.5, 2] and 3 ULP outside;
//! `inverseSqrt` within 2 ULP; `sqrt` inherits from `1 / inverseSqrt(x)`; `cos` and `sin` within 2⁻¹¹ absolute on
//! [−π, π]; `fma(a, b, c)` inherits from `a·b + c` (fused or not); `max`, `min`, `abs`, `select` and conversions of
//! small integers are exact. An expression the driver may contract into an fma is bounded by the unfused form.
//! Subnormal values may be flushed to zero ([`FLUSH`]).

/// The unit roundoff of f32 (2⁻²⁴): a correctly rounded operation's relative error.
pub const U: f64 = 1.0 / 16_777_216.0;

/// One ULP relative to a normal f32 value, at most 2⁻²³ of it: the unit the table counts in.
pub const ULP: f64 = 2.0 * U;

/// WGSL lets an implementation flush subnormal values to zero: any result, and any intermediate, below the
/// smallest normal f32 (2⁻¹²⁶) may come out as 0, an absolute error of at most this.
pub const FLUSH: f64 = f32::MIN_POSITIVE as f64;

/// Relative error of `x / y`.
pub const DIV: f64 = 2.5 * ULP;

/// Relative error of `inverseSqrt(x)`.
pub const INVERSE_SQRT: f64 = 2.0 * ULP;

/// Relative error of `sqrt(x)`, inherited from `1 / inverseSqrt(x)` (to first order).
pub const SQRT: f64 = INVERSE_SQRT + DIV;

/// Absolute error of `cos(x)` and `sin(x)` for x in [−π, π].
pub const COS_ABS: f64 = 1.0 / 2048.0;

/// Relative error of `exp(x)` (and `exp2(x)`).
pub fn exp_rel(x: f64) -> f64 {
    (3.0 + 2.0 * x.abs()) * ULP
}

/// Absolute error of `log(x)` for x > 0.
pub fn log_abs(x: f64) -> f64 {
    if (0.5..=2.0).contains(&x) {
        1.0 / 2_097_152.0
    } else {
        3.0 * ULP * x.ln().abs()
    }
}

/// γₙ = n·u / (1 − n·u): the relative bound on n successive roundings (Higham, *Accuracy and Stability of
/// Numerical Algorithms*, §3.1).
pub fn gamma(n: usize) -> f64 {
    let nu = n as f64 * U;
    nu / (1.0 - nu)
}

/// The error of an f32 sum in which every term passes through at most `additions` additions (a lane's serial sum
/// then a tree, say), in any order: γ_additions · Σ|term|.
pub fn sum_error(additions: usize, sum_abs: f64) -> f64 {
    gamma(additions) * sum_abs
}

/// The additions a term passes through in the kernels' two-level sums: `n` terms strided over `lanes`
/// invocations (each sums its share serially), then a tree over the `wg` invocations of a workgroup.
pub fn strided_tree_additions(n: u64, lanes: u64, wg: u32) -> usize {
    let per_lane = n.div_ceil(lanes.max(1)).max(1) as usize;
    per_lane - 1 + wg.ilog2() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_are_f32s() {
        assert_eq!(ULP, f32::EPSILON as f64);
        assert_eq!(U, f32::EPSILON as f64 / 2.0);
        assert_eq!(log_abs(1.0), 2f64.powi(-21));
        assert_eq!(strided_tree_additions(100_352, 65_536, 256), 1 + 8);
        assert_eq!(strided_tree_additions(1, 256, 256), 8);
    }
}
