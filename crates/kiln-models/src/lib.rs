//! The classic image-classification CNNs as Burn modules: the networks of five PyTorch
//! tutorials (LeNet-5 modern and classic, the MNIST ConvNet, two CIFAR-10 CNNs, a ResNet) and
//! ResNet-18/34, each exactly as its tutorial defines it.
//!
//! Each network is one file holding a `#[derive(Config)]` + `#[derive(Module)]` pair whose
//! config `init`s the module on a device, generic over the Burn backend. Every network
//! implements [`ImageClassifier`]: logits from images, a layer table ([`Summary`]) and feature
//! maps. [`Classifier`] is the enum of them all, one `Module` type for code that picks the
//! network at run time. With the `pytorch` feature (on by default), [`load_pytorch`] loads the weights a
//! tutorial's PyTorch code saves, and [`save_safetensors`] writes weights PyTorch loads.
//!
//! What it is not: nothing here knows about data sets, training or files other than weights,
//! so another Burn project can depend on this crate alone.
//!
//! ```
//! use burn::prelude::*;
//! use burn_ndarray::NdArray;
//! use kiln_models::{ImageClassifier, LeNet5Config};
//!
//! let device = Default::default();
//! let model = LeNet5Config::new().init::<NdArray>(&device);
//! let logits = model.logits(Tensor::zeros([2, 1, 28, 28], &device));
//! assert_eq!(logits.dims(), [2, 10]);
//! assert_eq!(model.summary([1, 28, 28], &device).total_params(), 61_706);
//! ```

#![warn(missing_docs)]

use burn::prelude::*;

pub mod airbench;
pub mod batch_norm;
mod classifier;
pub mod cnn_dropout;
pub mod convnet;
mod init;
pub mod layers;
pub mod lenet5;
pub mod params;
pub mod probe;
#[cfg(feature = "pytorch")]
pub mod pytorch;
pub mod record;
pub mod resnet;
pub mod simple_cnn;
pub mod tta;

pub use airbench::{Airbench, AirbenchConfig};
pub use batch_norm::{BatchNorm, BatchNormConfig};
pub use classifier::{Classifier, MpkError};
pub use cnn_dropout::{CnnDropout, CnnDropoutConfig};
pub use convnet::{ConvNet, ConvNetConfig};
pub use init::WeightInit;
pub use layers::{ActivationKind, PoolingKind};
pub use lenet5::{LeNet5, LeNet5Config};
pub use probe::{
    first_conv_kernels, FeatureMaps, Maps, NoProbe, Probe, ShapeClash, Summary, SummaryRow,
};
#[cfg(feature = "pytorch")]
pub use pytorch::{load_pytorch, save_safetensors, ImportReport, TorchNames, WeightsError};
pub use resnet::{HeadPool, ResNet, ResNetConfig, Stem};
pub use simple_cnn::{SimpleCnn, SimpleCnnConfig};
pub use tta::{TestTimeAugmentation, Tta};

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
