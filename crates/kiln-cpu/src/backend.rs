//! `KilnCpu`: burn-flex with Kiln's convolution, pooling, sigmoid and GELU kernels in place of its own.
//!
//! Burn's autodiff asks the inner backend for `conv2d_x_backward`, `conv2d_weight_backward`,
//! `conv2d_bias_backward`, `max_pool2d_with_indices[_backward]`, `avg_pool2d[_backward]` and
//! `sigmoid[_backward]` and `gelu[_backward]`; burn-flex leaves the
//! convolution gradients to Burn's generic defaults (a transposed convolution and a convolution
//! with batch and channels swapped), which is where a CPU training step spent its time. This
//! type answers those calls with the kernels in [`crate::conv`], [`crate::pool`] and
//! [`crate::activation`] (burn-flex's are serial), draws Bernoulli (dropout) masks with
//! [`crate::random`]'s parallel counter-based generator, answers
//! reshapes and the four arithmetic ops with [`crate::strided`] where burn-flex would walk a
//! strided view element by element, and hands every other op to burn-flex unchanged (the
//! macros of kiln-forward, with the crate's `forward_op!`). Tensors are burn-flex's own, so
//! nothing is converted on the way in or out.

use core::future::Future;
use core::ops::Range;

use burn_backend::ops::*;
use burn_backend::quantization::QuantScheme;
use burn_backend::tensor::Device;
use burn_backend::tensor::*;
use burn_backend::*;
use burn_flex::{Flex, FlexTensor, Layout};

use crate::activation;
use crate::conv::{self, Conv2dGeometry};
use crate::forward_op;
use crate::norm;
use crate::pool::{self, Pool2dGeometry};
use crate::random;
use crate::strided::{self, BinaryOp};

/// Kiln's CPU backend: burn-flex (pure Rust, SIMD, rayon) with Kiln's own convolution,
/// pooling and sigmoid kernels for training. Use it wherever a Burn backend goes:
///
/// ```
/// use burn::backend::Autodiff;
/// use burn::tensor::Tensor;
/// use kiln_cpu::KilnCpu;
///
/// let device = Default::default();
/// let x = Tensor::<Autodiff<KilnCpu>, 4>::ones([2, 3, 8, 8], &device).require_grad();
/// let w = Tensor::<Autodiff<KilnCpu>, 4>::ones([4, 3, 3, 3], &device).require_grad();
/// let y = burn::tensor::module::conv2d(x.clone(), w, None, burn::tensor::ops::ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
/// let grads = y.sum().backward();
/// assert_eq!(x.grad(&grads).unwrap().dims(), [2, 3, 8, 8]);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct KilnCpu;

/// The tensor's `f32` elements in row-major order, or `None` when it holds another type.
fn f32_data(tensor: &FlexTensor) -> Option<FlexTensor> {
    (tensor.dtype() == DType::F32).then(|| tensor.to_contiguous())
}

fn f32_slice(tensor: &FlexTensor) -> &[f32] {
    tensor.as_slice::<f32>().expect("a contiguous f32 tensor")
}

fn tensor_f32(data: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape.into()),
        DType::F32,
    )
}

/// The tensor as a contiguous `f32` buffer this call may write: itself when nothing else
/// shares it, else a copy; `None` when it holds another type.
fn owned_f32(tensor: FlexTensor) -> Option<FlexTensor> {
    if tensor.dtype() != DType::F32 {
        return None;
    }
    // A strided view comes back from `to_contiguous` as a fresh buffer nobody else holds, so
    // only a contiguous tensor that is shared still needs copying here.
    let contiguous = tensor.to_contiguous();
    drop(tensor);
    if contiguous.is_unique() && contiguous.layout().start_offset() == 0 {
        return Some(contiguous);
    }
    let copy = f32_slice(&contiguous).to_vec();
    Some(tensor_f32(copy, contiguous.shape()))
}

/// The first `shape`-many elements of a tensor from [`owned_f32`].
fn owned_slice(tensor: &mut FlexTensor) -> &mut [f32] {
    let n = tensor.shape().num_elements();
    &mut tensor.storage_mut::<f32>()[..n]
}

fn dims4(tensor: &FlexTensor) -> [usize; 4] {
    let shape = tensor.shape();
    [shape[0], shape[1], shape[2], shape[3]]
}

