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
    TchTensor::new(ffi::conv2d_backward(
        &output_grad.tensor,
        &x.tensor,
        &weight.tensor,
        &conv,
        grad,
    ))
}

kiln_forward::decorator! {
    KilnTch over Torch, named |device| format!("kiln-{}", Torch::name(device));
    FloatTensorOps {}
    IntTensorOps {}
    BoolTensorOps {}
    ActivationOps {}
    TransactionOps {}
    QTensorOps {}
    ModuleOps {
        kiln_forward::max_pool2d_with_indices!(KilnTch, Torch);
        kiln_forward::max_pool2d_with_indices_backward!(KilnTch, Torch);

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
        // What PyTorch's autograd runs for a ReLU: the gradient where the output is positive.
        let grad = match relu_output {
            Some(output) => output.tensor.threshold_backward(&grad_output.tensor, 0.0),
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
