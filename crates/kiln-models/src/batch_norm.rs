//! Kiln's 2-D batch norm: PyTorch's `BatchNorm2d`, through the backend's fused kernels where it
//! registered some ([`kiln_fused::batch_norm`]).
//!
//! It replaces `burn::nn::BatchNorm` in Kiln's networks for two reasons. Speed: Burn's is about
//! ten primitive ops each way, and Burn's backend traits have no batch-norm op a backend could
//! take over, so the fused kernels are reached through kiln-fused's registry instead (every
//! other backend runs the same arithmetic in Burn's ops). Fidelity: PyTorch updates the running
//! variance with the batch's *unbiased* variance (`n / (n - 1)` times the one it normalises
//! with); Burn's with the biased one, which evaluates every tutorial network with a running
//! variance a little smaller than PyTorch's (by 1/16 after a last batch of 16 images).
//!
//! The fields, their names and the struct's name are Burn's, so records saved with
//! `burn::nn::BatchNorm` load unchanged and burn-store's PyTorch adapter (`weight` -> `gamma`,
//! `bias` -> `beta`, keyed on the `BatchNorm` container) still applies.

use std::cell::Cell;

use burn::module::{Param, RunningState};
use burn::prelude::*;

thread_local! {
    /// The momentum [`with_momentum`] imposes on this thread's batch norms, if any.
    static MOMENTUM: Cell<Option<f64>> = const { Cell::new(None) };
}

/// Runs `f` with every [`BatchNorm`] that trains on this thread weighting the batch's
/// statistics by `momentum` in its running ones, in place of its own momentum.
///
/// Recomputing the running statistics under fixed weights (what `recompute_bn_batches` of
/// Kiln's recipe does before evaluating) calls it with `1 / (k + 1)` for the k-th batch from 0:
/// the first batch's statistics replace the old ones, and after K batches the running mean and
/// variance are the plain averages of the K batches' (Wu and Johnson, "Rethinking 'Batch' in
/// BatchNorm", 2021, call this precise batch norm). A thread-local rather than a field, so it
/// reaches every batch norm of any network without a visitor over their configs.
pub fn with_momentum<R>(momentum: f64, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<f64>);
    impl Drop for Restore {
        fn drop(&mut self) {
            MOMENTUM.with(|m| m.set(self.0));
        }
    }
    let _restore = Restore(MOMENTUM.with(|m| m.replace(Some(momentum))));
    f()
}

/// Builds a [`BatchNorm`]; PyTorch's defaults.
#[derive(Config, Debug)]
pub struct BatchNormConfig {
    /// Channels (`C` of `[N, C, H, W]`).
    pub num_features: usize,
    /// Added to the variance before its square root.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Weight of each batch's statistics in the running ones.
    #[config(default = 0.1)]
    pub momentum: f64,
    /// Learn a per-channel scale. Without it `gamma` stays one, as with airbench94's batch
    /// norms (its `weight.requires_grad = False`): a scale before a ReLU-like activation and
    /// a convolution adds nothing those cannot do, and freezing it saves its gradient.
    #[config(default = true)]
    pub learn_scale: bool,
}

impl BatchNormConfig {
    /// `gamma` ones, `beta` zeros, running mean zeros and running variance ones, as PyTorch.
    pub fn init<B: Backend>(&self, device: &B::Device) -> BatchNorm<B> {
        let n = self.num_features;
        let gamma = Param::from_tensor(Tensor::ones([n], device));
        BatchNorm {
            // Frozen by `require_grad`, which Burn keeps through records and `valid()`: the
            // field stays, so weight files have the same entries either way.
            gamma: if self.learn_scale {
                gamma
            } else {
                gamma.set_require_grad(false)
            },
            beta: Param::from_tensor(Tensor::zeros([n], device)),
            running_mean: RunningState::new(Tensor::zeros([n], device)),
            running_var: RunningState::new(Tensor::ones([n], device)),
            momentum: self.momentum,
            epsilon: self.epsilon,
        }
    }
}