/// Kiln's kernels cover ungrouped convolutions in `f32`; anything else goes to burn-flex.
fn conv_geometry(
    x: &FlexTensor,
    weight: &FlexTensor,
    options: &ConvOptions<2>,
) -> Option<Conv2dGeometry> {
    if options.groups != 1 || x.dtype() != DType::F32 || weight.dtype() != DType::F32 {
        return None;
    }
    let [batch, in_channels, h, w] = dims4(x);
    let [out_channels, _, kh, kw] = dims4(weight);
    Some(Conv2dGeometry {
        batch,
        in_channels,
        in_size: [h, w],
        out_channels,
        kernel: [kh, kw],
        stride: options.stride,
        padding: options.padding,
        dilation: options.dilation,
    })
}

fn pool_geometry(
    x: &FlexTensor,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
) -> Option<Pool2dGeometry> {
    let [n, c, h, w] = dims4(x);
    (x.dtype() == DType::F32).then_some(Pool2dGeometry {
        planes: n * c,
        in_size: [h, w],
        kernel,
        stride,
        padding,
        dilation,
        ceil_mode,
    })
}

kiln_forward::decorator! {
    KilnCpu over Flex, named |_device| "kiln-cpu".into();
    FloatTensorOps {
        fn float_random(
            shape: Shape,
            distribution: Distribution,
            device: &Device<KilnCpu>,
            dtype: FloatDType,
        ) -> FloatTensor<KilnCpu> {
            let (Distribution::Bernoulli(prob), FloatDType::F32) = (distribution, dtype) else {
                return Flex::float_random(shape, distribution, device, dtype);
            };
            // The stream's key comes from burn-flex's seeded generator, so `seed` fixes it.
            let draws =
                Flex::float_random([2].into(), Distribution::Default, device, FloatDType::F64);
            let draws = draws.as_slice::<f64>().expect("two contiguous f64 draws");
            let key = random::key_from([draws[0], draws[1]]);
            tensor_f32(random::bernoulli(key, shape.num_elements(), prob), shape)
        }

        fn float_reshape(tensor: FloatTensor<KilnCpu>, shape: Shape) -> FloatTensor<KilnCpu> {
            // A view that cannot be reshaped in place is copied first, by Kiln's run-wise copy
            // rather than burn-flex's element-wise one.
            if tensor.layout().reshape(shape.clone()).is_some() {
                Flex::float_reshape(tensor, shape)
            } else {
                Flex::float_reshape(strided::contiguous(tensor), shape)
            }
        }

        fn float_add(lhs: FloatTensor<KilnCpu>, rhs: FloatTensor<KilnCpu>) -> FloatTensor<KilnCpu> {
            strided::binary(&lhs, &rhs, BinaryOp::Add).unwrap_or_else(|| Flex::float_add(lhs, rhs))
        }

        fn float_sub(lhs: FloatTensor<KilnCpu>, rhs: FloatTensor<KilnCpu>) -> FloatTensor<KilnCpu> {
            strided::binary(&lhs, &rhs, BinaryOp::Sub).unwrap_or_else(|| Flex::float_sub(lhs, rhs))
        }

        fn float_mul(lhs: FloatTensor<KilnCpu>, rhs: FloatTensor<KilnCpu>) -> FloatTensor<KilnCpu> {
            strided::binary(&lhs, &rhs, BinaryOp::Mul).unwrap_or_else(|| Flex::float_mul(lhs, rhs))
        }

        fn float_div(lhs: FloatTensor<KilnCpu>, rhs: FloatTensor<KilnCpu>) -> FloatTensor<KilnCpu> {
            strided::binary(&lhs, &rhs, BinaryOp::Div).unwrap_or_else(|| Flex::float_div(lhs, rhs))
        }
    }
    IntTensorOps {}
    BoolTensorOps {}
    ActivationOps {
        fn sigmoid(tensor: FloatTensor<KilnCpu>) -> FloatTensor<KilnCpu> {
            if tensor.dtype() != DType::F32 {
                return Flex::sigmoid(tensor);
            }
            let mut out = owned_f32(tensor).expect("an f32 tensor");
            activation::sigmoid_in_place(owned_slice(&mut out));
            out
        }

        fn gelu(tensor: FloatTensor<KilnCpu>) -> FloatTensor<KilnCpu> {
            let Some(x) = f32_data(&tensor) else {
                return Flex::gelu(tensor);
            };
            // Autodiff keeps the input for the backward pass, so the output is a new buffer
            // rather than a copy written over.
            let mut out = vec![0.0f32; x.shape().num_elements()];
            activation::gelu(f32_slice(&x), &mut out);
            tensor_f32(out, x.shape())
        }

        fn gelu_backward(x: FloatTensor<KilnCpu>, grad: FloatTensor<KilnCpu>) -> FloatTensor<KilnCpu> {
            let (Some(x), true) = (f32_data(&x), grad.dtype() == DType::F32) else {
                return Flex::gelu_backward(x, grad);
            };
            let mut grad = owned_f32(grad).expect("an f32 gradient");
            activation::gelu_backward_in_place(f32_slice(&x), owned_slice(&mut grad));
            grad
        }

        fn sigmoid_backward(
            output: FloatTensor<KilnCpu>,
            grad: FloatTensor<KilnCpu>,
        ) -> FloatTensor<KilnCpu> {
            let (Some(s), true) = (f32_data(&output), grad.dtype() == DType::F32) else {
                return Flex::sigmoid_backward(output, grad);
            };
            let mut grad = owned_f32(grad).expect("an f32 gradient");
            activation::sigmoid_backward_in_place(f32_slice(&s), owned_slice(&mut grad));
            grad
        }
    }
    TransactionOps {}
    QTensorOps {}
    ModuleOps {
        fn conv2d(
            x: FloatTensor<KilnCpu>,
            weight: FloatTensor<KilnCpu>,
            bias: Option<FloatTensor<KilnCpu>>,
            options: ConvOptions<2>,
        ) -> FloatTensor<KilnCpu> {
            let bias_is_f32 = bias.as_ref().is_none_or(|b| b.dtype() == DType::F32);
            let Some(geo) = conv_geometry(&x, &weight, &options).filter(|_| bias_is_f32) else {
                return Flex::conv2d(x, weight, bias, options);
            };
            let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
            let bias = bias.map(|b| b.to_contiguous());
            let out = conv::conv2d_forward(
                &geo,
                f32_slice(&x),
                f32_slice(&weight),
                bias.as_ref().map(f32_slice),
            );
            let [oh, ow] = geo.out_size();
            tensor_f32(out, [geo.batch, geo.out_channels, oh, ow])
        }

        fn conv2d_x_backward(
            x: FloatTensor<KilnCpu>,
            weight: FloatTensor<KilnCpu>,
            output_grad: FloatTensor<KilnCpu>,
            options: ConvOptions<2>,
        ) -> FloatTensor<KilnCpu> {
            let (Some(geo), Some(grad)) =
                (conv_geometry(&x, &weight, &options), f32_data(&output_grad))
            else {
                return Flex::conv2d_x_backward(x, weight, output_grad, options);
            };
            let weight = weight.to_contiguous();
            let out = conv::conv2d_input_grad(&geo, f32_slice(&weight), f32_slice(&grad));
            tensor_f32(out, x.shape())
        }

        fn conv2d_weight_backward(
            x: FloatTensor<KilnCpu>,
            weight: FloatTensor<KilnCpu>,
            output_grad: FloatTensor<KilnCpu>,
            options: ConvOptions<2>,
        ) -> FloatTensor<KilnCpu> {
            let (Some(geo), Some(grad)) =
                (conv_geometry(&x, &weight, &options), f32_data(&output_grad))
            else {
                return Flex::conv2d_weight_backward(x, weight, output_grad, options);
            };
            let x = x.to_contiguous();
            let out = conv::conv2d_weight_grad(&geo, f32_slice(&x), f32_slice(&grad));
            tensor_f32(out, weight.shape())
        }

        fn conv2d_bias_backward(
            x: FloatTensor<KilnCpu>,
            bias: FloatTensor<KilnCpu>,
            output_grad: FloatTensor<KilnCpu>,
        ) -> FloatTensor<KilnCpu> {
            let Some(grad) = f32_data(&output_grad).filter(|_| bias.dtype() == DType::F32) else {
                return Flex::conv2d_bias_backward(x, bias, output_grad);
            };
            let [batch, out_channels, ..] = dims4(&grad);
            tensor_f32(
                conv::conv2d_bias_grad(batch, out_channels, f32_slice(&grad)),
                bias.shape(),
            )
        }

        fn avg_pool2d(
            x: FloatTensor<KilnCpu>,
            kernel_size: [usize; 2],
            stride: [usize; 2],
            padding: [usize; 2],
            count_include_pad: bool,
            ceil_mode: bool,
        ) -> FloatTensor<KilnCpu> {
            let Some(geo) = pool_geometry(&x, kernel_size, stride, padding, [1, 1], ceil_mode) else {
                return Flex::avg_pool2d(
                    x,
                    kernel_size,
                    stride,
                    padding,
                    count_include_pad,
                    ceil_mode,
                );
            };
            let [n, c, ..] = dims4(&x);
            let x = x.to_contiguous();
            let [oh, ow] = geo.out_size();
            let out = pool::avg_pool2d(&geo, f32_slice(&x), count_include_pad);
            tensor_f32(out, [n, c, oh, ow])
        }

        fn avg_pool2d_backward(
            x: FloatTensor<KilnCpu>,
            grad: FloatTensor<KilnCpu>,
            kernel_size: [usize; 2],
            stride: [usize; 2],
            padding: [usize; 2],
            count_include_pad: bool,
            ceil_mode: bool,
        ) -> FloatTensor<KilnCpu> {
            let geo = pool_geometry(&x, kernel_size, stride, padding, [1, 1], ceil_mode);
            let (Some(geo), Some(g)) = (geo, f32_data(&grad)) else {
                return Flex::avg_pool2d_backward(
                    x,
                    grad,
                    kernel_size,
                    stride,
                    padding,
                    count_include_pad,
                    ceil_mode,
                );
            };
            let out = pool::avg_pool2d_backward(&geo, f32_slice(&g), count_include_pad);
            tensor_f32(out, x.shape())
        }

        fn max_pool2d(
            x: FloatTensor<KilnCpu>,
            kernel_size: [usize; 2],
            stride: [usize; 2],
            padding: [usize; 2],
            dilation: [usize; 2],
            ceil_mode: bool,
        ) -> FloatTensor<KilnCpu> {
            let Some(geo) = pool_geometry(&x, kernel_size, stride, padding, dilation, ceil_mode) else {
                return Flex::max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode);
            };
            let [n, c, ..] = dims4(&x);
            let x = x.to_contiguous();
            let [oh, ow] = geo.out_size();
            tensor_f32(pool::max_pool2d(&geo, f32_slice(&x)), [n, c, oh, ow])
        }

        fn max_pool2d_with_indices(
            x: FloatTensor<KilnCpu>,
            kernel_size: [usize; 2],
            stride: [usize; 2],
            padding: [usize; 2],
            dilation: [usize; 2],
            ceil_mode: bool,
        ) -> MaxPool2dWithIndices<KilnCpu> {
            let Some(geo) = pool_geometry(&x, kernel_size, stride, padding, dilation, ceil_mode) else {
                let out =
                    Flex::max_pool2d_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode);
                return MaxPool2dWithIndices::new(out.output, out.indices);
            };
            let [n, c, ..] = dims4(&x);
            let x = x.to_contiguous();
            let (out, idx) = pool::max_pool2d_with_indices(&geo, f32_slice(&x));
            let [oh, ow] = geo.out_size();
            let indices = FlexTensor::new(
                Bytes::from_elems(idx),
                Layout::contiguous(Shape::from([n, c, oh, ow])),
                DType::I64,
            );
            MaxPool2dWithIndices::new(tensor_f32(out, [n, c, oh, ow]), indices)
        }

        fn max_pool2d_with_indices_backward(
            x: FloatTensor<KilnCpu>,
            kernel_size: [usize; 2],
            stride: [usize; 2],
            padding: [usize; 2],
            dilation: [usize; 2],
            ceil_mode: bool,
            output_grad: FloatTensor<KilnCpu>,
            indices: IntTensor<KilnCpu>,
        ) -> MaxPool2dBackward<KilnCpu> {
            let geo = pool_geometry(&x, kernel_size, stride, padding, dilation, ceil_mode);
            let (Some(geo), Some(grad), DType::I64) = (geo, f32_data(&output_grad), indices.dtype())
            else {
                return kiln_forward::inner_max_pool2d_backward::<Flex, KilnCpu>(
                    x,
                    [kernel_size, stride, padding, dilation],
                    ceil_mode,
                    output_grad,
                    indices,
                );
            };
            let indices = indices.to_contiguous();
            let idx = indices.as_slice::<i64>().expect("contiguous i64 indices");
            MaxPool2dBackward::new(tensor_f32(
                pool::max_pool2d_backward(&geo, f32_slice(&grad), idx),
                x.shape(),
            ))
        }
    }
}

