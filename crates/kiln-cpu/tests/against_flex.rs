//! Kiln's kernels against burn-flex's (Burn's reference implementations of the same ops):
//! values and gradients through Burn's autodiff, over odd sizes, strides, padding, dilation
//! and ceil mode.

use burn::backend::Autodiff;
use burn::tensor::activation::sigmoid;
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d, max_pool2d_with_indices};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use burn_flex::Flex;
use kiln_cpu::KilnCpu;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type K = Autodiff<KilnCpu>;
type F = Autodiff<Flex>;

/// The same random values on both backends, drawn from a generator of the test's own (Burn's
/// is global, and tests run in parallel).
fn pair<const D: usize>(shape: [usize; D], seed: u64) -> (Tensor<K, D>, Tensor<F, D>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
    let data = TensorData::new(values, shape);
    (
        Tensor::from_data(data.clone(), &Default::default()).require_grad(),
        Tensor::from_data(data, &Default::default()).require_grad(),
    )
}

fn assert_close<BA: Backend, BB: Backend, const D: usize>(
    what: &str,
    a: Tensor<BA, D>,
    b: Tensor<BB, D>,
) {
    assert_eq!(a.dims(), b.dims(), "{what}: shape");
    let a = a.into_data().to_vec::<f32>().unwrap();
    let b = b.into_data().to_vec::<f32>().unwrap();
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * scale * (1.0 + (b.len() as f32).sqrt()),
            "{what}: element {i} is {x} on kiln-cpu, {y} on flex (scale {scale})"
        );
    }
}

struct Case {
    x: [usize; 4],
    out_channels: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    bias: bool,
}

fn check_conv(case: &Case, seed: u64) {
    let [_, c, ..] = case.x;
    let (xk, xf) = pair(case.x, seed);
    let (wk, wf) = pair(
        [case.out_channels, c, case.kernel[0], case.kernel[1]],
        seed + 1,
    );
    let (bk, bf) = pair([case.out_channels], seed + 2);
    let options = ConvOptions::new(case.stride, case.padding, case.dilation, 1);
    let yk = conv2d(
        xk.clone(),
        wk.clone(),
        case.bias.then(|| bk.clone()),
        options.clone(),
    );
    let yf = conv2d(
        xf.clone(),
        wf.clone(),
        case.bias.then(|| bf.clone()),
        options,
    );
    let what = format!(
        "conv2d {:?} k{:?} s{:?} p{:?} d{:?}",
        case.x, case.kernel, case.stride, case.padding, case.dilation
    );
    assert_close(&format!("{what} output"), yk.clone(), yf.clone());
    // A non-uniform upstream gradient, so every position's gradient is distinct.
    let (gk, gf) = pair(yk.dims(), seed + 3);
    let grads_k = (yk * gk.detach()).sum().backward();
    let grads_f = (yf * gf.detach()).sum().backward();
    assert_close(
        &format!("{what} x grad"),
        xk.grad(&grads_k).unwrap(),
        xf.grad(&grads_f).unwrap(),
    );
    assert_close(
        &format!("{what} weight grad"),
        wk.grad(&grads_k).unwrap(),
        wf.grad(&grads_f).unwrap(),
    );
    if case.bias {
        assert_close(
            &format!("{what} bias grad"),
            bk.grad(&grads_k).unwrap(),
            bf.grad(&grads_f).unwrap(),
        );
    }
}

