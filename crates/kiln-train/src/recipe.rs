//! How to train: the part of an experiment file under `[recipe]`.

use kiln_models::TestTimeAugmentation;
use serde::{Deserialize, Serialize};

/// Optimiser, learning-rate schedule and loop settings. Plain data, so sweeps can clone and
/// override it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Passes over the training set, whole or not (`9.9`: the tenth pass stops after
    /// nine tenths of its batches).
    pub epochs: Epochs,
    /// Images per optimiser step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Leave out each epoch's last, short batch (PyTorch's `DataLoader(drop_last=True)`, as
    /// airbench94 trains); the set is shuffled every epoch, so other images are left out each
    /// time.
    #[serde(default, skip_serializing_if = "is_false")]
    pub drop_last: bool,
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
    /// Parameters trained otherwise than the rest, PyTorch's parameter groups: a factor on the
    /// learning rate, a weight decay of their own, or training for the first epochs only
    /// (airbench94's batch-norm biases and whitening bias). A parameter belongs to the first
    /// group whose pattern matches its path; the others follow `optimizer`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub param_groups: Vec<ParamGroup>,
    /// Average the weights as training goes and reset them to the average every few steps
    /// (airbench94's lookahead; `kiln_train::lookahead`). Off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookahead: Option<LookaheadSpec>,
    /// Test-time augmentation of the evaluations after the last epoch (`"mirror"` or
    /// `"mirror-translate"`; airbench94 uses the second); the epochs before are evaluated
    /// plainly, as airbench94 does, so their curve costs no more.
    #[serde(default, skip_serializing_if = "TestTimeAugmentation::is_none")]
    pub test_time_augmentation: TestTimeAugmentation,
}

/// `[recipe.lookahead]`: every `every` steps from epoch `from_epoch` on, the average moves
/// to `rho avg + (1 - rho) w` with `rho = decay (step / steps)^power`, and the weights become
/// it; at the end of the fit too. airbench94: every 5 steps from the first, decay 0.95^5,
/// power 3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookaheadSpec {
    /// Steps between averagings.
    pub every: usize,
    /// The first epoch (from 1) that averages.
    #[serde(default = "one_usize")]
    pub from_epoch: usize,
    /// The average's weight at the last step.
    pub decay: f64,
    /// How that weight grows over the run.
    #[serde(default = "three")]
    pub power: f64,
}

fn one_usize() -> usize {
    1
}

fn three() -> f64 {
    3.0
}

/// A number of passes over the training set, whole or not. A fit of `e` epochs of `n`
/// batches makes `ceil(e n)` optimiser steps (airbench94's `ceil(len(loader) * 9.9)`), its
/// schedule spanning them, and starts `ceil(e)` epochs. Written as an integer when whole.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Epochs(f64);

impl Epochs {
    /// The number, as written.
    pub fn get(self) -> f64 {
        self.0
    }

    /// The epochs a fit starts: the last may be cut short.
    pub fn started(self) -> usize {
        self.0.ceil() as usize
    }

    /// The optimiser steps of a fit with `steps_per_epoch` batches per epoch.
    pub fn steps(self, steps_per_epoch: usize) -> usize {
        let whole = self.0.trunc() as usize;
        // The whole epochs exactly; rounding only in the fraction.
        whole * steps_per_epoch + ((self.0 - whole as f64) * steps_per_epoch as f64).ceil() as usize
    }
}

impl From<usize> for Epochs {
    fn from(epochs: usize) -> Self {
        Epochs(epochs as f64)
    }
}

impl From<f64> for Epochs {
    fn from(epochs: f64) -> Self {
        Epochs(epochs)
    }
}

impl PartialEq<usize> for Epochs {
    fn eq(&self, other: &usize) -> bool {
        self.0 == *other as f64
    }
}

