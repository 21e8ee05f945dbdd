//! Kiln's fast CPU backend for Burn.
//!
//! [`KilnCpu`] is a Burn backend: burn-flex (pure Rust, SIMD, rayon) with Kiln's own kernels
//! for the operations that dominate training small and medium CNNs on a CPU, the 2-D
//! convolution (forward, input gradient, weight gradient, bias gradient; im2col + GEMM,
//! Winograd's F(4x4, 3x3) for the stride-1 3x3 layers, [`winograd`], and direct sums for the
//! narrow stride-1 layers of small networks, [`direct`]), max pooling with
//! indices and its backward, average pooling, the sigmoid and GELU with theirs, plus copies and
//! broadcast arithmetic on the strided views that Burn's batch norm works through. Wrap it in
//! `burn::backend::Autodiff` to train. The kernels are also public ([`conv`], [`pool`],
//! [`activation`] over `f32` slices, [`strided`] over burn-flex tensors).
//!
//! What it is not: a new tensor library. Every other op is burn-flex's, the tensors are
//! burn-flex's, and anything the kernels do not cover (grouped convolutions, other float
//! types) falls back to burn-flex too.
//!
//! Instruction sets: gemm and Kiln's newer kernels pick AVX-512, AVX2 + FMA or baseline code
//! at run time ([`isa`]), so one binary serves every x86-64 processor.
//!
//! Determinism: every kernel splits its work so that each output element is computed by one
//! thread in a fixed order, so the same inputs give the same bits on a given machine.
#![warn(missing_docs)]

pub mod activation;
mod backend;
pub mod conv;
pub mod direct;
pub mod isa;
mod matmul;
pub mod norm;
pub mod pool;
pub mod random;
pub mod strided;
#[cfg(test)]
mod testing;
pub mod winograd;

pub use backend::KilnCpu;
pub use burn_flex::FlexDevice as KilnCpuDevice;

/// Makes Kiln's networks run their batch norms with [`norm`]'s kernels on `KilnCpu` and
/// `Autodiff<KilnCpu>` (see kiln-fused). The `kiln` binary calls it before anything runs; a
/// program that embeds Kiln's crates calls it once at start. Without it batch norm is Burn's
/// ops: the same arithmetic, slower.
pub fn register_kernels() {
    kiln_fused::batch_norm::register_kernels::<KilnCpu>();
}

/// One forwarded op (see kiln-forward): nothing for the ops KilnCpu implements itself in
/// backend.rs, a call to burn-flex's for every other.
macro_rules! forward_op {
    (fn float_random $($rest:tt)*) => {};
    (fn float_reshape $($rest:tt)*) => {};
    (fn float_add $($rest:tt)*) => {};
    (fn float_sub $($rest:tt)*) => {};
    (fn float_mul $($rest:tt)*) => {};
    (fn float_div $($rest:tt)*) => {};
    (fn conv2d $($rest:tt)*) => {};
    (fn conv2d_x_backward $($rest:tt)*) => {};
    (fn conv2d_weight_backward $($rest:tt)*) => {};
    (fn conv2d_bias_backward $($rest:tt)*) => {};
    (fn max_pool2d $($rest:tt)*) => {};
    (fn avg_pool2d $($rest:tt)*) => {};
    (fn avg_pool2d_backward $($rest:tt)*) => {};
    (fn sigmoid $($rest:tt)*) => {};
    (fn sigmoid_backward $($rest:tt)*) => {};
    (fn gelu $($rest:tt)*) => {};
    (fn gelu_backward $($rest:tt)*) => {};
    (fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;) => {
        fn $name($($arg: $ty),*) $(-> $ret)? {
            <burn_flex::Flex>::$name($($arg),*)
        }
    };
}
pub(crate) use forward_op;