#[test]
fn conv2d_matches_flex_in_values_and_gradients() {
    let cases = [
        // LeNet-5's first layer: 5x5, padding 2.
        Case {
            x: [3, 1, 28, 28],
            out_channels: 6,
            kernel: [5, 5],
            stride: [1, 1],
            padding: [2, 2],
            dilation: [1, 1],
            bias: true,
        },
        // Odd sizes, stride 2, a ResNet stem's 7x7: three input channels, so the direct
        // kernels forward and for the weight gradient, im2col for the input gradient.
        Case {
            x: [2, 3, 19, 23],
            out_channels: 5,
            kernel: [7, 7],
            stride: [2, 2],
            padding: [3, 3],
            dilation: [1, 1],
            bias: false,
        },
        // A ResNet's stride-2 3x3 layer: more input channels than an image has, im2col.
        Case {
            x: [3, 6, 11, 10],
            out_channels: 9,
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
            dilation: [1, 1],
            bias: true,
        },
        // Pointwise (the ResNet shortcut) with and without stride.
        Case {
            x: [4, 8, 9, 9],
            out_channels: 16,
            kernel: [1, 1],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            bias: true,
        },
        Case {
            x: [4, 8, 9, 9],
            out_channels: 16,
            kernel: [1, 1],
            stride: [2, 2],
            padding: [0, 0],
            dilation: [1, 1],
            bias: false,
        },
        // Rectangular kernel, unequal strides and padding, dilation.
        Case {
            x: [2, 3, 13, 11],
            out_channels: 4,
            kernel: [3, 2],
            stride: [2, 1],
            padding: [1, 0],
            dilation: [2, 3],
            bias: true,
        },
        // More images than one weight-gradient step, more columns than one block (more
        // than 32 output channels: im2col + GEMM).
        Case {
            x: [37, 9, 6, 7],
            out_channels: 40,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            bias: true,
        },
        // The same on the direct path (at most 32 channels): more images than its weight
        // gradient holds at once, a partial block of output channels.
        Case {
            x: [37, 9, 6, 7],
            out_channels: 7,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            bias: true,
        },
        // A ResNet's late layer: 6x6 outputs, so images share GEMMs (4 per GEMM for 128
        // columns) and the last group is a partial one of 3; more than 32 output channels,
        // so not on the direct path (its input gradient is, with 8 input channels).
        Case {
            x: [7, 8, 6, 6],
            out_channels: 40,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            bias: true,
        },
        // Stride-1 3x3 layers with 16 channels and more, over 32 on one side: Winograd's
        // forward pass and both gradients, partial tiles at the edges, padding 1 and 0.
        Case {
            x: [3, 16, 11, 13],
            out_channels: 40,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            bias: true,
        },
        Case {
            x: [2, 40, 7, 5],
            out_channels: 16,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            bias: false,
        },
        // One image, a kernel as large as the padded input.
        Case {
            x: [1, 2, 4, 4],
            out_channels: 3,
            kernel: [6, 6],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            bias: true,
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        check_conv(case, 100 * i as u64);
    }
}

#[test]
fn max_pool2d_matches_flex_in_values_indices_and_gradients() {
    // (input, kernel, stride, padding, dilation, ceil_mode)
    let cases = [
        ([2, 3, 28, 28], [2, 2], [2, 2], [0, 0], [1, 1], false),
        ([2, 3, 7, 9], [3, 3], [2, 2], [1, 1], [1, 1], false),
        ([1, 4, 7, 10], [3, 2], [2, 3], [1, 0], [1, 1], true),
        ([3, 2, 11, 10], [2, 3], [1, 2], [0, 1], [2, 2], true),
    ];
    for (i, (shape, kernel, stride, padding, dilation, ceil)) in cases.into_iter().enumerate() {
        let what = format!(
            "max_pool2d {shape:?} k{kernel:?} s{stride:?} p{padding:?} d{dilation:?} ceil {ceil}"
        );
        let (xk, xf) = pair(shape, 1000 + i as u64);
        let yk = max_pool2d_with_indices(xk.clone(), kernel, stride, padding, dilation, ceil);
        let yf = max_pool2d_with_indices(xf.clone(), kernel, stride, padding, dilation, ceil);
        assert_close(&format!("{what} output"), yk.0.clone(), yf.0.clone());
        assert_eq!(
            yk.1.into_data().convert::<i64>().to_vec::<i64>().unwrap(),
            yf.1.into_data().convert::<i64>().to_vec::<i64>().unwrap(),
            "{what}: indices"
        );
        // Inference takes the path without indices, on the inner backend.
        let plain = max_pool2d(xk.clone().inner(), kernel, stride, padding, dilation, ceil);
        assert_close(&format!("{what} without indices"), plain, yf.0.clone());
        let (gk, gf) = pair(yk.0.dims(), 2000 + i as u64);
        let grads_k = (yk.0 * gk.detach()).sum().backward();
        let grads_f = (yf.0 * gf.detach()).sum().backward();
        assert_close(
            &format!("{what} x grad"),
            xk.grad(&grads_k).unwrap(),
            xf.grad(&grads_f).unwrap(),
        );
    }
}

/// burn-flex's backward divides a window that `ceil_mode` extends past the padding by the
/// full kernel size where its forward (and PyTorch) do not, so the cases here have no such
/// window; Kiln's divisors are checked against PyTorch's values in the unit tests.
#[test]
fn avg_pool2d_matches_flex_in_values_and_gradients() {
    // (input, kernel, stride, padding, count_include_pad, ceil_mode)
    let cases = [
        ([2, 6, 28, 28], [2, 2], [2, 2], [0, 0], true, false),
        ([2, 3, 7, 9], [3, 3], [2, 2], [1, 1], true, false),
        ([2, 3, 7, 9], [3, 3], [2, 2], [1, 1], false, false),
        ([1, 2, 7, 10], [3, 2], [1, 3], [1, 0], false, true),
    ];
    for (i, (shape, kernel, stride, padding, include_pad, ceil)) in cases.into_iter().enumerate() {
        let what = format!(
            "avg_pool2d {shape:?} k{kernel:?} s{stride:?} p{padding:?} include_pad {include_pad} ceil {ceil}"
        );
        let (xk, xf) = pair(shape, 3000 + i as u64);
        let yk = avg_pool2d(xk.clone(), kernel, stride, padding, include_pad, ceil);
        let yf = avg_pool2d(xf.clone(), kernel, stride, padding, include_pad, ceil);
        assert_close(&format!("{what} output"), yk.clone(), yf.clone());
        let (gk, gf) = pair(yk.dims(), 4000 + i as u64);
        let grads_k = (yk * gk.detach()).sum().backward();
        let grads_f = (yf * gf.detach()).sum().backward();
        assert_close(
            &format!("{what} x grad"),
            xk.grad(&grads_k).unwrap(),
            xf.grad(&grads_f).unwrap(),
        );
    }
}

/// Contiguous, shared (the input is used again after) and transposed inputs, so the in-place
/// path, the copying path and a strided view all run.
#[test]
fn sigmoid_matches_flex_in_values_and_gradients() {
    let (xk, xf) = pair([3, 5, 70, 70], 50);
    let (gk, gf) = pair([3, 5, 70, 70], 51);
    let yk = sigmoid(xk.clone() * 4.0) + sigmoid(xk.clone().swap_dims(2, 3)) * xk.clone();
    let yf = sigmoid(xf.clone() * 4.0) + sigmoid(xf.clone().swap_dims(2, 3)) * xf.clone();
    assert_close("sigmoid output", yk.clone(), yf.clone());
    let grads_k = (yk * gk.detach()).sum().backward();
    let grads_f = (yf * gf.detach()).sum().backward();
    assert_close(
        "sigmoid x grad",
        xk.grad(&grads_k).unwrap(),
        xf.grad(&grads_f).unwrap(),
    );
}

/// A ResNet stem on the direct kernels (7x7, stride 2, 3 input channels), a convolution (its
/// weight gradient on the side-by-side path: 12x12 outputs, 33 images;
/// its input gradient on the direct path), the fused batch norm, a convolution on the
/// Winograd path and a narrow one on the direct path give the same bits on 1 thread and on 3:
/// every kernel splits its work by the shapes, never by the thread count.
#[test]
fn the_same_inputs_give_the_same_bits_on_any_thread_count() {
    kiln_cpu::register_kernels();
    let run = || {
        let (x, _) = pair([33, 3, 29, 29], 7);
        let (w0, _) = pair([6, 3, 7, 7], 13);
        let (w, _) = pair([40, 6, 3, 3], 8);
        let (gamma, _) = pair([40], 9);
        let (beta, _) = pair([40], 10);
        let (w2, _) = pair([16, 40, 3, 3], 11);
        let (w3, _) = pair([5, 16, 5, 5], 12);
        let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        // A ResNet stem: 7x7, stride 2, on the direct kernels' phase planes.
        let stem = ConvOptions::new([2, 2], [0, 0], [1, 1], 1);
        let y = conv2d(x.clone(), w0.clone(), None, stem);
        let y = conv2d(y, w.clone(), None, options.clone());
        let y = kiln_fused::batch_norm::train(y, gamma.clone(), beta, 1e-5, true).output;
        // The ResNet stem's pool: the two-pass path, with indices for the gradient.
        let y = max_pool2d(y, [3, 3], [2, 2], [1, 1], [1, 1], false);
        let y = conv2d(y, w2.clone(), None, options);
        let y = conv2d(
            y,
            w3.clone(),
            None,
            ConvOptions::new([1, 1], [2, 2], [1, 1], 1),
        );
        let grads = (y.clone() * y).sum().backward();
        [
            x.grad(&grads).unwrap().into_data(),
            w0.grad(&grads).unwrap().into_data(),
            w.grad(&grads).unwrap().into_data(),
            gamma.grad(&grads).unwrap().into_data(),
            w2.grad(&grads).unwrap().into_data(),
            w3.grad(&grads).unwrap().into_data(),
        ]
    };
    let on = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(run)
    };
    let (a, b, c) = (on(1), on(3), on(3));
    for (i, what) in [
        "input",
        "stem weight",
        "weight",
        "gamma",
        "second weight",
        "third weight",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(
            a[i], b[i],
            "{what} gradient differs between 1 and 3 threads"
        );
        assert_eq!(b[i], c[i], "{what} gradient differs between two runs");
    }
}

