//! The one place a recipe's optimiser becomes Burn's, with PyTorch's semantics
//! (`weight_decay` is the L2 term `torch.optim.Adam` and `SGD` add to the gradient).

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::tensor::backend::AutodiffBackend;

use crate::checkpoint::{Checkpoint, ResumeError};
use crate::OptimizerSpec;

/// The recipe's optimiser. An enum, so the loop is one function whatever the recipe says; a
/// new optimiser is a variant here and in [`OptimizerSpec`].
#[derive(Clone)]
pub(crate) enum RecipeOptimizer<M: AutodiffModule<B>, B: AutodiffBackend> {
    Adam(OptimizerAdaptor<Adam, M, B>),
    Sgd(OptimizerAdaptor<Sgd<B::InnerBackend>, M, B>),
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> RecipeOptimizer<M, B> {
    /// The optimiser `spec` describes, with no state yet.
    pub(crate) fn new(spec: &OptimizerSpec) -> Self {
        match spec {
            OptimizerSpec::Adam {
                weight_decay,
                betas,
                eps,
                ..
            } => {
                let config = AdamConfig::new()
                    .with_beta_1(betas[0])
                    .with_beta_2(betas[1])
                    .with_epsilon(*eps)
                    .with_weight_decay(weight_decay_config(*weight_decay));
                Self::Adam(config.init())
            }
            OptimizerSpec::Sgd {
                momentum,
                weight_decay,
                nesterov,
                ..
            } => {
                let momentum = (*momentum > 0.0).then(|| {
                    MomentumConfig::new()
                        .with_momentum(*momentum)
                        .with_dampening(0.0)
                        .with_nesterov(*nesterov)
                });
                let config = SgdConfig::new()
                    .with_momentum(momentum)
                    .with_weight_decay(weight_decay_config(*weight_decay));
                Self::Sgd(config.init())
            }
        }
    }

    /// One update of `model` by `grads` at rate `lr`.
    pub(crate) fn step(&mut self, lr: f64, model: M, grads: GradientsParams) -> M {
        match self {
            Self::Adam(o) => o.step(lr, model, grads),
            Self::Sgd(o) => o.step(lr, model, grads),
        }
    }

    /// The state (Adam's moments, SGD's momentum) as a checkpoint keeps it.
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Self::Adam(o) => kiln_models::record::encode::<B, _>(o.to_record()),
            Self::Sgd(o) => kiln_models::record::encode::<B, _>(o.to_record()),
        }
    }

    /// This optimiser with `checkpoint`'s state for `model`'s parameters.
    pub(crate) fn load(
        self,
        checkpoint: &Checkpoint,
        model: &M,
        device: &B::Device,
    ) -> Result<Self, ResumeError> {
        Ok(match self {
            Self::Adam(o) => Self::Adam(checkpoint.load_optimizer(o, model, device)?),
            Self::Sgd(o) => Self::Sgd(checkpoint.load_optimizer(o, model, device)?),
        })
    }
}

fn weight_decay_config(penalty: f64) -> Option<WeightDecayConfig> {
    (penalty > 0.0).then(|| WeightDecayConfig::new(penalty as f32))
}
