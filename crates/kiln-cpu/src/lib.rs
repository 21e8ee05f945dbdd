//! Kiln's fast CPU backend for Burn.
//!
//! [`KilnCpu`] is a Burn backend: burn-flex (pure Rust, SIMD, rayon) with Kiln's own kernels
//! for the operations that dominate training small and medium CNNs on a CPU, the 2-D
//! convolution (forward, input gradient, weight gradient, bias gradient) and max pooling with
//! indices and its backward, plus copies and broadcast arithmetic on the strided views that
//! Burn's batch norm works through. Wrap it in `burn::backend::Autodiff` to train. The kernels
//! are also public ([`conv`], [`pool`] over `f32` slices, [`strided`] over burn-flex tensors).
//!
//! What it is not: a new tensor library. Every other op is burn-flex's, the tensors are
//! burn-flex's, and anything the kernels do not cover (grouped convolutions, other float
//! types) falls back to burn-flex too.
//!
//! Determinism: every kernel splits its work so that each output element is computed by one
//! thread in a fixed order, so the same inputs give the same bits on a given machine.
#![warn(missing_docs)]

mod backend;
pub mod conv;
mod forward;
pub mod pool;
pub mod strided;

pub use backend::KilnCpu;
pub use burn_flex::FlexDevice as KilnCpuDevice;

/// Defines each listed op to call burn-flex's implementation with the same arguments.
macro_rules! forward_to_flex {
    ($(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;)*) => {
        $(
            fn $name($($arg: $ty),*) $(-> $ret)? {
                <burn_flex::Flex>::$name($($arg),*)
            }
        )*
    };
}
pub(crate) use forward_to_flex;
