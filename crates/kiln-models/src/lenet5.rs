//! LeNet-5 in both variants of the Fashion-MNIST tutorial.
//!
//! Conv2d(1,6,5,pad 2) -> act -> Pool(2) -> Conv2d(6,16,5) -> act -> Pool(2) ->
//! Linear(400,120) -> act -> Dropout -> Linear(120,84) -> act -> Dropout -> Linear(84,10).
//!
//! The modern variant (the config's defaults) uses ReLU, max pooling and dropout 0.5; the
//! classic one ([`LeNet5Config::classic`]) the 1998 sigmoid and average pooling, no dropout and
//! Xavier-initialised weights. Field names follow the PyTorch tutorial's (`conv1`, `fc1`, ...)
//! so a `state_dict` maps by name.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

use crate::layers::{Activation, ActivationKind, Pool2d, PoolingKind};
use crate::probe::{flatten, linear, tap, Probe};
use crate::{ImageClassifier, WeightInit};

/// Shape and regularisation of a [`LeNet5`].
#[derive(Config, Debug)]
pub struct LeNet5Config {
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Input channels (1 for the grayscale 28x28 images LeNet-5 was built for).
    #[config(default = 1)]
    pub in_channels: usize,
    /// Dropout probability after each hidden fully connected layer.
    #[config(default = 0.5)]
    pub dropout: f64,
    /// Side of the square input images (28: the padded first convolution gives LeNet-5's
    /// original 32x32 geometry). The feature map before `fc1` is `(image_size / 2 - 4) / 2`.
    #[config(default = 28)]
    pub image_size: usize,
    /// The non-linearity after each layer but the last.
    #[config(default = "ActivationKind::Relu")]
    pub activation: ActivationKind,
    /// The two 2x2 poolings.
    #[config(default = "PoolingKind::Max")]
    pub pooling: PoolingKind,
    /// How convolution and linear weights are drawn.
    #[config(default = "WeightInit::Default")]
    pub init: WeightInit,
}

/// LeNet-5 for 28x28 inputs (the first convolution pads by 2, giving the original 32x32 geometry).
#[derive(Module, Debug)]
pub struct LeNet5<B: Backend> {
    conv1: Conv2d<B>,
    conv2: Conv2d<B>,
    pool: Pool2d,
    fc1: Linear<B>,
    fc2: Linear<B>,
    fc3: Linear<B>,
    dropout: Dropout,
    activation: Activation,
}

/// The classic tutorial's `nn.Sequential` indices (`0`, `3`, `7`, `9`, `11`) for its PyTorch
/// weights. The modern tutorial's names (`conv1` ... `fc3`) are Kiln's own.
#[cfg(feature = "pytorch")]
pub const CLASSIC_TORCH_NAMES: crate::pytorch::TorchNames = crate::pytorch::TorchNames {
    prefixes: &[
        ("conv1", "0"),
        ("conv2", "3"),
        ("fc1", "7"),
        ("fc2", "9"),
        ("fc3", "11"),
    ],
    infixes: &[],
};

impl LeNet5Config {
    /// Side of the feature map before `fc1`: padded conv1, pool, conv2 (5x5), pool.
    fn final_side(&self) -> usize {
        (self.image_size / 2).saturating_sub(4) / 2
    }

    /// The 1998 shape as the tutorial's classic variant builds it: sigmoid, average pooling,
    /// no dropout, Xavier-uniform weights.
    pub fn classic() -> Self {
        Self::new()
            .with_activation(ActivationKind::Sigmoid)
            .with_pooling(PoolingKind::Avg)
            .with_dropout(0.0)
            .with_init(WeightInit::XavierUniform)
    }

    /// The network on `device`, its weights drawn as `init` says.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LeNet5<B> {
        let conv = |config: Conv2dConfig| self.init.conv2d(config.init(device), device);
        let linear = |i, o| {
            self.init
                .linear(LinearConfig::new(i, o).init(device), device)
        };
        LeNet5 {
            conv1: conv(
                Conv2dConfig::new([self.in_channels, 6], [5, 5])
                    .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2)),
            ),
            conv2: conv(Conv2dConfig::new([6, 16], [5, 5])),
            pool: self.pooling.init(2),
            fc1: linear(16 * self.final_side().pow(2), 120),
            fc2: linear(120, 84),
            fc3: linear(84, self.num_classes),
            dropout: DropoutConfig::new(self.dropout).init(),
            activation: self.activation.init(),
        }
    }
}

