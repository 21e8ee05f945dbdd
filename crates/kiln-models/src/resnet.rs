//! The ResNet family: a stem, stages of basic residual blocks, global pooling and a linear head.
//!
//! [`ResNetConfig::tutorial`] is the CIFAR-10-at-96x96 tutorial's network; [`ResNetConfig::resnet18`]
//! and [`ResNetConfig::resnet34`] are the standard CIFAR ResNets (He et al. 2016, with the 3x3
//! stem used for 32x32 inputs). Any other depth or width is a configuration, not new code.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{
    AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, AvgPool2d, AvgPool2dConfig, MaxPool2d,
    MaxPool2dConfig,
};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::probe::{flatten, linear, tap, Layer, Probe};
use crate::{BatchNorm, BatchNormConfig, ImageClassifier, WeightInit};

/// The layers before the first stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stem {
    /// ImageNet-style: Conv 7x7 stride 2 pad 3 -> BN -> ReLU -> MaxPool 3x3 stride 2 pad 1 (4x smaller).
    Imagenet,
    /// CIFAR-style: Conv 3x3 stride 1 pad 1 -> BN -> ReLU (full resolution).
    Cifar,
}

/// How the last feature map becomes a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadPool {
    /// Average over the whole map, whatever its size.
    Global,
    /// `AvgPool2d(k)` (stride k), as the tutorial writes it; the map must then be k x k.
    Window(usize),
}

/// The shape of a [`ResNet`]: stages, widths, stem, head and the details in which the
/// tutorial's network and the standard one differ.
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// Residual blocks per stage, e.g. `[2, 2, 2, 2]` for ResNet-18.
    pub blocks: Vec<usize>,
    /// Channels per stage; every stage after the first halves the resolution.
    pub widths: Vec<usize>,
    /// How the input is first convolved and reduced.
    pub stem: Stem,
    /// How the last feature map becomes a vector.
    pub head_pool: HeadPool,
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Channels of the input images.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Every batch norm's epsilon but the stem's when `stem_bn_eps` is given.
    #[config(default = 1e-5)]
    pub bn_eps: f64,
    /// The stem's batch-norm epsilon where it differs from the blocks' (the tutorial's: 1e-3).
    #[config(default = "None")]
    pub stem_bn_eps: Option<f64>,
    /// Pad the stem's convolution by half its kernel, as the standard ResNet does; the
    /// tutorial's 7x7 stem has no padding.
    #[config(default = true)]
    pub stem_padding: bool,
    /// The stem's and the 1x1 shortcuts' convolutions carry a bias (the tutorial's, PyTorch's
    /// default). The 3x3 convolutions inside the blocks never do, in the tutorial as in the
    /// standard ResNet: a batch norm follows each and would cancel it.
    #[config(default = false)]
    pub conv_bias: bool,
    /// A ReLU after the second batch norm of a block, before the addition (the tutorial's block).
    #[config(default = false)]
    pub relu_before_add: bool,
    /// The projection shortcut is a 1x1 conv followed by batch norm (standard) or the conv alone.
    #[config(default = true)]
    pub shortcut_bn: bool,
    /// How convolution and linear weights are drawn.
    #[config(default = "WeightInit::Default")]
    pub init: WeightInit,
}

impl ResNetConfig {
    /// The tutorial's network for CIFAR-10 upscaled to 96x96 (`../shared/TUTORIAL-NETWORKS.md`,
    /// 11,180,810 parameters): an unpadded 7x7 stem convolution with a bias, BN eps 1e-3 and
    /// max pooling, two blocks at each of 64, 128, 256, 512 channels (conv3x3-BN-ReLU-conv3x3-
    /// BN-ReLU without biases, add, ReLU; a 1x1 conv shortcut with a bias and no batch norm
    /// when the shape changes; BN eps 1e-5), AvgPool(3), Linear(512, 10), Xavier-uniform weights.
    pub fn tutorial() -> Self {
        Self::new(
            vec![2, 2, 2, 2],
            vec![64, 128, 256, 512],
            Stem::Imagenet,
            HeadPool::Window(3),
        )
        .with_stem_bn_eps(Some(1e-3))
        .with_stem_padding(false)
        .with_conv_bias(true)
        .with_relu_before_add(true)
        .with_shortcut_bn(false)
        .with_init(WeightInit::XavierUniform)
    }

