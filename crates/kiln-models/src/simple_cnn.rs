//! The one-convolution CNN of the CIFAR-10 tutorial:
//! Conv2d(3,16,3) -> MaxPool(2) -> ReLU -> Linear(3600,10).
//!
//! 3600 = 16 channels x 15 x 15: a 32x32 image loses a pixel at each border to the unpadded 3x3
//! convolution (30x30) and is halved by the pooling (15x15).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, Relu};
use burn::prelude::*;

use crate::probe::{flatten, linear, tap, Probe};
use crate::ImageClassifier;

/// Classes, input channels and input size of a [`SimpleCnn`].
#[derive(Config, Debug)]
pub struct SimpleCnnConfig {
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Channels of the input images.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Side of the square input images.
    #[config(default = 32)]
    pub image_size: usize,
}

/// The network; built by [`SimpleCnnConfig::init`].
#[derive(Module, Debug)]
pub struct SimpleCnn<B: Backend> {
    conv1: Conv2d<B>,
    pool: MaxPool2d,
    activation: Relu,
    fc: Linear<B>,
}

/// The tutorial's module names (`Conv`: `conv`, `linear`) for importing its PyTorch weights.
#[cfg(feature = "pytorch")]
pub const TUTORIAL_TORCH_NAMES: crate::pytorch::TorchNames = crate::pytorch::TorchNames {
    prefixes: &[("conv1", "conv"), ("fc", "linear")],
    infixes: &[],
};

impl SimpleCnnConfig {
    /// Input features of the linear layer: 16 x ((size - 2) / 2)^2.
    pub fn flat_features(&self) -> usize {
        let side = (self.image_size - 2) / 2;
        16 * side * side
    }

    /// The network on `device`, with Burn's default (PyTorch's) initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SimpleCnn<B> {
        SimpleCnn {
            conv1: Conv2dConfig::new([self.in_channels, 16], [3, 3]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            activation: Relu::new(),
            fc: LinearConfig::new(self.flat_features(), self.num_classes).init(device),
        }
    }
}

impl<B: Backend> ImageClassifier<B> for SimpleCnn<B> {
    fn forward_probed<P: Probe<B> + ?Sized>(
        &self,
        images: Tensor<B, 4>,
        p: &mut P,
    ) -> Tensor<B, 2> {
        let x = tap(p, "conv1", &self.conv1, self.conv1.forward(images));
        let x = tap(p, "pool", &self.pool, self.pool.forward(x));
        let x = tap(p, "relu", &self.activation, self.activation.forward(x));
        let x = flatten(p, "flatten", x);
        linear(p, "fc", &self.fc, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_ndarray::NdArray;

    #[test]
    fn shapes_and_parameter_count() {
        let device = Default::default();
        let config = SimpleCnnConfig::new();
        assert_eq!(config.flat_features(), 3600);
        let model = config.init::<NdArray>(&device);
        assert_eq!(
            model.logits(Tensor::zeros([2, 3, 32, 32], &device)).dims(),
            [2, 10]
        );
        // conv1: 16*3*3*3 + 16 = 448; fc: 3600*10 + 10 = 36010.
        assert_eq!(model.num_params(), 448 + 36_010);
    }
}
