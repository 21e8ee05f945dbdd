//! The small two-convolution ConvNet of the MNIST tutorial:
//! Conv2d(1,4,5,pad 2) -> ReLU -> MaxPool(2) -> Conv2d(4,8,5,pad 2) -> ReLU -> MaxPool(2) ->
//! Linear(392,512) -> ReLU -> Dropout(0.5) -> Linear(512,10).  (392 = 8 x 7 x 7.)

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;

use crate::probe::{flatten, linear, tap, Probe};
use crate::ImageClassifier;

/// Classes, input channels and dropout of a [`ConvNet`].
#[derive(Config, Debug)]
pub struct ConvNetConfig {
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Channels of the input images.
    #[config(default = 1)]
    pub in_channels: usize,
    /// Dropout probability after the hidden fully connected layer.
    #[config(default = 0.5)]
    pub dropout: f64,
    /// Side of the square input images (28 for MNIST); two 2x2 poolings divide it by 4.
    #[config(default = 28)]
    pub image_size: usize,
}

/// The network; built by [`ConvNetConfig::init`].
#[derive(Module, Debug)]
pub struct ConvNet<B: Backend> {
    pub(crate) conv1: Conv2d<B>,
    conv2: Conv2d<B>,
    pool: MaxPool2d,
    fc1: Linear<B>,
    fc2: Linear<B>,
    dropout: Dropout,
    activation: Relu,
}

impl ConvNetConfig {
    /// The network on `device`, with Burn's default (PyTorch's) initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ConvNet<B> {
        let same5 = |i, o| {
            Conv2dConfig::new([i, o], [5, 5]).with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
        };
        ConvNet {
            conv1: same5(self.in_channels, 4).init(device),
            conv2: same5(4, 8).init(device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            fc1: LinearConfig::new(8 * (self.image_size / 4).pow(2), 512).init(device),
            fc2: LinearConfig::new(512, self.num_classes).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            activation: Relu::new(),
        }
    }
}

/// Logits for images `[batch, in_channels, image_size, image_size]`.
impl<B: Backend> ImageClassifier<B> for ConvNet<B> {
    fn forward_probed<P: Probe<B> + ?Sized>(
        &self,
        images: Tensor<B, 4>,
        p: &mut P,
    ) -> Tensor<B, 2> {
        let relu = &self.activation;
        let x = tap(p, "conv1", &self.conv1, self.conv1.forward(images));
        let x = tap(p, "relu1", relu, relu.forward(x));
        let x = tap(p, "pool1", &self.pool, self.pool.forward(x));
        let x = tap(p, "conv2", &self.conv2, self.conv2.forward(x));
        let x = tap(p, "relu2", relu, relu.forward(x));
        let x = tap(p, "pool2", &self.pool, self.pool.forward(x));
        let x = flatten(p, "flatten", x);
        let x = linear(p, "fc1", &self.fc1, x);
        let x = tap(p, "relu3", relu, relu.forward(x));
        let x = tap(p, "dropout", &self.dropout, self.dropout.forward(x));
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
        let model = ConvNetConfig::new().init::<NdArray>(&device);
        assert_eq!(
            model.logits(Tensor::zeros([2, 1, 28, 28], &device)).dims(),
            [2, 10]
        );
        // conv1: 4*1*25 + 4 = 104; conv2: 8*4*25 + 8 = 808; fc1: 392*512 + 512 = 201216;
        // fc2: 512*10 + 10 = 5130.
        assert_eq!(model.num_params(), 104 + 808 + 201_216 + 5_130);
    }
}
