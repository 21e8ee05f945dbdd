//! How to train: the part of an experiment file under `[recipe]`.

use serde::{Deserialize, Serialize};

/// Optimiser, learning-rate schedule and loop settings. Plain data, so sweeps can clone and
/// override it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per optimiser step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Seeds weight initialisation, dropout and the shuffling of the training set.
    pub seed: u64,
    /// Emit a step event (mean loss and accuracy since the last one) every this many batches.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Evaluate the validation split (where the data has one) every this many batches, as the
    /// MNIST tutorial does every 100; it is always evaluated after each epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_every: Option<usize>,
    /// Batch size for evaluation; it does not change results, only speed and memory.
    #[serde(default = "default_eval_batch_size")]
    pub eval_batch_size: usize,
    /// The optimiser and its learning rate.
    pub optimizer: OptimizerSpec,
    /// How the learning rate changes over the run; constant by default.
    #[serde(default)]
    pub scheduler: SchedulerSpec,
    /// Cross-entropy label smoothing for training (evaluation losses are never smoothed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub label_smoothing: f32,
    /// Stop after this many optimiser steps in all, evaluating the epoch they end in; for short
    /// comparisons of backends. The learning-rate schedule still spans all `epochs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    /// Also save a checkpoint every this many optimiser steps (one is always saved at the end
    /// of each epoch, where the caller saves checkpoints at all). It does not change results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<usize>,
    /// Before each end-of-epoch evaluation, recompute the batch norms' running statistics as
    /// the plain average over this many training batches under the epoch's final weights
    /// ("precise batch norm"; `kiln_models::batch_norm::with_momentum`), instead of evaluating
    /// with the exponential average that training left, which lags the weights (docs/results.md,
    /// the tutorial ResNet's swinging test accuracy). Off by default: the tutorials do not.
    /// Only Kiln's own `BatchNorm` takes part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recompute_bn_batches: Option<usize>,
}

fn default_log_every() -> usize {
    50
}

fn default_eval_batch_size() -> usize {
    1000
}

/// The optimiser and its hyper-parameters, with PyTorch's meanings and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum OptimizerSpec {
    /// `torch.optim.Adam`: `weight_decay` is the L2 penalty added to the gradient.
    Adam {
        /// Learning rate.
        lr: f64,
        /// L2 penalty added to the gradient (not AdamW's decoupled decay).
        #[serde(default)]
        weight_decay: f64,
        /// Decay rates of the first and second moment estimates.
        #[serde(default = "default_betas")]
        betas: [f32; 2],
        /// Added to the denominator for stability.
        #[serde(default = "default_eps")]
        eps: f32,
    },
    /// `torch.optim.SGD` (dampening 0); `nesterov` as PyTorch defines it.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum factor; 0 for plain SGD.
        #[serde(default)]
        momentum: f64,
        /// L2 penalty added to the gradient.
        #[serde(default)]
        weight_decay: f64,
        /// Nesterov momentum.
        #[serde(default, skip_serializing_if = "is_false")]
        nesterov: bool,
    },
}

fn default_betas() -> [f32; 2] {
    [0.9, 0.999]
}

// PyTorch's default; Burn's AdamConfig defaults to 1e-5, which changes results measurably.
fn default_eps() -> f32 {
    1e-8
}

