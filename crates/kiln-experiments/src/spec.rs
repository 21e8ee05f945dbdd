//! The experiment file's schema. Unknown keys are errors (`deny_unknown_fields`) and every value
//! is checked by [`ExperimentSpec::validate`], whose messages name the key.

use kiln_data::mnist::{FASHION_MNIST, MNIST};
use kiln_data::{IdxDataset, Normalize};
use kiln_train::Recipe;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    pub name: String,
    /// One line, shown by `kiln list`.
    pub description: String,
    pub data: DataSpec,
    pub model: ModelSpec,
    pub recipe: Recipe,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    pub dataset: DatasetName,
    pub normalize: Normalize,
    /// Train on the first N training images only (for smoke runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_train: Option<usize>,
    /// Evaluate on the first N test images only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_test: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    Mnist,
    FashionMnist,
}

impl DatasetName {
    pub fn source(self) -> &'static IdxDataset {
        match self {
            DatasetName::Mnist => &MNIST,
            DatasetName::FashionMnist => &FASHION_MNIST,
        }
    }

    /// Colour channels of the images.
    pub fn channels(self) -> usize {
        1
    }
}

/// The network and its settings. The number of classes comes from the data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ModelSpec {
    Lenet5 {
        #[serde(default = "default_dropout")]
        dropout: f64,
    },
}

fn default_dropout() -> f64 {
    0.5
}

/// Command-line changes to a spec; the result is validated and saved as the run's config.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub epochs: Option<usize>,
    pub seed: Option<u64>,
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
}

impl ExperimentSpec {
    /// Parses a TOML experiment; `origin` (a file path or built-in name) prefixes any error.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, String> {
        let spec: Self = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        spec.validate().map_err(|e| format!("{origin}: {e}"))?;
        Ok(spec)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a spec always serialises")
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(epochs) = o.epochs {
            self.recipe.epochs = epochs;
        }
        if let Some(seed) = o.seed {
            self.recipe.seed = seed;
        }
        if o.limit_train.is_some() {
            self.data.limit_train = o.limit_train;
        }
        if o.limit_test.is_some() {
            self.data.limit_test = o.limit_test;
        }
    }

    /// Checks every value; the message names the key, what was expected and what was found.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(format!(
                "name: expected letters, digits, '-' or '_' (it names the run folder), found {:?}",
                self.name
            ));
        }
        for (key, limit) in [
            ("data.limit_train", self.data.limit_train),
            ("data.limit_test", self.data.limit_test),
        ] {
            if limit == Some(0) {
                return Err(format!("{key}: expected at least 1, found 0"));
            }
        }
        self.data
            .normalize
            .validate(self.data.dataset.channels())
            .map_err(|e| format!("data.normalize.{e}"))?;
        match &self.model {
            ModelSpec::Lenet5 { dropout } => {
                if !(0.0..1.0).contains(dropout) {
                    return Err(format!(
                        "model.dropout: expected a value in [0, 1), found {dropout}"
                    ));
                }
            }
        }
        self.recipe.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILTIN: &str = include_str!("../../../experiments/lenet5-fashion-mnist.toml");

    #[test]
    fn builtin_lenet5_has_the_published_recipe() {
        let spec = ExperimentSpec::from_toml(BUILTIN, "lenet5").unwrap();
        assert_eq!(spec.recipe.epochs, 14);
        assert_eq!(spec.recipe.batch_size, 256);
        assert_eq!(
            spec.recipe.optimizer,
            kiln_train::OptimizerSpec::Adam {
                lr: 0.01,
                weight_decay: 0.001,
                betas: [0.9, 0.999],
                eps: 1e-8
            }
        );
        assert_eq!(
            spec.recipe.scheduler,
            kiln_train::SchedulerSpec::Step {
                step_size: 1,
                gamma: 0.7
            }
        );
        // The resolved spec written to a run folder parses back to the same spec.
        assert_eq!(
            ExperimentSpec::from_toml(&spec.to_toml(), "round trip").unwrap(),
            spec
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        for (from, to, key) in [
            (
                "log_every = 50",
                "log_every = 50\nlearning_rate = 0.1",
                "learning_rate",
            ),
            ("dropout = 0.5", "dropout = 0.5\nwidth = 3", "width"),
            ("gamma = 0.7", "gamma = 0.7\nmilestones = [3]", "milestones"),
            ("[data]", "[data]\nshuffle = true", "shuffle"),
        ] {
            let err = ExperimentSpec::from_toml(&BUILTIN.replace(from, to), "x.toml").unwrap_err();
            assert!(err.starts_with("x.toml: "), "{err}");
            assert!(err.contains(&format!("unknown field `{key}`")), "{err}");
        }
    }

    #[test]
    fn invalid_values_are_named() {
        for (from, to, message) in [
            (
                "batch_size = 256",
                "batch_size = 0",
                "recipe.batch_size: expected at least 1, found 0",
            ),
            (
                "lr = 0.01",
                "lr = -1.0",
                "recipe.optimizer.lr: expected a positive number, found -1",
            ),
            (
                "gamma = 0.7",
                "gamma = 1.5",
                "recipe.scheduler.gamma: expected a value in (0, 1], found 1.5",
            ),
            (
                "dropout = 0.5",
                "dropout = 1.0",
                "model.dropout: expected a value in [0, 1), found 1",
            ),
            (
                "std = [0.3530]",
                "std = [0.0]",
                "data.normalize.std: expected positive finite values, found 0",
            ),
            (
                "name = \"lenet5-fashion-mnist\"",
                "name = \"../x\"",
                "name: expected letters",
            ),
        ] {
            let err = ExperimentSpec::from_toml(&BUILTIN.replace(from, to), "x.toml").unwrap_err();
            assert!(err.starts_with(&format!("x.toml: {message}")), "{err}");
        }
        let err = ExperimentSpec::from_toml(
            &BUILTIN.replace("\"fashion-mnist\"", "\"imagenet\""),
            "x.toml",
        )
        .unwrap_err();
        assert!(err.contains("unknown variant `imagenet`"), "{err}");
    }
}
