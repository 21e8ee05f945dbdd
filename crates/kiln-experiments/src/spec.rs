//! The experiment file's schema. Unknown keys are errors (`deny_unknown_fields`) and every value
//! is checked by [`ExperimentSpec::validate`], whose messages name the key.

use kiln_data::mnist::{FASHION_MNIST, MNIST};
use kiln_data::{Augment, IdxDataset, Normalize, Split};
use kiln_train::Recipe;

pub use crate::models::ModelSpec;
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
    /// Fixed `{ mean = [...], std = [...] }` of pixels scaled to [0, 1], or statistics of the
    /// training images: `"global"` (one mean and std) or `"per-channel"`.
    pub normalize: NormalizeSpec,
    /// Convert RGB images to one luma channel.
    #[serde(default, skip_serializing_if = "is_false")]
    pub grayscale: bool,
    /// Resize to `resize` x `resize` (bilinear), e.g. CIFAR-10 to 96 for the ResNet tutorial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<usize>,
    /// Training-time augmentation (random crop with padding, horizontal flip).
    #[serde(default, skip_serializing_if = "Augment::is_identity")]
    pub augment: Augment,
    /// Train on the first `percent`% of the training images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Hold out the first `count` images of a split for validation (the MNIST tutorial takes
    /// the first 5,000 test images; the remaining 5,000 are the test set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationSplit>,
    /// Train on the first N training images only (for smoke runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_train: Option<usize>,
    /// Evaluate on the first N test images only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_test: Option<usize>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NormalizeSpec {
    Fixed(Normalize),
    FromTrainingSet(Statistics),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Statistics {
    Global,
    PerChannel,
}

impl NormalizeSpec {
    /// The normalisation to apply, computing statistics from `train` where asked.
    pub fn resolve(&self, train: &kiln_data::ImageSet) -> Normalize {
        match self {
            NormalizeSpec::Fixed(n) => n.clone(),
            NormalizeSpec::FromTrainingSet(kind) => {
                let (mean, std) = train.pixel_stats(*kind == Statistics::PerChannel);
                Normalize { mean, std }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSplit {
    /// The split the validation images are taken from (its remainder stays in that split).
    pub from: Split,
    pub count: usize,
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
        if self.data.validation.is_some_and(|v| v.count == 0) {
            return Err("data.validation.count: expected at least 1, found 0".into());
        }
        let channels = if self.data.grayscale {
            1
        } else {
            self.data.dataset.channels()
        };
        if let NormalizeSpec::Fixed(n) = &self.data.normalize {
            n.validate(channels)
                .map_err(|e| format!("data.normalize.{e}"))?;
        }
        if self.data.resize == Some(0) {
            return Err("data.resize: expected at least 1 pixel, found 0".into());
        }
        if let Some(p) = self.data.percent {
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!(
                    "data.percent: expected a value in (0, 100], found {p}"
                ));
            }
        }
        self.model.validate()?;
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
