//! `KilnTch`: burn-tch with libtorch's own convolution gradients.

use core::future::Future;
use core::ops::Range;

use burn_backend::ops::*;
use burn_backend::quantization::QuantScheme;
use burn_backend::tensor::Device;
use burn_backend::tensor::*;
use burn_backend::*;
use burn_tch::{LibTorch, TchTensor};

use crate::ffi::{self, Grad};
use crate::forward_op;

type Torch = LibTorch<f32>;

/// Burn's libtorch backend (`f32`) whose convolution gradients are libtorch's own. Use it
/// wherever a Burn backend goes; it needs libtorch like `burn_tch::LibTorch` does.
///
/// ```no_run
/// use burn::backend::Autodiff;
/// use burn::tensor::Tensor;
/// use kiln_tch::{KilnTch, KilnTchDevice};
///
/// let device = KilnTchDevice::Cpu;
/// let x = Tensor::<Autodiff<KilnTch>, 4>::ones([2, 3, 8, 8], &device).require_grad();
/// let w = Tensor::<Autodiff<KilnTch>, 4>::ones([4, 3, 3, 3], &device).require_grad();
/// let y = burn::tensor::module::conv2d(x.clone(), w, None, burn::tensor::ops::ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
/// let grads = y.sum().backward();
/// assert_eq!(x.grad(&grads).unwrap().dims(), [2, 3, 8, 8]);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct KilnTch;

/// Whether convolutions on `device` run in the channels-last layout: on the CPU, unless
/// `KILN_TCH_CHANNELS_LAST` is `0` (read once). cuDNN's fp32 kernels gain nothing certain
/// from it and it was never measured there, so CUDA keeps the contiguous layout.
fn channels_last_on(device: tch::Device) -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    device == tch::Device::Cpu
        && *ENABLED.get_or_init(|| std::env::var("KILN_TCH_CHANNELS_LAST").as_deref() != Ok("0"))
}

/// `tensor` with channels-last strides (the same shape and values): itself if it has them
/// already or is not 4-D, else one copy. A permuted copy is how libtorch itself builds the
/// layout (`contiguous(memory_format=channels_last)`), which tch does not expose.
fn to_channels_last(tensor: &tch::Tensor) -> tch::Tensor {
    if tensor.dim() != 4 || is_channels_last(tensor) {
        return tensor.shallow_clone();
    }
    tensor
        .permute([0, 2, 3, 1])
        .contiguous()
        .permute([0, 3, 1, 2])
}

/// Whether a 4-D tensor's strides are dense NHWC.
fn is_channels_last(tensor: &tch::Tensor) -> bool {
    let (size, stride) = (tensor.size(), tensor.stride());
    let [_, c, h, w] = size[..] else { return false };
    stride[..] == [h * w * c, 1, w * c, c]
}

/// The operands of one convolution in the layout its device runs best: channels-last on the
/// CPU, so that oneDNN picks its NHWC kernels, as-is elsewhere. Forward and both gradients
/// convert the same way, so they run the same family of kernels.
fn conv_operands<const N: usize>(tensors: [&TchTensor; N]) -> [tch::Tensor; N] {
    let cl = channels_last_on(tensors[0].tensor.device());
    tensors.map(|t| {
        if cl {
            to_channels_last(&t.tensor)
        } else {
            t.tensor.shallow_clone()
        }
    })
}

/// One gradient of `conv2d(x, weight)` by libtorch's `convolution_backward`.
fn conv2d_grad(
    x: &TchTensor,
    weight: &TchTensor,
    output_grad: &TchTensor,
    options: &ConvOptions<2>,
    grad: Grad,
) -> TchTensor {
    let pair = |v: [usize; 2]| v.map(|x| x as i64);
    let conv = ffi::Conv2d {
        stride: pair(options.stride),
        padding: pair(options.padding),
        dilation: pair(options.dilation),
        groups: options.groups as i64,
    };
    let [output_grad, x, weight] = conv_operands([output_grad, x, weight]);
    TchTensor::new(ffi::conv2d_backward(&output_grad, &x, &weight, &conv, grad))
}