    /// ResNet-18 for 32x32 inputs.
    pub fn resnet18() -> Self {
        Self::new(
            vec![2, 2, 2, 2],
            vec![64, 128, 256, 512],
            Stem::Cifar,
            HeadPool::Global,
        )
    }

    /// ResNet-34 for 32x32 inputs.
    pub fn resnet34() -> Self {
        Self::new(
            vec![3, 4, 6, 3],
            vec![64, 128, 256, 512],
            Stem::Cifar,
            HeadPool::Global,
        )
    }

    /// Checks the shape of the configuration itself (not the input size).
    pub fn validate(&self) -> Result<(), String> {
        if self.blocks.is_empty() || self.blocks.len() != self.widths.len() {
            return Err(format!(
                "blocks and widths: expected one entry per stage in each, found {} and {}",
                self.blocks.len(),
                self.widths.len()
            ));
        }
        if let Some(i) = self.blocks.iter().position(|&b| b == 0) {
            return Err(format!("blocks[{i}]: expected at least 1 block, found 0"));
        }
        if let Some(i) = self.widths.iter().position(|&w| w == 0) {
            return Err(format!("widths[{i}]: expected at least 1 channel, found 0"));
        }
        if self.head_pool == HeadPool::Window(0) {
            return Err("head_pool: expected a window of at least 1".into());
        }
        // Written to fail on NaN too.
        if self.bn_eps.is_nan() || self.bn_eps <= 0.0 {
            return Err(format!("bn_eps: expected > 0, found {}", self.bn_eps));
        }
        if let Some(eps) = self.stem_bn_eps.filter(|e| e.is_nan() || *e <= 0.0) {
            return Err(format!("stem_bn_eps: expected > 0, found {eps}"));
        }
        Ok(())
    }

    /// # Panics
    /// If [`Self::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResNet<B> {
        if let Err(e) = self.validate() {
            panic!("invalid ResNetConfig: {e}");
        }
        let conv = |i, o, k: usize, stride: usize, pad: usize, bias: bool| {
            let config = Conv2dConfig::new([i, o], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_bias(bias);
            self.init.conv2d(config.init(device), device)
        };
        let bn = |c, eps| BatchNormConfig::new(c).with_epsilon(eps).init(device);
        let stem_width = self.widths[0];
        let stem_conv = |k: usize, stride| {
            let pad = if self.stem_padding { k / 2 } else { 0 };
            conv(self.in_channels, stem_width, k, stride, pad, self.conv_bias)
        };
        let (conv1, maxpool) = match self.stem {
            Stem::Imagenet => (
                stem_conv(7, 2),
                Some(
                    MaxPool2dConfig::new([3, 3])
                        .with_strides([2, 2])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(),
                ),
            ),
            Stem::Cifar => (stem_conv(3, 1), None),
        };

        let mut in_c = stem_width;
        let mut layers = Vec::with_capacity(self.blocks.len());
        for (stage, (&n, &width)) in self.blocks.iter().zip(&self.widths).enumerate() {
            let mut blocks = Vec::with_capacity(n);
            for b in 0..n {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let shortcut = (stride != 1 || in_c != width).then(|| Shortcut {
                    conv: conv(in_c, width, 1, stride, 0, self.conv_bias),
                    bn: self.shortcut_bn.then(|| bn(width, self.bn_eps)),
                });
                blocks.push(BasicBlock {
                    conv1: conv(in_c, width, 3, stride, 1, false),
                    bn1: bn(width, self.bn_eps),
                    conv2: conv(width, width, 3, 1, 1, false),
                    bn2: bn(width, self.bn_eps),
                    shortcut,
                    relu_before_add: self.relu_before_add,
                    relu: Relu::new(),
                });
                in_c = width;
            }
            layers.push(Stage { blocks });
        }
        let head = match self.head_pool {
            HeadPool::Global => Head::Global(AdaptiveAvgPool2dConfig::new([1, 1]).init()),
            HeadPool::Window(k) => {
                Head::Window(AvgPool2dConfig::new([k, k]).with_strides([k, k]).init())
            }
        };
        let fc = self.init.linear(
            LinearConfig::new(in_c, self.num_classes).init(device),
            device,
        );
        ResNet {
            conv1,
            bn1: bn(stem_width, self.stem_bn_eps.unwrap_or(self.bn_eps)),
            maxpool,
            layers,
            head,
            fc,
            relu: Relu::new(),
        }
    }
}