/// The learning rate over training. `step` advances once per epoch, as the tutorials'
/// `scheduler.step()` after each epoch does; `warmup-cosine` changes it every batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SchedulerSpec {
    /// The optimiser's rate throughout.
    #[default]
    Constant,
    /// `torch.optim.lr_scheduler.StepLR`: multiply by `gamma` every `step_size` epochs.
    Step {
        /// Epochs between decays.
        step_size: usize,
        /// Factor applied at each decay.
        gamma: f64,
    },
    /// Per batch: a linear warm-up from lr/W to lr over the first `warmup_epochs` (W batches),
    /// then cosine annealing to `min_lr` at the last batch.
    WarmupCosine {
        /// Epochs of linear warm-up.
        warmup_epochs: usize,
        /// The rate at the last batch.
        #[serde(default)]
        min_lr: f64,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

impl OptimizerSpec {
    /// `torch.optim.Adam(lr=lr)`: PyTorch's betas (0.9, 0.999) and eps 1e-8, no weight decay.
    pub fn adam(lr: f64) -> Self {
        OptimizerSpec::Adam {
            lr,
            weight_decay: 0.0,
            betas: default_betas(),
            eps: default_eps(),
        }
    }

    /// `torch.optim.SGD(lr=lr, momentum=momentum)`: no weight decay, no Nesterov.
    pub fn sgd(lr: f64, momentum: f64) -> Self {
        OptimizerSpec::Sgd {
            lr,
            momentum,
            weight_decay: 0.0,
            nesterov: false,
        }
    }

    /// The same optimiser with PyTorch's `weight_decay` (an L2 term added to the gradient).
    pub fn with_weight_decay(mut self, decay: f64) -> Self {
        match &mut self {
            OptimizerSpec::Adam { weight_decay, .. } | OptimizerSpec::Sgd { weight_decay, .. } => {
                *weight_decay = decay
            }
        }
        self
    }

    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerSpec::Adam { lr, .. } | OptimizerSpec::Sgd { lr, .. } => *lr,
        }
    }
}

/// Ten epochs of Adam at PyTorch's default rate (1e-3), batch 64, seed 42, a constant rate:
/// a start for a small network, to be changed with the `with_*` methods.
///
/// ```
/// use kiln_train::{OptimizerSpec, Recipe, SchedulerSpec};
///
/// let recipe = Recipe::default()
///     .with_epochs(20)
///     .with_batch_size(32)
///     .with_optimizer(OptimizerSpec::sgd(0.01, 0.9).with_weight_decay(5e-4))
///     .with_scheduler(SchedulerSpec::Step { step_size: 5, gamma: 0.5 });
/// assert_eq!(recipe.optimizer.lr(), 0.01);
/// assert!(recipe.validate().is_ok());
/// assert!(Recipe::default().with_batch_size(0).validate().is_err());
/// ```
impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            epochs: 10,
            batch_size: 64,
            seed: 42,
            log_every: default_log_every(),
            validate_every: None,
            eval_batch_size: default_eval_batch_size(),
            optimizer: OptimizerSpec::adam(1e-3),
            scheduler: SchedulerSpec::Constant,
            label_smoothing: 0.0,
            max_steps: None,
            checkpoint_every: None,
            recompute_bn_batches: None,
        }
    }
}

impl Recipe {
    /// Train for `epochs` passes over the training set.
    pub fn with_epochs(self, epochs: usize) -> Self {
        Recipe { epochs, ..self }
    }

    /// Images per optimiser step.
    pub fn with_batch_size(self, batch_size: usize) -> Self {
        Recipe { batch_size, ..self }
    }

    /// The seed of weight initialisation, dropout and shuffling.
    pub fn with_seed(self, seed: u64) -> Self {
        Recipe { seed, ..self }
    }

    /// The optimiser and its hyper-parameters.
    pub fn with_optimizer(self, optimizer: OptimizerSpec) -> Self {
        Recipe { optimizer, ..self }
    }

    /// The learning-rate schedule.
    pub fn with_scheduler(self, scheduler: SchedulerSpec) -> Self {
        Recipe { scheduler, ..self }
    }

    /// A step event every this many batches.
    pub fn with_log_every(self, log_every: usize) -> Self {
        Recipe { log_every, ..self }
    }

    /// Evaluate the validation split every this many batches as well as after each epoch.
    pub fn with_validate_every(self, batches: Option<usize>) -> Self {
        Recipe {
            validate_every: batches,
            ..self
        }
    }

    /// Images per evaluation batch (speed and memory only).
    pub fn with_eval_batch_size(self, eval_batch_size: usize) -> Self {
        Recipe {
            eval_batch_size,
            ..self
        }
    }

    /// Cross-entropy label smoothing for training.
    pub fn with_label_smoothing(self, label_smoothing: f32) -> Self {
        Recipe {
            label_smoothing,
            ..self
        }
    }

