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
pub mod resnet;
pub mod simple_cnn;

pub use cnn_dropout::{CnnDropout, CnnDropoutConfig};
pub use convnet::{ConvNet, ConvNetConfig};
pub use init::WeightInit;
pub use layers::{ActivationKind, PoolingKind};
pub use lenet5::{LeNet5, LeNet5Config};
pub use resnet::{HeadPool, ResNet, ResNetConfig, Stem};
pub use simple_cnn::{SimpleCnn, SimpleCnnConfig};

/// A network that maps a batch of images `[batch, channels, height, width]` to class logits
/// `[batch, classes]`. This is all the training loop asks of a model.
pub trait ImageClassifier<B: Backend> {
    /// Class logits (before softmax) for a batch of images.
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2>;
}
