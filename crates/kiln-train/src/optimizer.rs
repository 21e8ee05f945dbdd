//! The one place a recipe's optimiser becomes Burn's, with PyTorch's semantics
//! (`weight_decay` is the L2 term `torch.optim.Adam` and `SGD` add to the gradient).

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::checkpoint::{Checkpoint, ResumeError};
use crate::lookahead::{Averaged, Lookahead};
use crate::{OptimizerSpec, Recipe};

/// The recipe's optimiser. An enum, so the loop is one function whatever the recipe says; a
/// new optimiser is a variant here and in [`OptimizerSpec`].
#[derive(Clone)]
pub(crate) struct RecipeOptimizer<M: AutodiffModule<B>, B: AutodiffBackend> {
    burns: BurnOptimizer<M, B>,
    /// Each parameter's rule where the recipe has parameter groups.
    groups: Option<GroupRules>,
    /// The weights' average where the recipe has `[recipe.lookahead]`.
    lookahead: Option<Lookahead<B>>,
}

#[derive(Clone)]
enum BurnOptimizer<M: AutodiffModule<B>, B: AutodiffBackend> {
    Adam(OptimizerAdaptor<Adam, M, B>),
    Sgd(OptimizerAdaptor<Sgd<B::InnerBackend>, M, B>),
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> RecipeOptimizer<M, B> {
    /// The optimiser `recipe` describes for `model`, with no state yet, for a fit of
    /// `total_steps` steps. Fails when a parameter group's pattern matches none of the
    /// model's parameters.
    pub(crate) fn new(recipe: &Recipe, model: &M, total_steps: usize) -> Result<Self, String> {
        let lookahead = recipe
            .lookahead
            .clone()
            .map(|spec| Lookahead::new(spec, total_steps));
        if recipe.param_groups.is_empty() {
            return Ok(Self {
                burns: BurnOptimizer::new(&recipe.optimizer),
                groups: None,
                lookahead,
            });
        }
        // Every weight decay is added to the gradients by the rules, so Burn's adds none.
        let spec = recipe.optimizer.clone().with_weight_decay(0.0);
        Ok(Self {
            burns: BurnOptimizer::new(&spec),
            groups: Some(GroupRules::new(recipe, model)?),
            lookahead,
        })
    }

    /// One update of `model` by `grads` at rate `lr`: the fit's step `step` (counted from 1)
    /// in (1-based) `epoch`.
    pub(crate) fn step(
        &mut self,
        lr: f64,
        model: M,
        grads: GradientsParams,
        epoch: usize,
        step: usize,
    ) -> M {
        let grads = match &self.groups {
            Some(rules) => rules.apply(&model, grads, epoch),
            None => grads,
        };
        let model = match &mut self.burns {
            BurnOptimizer::Adam(o) => o.step(lr, model, grads),
            BurnOptimizer::Sgd(o) => o.step(lr, model, grads),
        };
        match &mut self.lookahead {
            Some(lookahead) => lookahead.after_step(model, epoch, step),
            None => model,
        }
    }

    /// At the end of the fit: the weights it returns (with lookahead, its average).
    pub(crate) fn end_fit(&self, model: M) -> M {
        match &self.lookahead {
            Some(lookahead) => lookahead.end_fit(model),
            None => model,
        }
    }

    /// The lookahead average as a checkpoint keeps it (a record of the model's type), where
    /// there is one yet.
    pub(crate) fn encode_lookahead(&self, model: &M) -> Option<Vec<u8>> {
        let averaged = self.lookahead.as_ref()?.averaged.as_ref()?;
        Some(averaged.encode(model))
    }

    /// The state (Adam's moments, SGD's momentum) as a checkpoint keeps it.
    pub(crate) fn encode(&self) -> Vec<u8> {
        match &self.burns {
            BurnOptimizer::Adam(o) => kiln_models::record::encode::<B, _>(o.to_record()),
            BurnOptimizer::Sgd(o) => kiln_models::record::encode::<B, _>(o.to_record()),
        }
    }

    /// This optimiser with `checkpoint`'s state for `model`'s parameters.
    pub(crate) fn load(
        self,
        checkpoint: &Checkpoint,
        model: &M,
        device: &B::Device,
    ) -> Result<Self, ResumeError> {
        let burns = match self.burns {
            BurnOptimizer::Adam(o) => {
                BurnOptimizer::Adam(checkpoint.load_optimizer(o, model, device)?)
            }
            BurnOptimizer::Sgd(o) => {
                BurnOptimizer::Sgd(checkpoint.load_optimizer(o, model, device)?)
            }
        };
        let mut lookahead = self.lookahead;
        if let (Some(lookahead), Some(bytes)) = (&mut lookahead, &checkpoint.lookahead) {
            let averaged = kiln_models::record::load_module(
                M::from_inner(model.valid()),
                bytes.clone(),
                device,
            )
            .map_err(|e| ResumeError::Record {
                what: "lookahead",
                message: e.to_string(),
            })?;
            lookahead.averaged = Some(Averaged::of(&averaged));
        }
        Ok(Self {
            burns,
            groups: self.groups,
            lookahead,
        })
    }
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> BurnOptimizer<M, B> {
    fn new(spec: &OptimizerSpec) -> Self {
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
}

fn weight_decay_config(penalty: f64) -> Option<WeightDecayConfig> {
    (penalty > 0.0).then(|| WeightDecayConfig::new(penalty as f32))
}

/// How each parameter trains where the recipe has parameter groups, by Burn's parameter id.
///
/// A group's learning-rate factor k and weight decay λ are applied to its gradients before
/// the optimiser sees them: `g' = k (g + λ θ)`. For SGD (momentum and Nesterov included) that
/// is exactly PyTorch's parameter group `{lr: k * lr, weight_decay: λ}`: momentum is linear in
/// the gradient, so its buffer is k times the group's and the step k times as long. One
/// optimiser and one state record then serve every group, and checkpoints keep their format.
#[derive(Clone, Debug)]
struct GroupRules {
    rules: HashMap<ParamId, Rule>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Rule {
    lr_scale: f64,
    weight_decay: f64,
    train_epochs: Option<usize>,
}

impl GroupRules {
    fn new<B: Backend, M: Module<B>>(recipe: &Recipe, model: &M) -> Result<Self, String> {
        struct Assign<'a> {
            recipe: &'a Recipe,
            default: Rule,
            rules: HashMap<ParamId, Rule>,
            used: Vec<bool>,
            paths: Vec<String>,
        }
        impl<B: Backend> kiln_models::params::ParamVisitor<B> for Assign<'_> {
            fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>) {
                self.paths.push(path.to_string());
                let group = self
                    .recipe
                    .param_groups
                    .iter()
                    .position(|g| g.matches(path));
                let rule = match group {
                    Some(i) => {
                        self.used[i] = true;
                        let g = &self.recipe.param_groups[i];
                        Rule {
                            lr_scale: g.lr_scale,
                            weight_decay: g.weight_decay.unwrap_or(self.default.weight_decay),
                            train_epochs: g.train_epochs,
                        }
                    }
                    None => self.default,
                };
                self.rules.insert(param.id, rule);
            }
        }
        let mut assign = Assign {
            recipe,
            default: Rule {
                lr_scale: 1.0,
                weight_decay: recipe.optimizer.weight_decay(),
                train_epochs: None,
            },
            rules: HashMap::new(),
            used: vec![false; recipe.param_groups.len()],
            paths: Vec::new(),
        };
        kiln_models::params::visit_params(model, &mut assign);
        if let Some(i) = assign.used.iter().position(|used| !used) {
            return Err(format!(
                "recipe.param_groups[{i}].params = {:?} matches none of the network's \
                 parameters (an earlier group may have taken them): {}",
                recipe.param_groups[i].params,
                assign.paths.join(", ")
            ));
        }
        Ok(Self {
            rules: assign.rules,
        })
    }

    /// `grads` with each group's rule applied for `epoch`: a frozen parameter's gradient
    /// dropped (the optimiser then leaves it and its state alone, as PyTorch does a parameter
    /// without a gradient), the others' decayed and scaled.
    fn apply<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        model: &M,
        grads: GradientsParams,
        epoch: usize,
    ) -> GradientsParams {
        struct Apply<'a> {
            rules: &'a HashMap<ParamId, Rule>,
            grads: GradientsParams,
            epoch: usize,
        }
        impl<B: AutodiffBackend> ModuleVisitor<B> for Apply<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let Some(rule) = self.rules.get(&param.id) else {
                    return;
                };
                let Some(mut grad) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
                    return;
                };
                if rule.train_epochs.is_some_and(|n| self.epoch > n) {
                    return;
                }
                if rule.weight_decay > 0.0 {
                    grad = grad + param.val().inner().mul_scalar(rule.weight_decay);
                }
                if rule.lr_scale != 1.0 {
                    grad = grad.mul_scalar(rule.lr_scale);
                }
                self.grads.register::<B::InnerBackend, D>(param.id, grad);
            }
        }
        let mut apply = Apply {
            rules: &self.rules,
            grads,
            epoch,
        };
        model.visit(&mut apply);
        apply.grads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::ParamGroup;
    use burn::nn::{Linear, LinearConfig};
    use burn_autodiff::Autodiff;
    use burn_ndarray::NdArray;

    type B = Autodiff<NdArray<f32>>;

    /// The parameters `params` matches, trained as the rest.
    fn group(params: &str) -> ParamGroup {
        ParamGroup {
            params: params.into(),
            lr_scale: 1.0,
            weight_decay: None,
            train_epochs: None,
        }
    }

    fn weights(model: &Linear<B>) -> (Vec<f32>, f32) {
        let w = model.weight.val().into_data().to_vec::<f32>().unwrap();
        let b = model
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        (w, b[0])
    }

    /// PyTorch's `SGD(momentum, nesterov=True)` on one parameter with a constant gradient
    /// `g`, its group's rate `lr` and decay `decay`, for `steps` steps (`torch/optim/sgd.py`:
    /// d = g + λp; b = μb + d, b = d at the first step; d = d + μb; p -= lr d).
    fn pytorch_sgd(mut p: f32, g: f32, lr: f32, decay: f32, momentum: f32, steps: usize) -> f32 {
        let mut b: Option<f32> = None;
        for _ in 0..steps {
            let d = g + decay * p;
            let buf = b.map_or(d, |b| momentum * b + d);
            b = Some(buf);
            p -= lr * (d + momentum * buf);
        }
        p
    }

    #[test]
    fn a_groups_rate_and_decay_train_as_pytorchs_parameter_group() {
        let device = Default::default();
        let model: Linear<B> = LinearConfig::new(2, 1).init(&device);
        let (w0, b0) = weights(&model);
        let recipe = Recipe::default()
            .with_optimizer(OptimizerSpec::Sgd {
                lr: 0.1,
                momentum: 0.85,
                weight_decay: 0.01,
                nesterov: true,
            })
            .with_param_groups(vec![ParamGroup {
                lr_scale: 64.0,
                weight_decay: Some(0.01 / 64.0),
                ..group("*bias")
            }]);
        let mut optim = RecipeOptimizer::new(&recipe, &model, 10).unwrap();
        // loss = sum(x W + b) over two rows: dW = column sums of x, db = 2.
        let x = Tensor::<B, 2>::from_floats([[1.0, 2.0], [3.0, -1.0]], &device);
        let mut model = model;
        for _ in 0..3 {
            let grads = model.forward(x.clone()).sum().backward();
            let grads = GradientsParams::from_grads(grads, &model);
            model = optim.step(0.1, model, grads, 1, 1);
        }
        let (w, b) = weights(&model);
        let expected_w = [
            pytorch_sgd(w0[0], 4.0, 0.1, 0.01, 0.85, 3),
            pytorch_sgd(w0[1], 1.0, 0.1, 0.01, 0.85, 3),
        ];
        let expected_b = pytorch_sgd(b0, 2.0, 0.1 * 64.0, 0.01 / 64.0, 0.85, 3);
        for (found, expected) in w.iter().zip(expected_w).chain([(&b, expected_b)]) {
            assert!((found - expected).abs() < 1e-4, "{found} vs {expected}");
        }
    }

    #[test]
    fn a_group_trained_for_one_epoch_is_frozen_after_it() {
        let device = Default::default();
        let model: Linear<B> = LinearConfig::new(2, 1).init(&device);
        let recipe = Recipe::default()
            .with_optimizer(OptimizerSpec::sgd(0.1, 0.9))
            .with_param_groups(vec![ParamGroup {
                train_epochs: Some(1),
                ..group("bias")
            }]);
        let mut optim = RecipeOptimizer::new(&recipe, &model, 10).unwrap();
        let x = Tensor::<B, 2>::from_floats([[1.0, 2.0]], &device);
        let mut model = model;
        let mut step = |model: Linear<B>, epoch| {
            let grads = model.forward(x.clone()).sum().backward();
            let grads = GradientsParams::from_grads(grads, &model);
            optim.step(0.1, model, grads, epoch, 1)
        };
        let (w0, b0) = weights(&model);
        model = step(model, 1);
        let (w1, b1) = weights(&model);
        assert!(b1 != b0 && w1 != w0, "both train in epoch 1");
        model = step(model, 2);
        let (w2, b2) = weights(&model);
        assert_eq!(b2, b1, "the bias is frozen in epoch 2");
        assert!(w2 != w1, "the weights still train");
    }

    #[test]
    fn a_pattern_that_matches_nothing_is_refused_with_the_paths_there_are() {
        let device = Default::default();
        let model: Linear<B> = LinearConfig::new(2, 1).init(&device);
        let recipe = Recipe::default()
            .with_optimizer(OptimizerSpec::sgd(0.1, 0.9))
            .with_param_groups(vec![ParamGroup {
                lr_scale: 2.0,
                ..group("*.beta")
            }]);
        let err = RecipeOptimizer::<Linear<B>, B>::new(&recipe, &model, 10)
            .err()
            .unwrap();
        assert_eq!(
            err,
            "recipe.param_groups[0].params = \"*.beta\" matches none of the network's \
             parameters (an earlier group may have taken them): weight, bias"
        );
        // And Adam cannot take a rate factor.
        let adam = recipe.with_optimizer(OptimizerSpec::adam(1e-3));
        assert!(adam
            .validate()
            .unwrap_err()
            .starts_with("recipe.param_groups[0].lr_scale: only SGD"));
    }

    #[test]
    fn patterns_match_whole_paths_with_stars_for_any_characters() {
        assert!(group("*.beta").matches("groups.0.norm1.beta"));
        assert!(group("groups.*.norm*.beta").matches("groups.2.norm2.beta"));
        assert!(!group("*.beta").matches("groups.0.norm1.gamma"));
        assert!(!group("whiten").matches("whiten.bias"));
        assert!(group("whiten.bias").matches("whiten.bias"));
    }
}
