//! Macros for writing a Burn *decorator backend*: a backend that is another backend (the same
//! tensors, devices and element types) with some of its ops replaced. Kiln's `kiln-cpu`
//! (burn-flex with Kiln's kernels) and `kiln-tch` (burn-tch with libtorch's convolution
//! gradients) are two.
//!
//! Burn's op traits have hundreds of methods; a decorator wants to write the handful it
//! changes and forward the rest. For each trait this crate has a macro ([`float_tensor_ops!`],
//! [`module_ops!`], ...) generated from burn-backend's own signatures
//! (`tools/gen_ops.py`), which expands to one `forward_op! { fn op(args) -> ret; }` item per
//! op. The decorator crate defines that `forward_op!` macro itself: an arm that expands to
//! nothing for each op it implements, then one arm that writes the call to the wrapped
//! backend:
//!
//! ```ignore
//! macro_rules! forward_op {
//!     (fn float_add $($rest:tt)*) => {}; // implemented in backend.rs
//!     (fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;) => {
//!         fn $name($($arg: $ty),*) $(-> $ret)? { <burn_flex::Flex>::$name($($arg),*) }
//!     };
//! }
//! impl FloatTensorOps<MyBackend> for MyBackend {
//!     kiln_forward::float_tensor_ops!(MyBackend);
//!     fn float_add(lhs: FloatTensor<MyBackend>, rhs: FloatTensor<MyBackend>) -> FloatTensor<MyBackend> { .. }
//! }
//! ```
//!
//! The expansion names burn-backend's types unqualified, so the impl's module imports
//! `burn_backend::{*, ops::*, tensor::*}`, `burn_backend::tensor::Device`,
//! `burn_backend::quantization::QuantScheme`, `core::future::Future`
//! and `core::ops::Range`. Ops whose argument or result types wrap the backend
//! (`MaxPool2dWithIndices<B>`, ...) are different types for the decorator and the wrapped
//! backend, so they cannot be forwarded as they are: the generated macros leave them out (they
//! keep the trait's default), and the four without a default are converted by the macros
//! written here ([`deform_conv2d_backward!`], [`max_pool2d_with_indices!`],
//! [`max_pool2d_with_indices_backward!`], [`quantize!`]).
//!
//! What it is not: a backend, or anything that runs. It has no dependencies; the expansions
//! need `burn-backend` in the decorator crate. Regenerate `src/ops.rs` on a Burn upgrade.
#![warn(missing_docs)]

mod ops;

/// A whole decorator backend: `$b` (a unit struct the crate declares) is `$inner`'s tensors,
/// devices and element types, named by `$name`, with every op forwarded to `$inner` except the
/// items written in its trait's braces (and named in the crate's `forward_op!`). Every op
/// trait is listed, in this order, so a decorator reads as what it changes:
///
/// ```ignore
/// kiln_forward::decorator! {
///     KilnCpu over Flex, named |_device| "kiln-cpu".into();
///     FloatTensorOps { fn float_add(..) -> FloatTensor<KilnCpu> { .. } }
///     IntTensorOps {}
///     BoolTensorOps {}
///     ActivationOps {}
///     TransactionOps {}
///     QTensorOps {}
///     ModuleOps { fn conv2d(..) -> FloatTensor<KilnCpu> { .. } }
/// }
/// ```
///
/// `QTensorOps` gets [`quantize!`] and `ModuleOps` [`deform_conv2d_backward!`], which every
/// decorator needs; the max-pool conversions are the crate's to add where it forwards them.
#[macro_export]
macro_rules! decorator {
    (
        $b:ident over $inner:ty, named |$device:ident| $name:expr;
        FloatTensorOps { $($float:item)* }
        IntTensorOps { $($int:item)* }
        BoolTensorOps { $($bool:item)* }
        ActivationOps { $($activation:item)* }
        TransactionOps { $($transaction:item)* }
        QTensorOps { $($q:item)* }
        ModuleOps { $($module:item)* }
    ) => {
        impl burn_backend::BackendTypes for $b {
            type Device = <$inner as burn_backend::BackendTypes>::Device;
            type FloatTensorPrimitive = <$inner as burn_backend::BackendTypes>::FloatTensorPrimitive;
            type FloatElem = <$inner as burn_backend::BackendTypes>::FloatElem;
            type IntTensorPrimitive = <$inner as burn_backend::BackendTypes>::IntTensorPrimitive;
            type IntElem = <$inner as burn_backend::BackendTypes>::IntElem;
            type BoolTensorPrimitive = <$inner as burn_backend::BackendTypes>::BoolTensorPrimitive;
            type BoolElem = <$inner as burn_backend::BackendTypes>::BoolElem;
            type QuantizedTensorPrimitive =
                <$inner as burn_backend::BackendTypes>::QuantizedTensorPrimitive;
        }

        impl burn_backend::Backend for $b {
            fn name($device: &Self::Device) -> String {
                $name
            }

            $crate::backend_methods!($inner);
        }

        impl FloatTensorOps<$b> for $b {
            $crate::float_tensor_ops!($b);
            $($float)*
        }

        impl IntTensorOps<$b> for $b {
            $crate::int_tensor_ops!($b);
            $($int)*
        }

        impl BoolTensorOps<$b> for $b {
            $crate::bool_tensor_ops!($b);
            $($bool)*
        }

        impl ActivationOps<$b> for $b {
            $crate::activation_ops!($b);
            $($activation)*
        }

        impl TransactionOps<$b> for $b {
            $crate::transaction_ops!($b);
            $($transaction)*
        }

        impl QTensorOps<$b> for $b {
            $crate::q_tensor_ops!($b);
            $crate::quantize!($b, $inner);
            $($q)*
        }

        impl ModuleOps<$b> for $b {
            $crate::module_ops!($b);
            $crate::deform_conv2d_backward!($b, $inner);
            $($module)*
        }
    };
}

