//! Burn's libtorch backend with libtorch's own convolution gradients and batch norm.
//!
//! [`KilnTch`] is `burn_tch::LibTorch<f32>` (the same tensors, devices and ops) except for the
//! two calls Burn's autodiff makes for a convolution's gradients, `conv2d_x_backward` and
//! `conv2d_weight_backward`, and the bias gradient. burn-tch 0.21 leaves those to Burn's
//! generic defaults (a transposed convolution, and a convolution with batch and channels
//! swapped that no library has a fast kernel for); here they call `at::convolution_backward`,
//! the function PyTorch's autograd calls, so a training step runs the kernels PyTorch runs
//! (oneDNN on the CPU, cuDNN on CUDA). Wrap it in `burn::backend::Autodiff` to train.
//! [`register_kernels`] adds libtorch's own batch norm, forward and backward, for Kiln's
//! networks (see kiln-fused), where Burn's is about ten ops each way.
//!
//! On the CPU its convolutions run in libtorch's channels-last layout (NHWC strides, the same
//! NCHW shapes), the layout `model.to(memory_format=torch.channels_last)` gives in PyTorch:
//! PyTorch's own CPU speed on Kiln's networks is up to 2.1x (training) and 4.6x (evaluation)
//! higher in it than in the contiguous layout (docs/speed.md). libtorch's other ops keep the
//! layout of their input, so a network stays in it from one convolution to the next. Set
//! `KILN_TCH_CHANNELS_LAST=0` to keep the contiguous layout; CUDA devices always keep it.
//!
//! What it is not: a fork of burn-tch. Every other op is burn-tch's, forwarded unchanged.
//! It needs libtorch at build and run time exactly as burn-tch does, and a C++ compiler to
//! build the small shim in `src/aten.cpp`.
#![warn(missing_docs)]

mod backend;
mod ffi;

pub use backend::KilnTch;
pub use burn_tch::LibTorchDevice as KilnTchDevice;

/// Makes Kiln's networks run their batch norms with libtorch's own kernels on `KilnTch` and
/// `Autodiff<KilnTch>` (see kiln-fused). The `kiln` binary calls it before anything runs; a
/// program that embeds Kiln's crates calls it once at start.
pub fn register_kernels() {
    kiln_fused::batch_norm::register_kernels::<KilnTch>();
}

/// One forwarded op (see kiln-forward): nothing for the ops KilnTch implements itself in
/// backend.rs, a call to burn-tch's for every other.
macro_rules! forward_op {
    (fn relu_backward $($rest:tt)*) => {};
    (fn conv2d $($rest:tt)*) => {};
    (fn conv2d_x_backward $($rest:tt)*) => {};
    (fn conv2d_weight_backward $($rest:tt)*) => {};
    (fn conv2d_bias_backward $($rest:tt)*) => {};
    (fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;) => {
        fn $name($($arg: $ty),*) $(-> $ret)? {
            <burn_tch::LibTorch<f32>>::$name($($arg),*)
        }
    };
}
pub(crate) use forward_op;
