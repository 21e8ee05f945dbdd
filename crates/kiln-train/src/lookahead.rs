//! Lookahead: an exponential average of the weights that the training weights are reset to
//! every few steps, as airbench94 uses it (its `LookaheadState`; after Zhang et al.,
//! "Lookahead Optimizer: k steps forward, 1 step back", 2019, with an average in place of
//! Lookahead's single slow copy).
//!
//! Every `every` steps from epoch `from_epoch` on, the average moves towards the weights,
//! `avg = rho avg + (1 - rho) w`, and the weights become the average. `rho` grows over the
//! run as `decay (step / steps)^power`, so early averaging barely slows training and late
//! averaging smooths strongly. At the end of the fit the weights become the average once more
//! (airbench's final `update(model, decay=1.0)`), dropping the steps since the last averaging;
//! the epochs before end on the training weights, which their evaluations see, as airbench's
//! do. The first averaging step only takes a copy (airbench starts from the initial weights,
//! but its first `rho` is under 1e-6). Batch norms' running statistics are averaged with the
//! weights, as airbench94 averages its whole `state_dict`.

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::LookaheadSpec;

/// The averaged weights (and running statistics), flat, by Burn's parameter id.
#[derive(Clone)]
pub(crate) struct Averaged<B: AutodiffBackend> {
    values: HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> Averaged<B> {
    /// A copy of `model`'s weights and running statistics.
    pub(crate) fn of<M: AutodiffModule<B>>(model: &M) -> Self {
        Self::copy_synced(&synchronised(model))
    }

    /// `avg = rho avg + (1 - rho) w`, and `model` with the new average as its weights.
    pub(crate) fn update<M: AutodiffModule<B>>(&mut self, model: M, rho: f64) -> M {
        let model = synchronised(&model);
        let current = Self::copy_synced(&model);
        for (id, avg) in self.values.iter_mut() {
            if let Some(w) = current.values.get(id) {
                *avg = avg.clone().mul_scalar(rho) + w.clone().mul_scalar(1.0 - rho);
            }
        }
        self.set_synced(model)
    }

    /// `model` with the averaged values as its weights and running statistics.
    pub(crate) fn load_into<M: AutodiffModule<B>>(&self, model: M) -> M {
        self.set_synced(synchronised(&model))
    }

    fn copy_synced<M: AutodiffModule<B>>(model: &M) -> Self {
        struct Copy<B: AutodiffBackend>(HashMap<ParamId, Tensor<B::InnerBackend, 1>>);
        impl<B: AutodiffBackend> ModuleVisitor<B> for Copy<B> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let value = param.val().inner();
                let n = value.shape().num_elements();
                self.0.insert(param.id, value.reshape([n]));
            }
        }
        let mut copy = Copy::<B>(HashMap::new());
        model.visit(&mut copy);
        Averaged { values: copy.0 }
    }

    fn set_synced<M: AutodiffModule<B>>(&self, model: M) -> M {
        struct Set<'a, B: AutodiffBackend>(&'a HashMap<ParamId, Tensor<B::InnerBackend, 1>>);
        impl<B: AutodiffBackend> ModuleMapper<B> for Set<'_, B> {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                let Some(value) = self.0.get(&param.id) else {
                    return param;
                };
                let (id, tensor, mapper) = param.consume();
                let trains = tensor.is_require_grad();
                let mut value = Tensor::from_inner(value.clone().reshape(tensor.shape()));
                if trains {
                    value = value.require_grad();
                }
                Param::from_mapped_value(id, value, mapper)
            }
        }
        model.map(&mut Set::<B>(&self.values))
    }

    /// The averaged values as a record of `model`'s type, for a checkpoint.
    pub(crate) fn encode<M: AutodiffModule<B>>(&self, model: &M) -> Vec<u8> {
        let averaged = self.set_synced(synchronised(model));
        kiln_models::record::encode::<B, _>(averaged.into_record())
    }
}

/// `model` with its running states synchronised. A running state's newest value waits in a
/// per-thread slot until it is synchronised, which `valid()` does; reading the weights before
/// would miss it, and setting them before would be overwritten by it.
fn synchronised<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M) -> M {
    M::from_inner(model.valid())
}

/// The averaging of a fit: the recipe's settings and the average once it exists.
#[derive(Clone)]
pub(crate) struct Lookahead<B: AutodiffBackend> {
    spec: LookaheadSpec,
    total_steps: usize,
    pub(crate) averaged: Option<Averaged<B>>,
}