/// Batch normalisation of `[N, C, H, W]` per channel: in training (an autodiff backend) with
/// the batch's statistics, updating the running ones as PyTorch does; otherwise with the
/// running ones.
#[derive(Module, Debug)]
pub struct BatchNorm<B: Backend> {
    /// Per-channel scale.
    pub gamma: Param<Tensor<B, 1>>,
    /// Per-channel shift.
    pub beta: Param<Tensor<B, 1>>,
    /// Running mean, for inference.
    pub running_mean: RunningState<Tensor<B, 1>>,
    /// Running unbiased variance, for inference.
    pub running_var: RunningState<Tensor<B, 1>>,
    /// Weight of each batch's statistics in the running ones.
    pub momentum: f64,
    /// Added to the variance before its square root.
    pub epsilon: f64,
}

impl<B: Backend> BatchNorm<B> {
    /// Normalises `x` (`[N, C, H, W]`). Training mode (as Burn's: the backend has autodiff
    /// enabled) uses and records the batch's statistics; inference uses the running ones.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_with(x, false)
    }

    /// `relu(self.forward(x))`, in one kernel where the backend has one: the pair that follows
    /// most convolutions of a ResNet.
    pub fn forward_relu(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_with(x, true)
    }

    fn forward_with(&self, x: Tensor<B, 4>, relu: bool) -> Tensor<B, 4> {
        use kiln_fused::batch_norm;
        let device = x.device();
        if !B::ad_enabled(&device) {
            let stats = batch_norm::Stats {
                mean: self.running_mean.value().to_device(&device),
                var: self.running_var.value().to_device(&device),
                gamma: self.gamma.val(),
                beta: self.beta.val(),
            };
            return batch_norm::inference(x, stats, self.epsilon, relu);
        }
        let [n, _, h, w] = x.dims();
        let count = (n * h * w) as f64;
        let stats = batch_norm::train(x, self.gamma.val(), self.beta.val(), self.epsilon, relu);
        // PyTorch's update (`torch/nn/modules/batchnorm.py`, `_BatchNorm.forward`): the running
        // variance takes the unbiased estimate; a single value per channel has none, so its
        // biased one (zero) stands in rather than a division by zero.
        let unbiased = if count > 1.0 {
            count / (count - 1.0)
        } else {
            1.0
        };
        let m = MOMENTUM.with(Cell::get).unwrap_or(self.momentum);
        let running_mean = self.running_mean.value_sync().to_device(&device);
        let running_var = self.running_var.value_sync().to_device(&device);
        self.running_mean
            .update((running_mean.mul_scalar(1.0 - m) + stats.mean.mul_scalar(m)).detach());
        self.running_var.update(
            (running_var.mul_scalar(1.0 - m) + stats.var.mul_scalar(m * unbiased)).detach(),
        );
        stats.output
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};
    use burn_autodiff::Autodiff;
    use burn_ndarray::NdArray;

    type B = Autodiff<NdArray<f32>>;

    #[test]
    fn momenta_of_one_over_k_plus_one_average_the_batches_statistics() {
        let device = Default::default();
        let bn = BatchNormConfig::new(2).init::<B>(&device);
        let batches: Vec<_> = (0..3)
            .map(|k| {
                let mean = 1.0 + 2.0 * k as f64;
                Tensor::<B, 4>::random(
                    [4, 2, 3, 3],
                    Distribution::Normal(mean, 1.0 + k as f64),
                    &device,
                )
            })
            .collect();
        for (k, x) in batches.iter().enumerate() {
            with_momentum(1.0 / (k as f64 + 1.0), || bn.forward(x.clone()));
        }
        let per_channel = |x: &Tensor<B, 4>| x.clone().swap_dims(0, 1).reshape([2, 36]);
        // The mean over the batches of a per-channel statistic.
        let average = |statistic: fn(Tensor<B, 2>) -> Tensor<B, 2>| {
            let sum = batches
                .iter()
                .map(|x| statistic(per_channel(x)).reshape([2]))
                .reduce(|a, b| a + b);
            sum.unwrap().div_scalar(3.0)
        };
        let mean = average(|x| x.mean_dim(1));
        let var = average(|x| x.var(1));
        let tolerance = Tolerance::<f32>::absolute(1e-5);
        bn.running_mean
            .value_sync()
            .into_data()
            .assert_approx_eq::<f32>(&mean.into_data(), tolerance);
        bn.running_var
            .value_sync()
            .into_data()
            .assert_approx_eq::<f32>(&var.into_data(), tolerance);

        // Outside the closure the module's own momentum applies again.
        let before = bn.running_mean.value_sync().into_data();
        bn.forward(batches[0].clone());
        let after = bn.running_mean.value_sync().into_data();
        let first = per_channel(&batches[0])
            .mean_dim(1)
            .reshape([2])
            .into_data();
        let expected: Vec<f32> = before
            .iter::<f32>()
            .zip(first.iter::<f32>())
            .map(|(r, b)| 0.9 * r + 0.1 * b)
            .collect();
        after.assert_approx_eq::<f32>(&TensorData::new(expected, [2]), tolerance);
    }

    #[test]
    fn training_updates_the_running_statistics_as_pytorch_does() {
        let device = Default::default();
        let bn = BatchNormConfig::new(2).init::<B>(&device);
        let x = Tensor::<B, 4>::random([4, 2, 3, 3], Distribution::Normal(2.0, 3.0), &device);
        bn.forward(x.clone());

        // torch.nn.BatchNorm2d, momentum 0.1: running = 0.9 * running + 0.1 * batch, with the
        // variance's divisor n - 1 (n = 4 * 3 * 3 values per channel).
        let per_channel = x.swap_dims(0, 1).reshape([2, 36]);
        let mean = per_channel.clone().mean_dim(1).reshape([2]);
        let var = per_channel.var(1).reshape([2]); // Burn's `var` divides by n - 1
        let tolerance = Tolerance::<f32>::absolute(1e-5);
        bn.running_mean
            .value_sync()
            .into_data()
            .assert_approx_eq::<f32>(&(mean.mul_scalar(0.1)).into_data(), tolerance);
        bn.running_var
            .value_sync()
            .into_data()
            .assert_approx_eq::<f32>(
                &(var.mul_scalar(0.1).add_scalar(0.9)).into_data(),
                tolerance,
            );
    }

    #[test]
    fn inference_normalises_with_the_running_statistics() {
        let device = Default::default();
        let mut bn = BatchNormConfig::new(2).init::<NdArray<f32>>(&device);
        bn.running_mean = RunningState::new(Tensor::from_floats([1.0, -1.0], &device));
        bn.running_var = RunningState::new(Tensor::from_floats([4.0, 0.25], &device));
        let x = Tensor::<NdArray<f32>, 4>::from_floats([[[[3.0]], [[0.0]]]], &device);
        let y = bn.forward(x);
        let expected = [2.0 / (4.0f32 + 1e-5).sqrt(), 1.0 / (0.25f32 + 1e-5).sqrt()];
        y.reshape([2]).into_data().assert_approx_eq::<f32>(
            &burn::tensor::TensorData::from(expected),
            Tolerance::absolute(1e-6),
        );
    }

    #[test]
    fn records_of_burns_batch_norm_load_into_kilns() {
        use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
        let device = Default::default();
        let mut burns = burn::nn::BatchNormConfig::new(2).init::<NdArray<f32>>(&device);
        burns.gamma = Param::from_tensor(Tensor::from_floats([3.0, 4.0], &device));
        burns.running_var = RunningState::new(Tensor::from_floats([5.0, 6.0], &device));
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::new();
        let bytes = recorder.record(burns.into_record(), ()).unwrap();
        let record: BatchNormRecord<NdArray<f32>> = recorder.load(bytes, &device).unwrap();
        let kilns = BatchNormConfig::new(2)
            .init::<NdArray<f32>>(&device)
            .load_record(record);
        assert_eq!(
            kilns.gamma.val().into_data().to_vec::<f32>().unwrap(),
            [3.0, 4.0]
        );
        assert_eq!(
            kilns
                .running_var
                .value()
                .into_data()
                .to_vec::<f32>()
                .unwrap(),
            [5.0, 6.0]
        );
    }
}