kiln_forward::decorator! {
    KilnTch over Torch, named |device| format!("kiln-{}", Torch::name(device));
    FloatTensorOps {}
    IntTensorOps {}
    BoolTensorOps {}
    ActivationOps {
        fn relu_backward(output: FloatTensor<KilnTch>, grad: FloatTensor<KilnTch>) -> FloatTensor<KilnTch> {
            // One kernel, as PyTorch's autograd runs it, where Burn's default is a comparison
            // and a masked fill, each with a fresh tensor (3% of convnet-mnist's samples).
            TchTensor::new(output.tensor.threshold_backward(&grad.tensor, 0.0))
        }
    }
    TransactionOps {}
    QTensorOps {}
    ModuleOps {
        kiln_forward::max_pool2d_with_indices!(KilnTch, Torch);
        kiln_forward::max_pool2d_with_indices_backward!(KilnTch, Torch);

        fn conv2d(
            x: FloatTensor<KilnTch>,
            weight: FloatTensor<KilnTch>,
            bias: Option<FloatTensor<KilnTch>>,
            options: ConvOptions<2>,
        ) -> FloatTensor<KilnTch> {
            let [x, weight] = conv_operands([&x, &weight]);
            Torch::conv2d(TchTensor::new(x), TchTensor::new(weight), bias, options)
        }

        fn conv2d_x_backward(
            x: FloatTensor<KilnTch>,
            weight: FloatTensor<KilnTch>,
            output_grad: FloatTensor<KilnTch>,
            options: ConvOptions<2>,
        ) -> FloatTensor<KilnTch> {
            conv2d_grad(&x, &weight, &output_grad, &options, Grad::Input)
        }

        fn conv2d_weight_backward(
            x: FloatTensor<KilnTch>,
            weight: FloatTensor<KilnTch>,
            output_grad: FloatTensor<KilnTch>,
            options: ConvOptions<2>,
        ) -> FloatTensor<KilnTch> {
            conv2d_grad(&x, &weight, &output_grad, &options, Grad::Weight)
        }

        fn conv2d_bias_backward(
            _x: FloatTensor<KilnTch>,
            _bias: FloatTensor<KilnTch>,
            output_grad: FloatTensor<KilnTch>,
        ) -> FloatTensor<KilnTch> {
            // One reduction over batch and space, as PyTorch's autograd does it.
            TchTensor::new(output_grad.tensor.sum_dim_intlist(
                &[0i64, 2, 3][..],
                false,
                None::<tch::Kind>,
            ))
        }
    }
}

/// libtorch's own batch norm, forward (`native_batch_norm`, ATen's fused kernel or cuDNN's)
/// and backward (`native_batch_norm_backward`): what PyTorch runs for `BatchNorm2d`.
impl kiln_fused::batch_norm::BatchNormKernels for KilnTch {
    fn batch_norm_train(
        x: FloatTensor<KilnTch>,
        gamma: FloatTensor<KilnTch>,
        beta: FloatTensor<KilnTch>,
        epsilon: f64,
        relu: bool,
    ) -> kiln_fused::batch_norm::TrainForward<KilnTch> {
        let (mut output, mean, invstd) = x.tensor.native_batch_norm(
            Some(&gamma.tensor),
            Some(&beta.tensor),
            None::<&tch::Tensor>,
            None::<&tch::Tensor>,
            true,
            0.0,
            epsilon,
        );
        if relu {
            // In place: the output is new and nothing else holds it yet.
            let _ = output.relu_();
        }
        // libtorch returns 1 / sqrt(var + eps), not the variance; the running variance needs it.
        let var = invstd.square().reciprocal() - epsilon;
        kiln_fused::batch_norm::TrainForward {
            output: TchTensor::new(output),
            mean: TchTensor::new(mean),
            var: TchTensor::new(var),
            invstd: TchTensor::new(invstd),
        }
    }

    fn batch_norm_backward(
        x: FloatTensor<KilnTch>,
        gamma: FloatTensor<KilnTch>,
        mean: FloatTensor<KilnTch>,
        invstd: FloatTensor<KilnTch>,
        relu_output: Option<FloatTensor<KilnTch>>,
        grad_output: FloatTensor<KilnTch>,
    ) -> [FloatTensor<KilnTch>; 3] {
        let grad = match relu_output {
            Some(output) => KilnTch::relu_backward(output, grad_output).tensor,
            None => grad_output.tensor,
        };
        // In training mode libtorch takes the saved 1 / sqrt(var + eps) and never reads eps.
        ffi::batch_norm_backward(
            &grad,
            &x.tensor,
            &gamma.tensor,
            &mean.tensor,
            &invstd.tensor,
            0.0,
        )
        .map(TchTensor::new)
    }

    fn batch_norm_inference(
        x: FloatTensor<KilnTch>,
        mean: FloatTensor<KilnTch>,
        var: FloatTensor<KilnTch>,
        gamma: FloatTensor<KilnTch>,
        beta: FloatTensor<KilnTch>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<KilnTch> {
        let (mut output, _, _) = x.tensor.native_batch_norm(
            Some(&gamma.tensor),
            Some(&beta.tensor),
            Some(&mean.tensor),
            Some(&var.tensor),
            false,
            0.0,
            epsilon,
        );
        if relu {
            let _ = output.relu_();
        }
        TchTensor::new(output)
    }
}