/// The network; built by [`ResNetConfig::init`].
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    maxpool: Option<MaxPool2d>,
    layers: Vec<Stage<B>>,
    head: Head,
    fc: Linear<B>,
    relu: Relu,
}

/// The blocks at one width.
#[derive(Module, Debug)]
pub struct Stage<B: Backend> {
    blocks: Vec<BasicBlock<B>>,
}

/// Two 3x3 convolutions with batch norm, added to the input (or its projection).
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    conv2: Conv2d<B>,
    bn2: BatchNorm<B>,
    shortcut: Option<Shortcut<B>>,
    relu_before_add: bool,
    relu: Relu,
}

/// The 1x1 projection of a block's input where its shape changes.
#[derive(Module, Debug)]
pub struct Shortcut<B: Backend> {
    conv: Conv2d<B>,
    bn: Option<BatchNorm<B>>,
}

/// The tutorial's module names for its PyTorch weights (`ResNetConfig::tutorial`): the stem is
/// `block1` (`0` the convolution, `1` its batch norm), the stages `block2` to `block5`, a
/// block's 1x1 shortcut `conv3`, the last layer `classifier`.
#[cfg(feature = "pytorch")]
pub const TUTORIAL_TORCH_NAMES: crate::pytorch::TorchNames = crate::pytorch::TorchNames {
    prefixes: &[
        ("conv1", "block1.0"),
        ("bn1", "block1.1"),
        ("layers.0.blocks", "block2"),
        ("layers.1.blocks", "block3"),
        ("layers.2.blocks", "block4"),
        ("layers.3.blocks", "block5"),
        ("fc", "classifier"),
    ],
    infixes: &[("shortcut.conv", "conv3")],
};

/// The module a [`HeadPool`] builds.
#[derive(Module, Clone, Debug)]
pub enum Head {
    /// See [`HeadPool::Global`].
    Global(AdaptiveAvgPool2d),
    /// See [`HeadPool::Window`].
    Window(AvgPool2d),
}

impl<B: Backend> BasicBlock<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = self.bn1.forward_relu(self.conv1.forward(x.clone()));
        let y = self.conv2.forward(y);
        let y = if self.relu_before_add {
            self.bn2.forward_relu(y)
        } else {
            self.bn2.forward(y)
        };
        let identity = match &self.shortcut {
            Some(s) => {
                let x = s.conv.forward(x);
                match &s.bn {
                    Some(bn) => bn.forward(x),
                    None => x,
                }
            }
            None => x,
        };
        self.relu.forward(y + identity)
    }
}

impl<B: Backend> Layer<B> for BasicBlock<B> {
    fn kind(&self) -> &'static str {
        "BasicBlock"
    }
}

impl<B: Backend> Layer<B> for Head {
    fn kind(&self) -> &'static str {
        match self {
            Head::Global(_) => "AdaptiveAvgPool2d",
            Head::Window(_) => "AvgPool2d",
        }
    }
}

impl Head {
    fn forward<B: Backend>(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Head::Global(p) => p.forward(x),
            Head::Window(p) => p.forward(x),
        }
    }
}