    /// Stop after this many optimiser steps in all.
    pub fn with_max_steps(self, max_steps: Option<usize>) -> Self {
        Recipe { max_steps, ..self }
    }

    /// Also checkpoint every this many optimiser steps.
    pub fn with_checkpoint_every(self, checkpoint_every: Option<usize>) -> Self {
        Recipe {
            checkpoint_every,
            ..self
        }
    }

    /// Checks every value; an error names the key (`recipe.batch_size`, ...) and what it found.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("recipe.epochs", self.epochs),
            ("recipe.batch_size", self.batch_size),
            ("recipe.log_every", self.log_every),
            ("recipe.eval_batch_size", self.eval_batch_size),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(format!("{key}: expected at least 1, found 0"));
            }
        }
        let optional = [
            ("recipe.max_steps", self.max_steps),
            ("recipe.checkpoint_every", self.checkpoint_every),
            ("recipe.validate_every", self.validate_every),
            ("recipe.recompute_bn_batches", self.recompute_bn_batches),
        ];
        for (key, value) in optional {
            if value == Some(0) {
                return Err(format!("{key}: expected at least 1, found 0"));
            }
        }
        let lr = self.optimizer.lr();
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(format!(
                "recipe.optimizer.lr: expected a positive number, found {lr}"
            ));
        }
        match &self.optimizer {
            OptimizerSpec::Adam {
                weight_decay,
                betas,
                eps,
                ..
            } => {
                non_negative("recipe.optimizer.weight_decay", *weight_decay)?;
                for (i, b) in betas.iter().enumerate() {
                    if !(0.0..1.0).contains(b) {
                        return Err(format!(
                            "recipe.optimizer.betas[{i}]: expected a value in [0, 1), found {b}"
                        ));
                    }
                }
                if eps.is_nan() || *eps <= 0.0 {
                    return Err(format!("recipe.optimizer.eps: expected > 0, found {eps}"));
                }
            }
            OptimizerSpec::Sgd {
                momentum,
                weight_decay,
                nesterov,
                ..
            } => {
                if *nesterov && *momentum == 0.0 {
                    return Err("recipe.optimizer.nesterov: needs a momentum above 0".into());
                }
                non_negative("recipe.optimizer.weight_decay", *weight_decay)?;
                if !(0.0..1.0).contains(momentum) {
                    return Err(format!(
                        "recipe.optimizer.momentum: expected a value in [0, 1), found {momentum}"
                    ));
                }
            }
        }
        match &self.scheduler {
            SchedulerSpec::Constant => {}
            SchedulerSpec::Step { step_size, gamma } => {
                if *step_size == 0 {
                    return Err("recipe.scheduler.step_size: expected at least 1, found 0".into());
                }
                if !(*gamma > 0.0 && *gamma <= 1.0) {
                    return Err(format!(
                        "recipe.scheduler.gamma: expected a value in (0, 1], found {gamma}"
                    ));
                }
            }
            SchedulerSpec::WarmupCosine {
                warmup_epochs,
                min_lr,
            } => {
                if *warmup_epochs >= self.epochs {
                    return Err(format!(
                        "recipe.scheduler.warmup_epochs: expected fewer than the {} epochs, found {warmup_epochs}",
                        self.epochs
                    ));
                }
                // Burn's linear and cosine schedulers take learning rates in (0, 1].
                if lr > 1.0 {
                    return Err(format!(
                        "recipe.optimizer.lr: expected at most 1 with warmup-cosine, found {lr}"
                    ));
                }
                if !(0.0..=lr).contains(min_lr) {
                    return Err(format!(
                        "recipe.scheduler.min_lr: expected a value in [0, lr = {lr}], found {min_lr}"
                    ));
                }
            }
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(format!(
                "recipe.label_smoothing: expected a value in [0, 1), found {}",
                self.label_smoothing
            ));
        }
        Ok(())
    }
}

fn non_negative(key: &str, value: f64) -> Result<(), String> {
    if value >= 0.0 && value.is_finite() {
        Ok(())
    } else {
        Err(format!("{key}: expected a number >= 0, found {value}"))
    }
}