#[test]
fn other_float_types_fall_back_to_flex() {
    let device = Default::default();
    let x = Tensor::<KilnCpu, 4>::ones([1, 1, 4, 4], (&device, burn::tensor::DType::F64));
    let w = Tensor::<KilnCpu, 4>::ones([1, 1, 3, 3], (&device, burn::tensor::DType::F64));
    let y = conv2d(x, w, None, ConvOptions::new([1, 1], [0, 0], [1, 1], 1));
    assert_eq!(y.into_data().to_vec::<f64>().unwrap(), vec![9.0; 4]);
}

/// Batch norm's statistics go through `swap_dims(0, 1).reshape(..)` views, forward and
/// backward, which KilnCpu copies with its own run-wise copy.
#[test]
fn batch_norm_through_transposed_views_matches_flex() {
    use burn::module::AutodiffModule;
    use burn::nn::{BatchNorm, BatchNormConfig};
    let config = BatchNormConfig::new(5);
    let bn_k: BatchNorm<K> = config.init(&Default::default());
    let bn_f: BatchNorm<F> = config.init(&Default::default());
    let (xk, xf) = pair([6, 5, 7, 9], 40);
    let (gk, gf) = pair([6, 5, 7, 9], 41);
    let yk = bn_k.forward(xk.clone());
    let yf = bn_f.forward(xf.clone());
    assert_close("batch norm output", yk.clone(), yf.clone());
    let grads_k = (yk * gk.detach()).sum().backward();
    let grads_f = (yf * gf.detach()).sum().backward();
    assert_close(
        "batch norm input grad",
        xk.grad(&grads_k).unwrap(),
        xf.grad(&grads_f).unwrap(),
    );
    let (bn_k, bn_f) = (bn_k.valid(), bn_f.valid());
    assert_close(
        "running mean",
        bn_k.running_mean.value(),
        bn_f.running_mean.value(),
    );
    assert_close(
        "running var",
        bn_k.running_var.value(),
        bn_f.running_var.value(),
    );
}

