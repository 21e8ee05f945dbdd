//! airbench94's network: the fastest known way to 94% on CIFAR-10 (Keller Jordan, "94% on
//! CIFAR-10 in 3.29 seconds on a single GPU", 2024; the `airbench` package 0.1.8,
//! `lib_airbench94.py`), written for Kiln from that description.
//!
//! A fixed 2x2 *whitening* convolution (24 filters: the eigenvectors of the training images'
//! 2x2 patch covariance, each scaled by the inverse square root of its eigenvalue, and their
//! negatives; Jordan credits the idea to tysam-code's hlb-CIFAR10), GELU, then three groups of
//! conv 3x3 -> max-pool 2 -> batch norm -> GELU -> conv 3x3 -> batch norm -> GELU at widths 64,
//! 256 and 256, a 3x3 max-pool, a linear head without bias and the logits scaled by 1/9.
//!
//! What differs from an ordinary CNN, each a setting of [`AirbenchConfig`] or a method here:
//!
//! - The whitening weights come from data ([`Airbench::with_whitening`], from the first
//!   images of the training set, [`whitening_filters`]); they are never trained (their
//!   `require_grad` is off). Its bias starts at zero and trains; the recipe may freeze it
//!   after some epochs (`[[recipe.freeze]]`).
//! - Batch norms learn a shift but no scale (their `gamma` is a constant one), with momentum
//!   0.4 and epsilon 1e-12 ([`BatchNormConfig::learn_scale`]).
//! - Every 3x3 convolution starts as the identity on its first `in_channels` output channels
//!   (`torch.nn.init.dirac_`), the rest drawn as PyTorch draws them: an implicit residual.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Gelu, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

use crate::probe::{flatten, linear, tap, Layer, Probe};
use crate::{BatchNorm, BatchNormConfig, ImageClassifier};

/// Builds an [`Airbench`]; the defaults are airbench94's.
#[derive(Config, Debug)]
pub struct AirbenchConfig {
    /// Channels of the three convolution groups.
    #[config(default = "vec![64, 256, 256]")]
    pub widths: Vec<usize>,
    /// Side of the whitening convolution's square kernel; it has `2 * channels * k * k`
    /// filters.
    #[config(default = 2)]
    pub whiten_kernel: usize,
    /// Batch norms' momentum, PyTorch's meaning (the weight of each batch's statistics).
    /// airbench94 writes 0.6, the weight of the old value, and passes `1 - 0.6` to PyTorch.
    #[config(default = 0.4)]
    pub bn_momentum: f64,
    /// Batch norms' epsilon.
    #[config(default = 1e-12)]
    pub bn_eps: f64,
    /// The logits are the head's output times this.
    #[config(default = "1.0 / 9.0")]
    pub logit_scale: f64,
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Channels of the input images.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Side of the square input images.
    #[config(default = 32)]
    pub image_size: usize,
    /// Training images the whitening filters are computed from (airbench94: the first 5,000).
    #[config(default = 5000)]
    pub whiten_images: usize,
    /// Added to each eigenvalue before the filters are divided by its square root.
    #[config(default = 5e-4)]
    pub whiten_eps: f64,
}

impl AirbenchConfig {
    /// Side of the last group's output: the whitening convolution (no padding) takes
    /// `k - 1`, each group halves it (rounding down), and the head pools 3x3 windows.
    fn head_side(&self) -> usize {
        let mut side = (self.image_size + 1).saturating_sub(self.whiten_kernel);
        for _ in &self.widths {
            side /= 2;
        }
        side / 3
    }

