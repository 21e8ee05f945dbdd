//! Batch normalisation of `[N, C, H, W]` activations per channel, with the kernels a backend
//! registered, else Burn's ops.
//!
//! Training normalises with the batch's mean and biased variance (what PyTorch's
//! `BatchNorm2d` does); the caller keeps the running statistics (PyTorch updates them with the
//! unbiased variance, see `kiln_models::BatchNorm`). Inference normalises with given ones.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{activation, Tensor, TensorPrimitive};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};

/// A training-mode batch norm's output and the batch statistics it normalised with.
#[derive(Debug, Clone)]
pub struct BatchStats<B: Backend> {
    /// `(x - mean) / sqrt(var + epsilon) * gamma + beta`, shaped like the input.
    pub output: Tensor<B, 4>,
    /// The per-channel mean over batch, height and width (`[C]`, outside the autodiff graph).
    pub mean: Tensor<B, 1>,
    /// The per-channel biased variance, the one the output was normalised with (`[C]`,
    /// outside the autodiff graph).
    pub var: Tensor<B, 1>,
}

/// Training-mode batch norm: `x` (`[N, C, H, W]`) normalised by its own per-channel statistics,
/// scaled by `gamma` and shifted by `beta` (each `[C]`), then through a ReLU where `relu` is
/// set (the pair ResNets apply after most convolutions, fused where a kernel can). Gradients
/// flow to all three.
pub fn train<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
    relu: bool,
) -> BatchStats<B> {
    match entry::<B>().and_then(|entry| entry.train) {
        Some(kernel) => kernel(x, gamma, beta, epsilon, relu),
        None => default_train(x, gamma, beta, epsilon, relu),
    }
}

/// Inference-mode batch norm: `x` normalised with the given per-channel `mean` and `var`, then
/// through a ReLU where `relu` is set.
pub fn inference<B: Backend>(
    x: Tensor<B, 4>,
    stats: Stats<B>,
    epsilon: f64,
    relu: bool,
) -> Tensor<B, 4> {
    match entry::<B>().and_then(|entry| entry.inference) {
        Some(kernel) => kernel(x, stats, epsilon, relu),
        None => default_inference(x, stats, epsilon, relu),
    }
}

/// What inference normalises with, per channel (each `[C]`).
#[derive(Debug, Clone)]
pub struct Stats<B: Backend> {
    /// The mean to subtract.
    pub mean: Tensor<B, 1>,
    /// The variance to divide by (its square root, with epsilon).
    pub var: Tensor<B, 1>,
    /// The scale after normalising.
    pub gamma: Tensor<B, 1>,
    /// The shift after scaling.
    pub beta: Tensor<B, 1>,
}

/// [`train`] in Burn's ops, for any backend: four passes over the activations forward (Burn's
/// own `BatchNorm` makes about six and two copies), and autodiff's backward through them.
pub fn default_train<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
    relu: bool,
) -> BatchStats<B> {
    let channels = x.dims()[1];
    let per_channel = [1, channels, 1, 1];
    let mean = channel_mean(x.clone());
    let centered = x - mean.clone();
    let var = channel_mean(centered.clone().powi_scalar(2));
    let scale = var.clone().add_scalar(epsilon).sqrt().recip() * gamma.reshape(per_channel);
    let output = centered * scale + beta.reshape(per_channel);
    BatchStats {
        output: if relu {
            activation::relu(output)
        } else {
            output
        },
        mean: mean.detach().reshape([channels]),
        var: var.detach().reshape([channels]),
    }
}

/// [`inference`] in Burn's ops, for any backend: the statistics folded into one scale and one
/// shift per channel first, so two passes over the activations.
pub fn default_inference<B: Backend>(
    x: Tensor<B, 4>,
    stats: Stats<B>,
    epsilon: f64,
    relu: bool,
) -> Tensor<B, 4> {
    let per_channel = [1, x.dims()[1], 1, 1];
    let scale = stats.var.add_scalar(epsilon).sqrt().recip() * stats.gamma;
    let shift = stats.beta - stats.mean * scale.clone();
    let output = x * scale.reshape(per_channel) + shift.reshape(per_channel);
    if relu {
        activation::relu(output)
    } else {
        output
    }
}

