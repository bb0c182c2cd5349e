//! The host/shader contract, written once: every constant and uniform struct that Rust and WGSL share.
//!
//! Each shader module starts with [`prelude`], WGSL generated from the definitions below, so the two sides
//! cannot disagree on a value, a field's order or a struct's size. `tests/shaders.rs` walks each compiled module
//! and checks every uniform struct naga sees (members, order, types, offsets, size) against its Rust twin here.

use std::fmt::Write;

/// Invocations per workgroup of the element-wise and reduction kernels (gather, reparam, loss, reduce, adam,
/// iwae). Dispatch grids are sized with it on the host; `@workgroup_size(WG)` in the shaders.
pub const WG: u32 = 256;

/// The most per-workgroup partials one loss kernel writes (its workgroup count is capped here).
pub const MAX_PARTIALS: u32 = 256;

/// The most models one batched step trains (a step row's window holds this many rows of `ModelStep`).
pub const MAX_MODELS: u32 = 256;

/// The most loss terms one reduction handles (`ReduceParams::counts` is a `vec4<u32>`).
pub const MAX_TERMS: usize = 4;

/// The terms of the loss, in the order of the loss log's columns and of the partials buffer's blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossTerm {
    /// The reconstruction term: binary cross-entropy with logits, summed over pixels and examples.
    Bce = 0,
    /// KL(q(z|x) ‖ N(0, I)), summed over latent dimensions and examples (unweighted).
    Kl = 1,
}

/// How many loss terms there are: the loss log holds this many floats per step.
pub const TERMS: usize = 2;

impl LossTerm {
    pub const ALL: [LossTerm; TERMS] = [LossTerm::Bce, LossTerm::Kl];

    /// This term's column in a row of the loss log.
    pub fn column(self) -> usize {
        self as usize
    }

    /// Where this term's partials start in a partials buffer of `MAX_PARTIALS` per term.
    pub fn partials_offset(self) -> u32 {
        self as u32 * MAX_PARTIALS
    }

    /// How a message names it.
    pub fn describe(self) -> &'static str {
        match self {
            LossTerm::Bce => "reconstruction (BCE)",
            LossTerm::Kl => "KL",
        }
    }
}

/// matmul: which operand is transposed (pipeline constant `LAYOUT`), in the order of a layer's passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Forward, Y = X·Wᵀ: A (m, k), B given as W (n, k).
    NT = 0,
    /// Input gradient, ∂X = ∂Y·W: A (m, k), B (k, n).
    NN = 1,
    /// Weight gradient, ∂W = ∂Yᵀ·X: A given as ∂Y (k, m), B (k, n).
    TN = 2,
}

impl Layout {
    pub const ALL: [Layout; 3] = [Layout::NT, Layout::NN, Layout::TN];

    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<Layout> {
        Layout::ALL.into_iter().find(|l| l.code() == code)
    }

    fn wgsl_name(self) -> &'static str {
        match self {
            Layout::NT => "LAYOUT_NT",
            Layout::NN => "LAYOUT_NN",
            Layout::TN => "LAYOUT_TN",
        }
    }
}

/// matmul: what happens to each output after the product (pipeline constant `EPILOGUE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EpilogueKind {
    /// C = A·B.
    None = 0,
    /// C = A·B + bias[n].
    Bias = 1,
    /// C = max(A·B + bias[n], 0).
    BiasRelu = 2,
    /// C = A·B where mask[m, n] > 0, else 0 (the ReLU backward).
    ReluMask = 3,
    /// C = A·B, and the row sums of A at `bias_off` (with TN, the bias gradient).
    BiasGrad = 4,
    /// The reparameterization's backward into the KL's gradient: for A·B = ∂z (m, n), C is (m, 2n), the heads'
    /// gradient already holding the KL's own part; add ∂z to ∂μ (column j) and ∂z·aux[m, j] to ∂log σ² (column
    /// n + j), aux being ½·ε·σ.
    KlGrad = 5,
    /// The decoder's output layer in training: C = A·B + bias[n] (the logits), and σ(C) − x (the BCE's gradient)
    /// into a second output with the first's layout; x and the gradient at params[1]'s aux_off and c_off (aux2,
    /// c2). Unpaired only.
    BiasBce = 6,
}

impl EpilogueKind {
    pub const ALL: [EpilogueKind; 7] = [
        EpilogueKind::None,
        EpilogueKind::Bias,
        EpilogueKind::BiasRelu,
        EpilogueKind::ReluMask,
        EpilogueKind::BiasGrad,
        EpilogueKind::KlGrad,
        EpilogueKind::BiasBce,
    ];

    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<EpilogueKind> {
        EpilogueKind::ALL.into_iter().find(|e| e.code() == code)
    }