    /// Checks the configuration and that the images are large enough for it.
    pub fn validate(&self) -> Result<(), String> {
        if self.widths.is_empty() {
            return Err("widths: expected at least one group, found none".into());
        }
        if let Some(i) = self.widths.iter().position(|&w| w == 0) {
            return Err(format!("widths[{i}]: expected at least 1 channel, found 0"));
        }
        if self.whiten_images == 0 {
            return Err("whiten_images: expected at least 1, found 0".into());
        }
        if !(self.whiten_eps >= 0.0 && self.whiten_eps.is_finite()) {
            return Err(format!(
                "whiten_eps: expected a number >= 0, found {}",
                self.whiten_eps
            ));
        }
        if self.whiten_kernel == 0 {
            return Err("whiten_kernel: expected at least 1, found 0".into());
        }
        if !(self.bn_momentum > 0.0 && self.bn_momentum <= 1.0) {
            return Err(format!(
                "bn_momentum: expected a value in (0, 1], found {}",
                self.bn_momentum
            ));
        }
        if self.bn_eps.is_nan() || self.bn_eps <= 0.0 {
            return Err(format!("bn_eps: expected > 0, found {}", self.bn_eps));
        }
        if !self.logit_scale.is_finite() || self.logit_scale == 0.0 {
            return Err(format!(
                "logit_scale: expected a finite number other than 0, found {}",
                self.logit_scale
            ));
        }
        if self.head_side() == 0 {
            let fit = (1..self.widths.len())
                .rev()
                .find(|&n| {
                    let fewer = Self {
                        widths: vec![1; n],
                        ..self.clone()
                    };
                    fewer.head_side() > 0
                })
                .map_or("none".to_string(), |n| format!("at most {n}"));
            return Err(format!(
                "widths: {} groups leave nothing of {s}x{s} images for the head (the {k}x{k} \
                 whitening convolution takes {}, each group halves the side and the head pools \
                 3x3); {fit} fit",
                self.widths.len(),
                self.whiten_kernel - 1,
                s = self.image_size,
                k = self.whiten_kernel
            ));
        }
        Ok(())
    }

    /// The network, whitening weights drawn at random until [`Airbench::with_whitening`]
    /// replaces them.
    ///
    /// # Panics
    /// If [`Self::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Airbench<B> {
        if let Err(e) = self.validate() {
            panic!("invalid AirbenchConfig: {e}");
        }
        let k = self.whiten_kernel;
        let whiten_width = 2 * self.in_channels * k * k;
        let mut whiten = Conv2dConfig::new([self.in_channels, whiten_width], [k, k])
            .with_padding(PaddingConfig2d::Valid)
            .init(device);
        whiten.weight = whiten.weight.set_require_grad(false);
        whiten.bias = whiten
            .bias
            .map(|b| b.map(|t| t.zeros_like().require_grad()));
        let conv = |i, o| {
            let conv = Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device);
            dirac(conv)
        };
        let norm = |c| {
            BatchNormConfig::new(c)
                .with_momentum(self.bn_momentum)
                .with_epsilon(self.bn_eps)
                .with_learn_scale(false)
                .init(device)
        };
        let mut in_c = whiten_width;
        let groups = self
            .widths
            .iter()
            .map(|&width| {
                let group = ConvGroup {
                    conv1: conv(in_c, width),
                    pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
                    norm1: norm(width),
                    conv2: conv(width, width),
                    norm2: norm(width),
                    activation: Gelu::new(),
                };
                in_c = width;
                group
            })
            .collect();
        let side = self.head_side();
        Airbench {
            whiten,
            activation: Gelu::new(),
            groups,
            pool: MaxPool2dConfig::new([3, 3]).with_strides([3, 3]).init(),
            head: LinearConfig::new(in_c * side * side, self.num_classes)
                .with_bias(false)
                .init(device),
            logit_scale: self.logit_scale,
            whiten_images: self.whiten_images,
            whiten_eps: self.whiten_eps,
        }
    }
}

/// `torch.nn.init.dirac_(w[:w.size(1)])`: the first `min(out, in)` output channels of a
/// convolution become the identity of the input channel of the same number (a one at the
/// kernel's centre), the others keep their drawn weights.
fn dirac<B: Backend>(mut conv: Conv2d<B>) -> Conv2d<B> {
    let [out, inp, kh, kw] = conv.weight.dims();
    let device = conv.weight.device();
    let mut w = conv
        .weight
        .val()
        .into_data()
        .to_vec::<f32>()
        .expect("f32 weights");
    for o in 0..out.min(inp) {
        let filter = &mut w[o * inp * kh * kw..(o + 1) * inp * kh * kw];
        filter.fill(0.0);
        filter[o * kh * kw + (kh / 2) * kw + kw / 2] = 1.0;
    }
    conv.weight = conv
        .weight
        .map(|_| Tensor::from_data(TensorData::new(w, [out, inp, kh, kw]), &device).require_grad());
    conv
}

