//! KilnTch's convolution gradients (libtorch's `convolution_backward`) against burn-tch's
//! (Burn's generic formulas on the same libtorch): the same values over strides, padding,
//! dilation, groups and a convolution whose kernel overhangs the input.

use burn::backend::Autodiff;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};
use burn_tch::LibTorch;
use kiln_tch::{KilnTch, KilnTchDevice};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type K = Autodiff<KilnTch>;
type T = Autodiff<LibTorch<f32>>;

fn data(shape: [usize; 4], seed: u64) -> TensorData {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
    TensorData::new(values, shape)
}

fn assert_close(what: &str, a: TensorData, b: TensorData) {
    assert_eq!(a.shape, b.shape, "{what}: shape");
    let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * scale * (1.0 + (b.len() as f32).sqrt()),
            "{what}: element {i} is {x} on kiln-tch, {y} on burn-tch (scale {scale})"
        );
    }
}

/// (input, weight, stride, padding, dilation, groups)
type Case = (
    [usize; 4],
    [usize; 4],
    [usize; 2],
    [usize; 2],
    [usize; 2],
    usize,
);

#[test]
fn conv2d_gradients_match_burn_tch() {
    let cases: [Case; 5] = [
        ([2, 3, 8, 8], [4, 3, 3, 3], [1, 1], [1, 1], [1, 1], 1),
        ([3, 2, 9, 7], [5, 2, 3, 2], [2, 3], [1, 0], [1, 1], 1),
        ([2, 4, 11, 10], [6, 4, 3, 3], [1, 2], [2, 1], [2, 1], 1),
        ([2, 4, 6, 6], [6, 2, 3, 3], [1, 1], [1, 1], [1, 1], 2),
        ([1, 3, 5, 5], [2, 3, 1, 1], [2, 2], [0, 0], [1, 1], 1),
    ];
    let device = KilnTchDevice::Cpu;
    for (i, (x, w, stride, padding, dilation, groups)) in cases.into_iter().enumerate() {
        let what = format!(
            "case {i}: x {x:?} w {w:?} s {stride:?} p {padding:?} d {dilation:?} g {groups}"
        );
        let options = ConvOptions::new(stride, padding, dilation, groups);
        let (xd, wd, bd) = (
            data(x, 3 * i as u64),
            data(w, 3 * i as u64 + 1),
            data([1, 1, 1, w[0]], 9),
        );
        let bd = TensorData::new(bd.to_vec::<f32>().unwrap(), [w[0]]);

        let xk = Tensor::<K, 4>::from_data(xd.clone(), &device).require_grad();
        let wk = Tensor::<K, 4>::from_data(wd.clone(), &device).require_grad();
        let bk = Tensor::<K, 1>::from_data(bd.clone(), &device).require_grad();
        let yk = conv2d(xk.clone(), wk.clone(), Some(bk.clone()), options.clone());
        let gk = (yk.clone() * yk.clone()).sum().backward();

        let xt = Tensor::<T, 4>::from_data(xd, &device).require_grad();
        let wt = Tensor::<T, 4>::from_data(wd, &device).require_grad();
        let bt = Tensor::<T, 1>::from_data(bd, &device).require_grad();
        let yt = conv2d(xt.clone(), wt.clone(), Some(bt.clone()), options);
        let gt = (yt.clone() * yt.clone()).sum().backward();

        assert_close(&format!("{what}: output"), yk.into_data(), yt.into_data());
        let grad = |k: Option<Tensor<_, 4>>, t: Option<Tensor<_, 4>>| {
            (k.unwrap().into_data(), t.unwrap().into_data())
        };
        let (a, b) = grad(xk.grad(&gk), xt.grad(&gt));
        assert_close(&format!("{what}: input grad"), a, b);
        let (a, b) = grad(wk.grad(&gk), wt.grad(&gt));
        assert_close(&format!("{what}: weight grad"), a, b);
        assert_close(
            &format!("{what}: bias grad"),
            bk.grad(&gk).unwrap().into_data(),
            bt.grad(&gt).unwrap().into_data(),
        );
    }
}