/// The `Backend` methods a decorator takes from the backend it wraps, all but
/// `name`: `seed`, `ad_enabled`, `sync`, `dtype_usage`, `device_count`.
#[macro_export]
macro_rules! backend_methods {
    ($inner:ty) => {
        fn seed(device: &Self::Device, seed: u64) {
            <$inner>::seed(device, seed)
        }

        fn ad_enabled(device: &Self::Device) -> bool {
            <$inner>::ad_enabled(device)
        }

        fn sync(device: &Self::Device) -> Result<(), burn_backend::ExecutionError> {
            <$inner>::sync(device)
        }

        fn dtype_usage(
            device: &Self::Device,
            dtype: burn_backend::DType,
        ) -> burn_backend::DTypeUsageSet {
            <$inner>::dtype_usage(device, dtype)
        }

        fn device_count(type_id: u16) -> usize {
            <$inner>::device_count(type_id)
        }
    };
}

/// `ModuleOps::deform_conv2d_backward` of decorator `$b`, by the wrapped backend `$inner`.
#[macro_export]
macro_rules! deform_conv2d_backward {
    ($b:ident, $inner:ty) => {
        fn deform_conv2d_backward(
            x: FloatTensor<$b>,
            offset: FloatTensor<$b>,
            weight: FloatTensor<$b>,
            mask: Option<FloatTensor<$b>>,
            bias: Option<FloatTensor<$b>>,
            output_grad: FloatTensor<$b>,
            options: burn_backend::ops::DeformConvOptions<2>,
        ) -> burn_backend::ops::DeformConv2dBackward<$b> {
            let g = <$inner>::deform_conv2d_backward(
                x,
                offset,
                weight,
                mask,
                bias,
                output_grad,
                options,
            );
            burn_backend::ops::DeformConv2dBackward::new(
                g.x_grad,
                g.offset_grad,
                g.weight_grad,
                g.mask_grad,
                g.bias_grad,
            )
        }
    };
}

/// `ModuleOps::max_pool2d_with_indices` of decorator `$b`, by the wrapped backend `$inner`.
#[macro_export]
macro_rules! max_pool2d_with_indices {
    ($b:ident, $inner:ty) => {
        fn max_pool2d_with_indices(
            x: FloatTensor<$b>,
            kernel_size: [usize; 2],
            stride: [usize; 2],
            padding: [usize; 2],
            dilation: [usize; 2],
            ceil_mode: bool,
        ) -> burn_backend::ops::MaxPool2dWithIndices<$b> {
            let out = <$inner>::max_pool2d_with_indices(
                x,
                kernel_size,
                stride,
                padding,
                dilation,
                ceil_mode,
            );
            burn_backend::ops::MaxPool2dWithIndices::new(out.output, out.indices)
        }
    };
}

/// `ModuleOps::max_pool2d_with_indices_backward` of decorator `$b`, by the wrapped backend
/// `$inner`.
#[macro_export]
macro_rules! max_pool2d_with_indices_backward {
    ($b:ident, $inner:ty) => {
        #[allow(clippy::too_many_arguments)] // Burn's signature
        fn max_pool2d_with_indices_backward(
            x: FloatTensor<$b>,
            kernel_size: [usize; 2],
            stride: [usize; 2],
            padding: [usize; 2],
            dilation: [usize; 2],
            ceil_mode: bool,
            output_grad: FloatTensor<$b>,
            indices: IntTensor<$b>,
        ) -> burn_backend::ops::MaxPool2dBackward<$b> {
            $crate::inner_max_pool2d_backward::<$inner, $b>(
                x,
                [kernel_size, stride, padding, dilation],
                ceil_mode,
                output_grad,
                indices,
            )
        }
    };
}

/// `Inner`'s max-pool gradient as decorator `B`'s: the two share tensor types, only the
/// wrapper differs. For [`max_pool2d_with_indices_backward!`] and for a decorator's own kernel
/// to fall back on. `geometry` is kernel size, stride, padding and dilation.
pub fn inner_max_pool2d_backward<Inner, B>(
    x: burn_backend::tensor::FloatTensor<Inner>,
    [kernel_size, stride, padding, dilation]: [[usize; 2]; 4],
    ceil_mode: bool,
    output_grad: burn_backend::tensor::FloatTensor<Inner>,
    indices: burn_backend::tensor::IntTensor<Inner>,
) -> burn_backend::ops::MaxPool2dBackward<B>
where
    Inner: burn_backend::Backend,
    B: burn_backend::Backend<FloatTensorPrimitive = Inner::FloatTensorPrimitive>,
{
    let out = Inner::max_pool2d_with_indices_backward(
        x,
        kernel_size,
        stride,
        padding,
        dilation,
        ceil_mode,
        output_grad,
        indices,
    );
    burn_backend::ops::MaxPool2dBackward::new(out.x_grad)
}

/// `QTensorOps::quantize` of decorator `$b`, by the wrapped backend `$inner`.
#[macro_export]
macro_rules! quantize {
    ($b:ident, $inner:ty) => {
        fn quantize(
            tensor: FloatTensor<$b>,
            scheme: &burn_backend::quantization::QuantScheme,
            qparams: burn_backend::quantization::QuantizationParametersPrimitive<$b>,
        ) -> QuantizedTensor<$b> {
            let qparams = burn_backend::quantization::QuantizationParametersPrimitive {
                scales: qparams.scales,
            };
            <$inner>::quantize(tensor, scheme, qparams)
        }
    };
}