/// airbench94's network; built by [`AirbenchConfig::init`].
#[derive(Module, Debug)]
pub struct Airbench<B: Backend> {
    whiten: Conv2d<B>,
    activation: Gelu,
    groups: Vec<ConvGroup<B>>,
    pool: MaxPool2d,
    head: Linear<B>,
    logit_scale: f64,
    whiten_images: usize,
    whiten_eps: f64,
}

/// Conv 3x3 -> max-pool 2 -> batch norm -> GELU -> conv 3x3 -> batch norm -> GELU.
#[derive(Module, Debug)]
pub struct ConvGroup<B: Backend> {
    conv1: Conv2d<B>,
    pool: MaxPool2d,
    norm1: BatchNorm<B>,
    conv2: Conv2d<B>,
    norm2: BatchNorm<B>,
    activation: Gelu,
}

impl<B: Backend> ConvGroup<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.pool.forward(self.conv1.forward(x));
        let x = self.activation.forward(self.norm1.forward(x));
        let x = self.conv2.forward(x);
        self.activation.forward(self.norm2.forward(x))
    }
}

impl<B: Backend> Layer<B> for ConvGroup<B> {
    fn kind(&self) -> &'static str {
        "ConvGroup"
    }
}

impl<B: Backend> Layer<B> for Gelu {
    fn kind(&self) -> &'static str {
        "GELU"
    }
}

/// The module names of airbench94's `nn.Sequential` (`0` the whitening convolution, `2` to `4`
/// the groups, `7` the head), for its PyTorch weights.
#[cfg(feature = "pytorch")]
pub const AIRBENCH_TORCH_NAMES: crate::pytorch::TorchNames = crate::pytorch::TorchNames {
    prefixes: &[
        ("whiten", "0"),
        ("groups.0", "2"),
        ("groups.1", "3"),
        ("groups.2", "4"),
        ("head", "7"),
    ],
    infixes: &[],
};

impl<B: Backend> Airbench<B> {
    /// How many training images [`Self::with_whitening`] wants (`whiten_images`).
    pub fn whitening_images(&self) -> usize {
        self.whiten_images
    }

    /// The network with its whitening filters computed from `images` (`[N, C, H, W]`, the
    /// first [`Self::whitening_images`] of the training set, normalised as the network sees
    /// them, not augmented): [`whitening_filters`] with `whiten_eps`. The filters stay frozen.
    ///
    /// # Panics
    /// If the images' channels are not the network's.
    pub fn with_whitening(mut self, images: Tensor<B, 4>) -> Self {
        let eps = self.whiten_eps;
        let dims = images.dims();
        let [_, c, k, _] = self.whiten.weight.dims();
        assert_eq!(
            dims[1], c,
            "images with {} channels for a {c}-channel network",
            dims[1]
        );
        let pixels = images
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 images");
        let filters = whitening_filters(&pixels, dims, k, eps);
        let device = self.whiten.weight.device();
        let shape = self.whiten.weight.dims();
        self.whiten.weight = self
            .whiten
            .weight
            .map(|_| Tensor::from_data(TensorData::new(filters, shape), &device))
            .set_require_grad(false);
        self
    }
}

/// Whitening filters for `k` x `k` patches of `images` (`dims` = `[N, C, H, W]`, row-major):
/// the eigenvectors of the patches' second-moment matrix (`Σ p pᵀ / count`, not centred, as
/// airbench94 computes it) from the largest eigenvalue λ down, each divided by `sqrt(λ +
/// eps)`, then the same filters negated: `[2 C k k, C, k, k]` weights. A convolution with the
/// first half turns the patches into uncorrelated features of unit second moment (up to
/// `eps`); the negated half lets the GELU after it pass both signs.
pub fn whitening_filters(images: &[f32], dims: [usize; 4], k: usize, eps: f64) -> Vec<f32> {
    let [n, c, h, w] = dims;
    assert_eq!(images.len(), n * c * h * w, "images of {dims:?}");
    assert!(
        k >= 1 && k <= h && k <= w,
        "a {k}x{k} patch in {h}x{w} images"
    );
    let d = c * k * k;
    let mut moment = vec![0f64; d * d];
    let mut patch = vec![0f64; d];
    let mut count = 0usize;
    for image in images.chunks_exact(c * h * w) {
        for y in 0..=h - k {
            for x in 0..=w - k {
                for ch in 0..c {
                    for dy in 0..k {
                        for dx in 0..k {
                            patch[(ch * k + dy) * k + dx] =
                                image[(ch * h + y + dy) * w + x + dx] as f64;
                        }
                    }
                }
                for i in 0..d {
                    for j in i..d {
                        moment[i * d + j] += patch[i] * patch[j];
                    }
                }
                count += 1;
            }
        }
    }
    for i in 0..d {
        for j in i..d {
            moment[i * d + j] /= count.max(1) as f64;
            moment[j * d + i] = moment[i * d + j];
        }
    }
    let (values, vectors) = symmetric_eigen(moment, d);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let mut filters = vec![0f32; 2 * d * d];
    for (row, &i) in order.iter().enumerate() {
        let scale = 1.0 / (values[i].max(0.0) + eps).sqrt();
        for j in 0..d {
            let v = (vectors[j * d + i] * scale) as f32;
            filters[row * d + j] = v;
            filters[(d + row) * d + j] = -v;
        }
    }
    filters
}