impl std::fmt::Display for Epochs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Epochs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.fract() == 0.0 && self.0 >= 0.0 && self.0 < u64::MAX as f64 {
            s.serialize_u64(self.0 as u64)
        } else {
            s.serialize_f64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Epochs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Number;
        impl serde::de::Visitor<'_> for Number {
            type Value = Epochs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of epochs, such as 10 or 9.9")
            }
            fn visit_u64<E>(self, n: u64) -> Result<Epochs, E> {
                Ok(Epochs(n as f64))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Epochs, E> {
                Ok(Epochs(n as f64))
            }
            fn visit_f64<E>(self, x: f64) -> Result<Epochs, E> {
                Ok(Epochs(x))
            }
        }
        d.deserialize_any(Number)
    }
}

/// Some of a network's parameters and how they train: one `[[recipe.param_groups]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamGroup {
    /// The parameters' dotted paths (`groups.0.norm1.beta`, as `kiln summary` and PyTorch's
    /// state dicts name them) matched by this pattern, where `*` stands for any characters:
    /// `"*.beta"` is every batch norm's shift.
    pub params: String,
    /// Their learning rate is the schedule's times this (SGD only: Adam's steps do not scale
    /// with the gradient).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub lr_scale: f64,
    /// Their L2 weight decay, in place of the optimiser's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Trained in the first this many epochs, frozen after (airbench94's whitening bias: 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_epochs: Option<usize>,
}

fn one() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

impl ParamGroup {
    /// Whether `path` is one of this group's: the pattern's `*` match any run of characters,
    /// everything else itself.
    pub fn matches(&self, path: &str) -> bool {
        glob_match(self.params.as_bytes(), path.as_bytes())
    }
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_match(rest, &text[skip..])),
        Some((c, rest)) => text.first() == Some(c) && glob_match(rest, &text[1..]),
    }
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
    /// Per batch: the rate rises linearly from `start` x lr at the first step to lr at the
    /// `peak` fraction of the run's steps, then falls linearly to `end` x lr at its last
    /// step (airbench94's `triangle(steps, start=0.2, end=0.07, peak=0.23)`).
    Triangle {
        /// The first step's rate, as a fraction of the optimiser's.
        start: f64,
        /// Where the rate peaks, as a fraction of all steps.
        peak: f64,
        /// The last step's rate, as a fraction of the optimiser's.
        end: f64,
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

    /// The L2 weight decay.
    pub fn weight_decay(&self) -> f64 {
        match self {
            OptimizerSpec::Adam { weight_decay, .. } | OptimizerSpec::Sgd { weight_decay, .. } => {
                *weight_decay
            }
        }
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
            epochs: Epochs(10.0),
            batch_size: 64,
            drop_last: false,
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
            param_groups: Vec::new(),
            lookahead: None,
            test_time_augmentation: TestTimeAugmentation::None,
        }
    }
}

impl Recipe {
    /// Train for `epochs` passes over the training set.
    pub fn with_epochs(self, epochs: impl Into<Epochs>) -> Self {
        Recipe {
            epochs: epochs.into(),
            ..self
        }
    }

