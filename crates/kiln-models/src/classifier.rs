//! [`Classifier`]: every built-in network as one Burn `Module`, so code that builds a network
//! from a name (an experiment's `[model]` table) gets one concrete type back instead of
//! handing each network type to a generic visitor.
//!
//! Adding a network: its file, then one line in the `classifiers!` list below.

// The variants (and those of the record enum Burn derives) differ in size by a few hundred
// bytes of tensor handles; boxing would need a `Module` impl for `Box`, and one move per
// optimiser step costs nothing beside the step.
#![allow(clippy::large_enum_variant)]

use burn::prelude::*;

use crate::record::{self, RecordError};
use crate::{Airbench, CnnDropout, ConvNet, ImageClassifier, LeNet5, Probe, ResNet, SimpleCnn};

macro_rules! classifiers {
    ($($(#[$doc:meta])* $variant:ident($network:ident),)*) => {
        /// One of the built-in networks. It is a Burn `Module` (Burn derives `Module` for
        /// enums), trains and infers like the network it holds, and forwards
        /// [`ImageClassifier`] to it.
        ///
        /// Burn's paths for an enum module start with the variant's name; the PyTorch stores
        /// of [`crate::pytorch`] skip it, and [`Classifier::into_mpk`] records the network alone,
        /// so no file Kiln writes depends on this enum.
        #[derive(Module, Debug)]
        pub enum Classifier<B: Backend> {
            $($(#[$doc])* $variant($network<B>),)*
        }

        $(impl<B: Backend> From<$network<B>> for Classifier<B> {
            fn from(network: $network<B>) -> Self {
                Classifier::$variant(network)
            }
        })*

        impl<B: Backend> ImageClassifier<B> for Classifier<B> {
            fn forward_probed<P: Probe<B> + ?Sized>(
                &self,
                images: Tensor<B, 4>,
                probe: &mut P,
            ) -> Tensor<B, 2> {
                match self {
                    $(Classifier::$variant(network) => network.forward_probed(images, probe),)*
                }
            }
        }

        impl<B: Backend> Classifier<B> {
            /// The network's name, as its type is called.
            pub fn network_name(&self) -> &'static str {
                match self {
                    $(Classifier::$variant(_) => stringify!($network),)*
                }
            }

            /// The weights as Burn's named MessagePack, full precision: the record of the
            /// network alone, so the file also loads into the network's own type
            /// (`LeNet5::load_file`) in a project that knows nothing of Kiln. It takes the
            /// model by value: a clone of a freshly built model would draw its own weights
            /// (Burn initialises parameters lazily, per copy).
            pub fn into_mpk(self) -> Vec<u8> {
                match self {
                    $(Classifier::$variant(network) => record::encode::<B, _>(network.into_record()),)*
                }
            }

            /// Loads weights written by [`Classifier::into_mpk`] (or by the network's own type
            /// with a full-precision named MessagePack recorder). Fails when the bytes are not
            /// such a record of this network, or when a tensor's shape differs from the
            /// network's (Burn's `load_record` would take it and fail at the first forward pass).
            pub fn load_mpk(self, bytes: Vec<u8>, device: &B::Device) -> Result<Self, MpkError> {
                let network = self.network_name();
                let refused = |e: RecordError| match e {
                    RecordError::Decode(message) => MpkError::Decode { network, message },
                    RecordError::Shape { path, expected, found } => {
                        MpkError::Shape { network, path, expected, found }
                    }
                };
                let loaded = match self {
                    $(Classifier::$variant(network) => Classifier::$variant(
                        record::load_module(network, bytes, device).map_err(refused)?,
                    ),)*
                };
                Ok(loaded)
            }
        }
    };
}

impl<B: Backend> Classifier<B> {
    /// How many of the training set's first images the network's initialisation takes from
    /// the data ([`Classifier::init_from_images`]), if it takes any: airbench's whitening.
    pub fn images_for_init(&self) -> Option<usize> {
        match self {
            Classifier::Airbench(net) => Some(net.whitening_images()),
            _ => None,
        }
    }

    /// The network with what its initialisation takes from `images` (the first
    /// [`Classifier::images_for_init`] training images, normalised, not augmented); any other
    /// network is returned as it is.
    pub fn init_from_images(self, images: Tensor<B, 4>) -> Self {
        match self {
            Classifier::Airbench(net) => Classifier::Airbench(net.with_whitening(images)),
            other => other,
        }
    }
}

/// Why [`Classifier::load_mpk`] refused weights.
#[derive(Debug, thiserror::Error)]
pub enum MpkError {
    /// The bytes are not a named MessagePack record of the network.
    #[error("not the weights of a {network}: {message}")]
    Decode {
        /// The network's type name.
        network: &'static str,
        /// What the decoder found.
        message: String,
    },
    /// A tensor has another shape than the network's (another configuration of it).
    #[error("`{path}` has shape {found:?} in the weights, the {network} expects {expected:?}")]
    Shape {
        /// The network's type name.
        network: &'static str,
        /// The parameter's module path (`conv1.weight`).
        path: String,
        /// Its shape in the network.
        expected: Vec<usize>,
        /// Its shape in the weights.
        found: Vec<usize>,
    },
}

classifiers! {
    /// LeNet-5, modern or classic ([`crate::lenet5`]).
    LeNet5(LeNet5),
    /// The one-convolution CIFAR-10 CNN ([`crate::simple_cnn`]).
    SimpleCnn(SimpleCnn),
    /// The MNIST tutorial's two-convolution ConvNet ([`crate::convnet`]).
    ConvNet(ConvNet),
    /// The CIFAR-10 tutorial's two-convolution dropout CNN ([`crate::cnn_dropout`]).
    CnnDropout(CnnDropout),
    /// A ResNet of basic blocks ([`crate::resnet`]).
    ResNet(ResNet),
    /// airbench94's network ([`crate::airbench`]).
    Airbench(Airbench),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::NamedMpk;
    use crate::{ConvNetConfig, LeNet5Config};
    use burn::module::Module;
    use burn::record::Recorder;
    use burn_ndarray::NdArray;

    type B = NdArray;

    #[test]
    fn forwards_to_the_network_it_holds() {
        let device = Default::default();
        let lenet = LeNet5Config::new().init::<B>(&device);
        let images =
            Tensor::<B, 4>::random([2, 1, 28, 28], burn::tensor::Distribution::Default, &device);
        let direct = lenet.logits(images.clone()).into_data();
        let classifier = Classifier::from(lenet);
        assert_eq!(classifier.network_name(), "LeNet5");
        assert_eq!(classifier.logits(images).into_data(), direct);
        assert_eq!(
            classifier.summary([1, 28, 28], &device).total_params(),
            61_706
        );
    }

    #[test]
    fn mpk_is_the_network_s_own_record() {
        let device = Default::default();
        let lenet = LeNet5Config::new().init::<B>(&device);
        let images = Tensor::<B, 4>::ones([1, 1, 28, 28], &device);
        // Draws the weights, so that the clone below copies them rather than drawing its own.
        let expected = lenet.logits(images.clone()).into_data();
        let bytes = Classifier::from(lenet.clone()).into_mpk();
        // The bytes load into the bare network type ...
        let record = Recorder::<B>::load(&NamedMpk::new(), bytes.clone(), &device).unwrap();
        let fresh = LeNet5Config::new().init::<B>(&device);
        let bare = fresh.load_record(record);
        assert_eq!(bare.logits(images.clone()).into_data(), expected);
        // ... and back into a classifier of the same network, but not of another one.
        let reloaded = Classifier::from(LeNet5Config::new().init::<B>(&device))
            .load_mpk(bytes.clone(), &device)
            .unwrap();
        assert_eq!(reloaded.logits(images).into_data(), expected);
        // LeNet-5's fields are a subset of no other network's, but its layers' names are
        // shared with the ConvNet's: the shapes tell them apart.
        let other = Classifier::from(ConvNetConfig::new().init::<B>(&device));
        let err = other
            .load_mpk(bytes.clone(), &device)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "`conv1.weight` has shape [6, 1, 5, 5] in the weights, the ConvNet expects"
            ),
            "{err}"
        );
        // Another configuration of the same network: ten classes saved, three expected.
        let three = Classifier::from(LeNet5Config::new().with_num_classes(3).init::<B>(&device));
        let err = three.load_mpk(bytes, &device).unwrap_err().to_string();
        assert!(
            err.contains("`fc3.weight` has shape [84, 10]") && err.contains("LeNet5"),
            "{err}"
        );
        // Not a record at all.
        let lenet = Classifier::from(LeNet5Config::new().init::<B>(&device));
        let err = lenet
            .load_mpk(b"not weights".to_vec(), &device)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("not the weights of a LeNet5: "), "{err}");
    }
}