/// The mean over batch, height and width, kept as `[1, C, 1, 1]`. The batch goes first: each
/// reduction then averages equal-sized groups, so the mean of means is the mean.
fn channel_mean<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    x.mean_dim(0).mean_dim(2).mean_dim(3)
}

/// What [`BatchNormKernels::batch_norm_train`] returns, each a primitive of the backend.
#[derive(Debug, Clone)]
pub struct TrainForward<B: Backend> {
    /// The normalised, scaled and shifted output, shaped like the input.
    pub output: FloatTensor<B>,
    /// Per-channel mean (`[C]`).
    pub mean: FloatTensor<B>,
    /// Per-channel biased variance (`[C]`).
    pub var: FloatTensor<B>,
    /// Per-channel `1 / sqrt(var + epsilon)` (`[C]`), kept for the backward pass.
    pub invstd: FloatTensor<B>,
}

/// A backend's own batch-norm kernels, on its primitives. Inputs are `[N, C, H, W]` and `[C]`
/// float tensors on one device. Register them with [`register_kernels`].
pub trait BatchNormKernels: Backend {
    /// Training forward: `x` normalised with its own per-channel mean and biased variance, then
    /// `max(0, .)` where `relu` is set.
    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> TrainForward<Self>;

    /// The gradients of `x`, `gamma` and `beta`, in that order, given the output's gradient and
    /// what [`Self::batch_norm_train`] returned for `x`. `relu_output` is that output where the
    /// ReLU was applied: the gradient passes where it is positive.
    fn batch_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        invstd: FloatTensor<Self>,
        relu_output: Option<FloatTensor<Self>>,
        grad_output: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3];

    /// Inference: `x` normalised with the given per-channel `mean` and `var`, then `max(0, .)`
    /// where `relu` is set.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_inference(
        x: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<Self>;
}

/// Makes [`train`] and [`inference`] run `K`'s kernels for the backend `K` and for
/// `Autodiff<K>` (whose training step then has one autodiff node per batch norm, with `K`'s
/// backward). Registering again replaces the earlier entry; it is cheap and thread-safe.
pub fn register_kernels<K: BatchNormKernels>() {
    register::<K>(Entry {
        train: Some(train_plain::<K>),
        inference: Some(inference_plain::<K>),
    });
    register::<Autodiff<K>>(Entry {
        train: Some(train_autodiff::<K, NoCheckpointing>),
        // Inference on an autodiff backend (a model in training mode asked for running
        // statistics) stays with the default, whose gradient autodiff knows.
        inference: None,
    });
}

/// Whether kernels are registered for the backend `B` (else [`train`] and [`inference`] run
/// the defaults).
pub fn kernels_registered<B: Backend>() -> bool {
    entry::<B>().is_some()
}

type TrainFn<B> = fn(Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 1>, f64, bool) -> BatchStats<B>;
type InferenceFn<B> = fn(Tensor<B, 4>, Stats<B>, f64, bool) -> Tensor<B, 4>;

struct Entry<B: Backend> {
    train: Option<TrainFn<B>>,
    inference: Option<InferenceFn<B>>,
}

// Function pointers copy whatever `B` is; a derive would ask `B: Copy`.
impl<B: Backend> Clone for Entry<B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for Entry<B> {}

/// Backend type -> its `Entry<B>`, boxed as `Any` because each entry has its own `B`.
type Registry = RwLock<HashMap<TypeId, Box<dyn Any + Send + Sync>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn register<B: Backend>(entry: Entry<B>) {
    // A panic elsewhere while the lock was held cannot leave a half-written map: insert is the
    // only write, so a poisoned lock is still a consistent one.
    let mut map = registry().write().unwrap_or_else(|e| e.into_inner());
    map.insert(TypeId::of::<B>(), Box::new(entry));
}

