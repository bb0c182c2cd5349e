//! What happens to each output of a product after the sum: the epilogues, on the GPU and in the CPU reference.

use crate::kernels::contract::EpilogueKind;
#[cfg(doc)]
use crate::kernels::contract::Layout;

/// What happens to each output after the product; `O` is how the epilogue's operand is given: an
/// [`Operand`](crate::gpu::Operand) on the GPU, a slice for the CPU reference.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue<O> {
    None,
    /// `+ bias[n]`.
    Bias(O),
    /// `max(· + bias[n], 0)`.
    BiasRelu(O),
    /// Keep the output where `mask[m, n] > 0` (the ReLU backward; mask is the layer's forward output).
    ReluMask(O),
    /// Also write the row sums of A (with [`Layout::TN`], the bias gradient) at this element offset of C's buffer.
    /// The CPU reference computes C alone; [`bias_grad_cpu`](super::bias_grad_cpu) is the row sums' reference.
    BiasGrad {
        offset: usize,
    },
    /// The product is ∂z (m, n) and C, (m, 2n), is the heads' gradient holding the KL's own part (written by the
    /// reparameterization): add ∂z to ∂μ and ∂z·coef[m, n] to ∂log σ², coef = ½·ε·σ. The CPU reference computes
    /// the product ∂z alone; [`crate::kernels::loss::kl_backward_cpu`] specifies the heads' gradient.
    KlGrad(O),
    /// `+ bias[n]` (the logits, into C), and the BCE's gradient σ(C) − x into `grad` (m, n), x being (m, n): the
    /// decoder's output layer in training. The CPU reference computes the logits; [`crate::kernels::loss::
    /// bce_logits_cpu`] specifies the gradient. Not in a pair.
    BiasBce {
        bias: O,
        x: O,
        grad: O,
    },
}

impl<O> Epilogue<O> {
    pub fn kind(&self) -> EpilogueKind {
        match self {
            Epilogue::None => EpilogueKind::None,
            Epilogue::Bias(_) => EpilogueKind::Bias,
            Epilogue::BiasRelu(_) => EpilogueKind::BiasRelu,
            Epilogue::ReluMask(_) => EpilogueKind::ReluMask,
            Epilogue::BiasGrad { .. } => EpilogueKind::BiasGrad,
            Epilogue::KlGrad(_) => EpilogueKind::KlGrad,
            Epilogue::BiasBce { .. } => EpilogueKind::BiasBce,
        }
    }
}
