//! The classic image-classification CNNs as Burn modules.
//!
//! Each network is one file holding a `#[derive(Config)]` + `#[derive(Module)]` pair whose
//! config `init`s the module on a device. Nothing here knows about data sets or training, so
//! another Burn project can depend on this crate alone.

use burn::prelude::*;

pub mod lenet5;

pub use lenet5::{LeNet5, LeNet5Config};

/// A network that maps a batch of images `[batch, channels, height, width]` to class logits
/// `[batch, classes]`. This is all the training loop asks of a model.
pub trait ImageClassifier<B: Backend> {
    /// Class logits (before softmax) for a batch of images.
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2>;
}