/// The tensor as contiguous `f32`, cast if it holds another float type (the kernels in
/// [`crate::norm`] are `f32`; a model in `f16` still gets their arithmetic, in `f32`).
fn as_f32(tensor: FlexTensor) -> FlexTensor {
    match tensor.dtype() {
        DType::F32 => tensor.to_contiguous(),
        _ => Flex::float_cast(tensor, FloatDType::F32).to_contiguous(),
    }
}

/// An `f32` result back in the caller's float type.
fn cast_back(tensor: FlexTensor, dtype: DType) -> FlexTensor {
    if dtype == DType::F32 {
        tensor
    } else {
        Flex::float_cast(tensor, dtype.into())
    }
}

fn planes(x: &FlexTensor) -> norm::Planes {
    let [batch, channels, h, w] = dims4(x);
    norm::Planes {
        batch,
        channels,
        plane: h * w,
    }
}

/// A fresh tensor shaped like `x` holding `x * scale[c] + shift[c]` (through a ReLU where
/// `relu`). The buffer is allocated zeroed, which for a large one is fresh pages from the
/// kernel rather than a pass of writes.
fn scale_shift_new(x: &FlexTensor, scale: &[f32], shift: &[f32], relu: bool) -> FlexTensor {
    let mut out = vec![0.0f32; x.shape().num_elements()];
    norm::scale_shift(f32_slice(x), scale, shift, relu, planes(x), &mut out);
    tensor_f32(out, x.shape())
}