/// Kiln's fused batch norm (kiln-fused's registry, `norm`'s kernels, one autodiff node)
/// against the same op in Burn's ops on burn-flex, with and without the ReLU after it: output,
/// statistics, the three gradients and inference, on a plane size the kernels' lanes do not
/// divide and channels far from zero.
#[test]
fn fused_batch_norm_matches_burn_ops_on_flex() {
    use kiln_fused::batch_norm::{default_inference, default_train, inference, train, Stats};
    kiln_cpu::register_kernels();
    assert!(kiln_fused::batch_norm::kernels_registered::<K>());
    assert!(kiln_fused::batch_norm::kernels_registered::<KilnCpu>());

    let shape = [6, 5, 7, 9];
    let offsets = TensorData::new(vec![0.0f32, 50.0, -3.0, 1.0, 0.5], [1, 5, 1, 1]);
    for relu in [false, true] {
        let what = |name: &str| format!("{name} (relu {relu})");
        let (xk, xf) = pair(shape, 42);
        let xk = (xk + Tensor::from_data(offsets.clone(), &Default::default()))
            .detach()
            .require_grad();
        let xf = (xf + Tensor::from_data(offsets.clone(), &Default::default()))
            .detach()
            .require_grad();
        let (gamma_k, gamma_f) = pair([5], 43);
        let (beta_k, beta_f) = pair([5], 44);
        let (dy_k, dy_f) = pair(shape, 45);
        let k = train(xk.clone(), gamma_k.clone(), beta_k.clone(), 1e-5, relu);
        let f = default_train(xf.clone(), gamma_f.clone(), beta_f.clone(), 1e-5, relu);
        assert_close(&what("output"), k.output.clone(), f.output.clone());
        assert_close(&what("batch mean"), k.mean.clone(), f.mean.clone());
        assert_close(&what("batch variance"), k.var.clone(), f.var.clone());

        let grads_k = (k.output * dy_k.detach()).sum().backward();
        let grads_f = (f.output * dy_f.detach()).sum().backward();
        let grad_k = |t: &Tensor<K, 1>| t.grad(&grads_k).unwrap();
        let grad_f = |t: &Tensor<F, 1>| t.grad(&grads_f).unwrap();
        assert_close(
            &what("x grad"),
            xk.grad(&grads_k).unwrap(),
            xf.grad(&grads_f).unwrap(),
        );
        assert_close(&what("gamma grad"), grad_k(&gamma_k), grad_f(&gamma_f));
        assert_close(&what("beta grad"), grad_k(&beta_k), grad_f(&beta_f));

        let stats_k = Stats {
            mean: k.mean.inner(),
            var: k.var.inner(),
            gamma: gamma_k.inner(),
            beta: beta_k.inner(),
        };
        let stats_f = Stats {
            mean: f.mean.inner(),
            var: f.var.inner(),
            gamma: gamma_f.inner(),
            beta: beta_f.inner(),
        };
        assert_close(
            &what("inference"),
            inference(xk.inner(), stats_k, 1e-5, relu),
            default_inference(xf.inner(), stats_f, 1e-5, relu),
        );
    }
}