fn entry<B: Backend>() -> Option<Entry<B>> {
    let map = registry().read().unwrap_or_else(|e| e.into_inner());
    map.get(&TypeId::of::<B>())?
        .downcast_ref::<Entry<B>>()
        .copied()
}

fn float<B: Backend, const D: usize>(primitive: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

fn primitive<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> FloatTensor<B> {
    tensor.into_primitive().tensor()
}

fn train_plain<K: BatchNormKernels>(
    x: Tensor<K, 4>,
    gamma: Tensor<K, 1>,
    beta: Tensor<K, 1>,
    epsilon: f64,
    relu: bool,
) -> BatchStats<K> {
    let forward = K::batch_norm_train(
        primitive(x),
        primitive(gamma),
        primitive(beta),
        epsilon,
        relu,
    );
    BatchStats {
        output: float(forward.output),
        mean: float(forward.mean),
        var: float(forward.var),
    }
}

fn inference_plain<K: BatchNormKernels>(
    x: Tensor<K, 4>,
    stats: Stats<K>,
    epsilon: f64,
    relu: bool,
) -> Tensor<K, 4> {
    float(K::batch_norm_inference(
        primitive(x),
        primitive(stats.mean),
        primitive(stats.var),
        primitive(stats.gamma),
        primitive(stats.beta),
        epsilon,
        relu,
    ))
}

/// The autodiff node of one training-mode batch norm: its parents are `x`, `gamma`, `beta`.
#[derive(Debug)]
struct BatchNormBackward;

impl<K: BatchNormKernels> Backward<K, 3> for BatchNormBackward {
    /// `x`, `gamma`, the batch mean, `1 / sqrt(var + epsilon)` and the output where a ReLU
    /// followed.
    type State = (
        FloatTensor<K>,
        FloatTensor<K>,
        FloatTensor<K>,
        FloatTensor<K>,
        Option<FloatTensor<K>>,
    );

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad_output = grads.consume::<K>(&ops.node);
        let (x, gamma, mean, invstd, relu_output) = ops.state;
        let input_grads = K::batch_norm_backward(x, gamma, mean, invstd, relu_output, grad_output);
        for (parent, grad) in ops.parents.into_iter().zip(input_grads) {
            if let Some(parent) = parent {
                grads.register::<K>(parent.id, grad);
            }
        }
    }
}

