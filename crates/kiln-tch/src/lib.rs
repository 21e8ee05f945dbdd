//! Burn's libtorch backend with libtorch's own convolution gradients.
//!
//! [`KilnTch`] is `burn_tch::LibTorch<f32>` (the same tensors, devices and ops) except for the
//! two calls Burn's autodiff makes for a convolution's gradients, `conv2d_x_backward` and
//! `conv2d_weight_backward`, and the bias gradient. burn-tch 0.21 leaves those to Burn's
//! generic defaults (a transposed convolution, and a convolution with batch and channels
//! swapped that no library has a fast kernel for); here they call `at::convolution_backward`,
//! the function PyTorch's autograd calls, so a training step runs the kernels PyTorch runs
//! (oneDNN on the CPU, cuDNN on CUDA). Wrap it in `burn::backend::Autodiff` to train.
//!
//! What it is not: a fork of burn-tch. Every other op is burn-tch's, forwarded unchanged.
//! It needs libtorch at build and run time exactly as burn-tch does, and a C++ compiler to
//! build the small shim in `src/conv_backward.cpp`.
#![warn(missing_docs)]

mod backend;
mod ffi;

pub use backend::KilnTch;
pub use burn_tch::LibTorchDevice as KilnTchDevice;

/// One forwarded op (see kiln-forward): nothing for the ops KilnTch implements itself in
/// backend.rs, a call to burn-tch's for every other.
macro_rules! forward_op {
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
