//! The `[model]` table of an experiment and the one place that maps it to a network type.
//!
//! Adding a network: its line in `kiln_models::Classifier`, a variant here, its arm in
//! [`ModelSpec::build`], and its checks in [`ModelSpec::validate`].

use burn::tensor::backend::Backend;
use kiln_models::{
    ActivationKind, AirbenchConfig, Classifier, CnnDropoutConfig, ConvNetConfig, HeadPool,
    ImageClassifier, LeNet5Config, PoolingKind, ResNetConfig, SimpleCnnConfig, Stem, Summary,
    WeightInit,
};
use serde::{Deserialize, Serialize};

/// The network and its settings. The number of classes and input channels come from the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ModelSpec {
    /// LeNet-5 (see `kiln_models::lenet5`); the defaults are the modern variant.
    Lenet5 {
        /// Dropout before the last layer (0 for none).
        #[serde(default = "half")]
        dropout: f64,
        /// The non-linearity after each layer but the last.
        #[serde(default)]
        activation: ActivationKind,
        /// The two 2x2 poolings.
        #[serde(default)]
        pooling: PoolingKind,
        /// How convolution and linear weights are drawn.
        #[serde(default)]
        init: WeightInit,
    },
    /// Conv2d(3,16,3) -> MaxPool(2) -> ReLU -> Linear(3600,10) for 32x32 inputs.
    SimpleCnn {
        /// Side of the square input images in pixels, where it must differ from the data's
        /// (older experiment files give it; a mismatch is refused with the shapes that clash).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image_size: Option<usize>,
    },
    /// The MNIST tutorial's two-conv ConvNet.
    Convnet {
        /// Dropout after the hidden fully connected layer.
        #[serde(default = "half")]
        dropout: f64,
    },
    /// The CIFAR-10 tutorial's two-conv dropout CNN.
    CnnDropout {
        /// Dropout after the first convolution.
        #[serde(default = "conv_dropout")]
        conv_dropout: f64,
        /// Dropout after the hidden fully connected layer.
        #[serde(default = "half")]
        fc_dropout: f64,
    },
    /// A ResNet of basic blocks (see `kiln_models::resnet`).
    Resnet {
        /// Residual blocks per stage, e.g. `[2, 2, 2, 2]` for ResNet-18.
        blocks: Vec<usize>,
        /// Channels per stage; every stage after the first halves the resolution.
        widths: Vec<usize>,
        /// How the input is first convolved and reduced.
        stem: Stem,
        /// How the last feature map becomes a vector.
        head_pool: HeadPool,
        /// Every batch norm's epsilon but the stem's when `stem_bn_eps` is given.
        #[serde(default = "bn_eps")]
        bn_eps: f64,
        /// The stem's batch-norm epsilon where it differs from the blocks'.
        #[serde(default)]
        stem_bn_eps: Option<f64>,
        /// Pad the stem's convolution by half its kernel (the standard ResNet does).
        #[serde(default = "yes")]
        stem_padding: bool,
        /// The stem's and the 1x1 shortcuts' convolutions carry a bias.
        #[serde(default)]
        conv_bias: bool,
        /// A ReLU after a block's second batch norm, before the addition.
        #[serde(default)]
        relu_before_add: bool,
        /// The projection shortcut's 1x1 convolution is followed by a batch norm.
        #[serde(default = "yes")]
        shortcut_bn: bool,
        /// How convolution and linear weights are drawn.
        #[serde(default)]
        init: WeightInit,
    },
    /// airbench94's network (see `kiln_models::airbench`); the defaults are airbench94's.
    Airbench {
        /// Channels of the convolution groups.
        #[serde(default = "airbench_widths")]
        widths: Vec<usize>,
        /// Side of the whitening convolution's kernel.
        #[serde(default = "two")]
        whiten_kernel: usize,
        /// Training images the whitening filters are computed from.
        #[serde(default = "whiten_images")]
        whiten_images: usize,
        /// Added to each eigenvalue of the patch statistics.
        #[serde(default = "whiten_eps")]
        whiten_eps: f64,
        /// Batch norms' momentum, PyTorch's meaning (airbench94's 0.6 is `1 - 0.4`).
        #[serde(default = "airbench_bn_momentum")]
        bn_momentum: f64,
        /// Batch norms' epsilon.
        #[serde(default = "airbench_bn_eps")]
        bn_eps: f64,
        /// The logits are the head's output times this.
        #[serde(default = "one_ninth")]
        logit_scale: f64,
    },
}