/// The last stage of the tutorial's ResNet at the parity test's quarter widths (64 -> 128
/// channels, 6x6 -> 3x3, batch 8): two blocks of unbiased 3x3 convolutions, batch norms with
/// eps 1e-5 over 72 values a channel, a ReLU before the addition, a biased 1x1 shortcut; the
/// input a ReLU's output, the upstream gradient small, as in the network.
#[test]
fn tutorial_resnet_last_stage_matches_flex() {
    use burn::nn::{BatchNorm, BatchNormConfig};
    use burn::tensor::activation::relu;
    use burn::tensor::backend::AutodiffBackend;
    fn stage<B: AutodiffBackend>(
        x: Tensor<B, 4>,
        w: &[Tensor<B, 4>],
        shortcut_bias: &Tensor<B, 1>,
        bns: &[BatchNorm<B>],
    ) -> Tensor<B, 4> {
        let conv = |x, w: &Tensor<B, 4>, b: Option<Tensor<B, 1>>, s, p| {
            conv2d(x, w.clone(), b, ConvOptions::new([s; 2], [p; 2], [1, 1], 1))
        };
        let h = relu(bns[0].forward(conv(x.clone(), &w[0], None, 2, 1)));
        let h = relu(bns[1].forward(conv(h, &w[1], None, 1, 1)));
        let x = relu(h + conv(x, &w[2], Some(shortcut_bias.clone()), 2, 0));
        let h = relu(bns[2].forward(conv(x.clone(), &w[3], None, 1, 1)));
        let h = relu(bns[3].forward(conv(h, &w[4], None, 1, 1)));
        relu(h + x)
    }
    fn leaf<B: AutodiffBackend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
        t.detach().require_grad()
    }
    let shapes = [
        [128, 64, 3, 3],
        [128, 128, 3, 3],
        [128, 64, 1, 1],
        [128, 128, 3, 3],
        [128, 128, 3, 3],
    ];
    let (xk, xf) = pair([8, 64, 6, 6], 60);
    let (xk, xf) = (leaf(relu(xk)), leaf(relu(xf)));
    let (wk, wf): (Vec<_>, Vec<_>) = shapes
        .iter()
        .zip(61..)
        .map(|(&shape, seed)| {
            let (k, f) = pair(shape, seed);
            (leaf(k * 0.05), leaf(f * 0.05))
        })
        .unzip();
    let (bk, bf) = pair([128], 70);
    let bn_k: Vec<BatchNorm<K>> = (0..4)
        .map(|_| BatchNormConfig::new(128).init(&Default::default()))
        .collect();
    let bn_f: Vec<BatchNorm<F>> = (0..4)
        .map(|_| BatchNormConfig::new(128).init(&Default::default()))
        .collect();
    let yk = stage(xk.clone(), &wk, &bk, &bn_k);
    let yf = stage(xf.clone(), &wf, &bf, &bn_f);
    assert_close("stage output", yk.clone(), yf.clone());
    let (gk, gf) = pair(yk.dims(), 71);
    let grads_k = (yk * gk.detach() * 1e-3).sum().backward();
    let grads_f = (yf * gf.detach() * 1e-3).sum().backward();
    let grad = |what: &str, k: &Tensor<K, 4>, f: &Tensor<F, 4>| {
        assert_close(what, k.grad(&grads_k).unwrap(), f.grad(&grads_f).unwrap());
    };
    grad("input grad", &xk, &xf);
    for (i, (k, f)) in wk.iter().zip(&wf).enumerate() {
        grad(&format!("weight {i} grad"), k, f);
    }
    assert_close(
        "shortcut bias grad",
        bk.grad(&grads_k).unwrap(),
        bf.grad(&grads_f).unwrap(),
    );
    for (i, (k, f)) in bn_k.iter().zip(&bn_f).enumerate() {
        for (name, pk, pf) in [
            ("gamma", k.gamma.val(), f.gamma.val()),
            ("beta", k.beta.val(), f.beta.val()),
        ] {
            assert_close(
                &format!("batch norm {i} {name} grad"),
                pk.grad(&grads_k).unwrap(),
                pf.grad(&grads_f).unwrap(),
            );
        }
    }
}

