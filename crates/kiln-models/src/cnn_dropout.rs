//! The two-convolution dropout CNN of the CIFAR-10 tutorial:
//! Conv2d(3,32,3,pad 1) -> ReLU -> Dropout(0.3) -> Conv2d(32,32,3,pad 1) -> ReLU -> MaxPool(2) ->
//! Linear(8192,512) -> ReLU -> Dropout(0.5) -> Linear(512,10).  (8192 = 32 x 16 x 16.)

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;

use crate::probe::{flatten, linear, tap, Probe};
use crate::ImageClassifier;

/// Classes, input channels and dropout of a [`CnnDropout`].
#[derive(Config, Debug)]
pub struct CnnDropoutConfig {
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Channels of the input images.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Dropout after the first convolution.
    #[config(default = 0.3)]
    pub conv_dropout: f64,
    /// Dropout after the hidden fully connected layer.
    #[config(default = 0.5)]
    pub fc_dropout: f64,
    /// Side of the square input images (32 for CIFAR-10); one 2x2 pooling halves it.
    #[config(default = 32)]
    pub image_size: usize,
}

/// The network; built by [`CnnDropoutConfig::init`].
#[derive(Module, Debug)]
pub struct CnnDropout<B: Backend> {
    conv1: Conv2d<B>,
    conv2: Conv2d<B>,
    pool: MaxPool2d,
    fc1: Linear<B>,
    fc2: Linear<B>,
    conv_dropout: Dropout,
    fc_dropout: Dropout,
    activation: Relu,
}

/// The published model's module names (`conv1`, `conv2`, `fc3`, `fc4`) for its PyTorch weights.
#[cfg(feature = "pytorch")]
pub const TUTORIAL_TORCH_NAMES: crate::pytorch::TorchNames = crate::pytorch::TorchNames {
    prefixes: &[("fc1", "fc3"), ("fc2", "fc4")],
    infixes: &[],
};

impl CnnDropoutConfig {
    /// The network on `device`, with Burn's default (PyTorch's) initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> CnnDropout<B> {
        let same3 = |i, o| {
            Conv2dConfig::new([i, o], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        };
        CnnDropout {
            conv1: same3(self.in_channels, 32).init(device),
            conv2: same3(32, 32).init(device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            fc1: LinearConfig::new(32 * (self.image_size / 2).pow(2), 512).init(device),
            fc2: LinearConfig::new(512, self.num_classes).init(device),
            conv_dropout: DropoutConfig::new(self.conv_dropout).init(),
            fc_dropout: DropoutConfig::new(self.fc_dropout).init(),
            activation: Relu::new(),
        }
    }
}

/// Logits for images `[batch, in_channels, 32, 32]`.
impl<B: Backend> ImageClassifier<B> for CnnDropout<B> {
    fn forward_probed<P: Probe<B> + ?Sized>(
        &self,
        images: Tensor<B, 4>,
        p: &mut P,
    ) -> Tensor<B, 2> {
        let relu = &self.activation;
        let x = tap(p, "conv1", &self.conv1, self.conv1.forward(images));
        let x = tap(p, "relu1", relu, relu.forward(x));
        let x = tap(
            p,
            "dropout1",
            &self.conv_dropout,
            self.conv_dropout.forward(x),
        );
        let x = tap(p, "conv2", &self.conv2, self.conv2.forward(x));
        let x = tap(p, "relu2", relu, relu.forward(x));
        let x = tap(p, "pool", &self.pool, self.pool.forward(x));
        let x = flatten(p, "flatten", x);
        let x = linear(p, "fc1", &self.fc1, x);
        let x = tap(p, "relu3", relu, relu.forward(x));
        let x = tap(p, "dropout2", &self.fc_dropout, self.fc_dropout.forward(x));
        linear(p, "fc2", &self.fc2, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_ndarray::NdArray;

    #[test]
    fn shapes_and_parameter_count() {
        let device = Default::default();
        let model = CnnDropoutConfig::new().init::<NdArray>(&device);
        assert_eq!(
            model.logits(Tensor::zeros([2, 3, 32, 32], &device)).dims(),
            [2, 10]
        );
        // conv1: 32*3*9 + 32 = 896; conv2: 32*32*9 + 32 = 9248; fc1: 8192*512 + 512 = 4194816;
        // fc2: 512*10 + 10 = 5130.
        assert_eq!(model.num_params(), 896 + 9_248 + 4_194_816 + 5_130);
    }
}
