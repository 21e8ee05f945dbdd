//! The classic image-classification CNNs as Burn modules.
//!
//! Each network is one file holding a `#[derive(Config)]` + `#[derive(Module)]` pair whose
//! config `init`s the module on a device. Nothing here knows about data sets or training, so
//! another Burn project can depend on this crate alone.

use burn::prelude::*;

pub mod cnn_dropout;
pub mod convnet;
mod init;
pub mod layers;
pub mod lenet5;
pub mod probe;
pub mod resnet;
pub mod simple_cnn;

pub use cnn_dropout::{CnnDropout, CnnDropoutConfig};
pub use convnet::{ConvNet, ConvNetConfig};
pub use init::WeightInit;
pub use layers::{ActivationKind, PoolingKind};
pub use lenet5::{LeNet5, LeNet5Config};
pub use probe::{
    first_conv_kernels, FeatureMaps, Maps, NoProbe, Probe, ShapeClash, Summary, SummaryRow,
};
pub use resnet::{HeadPool, ResNet, ResNetConfig, Stem};
pub use simple_cnn::{SimpleCnn, SimpleCnnConfig};

/// A network that maps a batch of images `[batch, channels, height, width]` to class logits
/// `[batch, classes]`. Training asks for the logits only; summaries and feature-map pictures
/// watch the same forward pass through a [`Probe`].
pub trait ImageClassifier<B: Backend> {
    /// The forward pass, reporting every layer's output to `probe` in order.
    fn forward_probed<P: Probe<B> + ?Sized>(
        &self,
        images: Tensor<B, 4>,
        probe: &mut P,
    ) -> Tensor<B, 2>;

    /// Class logits (before softmax) for a batch of images.
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_probed(images, &mut NoProbe)
    }

    /// The layer table for one image of `[channels, height, width]`, with any layer the input
    /// size does not fit. Call it on an inference module (`model.valid()`, or a backend without
    /// autodiff): in training mode batch norm would update its running statistics.
    fn summary(&self, input: [usize; 3], device: &B::Device) -> Summary {
        let [c, h, w] = input;
        let mut summary = Summary::default();
        self.forward_probed(Tensor::zeros([1, c, h, w], device), &mut summary);
        summary
    }

    /// The feature maps of every convolution for one image `[channels, height, width]`
    /// (already normalised, as the model sees it). Call it on an inference module.
    fn feature_maps(&self, image: Tensor<B, 3>) -> Vec<Maps> {
        let mut maps = FeatureMaps::default();
        self.forward_probed(image.unsqueeze::<4>(), &mut maps);
        maps.layers
    }
}