fn airbench_widths() -> Vec<usize> {
    vec![64, 256, 256]
}
fn two() -> usize {
    2
}
fn whiten_images() -> usize {
    5000
}
fn whiten_eps() -> f64 {
    5e-4
}
fn airbench_bn_momentum() -> f64 {
    0.4
}
fn airbench_bn_eps() -> f64 {
    1e-12
}
fn one_ninth() -> f64 {
    1.0 / 9.0
}

fn half() -> f64 {
    0.5
}
fn conv_dropout() -> f64 {
    0.3
}
fn bn_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

impl ModelSpec {
    /// The same network with every dropout probability set to zero: backends draw dropout
    /// masks from their own random generators, so comparisons of their numbers turn it off.
    pub fn without_dropout(&self) -> ModelSpec {
        let mut spec = self.clone();
        match &mut spec {
            ModelSpec::Lenet5 { dropout, .. } | ModelSpec::Convnet { dropout } => *dropout = 0.0,
            ModelSpec::CnnDropout {
                conv_dropout,
                fc_dropout,
            } => {
                *conv_dropout = 0.0;
                *fc_dropout = 0.0;
            }
            ModelSpec::SimpleCnn { .. } | ModelSpec::Resnet { .. } | ModelSpec::Airbench { .. } => {
            }
        }
        spec
    }

    /// The layer table for `input` = `[channels, height, width]` images and `classes` classes,
    /// on a backend without autodiff (in training mode batch norm would need a batch). Builds
    /// the model with weights from the backend's RNG: call before seeding for training.
    ///
    /// A network whose configuration cannot be built for this input size at all (airbench's
    /// groups halve the side until nothing is left for the head) is an error naming the key;
    /// one that builds but whose layers clash has the clashes in [`Summary::clashes`].
    pub fn summary<B: Backend>(
        &self,
        input: [usize; 3],
        classes: usize,
        device: &B::Device,
    ) -> Result<Summary, String> {
        self.check_input(input, classes)?;
        Ok(self
            .build::<B>(input, classes, device)
            .summary(input, device))
    }

    /// What only the input size can refuse before the network is built: airbench's groups
    /// halve the side until nothing may be left for its head (the other networks build for
    /// any size and report shape clashes in their summary instead).
    fn check_input(&self, input: [usize; 3], classes: usize) -> Result<(), String> {
        match self.airbench_config(input[0], input[1], classes) {
            Some(config) => config.validate().map_err(|e| format!("model.{e}")),
            None => Ok(()),
        }
    }

