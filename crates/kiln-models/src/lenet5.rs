//! LeNet-5, the modern variant of the Fashion-MNIST tutorial: ReLU, max pooling and dropout in
//! place of the 1998 sigmoid and average pooling.
//!
//! Conv2d(1,6,5,pad 2) -> ReLU -> MaxPool(2) -> Conv2d(6,16,5) -> ReLU -> MaxPool(2) ->
//! Linear(400,120) -> ReLU -> Dropout -> Linear(120,84) -> ReLU -> Dropout -> Linear(84,10).
//! Field names follow the PyTorch tutorial's (`conv1`, `fc1`, ...) so a `state_dict` maps by name.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;

use crate::ImageClassifier;

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
}

/// LeNet-5 for 28x28 inputs (the first convolution pads by 2, giving the original 32x32 geometry).
#[derive(Module, Debug)]
pub struct LeNet5<B: Backend> {
    conv1: Conv2d<B>,
    conv2: Conv2d<B>,
    pool: MaxPool2d,
    fc1: Linear<B>,
    fc2: Linear<B>,
    fc3: Linear<B>,
    dropout: Dropout,
    activation: Relu,
}

impl LeNet5Config {
    /// Builds the network with Burn's default (PyTorch-like Kaiming-uniform) initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LeNet5<B> {
        LeNet5 {
            conv1: Conv2dConfig::new([self.in_channels, 6], [5, 5])
                .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
                .init(device),
            conv2: Conv2dConfig::new([6, 16], [5, 5]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            fc1: LinearConfig::new(16 * 5 * 5, 120).init(device),
            fc2: LinearConfig::new(120, 84).init(device),
            fc3: LinearConfig::new(84, self.num_classes).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            activation: Relu::new(),
        }
    }
}

impl<B: Backend> LeNet5<B> {
    /// Logits `[batch, num_classes]` for images `[batch, in_channels, 28, 28]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self
            .pool
            .forward(self.activation.forward(self.conv1.forward(images)));
        let x = self
            .pool
            .forward(self.activation.forward(self.conv2.forward(x)));
        let x = x.flatten(1, 3);
        let x = self
            .dropout
            .forward(self.activation.forward(self.fc1.forward(x)));
        let x = self
            .dropout
            .forward(self.activation.forward(self.fc2.forward(x)));
        self.fc3.forward(x)
    }
}

impl<B: Backend> ImageClassifier<B> for LeNet5<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
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
        let logits = model.forward(Tensor::zeros([3, 1, 28, 28], &device));
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
    fn dropout_is_inactive_in_eval_mode() {
        let device = Default::default();
        let model = LeNet5Config::new().init::<Autodiff<B>>(&device).valid();
        let x =
            Tensor::<B, 4>::random([2, 1, 28, 28], burn::tensor::Distribution::Default, &device);
        let a = model.forward(x.clone());
        let b = model.forward(x);
        a.into_data().assert_eq(&b.into_data(), true);
    }
}