/// Logits `[batch, num_classes]` for images `[batch, in_channels, image_size, image_size]`.
impl<B: Backend> ImageClassifier<B> for LeNet5<B> {
    fn forward_probed<P: Probe<B> + ?Sized>(
        &self,
        images: Tensor<B, 4>,
        p: &mut P,
    ) -> Tensor<B, 2> {
        let (act, pool, dropout) = (&self.activation, &self.pool, &self.dropout);
        let x = tap(p, "conv1", &self.conv1, self.conv1.forward(images));
        let x = tap(p, "act1", act, act.forward(x));
        let x = tap(p, "pool1", pool, pool.forward(x));
        let x = tap(p, "conv2", &self.conv2, self.conv2.forward(x));
        let x = tap(p, "act2", act, act.forward(x));
        let x = tap(p, "pool2", pool, pool.forward(x));
        let x = flatten(p, "flatten", x);
        let x = linear(p, "fc1", &self.fc1, x);
        let x = tap(p, "act3", act, act.forward(x));
        let x = tap(p, "dropout1", dropout, dropout.forward(x));
        let x = linear(p, "fc2", &self.fc2, x);
        let x = tap(p, "act4", act, act.forward(x));
        let x = tap(p, "dropout2", dropout, dropout.forward(x));
        linear(p, "fc3", &self.fc3, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::AutodiffModule;
    use burn_autodiff::Autodiff;
    use burn_ndarray::NdArray;

    type B = NdArray<f32>;

    #[test]
    fn output_shape_is_batch_by_classes() {
        let device = Default::default();
        let model = LeNet5Config::new().init::<B>(&device);
        let logits = model.logits(Tensor::zeros([3, 1, 28, 28], &device));
        assert_eq!(logits.dims(), [3, 10]);
    }

    #[test]
    fn parameter_count_matches_pytorch() {
        // conv1: 6*1*5*5 + 6; conv2: 16*6*5*5 + 16; fc1: 400*120 + 120; fc2: 120*84 + 84;
        // fc3: 84*10 + 10. Same arithmetic as `sum(p.numel() for p in model.parameters())`.
        let expected = (150 + 6) + (2400 + 16) + (48000 + 120) + (10080 + 84) + (840 + 10);
        assert_eq!(expected, 61_706);
        let model = LeNet5Config::new().init::<B>(&Default::default());
        assert_eq!(model.num_params(), expected);
    }

    #[test]
    fn classic_variant_has_the_same_parameters_and_xavier_weights() {
        let device = Default::default();
        let model = LeNet5Config::classic().init::<B>(&device);
        assert_eq!(model.num_params(), 61_706);
        assert!(matches!(model.pool, Pool2d::Avg(_)));
        assert!(matches!(model.activation, Activation::Sigmoid(_)));
        // fc1: Xavier bound sqrt(6 / (400 + 120)) = 0.107; PyTorch's default would be 1/sqrt(400) = 0.05.
        let w = model.fc1.weight.val();
        let max = w.abs().max().into_scalar();
        assert!(max > 0.08 && max <= 0.1075, "max |w| = {max}");
        // Biases keep the default bound 1/sqrt(fan_in).
        let b = model
            .fc1
            .bias
            .as_ref()
            .unwrap()
            .val()
            .abs()
            .max()
            .into_scalar();
        assert!(b <= 0.05 + 1e-6, "max |b| = {b}");
    }

    #[test]
    fn dropout_is_inactive_in_eval_mode() {
        let device = Default::default();
        let model = LeNet5Config::new().init::<Autodiff<B>>(&device).valid();
        let x =
            Tensor::<B, 4>::random([2, 1, 28, 28], burn::tensor::Distribution::Default, &device);
        let a = model.logits(x.clone());
        let b = model.logits(x);
        a.into_data().assert_eq(&b.into_data(), true);
    }
}