impl kiln_fused::batch_norm::BatchNormKernels for KilnCpu {
    fn batch_norm_train(
        x: FloatTensor<KilnCpu>,
        gamma: FloatTensor<KilnCpu>,
        beta: FloatTensor<KilnCpu>,
        epsilon: f64,
        relu: bool,
    ) -> kiln_fused::batch_norm::TrainForward<KilnCpu> {
        let dtype = x.dtype();
        let (x, gamma, beta) = (as_f32(x), as_f32(gamma), as_f32(beta));
        let channels = dims4(&x)[1];
        let (mean, var) = norm::batch_stats(f32_slice(&x), planes(&x));
        let (scale, shift, invstd) =
            norm::fold(&mean, &var, f32_slice(&gamma), f32_slice(&beta), epsilon);
        let output = scale_shift_new(&x, &scale, &shift, relu);
        let per_channel = |values: Vec<f32>| cast_back(tensor_f32(values, [channels]), dtype);
        kiln_fused::batch_norm::TrainForward {
            output: cast_back(output, dtype),
            mean: per_channel(mean),
            var: per_channel(var),
            invstd: per_channel(invstd),
        }
    }

    fn batch_norm_backward(
        x: FloatTensor<KilnCpu>,
        gamma: FloatTensor<KilnCpu>,
        mean: FloatTensor<KilnCpu>,
        invstd: FloatTensor<KilnCpu>,
        relu_output: Option<FloatTensor<KilnCpu>>,
        grad_output: FloatTensor<KilnCpu>,
    ) -> [FloatTensor<KilnCpu>; 3] {
        let dtype = grad_output.dtype();
        let x = as_f32(x);
        let (gamma, mean, invstd) = (as_f32(gamma), as_f32(mean), as_f32(invstd));
        // The output's gradient is consumed here, so it becomes the input's where nothing else
        // holds it.
        let mut grad = owned_f32(as_f32(grad_output)).expect("an f32 gradient");
        if let Some(output) = relu_output {
            norm::relu_backward_in_place(f32_slice(&as_f32(output)), owned_slice(&mut grad));
        }
        let (dgamma, dbeta) = norm::backward_in_place(
            f32_slice(&x),
            f32_slice(&mean),
            f32_slice(&invstd),
            f32_slice(&gamma),
            owned_slice(&mut grad),
            planes(&x),
        );
        let channels = dgamma.len();
        [
            cast_back(grad, dtype),
            cast_back(tensor_f32(dgamma, [channels]), dtype),
            cast_back(tensor_f32(dbeta, [channels]), dtype),
        ]
    }

    fn batch_norm_inference(
        x: FloatTensor<KilnCpu>,
        mean: FloatTensor<KilnCpu>,
        var: FloatTensor<KilnCpu>,
        gamma: FloatTensor<KilnCpu>,
        beta: FloatTensor<KilnCpu>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<KilnCpu> {
        let dtype = x.dtype();
        let [x, mean, var, gamma, beta] = [x, mean, var, gamma, beta].map(as_f32);
        let (scale, shift, _) = norm::fold(
            f32_slice(&mean),
            f32_slice(&var),
            f32_slice(&gamma),
            f32_slice(&beta),
            epsilon,
        );
        cast_back(scale_shift_new(&x, &scale, &shift, relu), dtype)
    }
}