fn train_autodiff<K: BatchNormKernels, C: CheckpointStrategy>(
    x: Tensor<Autodiff<K, C>, 4>,
    gamma: Tensor<Autodiff<K, C>, 1>,
    beta: Tensor<Autodiff<K, C>, 1>,
    epsilon: f64,
    relu: bool,
) -> BatchStats<Autodiff<K, C>> {
    let (x, gamma, beta) = (primitive(x), primitive(gamma), primitive(beta));
    let forward = K::batch_norm_train(
        x.primitive.clone(),
        gamma.primitive.clone(),
        beta.primitive.clone(),
        epsilon,
        relu,
    );
    let output = match BatchNormBackward
        .prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let relu_output = relu.then(|| forward.output.clone());
            let state = (
                x.primitive,
                gamma.primitive,
                forward.mean.clone(),
                forward.invstd,
                relu_output,
            );
            prep.finish(state, forward.output)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward.output),
    };
    BatchStats {
        output: float(output),
        mean: Tensor::from_inner(float(forward.mean)),
        var: Tensor::from_inner(float(forward.var)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData, Tolerance};
    use burn_ndarray::NdArray;

    type B = NdArray<f32>;

    fn sample(device: &burn_ndarray::NdArrayDevice) -> Tensor<B, 4> {
        // Per-channel offsets far from zero, so a variance computed as E[x^2] - E[x]^2 would
        // lose digits that the centred one keeps.
        Tensor::<B, 4>::random([3, 2, 4, 5], Distribution::Normal(0.0, 1.0), device)
            + Tensor::<B, 1>::from_floats([100.0, -3.0], device).reshape([1, 2, 1, 1])
    }

    /// The statistics and output written out in f64, element by element.
    fn reference(x: &[f32], gamma: [f64; 2], beta: [f64; 2], eps: f64) -> (Vec<f64>, [f64; 4]) {
        let (n, c, hw) = (3, 2, 20);
        let mut out = vec![0.0; x.len()];
        let mut stats = [0.0; 4];
        for ch in 0..c {
            let values: Vec<(usize, f64)> = (0..n)
                .flat_map(|i| (0..hw).map(move |j| i * c * hw + ch * hw + j))
                .map(|k| (k, x[k] as f64))
                .collect();
            let count = values.len() as f64;
            let mean = values.iter().map(|v| v.1).sum::<f64>() / count;
            let var = values.iter().map(|v| (v.1 - mean).powi(2)).sum::<f64>() / count;
            for &(k, v) in &values {
                out[k] = (v - mean) / (var + eps).sqrt() * gamma[ch] + beta[ch];
            }
            stats[ch] = mean;
            stats[2 + ch] = var;
        }
        (out, stats)
    }

    #[test]
    fn default_train_matches_the_definition() {
        let device = Default::default();
        let x = sample(&device);
        let gamma = Tensor::<B, 1>::from_floats([0.5, 2.0], &device);
        let beta = Tensor::<B, 1>::from_floats([1.0, -1.0], &device);
        let stats = default_train(x.clone(), gamma, beta, 1e-5, false);
        let values = x.into_data().to_vec::<f32>().unwrap();
        let (out, [m0, m1, v0, v1]) = reference(&values, [0.5, 2.0], [1.0, -1.0], 1e-5);
        let tolerance = Tolerance::<f32>::absolute(1e-4);
        stats.output.into_data().assert_approx_eq::<f32>(
            &TensorData::new(out.iter().map(|&v| v as f32).collect(), [3, 2, 4, 5]),
            tolerance,
        );
        stats
            .mean
            .into_data()
            .assert_approx_eq::<f32>(&TensorData::from([m0 as f32, m1 as f32]), tolerance);
        stats
            .var
            .into_data()
            .assert_approx_eq::<f32>(&TensorData::from([v0 as f32, v1 as f32]), tolerance);
    }

    #[test]
    fn default_inference_uses_the_given_statistics() {
        let device = Default::default();
        let x = sample(&device);
        let values = x.to_data().to_vec::<f32>().unwrap();
        let (mean, var) = ([99.0f32, -2.0], [4.0f32, 0.25]);
        let stats = Stats {
            mean: Tensor::from_floats(mean, &device),
            var: Tensor::from_floats(var, &device),
            gamma: Tensor::from_floats([0.5, 2.0], &device),
            beta: Tensor::from_floats([1.0, -1.0], &device),
        };
        let out = default_inference(x.clone(), stats.clone(), 1e-5, false);
        let with_relu = default_inference(x, stats, 1e-5, true);
        with_relu.into_data().assert_approx_eq::<f32>(
            &activation::relu(out.clone()).into_data(),
            Tolerance::absolute(0.0),
        );
        let expected: Vec<f32> = values
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                let ch = (k / 20) % 2;
                let gamma = [0.5, 2.0][ch];
                let beta = [1.0, -1.0][ch];
                (v - mean[ch]) / (var[ch] + 1e-5).sqrt() * gamma + beta
            })
            .collect();
        out.into_data().assert_approx_eq::<f32>(
            &TensorData::new(expected, [3, 2, 4, 5]),
            Tolerance::absolute(1e-4),
        );
    }

    #[test]
    fn nothing_is_registered_for_a_backend_that_registered_nothing() {
        assert!(!kernels_registered::<B>());
        assert!(!kernels_registered::<Autodiff<B>>());
    }
}