/// Dropout's Bernoulli masks come from Kiln's counter-based generator (`kiln_cpu::random`),
/// keyed from burn-flex's seeded one: the backend's seed fixes them, each draw after it is a
/// new mask, and the share of ones is the probability. (No other test here draws from the
/// backend's generator, so the seeds below are not disturbed by tests running beside it.)
#[test]
fn bernoulli_masks_follow_the_backend_seed() {
    use burn::tensor::Distribution;
    let device = Default::default();
    let shape = [256, 1024];
    let draw = || {
        Tensor::<KilnCpu, 2>::random(shape, Distribution::Bernoulli(0.75), &device)
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    KilnCpu::seed(&device, 5);
    let (first, second) = (draw(), draw());
    KilnCpu::seed(&device, 5);
    assert_eq!(draw(), first, "the same seed gave another mask");
    assert_ne!(first, second, "two draws after one seed gave the same mask");
    KilnCpu::seed(&device, 6);
    assert_ne!(draw(), first, "another seed gave the same mask");

    let n = (shape[0] * shape[1]) as f64;
    let ones = first.iter().filter(|&&v| v == 1.0).count() as f64;
    assert!(first.iter().all(|&v| v == 0.0 || v == 1.0));
    assert!(
        (ones - 0.75 * n).abs() < 5.0 * (n * 0.75 * 0.25).sqrt(),
        "{ones} ones of {n}"
    );
}
