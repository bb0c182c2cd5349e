//! The CPU reference of the matmul family, in f64: the specification every candidate is checked against, and the
//! error bound a check allows.

use super::epilogue::Epilogue;
use crate::kernels::contract::Layout;

/// The bound on |computed − exact| of one output, as a multiple of Σ_k |a||b| (plus |bias| where one is added):
/// γ_k = k·u / (1 − k·u) for a k-term f32 dot product in any order, with or without fused multiply-adds
/// (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1), and 2u more for the epilogue's add and the
/// final rounding. u = 2⁻²⁴, f32's unit roundoff.
pub fn error_bound(k: usize) -> f64 {
    let u = f32::EPSILON as f64 / 2.0;
    let ku = k as f64 * u;
    ku / (1.0 - ku) + 2.0 * u
}

/// Floating-point operations of one product (a multiply-add counts two).
pub fn flops(m: u32, n: u32, k: u32) -> f64 {
    2.0 * m as f64 * n as f64 * k as f64
}

/// CPU reference: C (m, n) = A·B in f64 with the epilogue, A and B stored as `layout` says.
pub fn matmul_cpu(
    layout: Layout,
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    epilogue: Epilogue<&[f32]>,
) -> Vec<f32> {
    let at = |i: usize, kk: usize| match layout {
        Layout::TN => a[kk * m + i],
        _ => a[i * k + kk],
    } as f64;
    let bt = |kk: usize, j: usize| match layout {
        Layout::NT => b[j * k + kk],
        _ => b[kk * n + j],
    } as f64;
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for kk in 0..k {
                s += at(i, kk) * bt(kk, j);
            }
            c[i * n + j] = match epilogue {
                Epilogue::None | Epilogue::BiasGrad { .. } | Epilogue::KlGrad(_) => s,
                Epilogue::Bias(bias) | Epilogue::BiasBce { bias, .. } => s + bias[j] as f64,
                Epilogue::BiasRelu(bias) => (s + bias[j] as f64).max(0.0),
                Epilogue::ReluMask(mask) => {
                    if mask[i * n + j] > 0.0 {
                        s
                    } else {
                        0.0
                    }
                }
            } as f32;
        }
    }
    c
}

/// CPU reference for the bias gradient: the column sums of ∂Y (rows, cols), in f64.
pub fn bias_grad_cpu(dy: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .map(|j| (0..rows).map(|i| dy[i * cols + j] as f64).sum::<f64>() as f32)
        .collect()
}