/// Residual blocks are reported whole (`layers.S.blocks.B`), one row and one feature map each.
impl<B: Backend> ImageClassifier<B> for ResNet<B> {
    fn forward_probed<P: Probe<B> + ?Sized>(
        &self,
        images: Tensor<B, 4>,
        p: &mut P,
    ) -> Tensor<B, 2> {
        let x = tap(p, "conv1", &self.conv1, self.conv1.forward(images));
        let mut x = if p.active() {
            let x = tap(p, "bn1", &self.bn1, self.bn1.forward(x));
            tap(p, "relu", &self.relu, self.relu.forward(x))
        } else {
            // The same values, in one kernel where the backend has one.
            self.bn1.forward_relu(x)
        };
        if let Some(pool) = &self.maxpool {
            x = tap(p, "maxpool", pool, pool.forward(x));
        }
        for (s, stage) in self.layers.iter().enumerate() {
            for (b, block) in stage.blocks.iter().enumerate() {
                x = block.forward(x);
                if p.active() {
                    x = tap(p, &format!("layers.{s}.blocks.{b}"), block, x);
                }
            }
        }
        let x = tap(p, "head", &self.head, self.head.forward(x));
        let x = flatten(p, "flatten", x);
        linear(p, "fc", &self.fc, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_ndarray::NdArray;

    type B = NdArray<f32>;

    /// Parameters of a k x k conv (with optional bias) and of a batch norm (gamma and beta).
    fn conv(i: usize, o: usize, k: usize, bias: bool) -> usize {
        i * o * k * k + if bias { o } else { 0 }
    }
    fn bn(c: usize) -> usize {
        2 * c
    }

    /// Hand count of a ResNet with basic blocks: the parameters as PyTorch's
    /// `sum(p.numel() for p in model.parameters())` adds them up, and the batch-norm running
    /// means and variances (PyTorch buffers), which Burn's `num_params` counts too.
    fn hand_count(c: &ResNetConfig) -> (usize, usize) {
        let stem_k = if c.stem == Stem::Imagenet { 7 } else { 3 };
        let mut params = conv(c.in_channels, c.widths[0], stem_k, c.conv_bias) + bn(c.widths[0]);
        let mut bn_channels = c.widths[0];
        let mut in_c = c.widths[0];
        for (stage, (&n, &w)) in c.blocks.iter().zip(&c.widths).enumerate() {
            for b in 0..n {
                params += conv(in_c, w, 3, false) + bn(w) + conv(w, w, 3, false) + bn(w);
                bn_channels += 2 * w;
                if (stage > 0 && b == 0) || in_c != w {
                    params += conv(in_c, w, 1, c.conv_bias);
                    if c.shortcut_bn {
                        params += bn(w);
                        bn_channels += w;
                    }
                }
                in_c = w;
            }
        }
        (
            params + in_c * c.num_classes + c.num_classes,
            2 * bn_channels,
        )
    }

    #[test]
    fn resnet18_has_the_well_known_parameter_count() {
        let config = ResNetConfig::resnet18();
        // The CIFAR ResNet-18 (3x3 stem, no conv biases, BN shortcuts) has 11,173,962 parameters.
        let (params, buffers) = hand_count(&config);
        assert_eq!(params, 11_173_962);
        let model = config.init::<B>(&Default::default());
        assert_eq!(model.num_params(), params + buffers);
    }

    #[test]
    fn resnet34_parameter_count() {
        let config = ResNetConfig::resnet34();
        let (params, buffers) = hand_count(&config);
        assert_eq!(params, 21_282_122);
        assert_eq!(
            config.init::<B>(&Default::default()).num_params(),
            params + buffers
        );
    }

    #[test]
    fn tutorial_network_at_96x96() {
        let config = ResNetConfig::tutorial();
        let device = Default::default();
        let model = config.init::<B>(&device);
        let (params, buffers) = hand_count(&config);
        // `../shared/TUTORIAL-NETWORKS.md`: the tutorial's `resnet(3, 10)` has 11,180,810.
        assert_eq!(params, 11_180_810);
        assert_eq!(model.num_params(), params + buffers);
        // 96 -> 45 (unpadded 7x7 stem conv, stride 2) -> 23 (max pool) -> 23, 12, 6, 3
        // -> AvgPool(3) -> 1.
        let logits = model.logits(Tensor::zeros([2, 3, 96, 96], &device));
        assert_eq!(logits.dims(), [2, 10]);
    }

    #[test]
    fn resnet18_forward_at_32x32() {
        let device = Default::default();
        let model = ResNetConfig::resnet18().init::<B>(&device);
        assert_eq!(
            model.logits(Tensor::zeros([1, 3, 32, 32], &device)).dims(),
            [1, 10]
        );
    }

    #[test]
    fn mismatched_stage_lists_are_rejected() {
        let bad = ResNetConfig::new(vec![2, 2], vec![64], Stem::Cifar, HeadPool::Global);
        assert_eq!(
            bad.validate().unwrap_err(),
            "blocks and widths: expected one entry per stage in each, found 2 and 1"
        );
    }

    #[test]
    fn non_positive_batch_norm_epsilons_are_rejected() {
        let zero = ResNetConfig::resnet18().with_bn_eps(0.0);
        assert_eq!(
            zero.validate().unwrap_err(),
            "bn_eps: expected > 0, found 0"
        );
        let nan = ResNetConfig::tutorial().with_stem_bn_eps(Some(f64::NAN));
        assert_eq!(
            nan.validate().unwrap_err(),
            "stem_bn_eps: expected > 0, found NaN"
        );
    }
}