/// Eigenvalues and eigenvectors (the columns of the returned row-major `d` x `d` matrix) of
/// the symmetric matrix `a`, by cyclic Jacobi rotations: exact to rounding for the small
/// matrices of patch statistics (12 x 12 for 2x2 RGB patches).
fn symmetric_eigen(mut a: Vec<f64>, d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0f64; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j] * a[i * d + j])
            .sum();
        let scale: f64 = (0..d).map(|i| a[i * d + i] * a[i * d + i]).sum();
        if off <= 1e-30 * scale.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q] (Golub and Van Loan, Algorithm 8.5.1).
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let cos = 1.0 / (t * t + 1.0).sqrt();
                let sin = t * cos;
                for r in 0..d {
                    let (arp, arq) = (a[r * d + p], a[r * d + q]);
                    a[r * d + p] = cos * arp - sin * arq;
                    a[r * d + q] = sin * arp + cos * arq;
                }
                for r in 0..d {
                    let (apr, aqr) = (a[p * d + r], a[q * d + r]);
                    a[p * d + r] = cos * apr - sin * aqr;
                    a[q * d + r] = sin * apr + cos * aqr;
                }
                for r in 0..d {
                    let (vrp, vrq) = (v[r * d + p], v[r * d + q]);
                    v[r * d + p] = cos * vrp - sin * vrq;
                    v[r * d + q] = sin * vrp + cos * vrq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

impl<B: Backend> ImageClassifier<B> for Airbench<B> {
    fn forward_probed<P: Probe<B> + ?Sized>(
        &self,
        images: Tensor<B, 4>,
        p: &mut P,
    ) -> Tensor<B, 2> {
        let x = tap(p, "whiten", &self.whiten, self.whiten.forward(images));
        let mut x = tap(
            p,
            "activation",
            &self.activation,
            self.activation.forward(x),
        );
        for (i, group) in self.groups.iter().enumerate() {
            x = tap(p, &format!("groups.{i}"), group, group.forward(x));
        }
        let x = tap(p, "pool", &self.pool, self.pool.forward(x));
        let x = flatten(p, "flatten", x);
        linear(p, "head", &self.head, x).mul_scalar(self.logit_scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn_autodiff::Autodiff;
    use burn_ndarray::NdArray;

    type B = NdArray<f32>;

    #[test]
    fn the_network_has_airbench94s_shape_and_parameters() {
        let device = Default::default();
        let net = AirbenchConfig::new().init::<B>(&device);
        let logits = net.logits(Tensor::zeros([2, 3, 32, 32], &device));
        assert_eq!(logits.dims(), [2, 10]);
        // sum(p.numel() for p in make_net94().parameters()), the frozen ones included:
        // whitening 24*3*2*2 + 24, groups (in*w*9 + w*w*9 + 4w each), head 256*10.
        let groups = [(24, 64), (64, 256), (256, 256)]
            .iter()
            .map(|&(i, w)| i * w * 9 + w * w * 9 + 4 * w)
            .sum::<usize>();
        let expected = 24 * 12 + 24 + groups + 256 * 10;
        let summary = net.summary([3, 32, 32], &device);
        assert_eq!(summary.total_params(), expected);
        // 16 -> 15 after whitening -> 7 -> 3 -> 1, under the head's 3x3 pool.
        let err = AirbenchConfig::new()
            .with_image_size(16)
            .validate()
            .unwrap_err();
        assert!(
            err.starts_with("widths: 3 groups leave nothing of 16x16 images")
                && err.ends_with("; at most 2 fit"),
            "{err}"
        );
    }

    #[test]
    fn the_3x3_convolutions_start_as_the_identity_on_their_first_channels() {
        let device = Default::default();
        let conv = Conv2dConfig::new([2, 3], [3, 3]).init::<B>(&device);
        let w = dirac(conv)
            .weight
            .val()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        for o in 0..2 {
            for i in 0..2 {
                for tap in 0..9 {
                    let expected = if o == i && tap == 4 { 1.0 } else { 0.0 };
                    assert_eq!(
                        w[(o * 2 + i) * 9 + tap],
                        expected,
                        "out {o} in {i} tap {tap}"
                    );
                }
            }
        }
        // The third output channel keeps its drawn weights.
        assert!(w[2 * 18..].iter().any(|&x| x != 0.0 && x != 1.0));
    }

    #[test]
    fn jacobi_finds_the_eigenpairs_of_a_symmetric_matrix() {
        let d = 4;
        let a = vec![
            4.0, 1.0, 0.5, 0.0, //
            1.0, 3.0, 0.2, 0.1, //
            0.5, 0.2, 2.0, 0.3, //
            0.0, 0.1, 0.3, 1.0,
        ];
        let (values, vectors) = symmetric_eigen(a.clone(), d);
        for i in 0..d {
            for r in 0..d {
                let av: f64 = (0..d).map(|c| a[r * d + c] * vectors[c * d + i]).sum();
                assert!((av - values[i] * vectors[r * d + i]).abs() < 1e-12);
            }
        }
        let trace: f64 = values.iter().sum();
        assert!((trace - 10.0).abs() < 1e-12);
    }

    #[test]
    fn whitened_patches_are_uncorrelated_with_unit_second_moment() {
        // Correlated channels: the second is the first plus noise, the third a mix.
        let device = Default::default();
        let base = Tensor::<B, 4>::random([8, 1, 10, 10], Distribution::Normal(0.5, 1.0), &device);
        let noise =
            || Tensor::<B, 4>::random([8, 1, 10, 10], Distribution::Normal(0.0, 0.3), &device);
        let n1 = noise();
        let images = Tensor::cat(
            vec![
                base.clone(),
                base.clone() + n1.clone(),
                base.mul_scalar(0.5) - n1 + noise(),
            ],
            1,
        );
        let net = AirbenchConfig::new()
            .with_image_size(10)
            .with_widths(vec![4])
            .with_whiten_eps(0.0)
            .init::<B>(&device)
            .with_whitening(images.clone());
        let features = net.whiten.forward(images);
        let bias = net
            .whiten
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert!(bias.iter().all(|&b| b == 0.0));
        // The first 12 features (the second half is their negation): E[f fᵀ] = I.
        let [n, _, h, w] = features.dims();
        let f = features
            .narrow(1, 0, 12)
            .swap_dims(0, 1)
            .reshape([12, n * h * w]);
        let moment = f
            .clone()
            .matmul(f.transpose())
            .div_scalar((n * h * w) as f32);
        let moment = moment.into_data().to_vec::<f32>().unwrap();
        for i in 0..12 {
            for j in 0..12 {
                let expected = if i == j { 1.0 } else { 0.0 };
                let found = moment[i * 12 + j];
                assert!((found - expected).abs() < 2e-3, "[{i}][{j}] = {found}");
            }
        }
    }

    #[test]
    fn frozen_weights_get_no_gradient_and_the_rest_do() {
        type A = Autodiff<B>;
        let device = Default::default();
        let images = Tensor::<A, 4>::random([4, 3, 32, 32], Distribution::Default, &device);
        let net = AirbenchConfig::new()
            .init::<A>(&device)
            .with_whitening(images.clone());
        let grads = net.logits(images).sum().backward();
        assert!(net.whiten.weight.grad(&grads).is_none());
        assert!(net.groups[0].norm1.gamma.grad(&grads).is_none());
        assert!(net.whiten.bias.as_ref().unwrap().grad(&grads).is_some());
        assert!(net.groups[0].norm1.beta.grad(&grads).is_some());
        assert!(net.groups[2].conv2.weight.grad(&grads).is_some());
        assert!(net.head.weight.grad(&grads).is_some());
    }
}