    /// The optimiser steps of a fit with `steps_per_epoch` batches per epoch (whatever
    /// `max_steps` says: schedules span these).
    pub fn total_steps(&self, steps_per_epoch: usize) -> usize {
        self.epochs.steps(steps_per_epoch)
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

    /// Parameters trained otherwise than the rest (`[[recipe.param_groups]]`).
    pub fn with_param_groups(self, param_groups: Vec<ParamGroup>) -> Self {
        Recipe {
            param_groups,
            ..self
        }
    }

    /// Checks every value; an error names the key (`recipe.batch_size`, ...) and what it found.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.epochs.0 > 0.0 && self.epochs.0.is_finite()) {
            return Err(format!(
                "recipe.epochs: expected a number above 0, found {}",
                self.epochs
            ));
        }
        let positive = [
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
            SchedulerSpec::Constant | SchedulerSpec::Triangle { .. } => {}
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
                if *warmup_epochs as f64 >= self.epochs.0 {
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
        for (i, group) in self.param_groups.iter().enumerate() {
            let key = format!("recipe.param_groups[{i}]");
            if group.params.is_empty() {
                return Err(format!(
                    "{key}.params: expected a pattern, found an empty one"
                ));
            }
            if !(group.lr_scale > 0.0 && group.lr_scale.is_finite()) {
                return Err(format!(
                    "{key}.lr_scale: expected a positive number, found {}",
                    group.lr_scale
                ));
            }
            if group.lr_scale != 1.0 && matches!(self.optimizer, OptimizerSpec::Adam { .. }) {
                return Err(format!(
                    "{key}.lr_scale: only SGD takes a group's learning-rate factor (Kiln scales \
                     the group's gradients, which Adam's steps do not follow); found {} with adam",
                    group.lr_scale
                ));
            }
            if let Some(decay) = group.weight_decay {
                non_negative(&format!("{key}.weight_decay"), decay)?;
            }
            if group.train_epochs == Some(0) {
                return Err(format!("{key}.train_epochs: expected at least 1, found 0"));
            }
        }
        if let SchedulerSpec::Triangle { start, peak, end } = &self.scheduler {
            for (key, value) in [("start", start), ("peak", peak), ("end", end)] {
                if !(0.0..=1.0).contains(value) {
                    return Err(format!(
                        "recipe.scheduler.{key}: expected a value in [0, 1], found {value}"
                    ));
                }
            }
        }
        if let Some(lookahead) = &self.lookahead {
            if lookahead.every == 0 || lookahead.from_epoch == 0 {
                let key = if lookahead.every == 0 {
                    "every"
                } else {
                    "from_epoch"
                };
                return Err(format!(
                    "recipe.lookahead.{key}: expected at least 1, found 0"
                ));
            }
            if !(0.0..=1.0).contains(&lookahead.decay) {
                return Err(format!(
                    "recipe.lookahead.decay: expected a value in [0, 1], found {}",
                    lookahead.decay
                ));
            }
            if !(lookahead.power >= 0.0 && lookahead.power.is_finite()) {
                return Err(format!(
                    "recipe.lookahead.power: expected a number >= 0, found {}",
                    lookahead.power
                ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_may_be_fractional_and_stay_integers_when_whole() {
        let parse = |text: &str| -> Recipe {
            toml::from_str(&format!(
                "{text}\nbatch_size = 1024\nseed = 0\n[optimizer]\nname = \"sgd\"\nlr = 0.1"
            ))
            .unwrap()
        };
        // airbench94: 48 batches of 1,024 an epoch, 9.9 epochs: ceil(475.2) = 476 steps.
        let airbench = parse("epochs = 9.9");
        assert_eq!(airbench.epochs.started(), 10);
        assert_eq!(airbench.total_steps(48), 476);
        assert!(toml::to_string(&airbench)
            .unwrap()
            .contains("epochs = 9.9\n"));
        // A whole number reads, counts and writes as before.
        let whole = parse("epochs = 14");
        assert_eq!((whole.epochs.started(), whole.total_steps(48)), (14, 672));
        assert!(toml::to_string(&whole).unwrap().contains("epochs = 14\n"));
        assert_eq!(parse("epochs = 14.0").epochs, whole.epochs);
        for bad in ["epochs = 0", "epochs = -1.5"] {
            let err = parse(bad).validate().unwrap_err();
            assert!(
                err.starts_with("recipe.epochs: expected a number above 0"),
                "{err}"
            );
        }
        let err = toml::from_str::<Recipe>(
            "epochs = \"ten\"\nbatch_size = 1\nseed = 0\n[optimizer]\nname = \"sgd\"\nlr = 0.1",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "invalid type: string \"ten\", expected a number of epochs, such as 10 or 9.9"
            ),
            "{err}"
        );
    }
}