/// libtorch's batch norm (kiln-fused's registry, `native_batch_norm` and its backward as one
/// autodiff node) against the same op in Burn's ops on burn-tch, with and without the ReLU
/// after it: output, statistics, the three gradients and inference, with channels far from
/// zero.
#[test]
fn fused_batch_norm_matches_burn_ops_on_burn_tch() {
    use kiln_fused::batch_norm::{default_inference, default_train, inference, train, Stats};
    kiln_tch::register_kernels();
    assert!(kiln_fused::batch_norm::kernels_registered::<K>());
    let device = KilnTchDevice::Cpu;
    let shape = [6, 5, 7, 9];
    let offsets =
        Tensor::<T, 1>::from_floats([0.0, 50.0, -3.0, 1.0, 0.5], &device).reshape([1, 5, 1, 1]);
    let x = (Tensor::<T, 4>::from_data(data(shape, 42), &device) + offsets).into_data();
    let vector = |seed| {
        let values = data([1, 1, 1, 5], seed).to_vec::<f32>().unwrap();
        TensorData::new(values, [5])
    };
    let (gamma, beta, dy) = (vector(43), vector(44), data(shape, 45));

    for relu in [false, true] {
        let what = |name: &str| format!("{name} (relu {relu})");
        let xk = Tensor::<K, 4>::from_data(x.clone(), &device).require_grad();
        let gk = Tensor::<K, 1>::from_data(gamma.clone(), &device).require_grad();
        let bk = Tensor::<K, 1>::from_data(beta.clone(), &device).require_grad();
        let xt = Tensor::<T, 4>::from_data(x.clone(), &device).require_grad();
        let gt = Tensor::<T, 1>::from_data(gamma.clone(), &device).require_grad();
        let bt = Tensor::<T, 1>::from_data(beta.clone(), &device).require_grad();
        let k = train(xk.clone(), gk.clone(), bk.clone(), 1e-5, relu);
        let t = default_train(xt.clone(), gt.clone(), bt.clone(), 1e-5, relu);
        assert_close(&what("output"), k.output.to_data(), t.output.to_data());
        assert_close(&what("batch mean"), k.mean.to_data(), t.mean.to_data());
        assert_close(&what("batch variance"), k.var.to_data(), t.var.to_data());

        let dyk = Tensor::<K, 4>::from_data(dy.clone(), &device);
        let dyt = Tensor::<T, 4>::from_data(dy.clone(), &device);
        let grads_k = (k.output * dyk).sum().backward();
        let grads_t = (t.output * dyt).sum().backward();
        assert_close(
            &what("x grad"),
            xk.grad(&grads_k).unwrap().into_data(),
            xt.grad(&grads_t).unwrap().into_data(),
        );
        assert_close(
            &what("gamma grad"),
            gk.grad(&grads_k).unwrap().into_data(),
            gt.grad(&grads_t).unwrap().into_data(),
        );
        assert_close(
            &what("beta grad"),
            bk.grad(&grads_k).unwrap().into_data(),
            bt.grad(&grads_t).unwrap().into_data(),
        );

        let stats_k = Stats {
            mean: k.mean.inner(),
            var: k.var.inner(),
            gamma: gk.inner(),
            beta: bk.inner(),
        };
        let stats_t = Stats {
            mean: t.mean.inner(),
            var: t.var.inner(),
            gamma: gt.inner(),
            beta: bt.inner(),
        };
        assert_close(
            &what("inference"),
            inference(xk.inner(), stats_k, 1e-5, relu).into_data(),
            default_inference(xt.inner(), stats_t, 1e-5, relu).into_data(),
        );
    }
}

/// On the CPU a KilnTch convolution returns channels-last strides (what oneDNN's NHWC kernels
/// need), and a small network in that layout, conv -> fused batch norm + ReLU -> max pool ->
/// conv -> ReLU (KilnTch's own gradient) -> flatten -> matmul, gives burn-tch's contiguous
/// values forward and backward: the ops after a convolution read the strides, not a layout
/// they assume.
#[test]
fn channels_last_network_matches_burn_tch() {
    use burn::tensor::activation::relu;
    use burn::tensor::module::max_pool2d;
    use kiln_fused::batch_norm::{default_train, train};
    kiln_tch::register_kernels();
    let device = KilnTchDevice::Cpu;
    let (xd, w1d, w2d) = (
        data([3, 2, 10, 10], 70),
        data([8, 2, 3, 3], 71),
        data([5, 8, 3, 3], 72),
    );
    let head = TensorData::new(data([1, 1, 45, 4], 73).to_vec::<f32>().unwrap(), [45, 4]);
    let options = || ConvOptions::new([1, 1], [1, 1], [1, 1], 1);

    let xk = Tensor::<K, 4>::from_data(xd.clone(), &device).require_grad();
    let w1k = Tensor::<K, 4>::from_data(w1d.clone(), &device).require_grad();
    let w2k = Tensor::<K, 4>::from_data(w2d.clone(), &device).require_grad();
    let hk = Tensor::<K, 2>::from_data(head.clone(), &device).require_grad();
    let ones = |n| Tensor::<K, 1>::ones([n], &device);
    let y1 = conv2d(xk.clone(), w1k.clone(), None, options());
    let strides = y1.clone().inner().into_primitive().tensor().tensor.stride();
    assert_eq!(
        strides,
        [10 * 10 * 8, 1, 10 * 8, 8],
        "KilnTch's convolution output on the CPU should be channels-last"
    );
    let a = train(y1, ones(8), ones(8).zeros_like(), 1e-5, true).output;
    let a = max_pool2d(a, [3, 3], [3, 3], [0, 0], [1, 1], false);
    let a = relu(conv2d(a, w2k.clone(), None, options()));
    let yk = a.flatten::<2>(1, 3).matmul(hk.clone());
    let gk = (yk.clone() * yk.clone()).sum().backward();

    let xt = Tensor::<T, 4>::from_data(xd, &device).require_grad();
    let w1t = Tensor::<T, 4>::from_data(w1d, &device).require_grad();
    let w2t = Tensor::<T, 4>::from_data(w2d, &device).require_grad();
    let ht = Tensor::<T, 2>::from_data(head, &device).require_grad();
    let ones = |n| Tensor::<T, 1>::ones([n], &device);
    let y1 = conv2d(xt.clone(), w1t.clone(), None, options());
    let a = default_train(y1, ones(8), ones(8).zeros_like(), 1e-5, true).output;
    let a = max_pool2d(a, [3, 3], [3, 3], [0, 0], [1, 1], false);
    let a = relu(conv2d(a, w2t.clone(), None, options()));
    let yt = a.flatten::<2>(1, 3).matmul(ht.clone());
    let gt = (yt.clone() * yt.clone()).sum().backward();

    assert_close("output", yk.into_data(), yt.into_data());
    for (what, k, t) in [
        ("input grad", xk.grad(&gk), xt.grad(&gt)),
        ("first weight grad", w1k.grad(&gk), w1t.grad(&gt)),
        ("second weight grad", w2k.grad(&gk), w2t.grad(&gt)),
    ] {
        assert_close(what, k.unwrap().into_data(), t.unwrap().into_data());
    }
    assert_close(
        "head grad",
        hk.grad(&gk).unwrap().into_data(),
        ht.grad(&gt).unwrap().into_data(),
    );
}