    fn wgsl_name(self) -> &'static str {
        match self {
            EpilogueKind::None => "EPI_NONE",
            EpilogueKind::Bias => "EPI_BIAS",
            EpilogueKind::BiasRelu => "EPI_BIAS_RELU",
            EpilogueKind::ReluMask => "EPI_RELU_MASK",
            EpilogueKind::BiasGrad => "EPI_BIAS_GRAD",
            EpilogueKind::KlGrad => "EPI_KL_GRAD",
            EpilogueKind::BiasBce => "EPI_BIAS_BCE",
        }
    }
}

/// matmul: invocations per side of a workgroup (16 × 16).
pub const MATMUL_SIDE: u32 = 16;
/// matmul: the output tile of one workgroup of `matmul` (4 × 4 per invocation).
pub const MATMUL_TILE: u32 = 64;
/// matmul: the output tile of one workgroup of `matmul_big` and the vec4 kernels (8 × 8 per invocation).
pub const MATMUL_TILE_BIG: u32 = 128;

/// A Rust type with a WGSL twin of the same size and alignment in a uniform buffer.
pub trait WgslType {
    const WGSL: &'static str;
}
impl WgslType for u32 {
    const WGSL: &'static str = "u32";
}
impl WgslType for f32 {
    const WGSL: &'static str = "f32";
}
impl WgslType for [u32; 4] {
    const WGSL: &'static str = "vec4<u32>";
}

/// One member of a uniform struct, as Rust lays it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub wgsl: &'static str,
    pub offset: usize,
    pub size: usize,
    pub doc: &'static str,
}

/// A uniform struct, as Rust lays it out: what its WGSL declaration is generated from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructInfo {
    pub name: &'static str,
    pub size: usize,
    pub fields: Vec<Field>,
}

impl StructInfo {
    /// The WGSL declaration, each member with its Rust doc comment.
    pub fn wgsl(&self) -> String {
        let mut s = format!("struct {} {{\n", self.name);
        for f in &self.fields {
            let decl = format!("    {}: {},", f.name, f.wgsl);
            if f.doc.is_empty() {
                let _ = writeln!(s, "{decl}");
            } else {
                let _ = writeln!(s, "{decl:<32} // {}", f.doc);
            }
        }
        s.push_str("}\n");
        s
    }
}

