//! Weight initialisation choices shared by the networks.

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{Initializer, Linear};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// How conv and linear *weights* start. Biases always keep PyTorch's default
/// (uniform in ±1/sqrt(fan_in)), as `nn.init.xavier_uniform_(m.weight)` in the tutorials leaves them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightInit {
    /// PyTorch's default: Kaiming-uniform with a = sqrt(5), i.e. uniform in ±1/sqrt(fan_in).
    #[default]
    Default,
    /// Glorot/Xavier uniform: uniform in ±sqrt(6 / (fan_in + fan_out)).
    XavierUniform,
}

impl WeightInit {
    pub(crate) fn conv2d<B: Backend>(self, mut conv: Conv2d<B>, device: &B::Device) -> Conv2d<B> {
        if self == WeightInit::XavierUniform {
            let [out, inp, kh, kw] = conv.weight.dims();
            let receptive = kh * kw;
            conv.weight = xavier([out, inp, kh, kw], inp * receptive, out * receptive, device);
        }
        conv
    }

    pub(crate) fn linear<B: Backend>(self, mut linear: Linear<B>, device: &B::Device) -> Linear<B> {
        if self == WeightInit::XavierUniform {
            // Burn stores linear weights as [in, out].
            let [inp, out] = linear.weight.dims();
            linear.weight = xavier([inp, out], inp, out, device);
        }
        linear
    }
}

fn xavier<B: Backend, const D: usize>(
    shape: [usize; D],
    fan_in: usize,
    fan_out: usize,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Initializer::XavierUniform { gain: 1.0 }.init_with(shape, Some(fan_in), Some(fan_out), device)
}