impl<B: AutodiffBackend> Lookahead<B> {
    pub(crate) fn new(spec: LookaheadSpec, total_steps: usize) -> Self {
        Lookahead {
            spec,
            total_steps,
            averaged: None,
        }
    }

    /// After optimiser step `step` (counted from 1 over the whole fit) of `epoch` (1-based).
    pub(crate) fn after_step<M: AutodiffModule<B>>(
        &mut self,
        model: M,
        epoch: usize,
        step: usize,
    ) -> M {
        if epoch < self.spec.from_epoch || step % self.spec.every != 0 {
            return model;
        }
        match &mut self.averaged {
            None => {
                self.averaged = Some(Averaged::of(&model));
                model
            }
            Some(averaged) => {
                let progress = step as f64 / self.total_steps.max(1) as f64;
                let rho = self.spec.decay * progress.powf(self.spec.power);
                averaged.update(model, rho)
            }
        }
    }

    /// At the end of the fit: the weights become the average, where there is one.
    pub(crate) fn end_fit<M: AutodiffModule<B>>(&self, model: M) -> M {
        match &self.averaged {
            Some(averaged) => averaged.load_into(model),
            None => model,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn_autodiff::Autodiff;
    use burn_ndarray::NdArray;
    use kiln_models::{BatchNorm, BatchNormConfig};

    type B = Autodiff<NdArray<f32>>;

    fn values<M: AutodiffModule<B>>(model: &M) -> Vec<f32> {
        let mut all: Vec<_> = Averaged::<B>::of(model).values.into_iter().collect();
        all.sort_by_key(|(id, _)| id.serialize());
        all.into_iter()
            .flat_map(|(_, v)| v.into_data().to_vec::<f32>().unwrap())
            .collect()
    }

    fn set(model: Linear<B>, value: f32) -> Linear<B> {
        let device = Default::default();
        let averaged = Averaged::<B> {
            values: Averaged::<B>::of(&model)
                .values
                .into_iter()
                .map(|(id, v)| (id, Tensor::full([v.dims()[0]], value, &device)))
                .collect(),
        };
        averaged.load_into(model)
    }

    #[test]
    fn the_average_moves_by_rho_and_the_weights_become_it() {
        let device = Default::default();
        let model = set(LinearConfig::new(2, 1).init::<B>(&device), 1.0);
        let spec = LookaheadSpec {
            every: 2,
            from_epoch: 2,
            decay: 0.5,
            power: 1.0,
        };
        let mut lookahead = Lookahead::<B>::new(spec, 8);
        // Epoch 1, or an odd step: nothing.
        let model = lookahead.after_step(model, 1, 2);
        let model = lookahead.after_step(model, 2, 3);
        assert!(lookahead.averaged.is_none());
        // The first averaging step copies.
        let model = lookahead.after_step(model, 2, 4);
        assert_eq!(values(&model), [1.0, 1.0, 1.0]);
        // Training moves the weights to 3; at step 8 of 8, rho = 0.5 * 8/8: the average is 2.
        let model = set(model, 3.0);
        let model = lookahead.after_step(model, 2, 8);
        assert_eq!(values(&model), [2.0, 2.0, 2.0]);
        // The weights still require gradients, so they keep training.
        assert!(model.weight.val().is_require_grad());
        // The end of the fit puts the average back.
        let model = set(model, 7.0);
        let model = lookahead.end_fit(model);
        assert_eq!(values(&model), [2.0, 2.0, 2.0]);
    }

    #[test]
    fn running_statistics_are_averaged_too() {
        let device = Default::default();
        let bn: BatchNorm<B> = BatchNormConfig::new(1).with_momentum(1.0).init(&device);
        let batch = |v: f32| {
            Tensor::<B, 4>::full([2, 1, 1, 1], v, &device)
                + Tensor::from_floats([[[[0.0]]], [[[2.0]]]], &device)
        };
        // Running mean 1 after a batch of {0, 2}, then 5 after one of {4, 6}.
        bn.forward(batch(0.0));
        let mut averaged = Averaged::<B>::of(&bn);
        bn.forward(batch(4.0));
        let bn = averaged.update(bn, 0.5);
        let mean = bn
            .running_mean
            .value_sync()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(mean, [3.0]);
    }
}