/// Declares a `#[repr(C)]` uniform struct and its [`StructInfo`], from which its WGSL twin is generated. Fields
/// are `u32`, `f32` or `[u32; 4]` (a `vec4<u32>`); padding is written out as `u32` fields.
macro_rules! gpu_struct {
    (
        $(#[doc = $doc:literal])*
        pub struct $name:ident {
            $( $(#[doc = $fdoc:literal])* pub $field:ident: $ty:ty, )*
        }
    ) => {
        $(#[doc = $doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $( $(#[doc = $fdoc])* pub $field: $ty, )*
        }

        impl $name {
            /// The layout its WGSL declaration is generated from.
            pub fn info() -> StructInfo {
                StructInfo {
                    name: stringify!($name),
                    size: size_of::<$name>(),
                    fields: vec![$(Field {
                        name: stringify!($field),
                        wgsl: <$ty as WgslType>::WGSL,
                        offset: std::mem::offset_of!($name, $field),
                        size: size_of::<$ty>(),
                        doc: concat!($($fdoc),*).trim_ascii(),
                    },)*],
                }
            }
        }
    };
}

gpu_struct! {
    /// The values that change from one training step to the next: one row per step in the step table, read by
    /// the kernels through a dynamic uniform offset (see `kernels::step`).
    pub struct StepParams {
        /// Adam's step number, 1-based.
        pub t: u32,
        /// Position of this batch's first row in the epoch's index list.
        pub batch_offset: u32,
        /// Row of the loss log that this step's loss totals go to.
        pub loss_slot: u32,
        /// Philox counter word 1 for this step's noise (the step number, so a resumed run draws the same noise).
        pub rng_step: u32,
        /// Adam's step size with the first-moment bias correction folded in: lr / (1 − β1ᵗ).
        pub adam_step_size: f32,
        /// Adam's second-moment bias correction: 1 / √(1 − β2ᵗ).
        pub adam_inv_sqrt_bc2: f32,
        /// Weight on the KL term (β of a β-VAE; 1 for the plain ELBO).
        pub kl_weight: f32,
        /// Slot of this step's loss partials: its place among the steps of one submission, which a single
        /// reduction at the log point turns into loss-log rows.
        pub partial_slot: u32,
    }
}

gpu_struct! {
    /// gather: batches of rows of a byte dataset.
    pub struct GatherParams {
        /// Rows of a batch.
        pub rows: u32,
        /// Bytes per row.
        pub cols: u32,
        /// Rows of the dataset (an index at or past it gives NaN).
        pub data_rows: u32,
        /// Philox stream of the binarization noise.
        pub stream: u32,
        /// Philox key (the seed's low and high words).
        pub key_lo: u32,
        pub key_hi: u32,
        /// Batches (steps) gathered, each `stride` elements after the one before.
        pub steps: u32,
        pub stride: u32,
        /// Rows of the index list: a batch row at or past it is not written.
        pub index_len: u32,
        /// A sweep whose models differ in their binarization: models (the grid's z, each binarized as its row of
        /// the step's window says) and the elements between two models' batches; 0 models: one batch for all.
        pub models: u32,
        pub model_stride: u32,
        pub _pad2: u32,
    }
}

gpu_struct! {
    /// matmul: C (m, n) = A·B with an epilogue; operands addressed by element offsets into their buffers.
    pub struct MatmulParams {
        pub m: u32,
        pub n: u32,
        pub k: u32,
        pub a_off: u32,
        pub b_off: u32,
        pub c_off: u32,
        /// Offset of the epilogue's operand (bias or mask) in its buffer.
        pub aux_off: u32,
        /// With EPI_BIAS_GRAD: where the row sums of A go in C's buffer.
        pub bias_off: u32,
        /// Pairs: this product's workgroups per row of tiles.
        pub groups_x: u32,
        /// Pairs (params[0]): every pair_stride-th workgroup computes the second product, pair_count of them.
        pub pair_stride: u32,
        pub pair_count: u32,
        /// Several models in one dispatch (workgroup_id.z is the model): elements between one model's A, B, C
        /// (with the bias gradient at bias_off) and epilogue operand and the next model's; 0 where the models
        /// share the operand. Under EPI_BIAS_BCE, params[1]'s c_stride and aux_stride step the BCE's gradient
        /// and x.
        pub a_stride: u32,
        pub b_stride: u32,
        pub c_stride: u32,
        pub aux_stride: u32,
        pub _pad0: u32,
    }
}

gpu_struct! {
    /// reparam: z = μ + ε·σ for rows × latent elements, the KL term's partials and (training) its gradient.
    pub struct ReparamParams {
        pub rows: u32,
        pub latent: u32,
        /// Philox key (the seed's low and high words).
        pub key_lo: u32,
        pub key_hi: u32,
        /// Philox stream of the noise.
        pub stream: u32,
        /// Where the KL's partials start in a slot of the partials buffer.
        pub partial_off: u32,
        /// Elements between two slots of the partials buffer (the step table's `partial_slot` picks one).
        pub slot_stride: u32,
        /// reparam_decode: fc3's outputs, and where its weight (hidden, latent) and bias start in `weights`.
        pub hidden: u32,
        pub w_off: u32,
        pub b_off: u32,
        /// Models of a batched dispatch (the grid's z), and whether their kl weight and key come from the step
        /// table's model rows (1) or from `step` and this struct (0).
        pub models: u32,
        pub per_model: u32,
        /// Elements between two models' copies of z (and ε, ½·ε·σ; their heads are twice as far apart), of h3,
        /// and of the decoder's weights.
        pub z_stride: u32,
        pub h_stride: u32,
        pub param_stride: u32,
        pub _pad0: u32,
    }
}

gpu_struct! {
    /// philox_words: the raw generator on n counters, for tests.
    pub struct PhiloxWordsParams {
        pub n: u32,
        pub key_lo: u32,
        pub key_hi: u32,
        pub _pad0: u32,
    }
}

gpu_struct! {
    /// loss: BCE or KL over rows × cols elements, one partial per workgroup.
    pub struct LossParams {
        pub rows: u32,
        /// Pixels per row.
        pub cols: u32,
        /// Where this kernel's partials start in a slot of the partials buffer.
        pub partial_off: u32,
        /// Elements between two slots of the partials buffer (the step table's `partial_slot` picks one).
        pub slot_stride: u32,
        /// bce_logits: where the images start in their buffer (the step's x slot).
        pub x_off: u32,
        /// Models of a batched dispatch (the grid's z), and the elements between two models' logits (and
        /// ∂logits) and images (0: one batch of images for every model).
        pub models: u32,
        pub logits_stride: u32,
        pub x_stride: u32,
    }
}

gpu_struct! {
    /// reduce: each term's partials to one total in the loss log.
    pub struct ReduceParams {
        pub terms: u32,
        /// Elements between the starts of two terms' partials.
        pub stride: u32,
        /// Elements between two steps' slots of partials.
        pub slot_stride: u32,
        /// Models of a batched step: model k of slot s has the slot s·models + k, and its totals the loss log's
        /// entries (row · models + k) · terms + t.
        pub models: u32,
        /// Partials per term; at most MAX_TERMS terms.
        pub counts: [u32; 4],
    }
}

gpu_struct! {
    /// adam: one Adam step over n parameters; `adam_with_bce` also sums the step's BCE from its logits.
    pub struct AdamParams {
        pub n: u32,
        pub beta1: f32,
        pub beta2: f32,
        pub eps: f32,
        /// adam_with_bce: the logits' rows and columns (pixels).
        pub bce_rows: u32,
        pub bce_cols: u32,
        /// adam_with_bce: workgroups that each write one BCE partial (the first ones of the grid).
        pub bce_groups: u32,
        /// adam_with_bce: where the partials start in a slot, and the elements between two slots.
        pub partial_off: u32,
        pub slot_stride: u32,
        /// adam_with_bce: where the images start in their buffer (the step's x slot).
        pub x_off: u32,
        /// Parameters each invocation updates, a whole grid of invocations apart.
        pub per: u32,
        /// Models of a batched dispatch: model k's state starts at k · n_stride (the n_stride − n elements after
        /// each model's are padding whose gradient stays 0), its logits at k · logits_stride and its images at
        /// k · x_stride (0: shared). `per_model`: the step size comes from the step table's model rows.
        pub models: u32,
        pub n_stride: u32,
        pub logits_stride: u32,
        pub x_stride: u32,
        pub per_model: u32,
    }
}

gpu_struct! {
    /// One model's values at one step of a batched run: model k's row of its step row's window
    /// (`step_models[k]`, shaders/step.wgsl).
    pub struct ModelStep {
        /// Adam's step size with the first-moment bias correction folded in, lr / (1 − β1ᵗ), and the
        /// second-moment correction 1 / √(1 − β2ᵗ), each computed for this model's learning rate.
        pub adam_step_size: f32,
        pub adam_inv_sqrt_bc2: f32,
        /// This model's weight on the KL term at this step (its β, ramped over its warm-up).
        pub kl_weight: f32,
        /// Philox key of this model's noise (its seed's low and high words).
        pub key_lo: u32,
        pub key_hi: u32,
        /// 1 where this model trains on dynamically binarized images (the gather of a sweep whose models differ
        /// in it writes each model's batch).
        pub binarize: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

gpu_struct! {
    /// iwae: importance log-weights and their log-mean-exp.
    pub struct IwaeParams {
        pub pixels: u32,
        pub latent: u32,
        /// Importance samples per image.
        pub samples: u32,
        pub _pad0: u32,
    }
}

gpu_struct! {
    /// hang (test-only): a loop long enough to stand in for a GPU hang.
    pub struct HangParams {
        pub iterations: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

/// Every uniform struct of the contract.
pub fn structs() -> Vec<StructInfo> {
    vec![
        StepParams::info(),
        GatherParams::info(),
        MatmulParams::info(),
        ReparamParams::info(),
        PhiloxWordsParams::info(),
        LossParams::info(),
        ReduceParams::info(),
        AdamParams::info(),
        ModelStep::info(),
        IwaeParams::info(),
        HangParams::info(),
    ]
}

/// Every shared constant, by its WGSL name.
pub fn constants() -> Vec<(&'static str, u32)> {
    let mut c = vec![
        ("WG", WG),
        ("MAX_PARTIALS", MAX_PARTIALS),
        ("MAX_MODELS", MAX_MODELS),
        ("MAX_TERMS", MAX_TERMS as u32),
        ("LOSS_TERMS", TERMS as u32),
        ("TERM_BCE", LossTerm::Bce as u32),
        ("TERM_KL", LossTerm::Kl as u32),
        ("MATMUL_SIDE", MATMUL_SIDE),
        ("MATMUL_TILE", MATMUL_TILE),
        ("MATMUL_TILE_BIG", MATMUL_TILE_BIG),
    ];
    c.extend(Layout::ALL.map(|l| (l.wgsl_name(), l.code())));
    c.extend(EpilogueKind::ALL.map(|e| (e.wgsl_name(), e.code())));
    c
}

/// The WGSL every shader module starts with: the constants and struct declarations above.
pub fn prelude() -> String {
    let mut s = String::from(
        "// Generated from src/kernels/contract.rs, the one definition of what Rust and WGSL share.\n",
    );
    for (name, value) in constants() {
        let _ = writeln!(s, "const {name}: u32 = {value}u;");
    }
    for st in structs() {
        s.push('\n');
        s.push_str(&st.wgsl());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_are_whole_words_with_no_hidden_padding() {
        for st in structs() {
            let fields: usize = st.fields.iter().map(|f| f.size).sum();
            assert_eq!(fields, st.size, "{}: implicit padding", st.name);
            assert_eq!(
                st.size % 16,
                0,
                "{}: uniform structs are 16-byte multiples",
                st.name
            );
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = constants().iter().map(|c| c.0).collect();
        names.extend(structs().iter().map(|s| s.name));
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
