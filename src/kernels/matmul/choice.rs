//! The kernel choices of the matmul family: what a product is (as its dispatch describes it) and the keys under
//! which the device's choices (tuned, cached or from a checkpoint) name a kernel for it. Tuning writes these
//! choices; the host wrapper reads them.

use crate::kernels::contract::{EpilogueKind, Layout};

/// The key of a product in the kernel choices (tuning, its cache, checkpoints): layout, shape and epilogue.
pub fn product_key(layout: Layout, (m, n, k): (u32, u32, u32), epilogue: EpilogueKind) -> String {
    format!("{layout:?} {m}x{n}x{k} {epilogue:?}")
}

/// The key of a pair's choice: its two products' keys (a layer's weight gradient, then its input gradient).
pub fn pair_key(weight_grad: &str, input_grad: &str) -> String {
    format!("pair {weight_grad} + {input_grad}")
}

/// Whether `key` is a pair's (see [`pair_key`]).
pub fn is_pair_key(key: &str) -> bool {
    key.starts_with("pair ")
}

/// The key under which a choice applies to every product (to force one candidate everywhere, in tests).
pub const EVERY_PRODUCT: &str = "*";

/// The choice that runs a pair's two products as two dispatches, each with its own kernel.
pub const UNPAIRED: &str = "unpaired";

/// One matmul of a training step, as its dispatch describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Product {
    /// The dispatch's label, e.g. `fc1.forward`.
    pub name: String,
    pub layout: Layout,
    pub epilogue: EpilogueKind,
    /// (m, n, k).
    pub shape: (u32, u32, u32),
    /// Models computed at once (a sweep's batched step; 1 otherwise): tuned and keyed apart, since M models'
    /// workgroups fill a GPU differently from one model's.
    pub models: u32,
}

impl Product {
    /// The product's key in the kernel choices.
    pub fn key(&self) -> String {
        super::with_models(
            product_key(self.layout, self.shape, self.epilogue),
            self.models,
        )
    }

    /// The key without the batch dimension (m of a forward or input gradient, k of a weight gradient): the
    /// products of a full and a partial batch of one layer share it.
    pub fn batch_key(&self) -> String {
        let (m, n, k) = self.shape;
        let dims = match self.layout {
            Layout::TN => format!("{m}x{n}x*"),
            _ => format!("*x{n}x{k}"),
        };
        super::with_models(
            format!("{:?} {dims} {:?}", self.layout, self.epilogue),
            self.models,
        )
    }
}