    /// Builds the network for `input` = `[channels, height, width]` images (square ones: the
    /// networks take the height as their side) and `classes` classes on `device`.
    /// Weights are drawn from the backend's RNG: seed it first. (Build on the inner backend,
    /// or call `valid()`, for an inference module: batch norm keeps its statistics there.)
    pub fn build<B: Backend>(
        &self,
        input: [usize; 3],
        classes: usize,
        device: &B::Device,
    ) -> Classifier<B> {
        let [channels, side, _] = input;
        match self.clone() {
            ModelSpec::Lenet5 {
                dropout,
                activation,
                pooling,
                init,
            } => LeNet5Config::new()
                .with_in_channels(channels)
                .with_num_classes(classes)
                .with_dropout(dropout)
                .with_activation(activation)
                .with_pooling(pooling)
                .with_init(init)
                .with_image_size(side)
                .init::<B>(device)
                .into(),
            ModelSpec::SimpleCnn { image_size } => SimpleCnnConfig::new()
                .with_in_channels(channels)
                .with_num_classes(classes)
                .with_image_size(image_size.unwrap_or(side))
                .init::<B>(device)
                .into(),
            ModelSpec::Convnet { dropout } => ConvNetConfig::new()
                .with_in_channels(channels)
                .with_num_classes(classes)
                .with_dropout(dropout)
                .with_image_size(side)
                .init::<B>(device)
                .into(),
            ModelSpec::CnnDropout {
                conv_dropout,
                fc_dropout,
            } => CnnDropoutConfig::new()
                .with_in_channels(channels)
                .with_num_classes(classes)
                .with_conv_dropout(conv_dropout)
                .with_fc_dropout(fc_dropout)
                .with_image_size(side)
                .init::<B>(device)
                .into(),
            ModelSpec::Resnet { .. } => self
                .resnet_config(channels, classes)
                .expect("matched a ResNet")
                .init::<B>(device)
                .into(),
            ModelSpec::Airbench { .. } => self
                .airbench_config(channels, side, classes)
                .expect("matched airbench")
                .init::<B>(device)
                .into(),
        }
    }

    fn airbench_config(
        &self,
        channels: usize,
        side: usize,
        classes: usize,
    ) -> Option<AirbenchConfig> {
        let ModelSpec::Airbench {
            widths,
            whiten_kernel,
            whiten_images,
            whiten_eps,
            bn_momentum,
            bn_eps,
            logit_scale,
        } = self.clone()
        else {
            return None;
        };
        Some(
            AirbenchConfig::new()
                .with_widths(widths)
                .with_whiten_kernel(whiten_kernel)
                .with_whiten_images(whiten_images)
                .with_whiten_eps(whiten_eps)
                .with_bn_momentum(bn_momentum)
                .with_bn_eps(bn_eps)
                .with_logit_scale(logit_scale)
                .with_in_channels(channels)
                .with_image_size(side)
                .with_num_classes(classes),
        )
    }

    fn resnet_config(&self, channels: usize, classes: usize) -> Option<ResNetConfig> {
        let ModelSpec::Resnet {
            blocks,
            widths,
            stem,
            head_pool,
            bn_eps,
            stem_bn_eps,
            stem_padding,
            conv_bias,
            relu_before_add,
            shortcut_bn,
            init,
        } = self.clone()
        else {
            return None;
        };
        Some(
            ResNetConfig::new(blocks, widths, stem, head_pool)
                .with_in_channels(channels)
                .with_num_classes(classes)
                .with_bn_eps(bn_eps)
                .with_stem_bn_eps(stem_bn_eps)
                .with_stem_padding(stem_padding)
                .with_conv_bias(conv_bias)
                .with_relu_before_add(relu_before_add)
                .with_shortcut_bn(shortcut_bn)
                .with_init(init),
        )
    }

    /// Checks every value; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let probability = |key: &str, p: f64| {
            if (0.0..1.0).contains(&p) {
                Ok(())
            } else {
                Err(format!(
                    "model.{key}: expected a value in [0, 1), found {p}"
                ))
            }
        };
        match self {
            ModelSpec::Lenet5 { dropout, .. } | ModelSpec::Convnet { dropout } => {
                probability("dropout", *dropout)
            }
            ModelSpec::CnnDropout {
                conv_dropout,
                fc_dropout,
            } => {
                probability("conv_dropout", *conv_dropout)?;
                probability("fc_dropout", *fc_dropout)
            }
            ModelSpec::SimpleCnn {
                image_size: Some(image_size),
            } if *image_size < 4 => Err(format!(
                "model.image_size: expected at least 4, found {image_size}"
            )),
            ModelSpec::SimpleCnn { .. } => Ok(()),
            ModelSpec::Resnet { .. } => {
                let config = self.resnet_config(3, 10).expect("matched a ResNet");
                config.validate().map_err(|e| format!("model.{e}"))
            }
            // The image size is checked again when the network is built for the data.
            ModelSpec::Airbench { .. } => self.check_input([3, 32, 32], 10),
        }
    }
}
