//! Small building blocks whose choice is part of a network's published shape.

use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Relu, Sigmoid};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// The non-linearity of a network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationKind {
    /// `max(x, 0)`, the modern choice.
    #[default]
    Relu,
    /// The logistic function, as in 1998.
    Sigmoid,
}

/// Down-sampling by a window: max or average.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolingKind {
    /// The window's maximum.
    #[default]
    Max,
    /// The window's mean.
    Avg,
}

/// The module an [`ActivationKind`] builds.
#[derive(Module, Clone, Debug)]
pub enum Activation {
    /// See [`ActivationKind::Relu`].
    Relu(Relu),
    /// See [`ActivationKind::Sigmoid`].
    Sigmoid(Sigmoid),
}

impl ActivationKind {
    /// The activation module.
    pub fn init(self) -> Activation {
        match self {
            ActivationKind::Relu => Activation::Relu(Relu::new()),
            ActivationKind::Sigmoid => Activation::Sigmoid(Sigmoid::new()),
        }
    }
}

impl<B: Backend> crate::probe::Layer<B> for Activation {
    fn kind(&self) -> &'static str {
        match self {
            Activation::Relu(_) => "ReLU",
            Activation::Sigmoid(_) => "Sigmoid",
        }
    }
}

impl Activation {
    /// Applies the activation element-wise.
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Relu(a) => a.forward(x),
            Activation::Sigmoid(a) => a.forward(x),
        }
    }
}

/// The module a [`PoolingKind`] builds.
#[derive(Module, Clone, Debug)]
pub enum Pool2d {
    /// The window's maximum.
    Max(MaxPool2d),
    /// The window's mean.
    Avg(AvgPool2d),
}

impl PoolingKind {
    /// A `size` x `size` window with stride `size` (PyTorch's `MaxPool2d(size)` / `AvgPool2d(size)`).
    pub fn init(self, size: usize) -> Pool2d {
        match self {
            PoolingKind::Max => Pool2d::Max(
                MaxPool2dConfig::new([size, size])
                    .with_strides([size, size])
                    .init(),
            ),
            PoolingKind::Avg => Pool2d::Avg(
                AvgPool2dConfig::new([size, size])
                    .with_strides([size, size])
                    .init(),
            ),
        }
    }
}

impl<B: Backend> crate::probe::Layer<B> for Pool2d {
    fn kind(&self) -> &'static str {
        match self {
            Pool2d::Max(_) => "MaxPool2d",
            Pool2d::Avg(_) => "AvgPool2d",
        }
    }
}

impl Pool2d {
    /// Pools `[batch, channels, height, width]`.
    pub fn forward<B: Backend>(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Pool2d::Max(p) => p.forward(x),
            Pool2d::Avg(p) => p.forward(x),
        }
    }
}
