//! The built-in experiments (the files in `experiments/`, embedded in the binary so `kiln` runs
//! them from any directory) and lookup by name or path.

use std::path::Path;

use crate::{ExperimentSpec, SpecError, ValidSpec};

/// `(name, TOML text)` of every built-in experiment. Adding one is a file plus a line here.
const BUILTIN: &[(&str, &str)] = &[
    (
        "lenet5-fashion-mnist",
        include_str!("../../../experiments/lenet5-fashion-mnist.toml"),
    ),
    (
        "lenet5-classic-fashion-mnist",
        include_str!("../../../experiments/lenet5-classic-fashion-mnist.toml"),
    ),
    (
        "convnet-mnist",
        include_str!("../../../experiments/convnet-mnist.toml"),
    ),
    (
        "simple-cnn-cifar10",
        include_str!("../../../experiments/simple-cnn-cifar10.toml"),
    ),
    (
        "cnn-dropout-cifar10",
        include_str!("../../../experiments/cnn-dropout-cifar10.toml"),
    ),
    (
        "resnet-cifar10",
        include_str!("../../../experiments/resnet-cifar10.toml"),
    ),
    (
        "airbench94-cifar10",
        include_str!("../../../experiments/airbench94-cifar10.toml"),
    ),
];

/// The built-in experiments, parsed and checked.
pub fn builtin() -> Vec<ValidSpec> {
    BUILTIN
        .iter()
        .map(|(name, text)| {
            ValidSpec::from_toml(text, name)
                .unwrap_or_else(|e| panic!("built-in experiment is invalid: {e}"))
        })
        .collect()
}

/// A built-in experiment by name, or an experiment file by path (anything ending in `.toml`),
/// parsed; [`ExperimentSpec::validate`] checks its values once any overrides are applied.
pub fn load(name_or_path: &str) -> Result<ExperimentSpec, SpecError> {
    let refused = |origin: Option<&str>, problem: String| SpecError {
        origin: origin.map(str::to_string),
        key: String::new(),
        problem,
    };
    if name_or_path.ends_with(".toml") || Path::new(name_or_path).is_file() {
        let text = std::fs::read_to_string(name_or_path).map_err(|e| {
            refused(
                Some(name_or_path),
                format!("cannot read experiment file: {e}"),
            )
        })?;
        return ExperimentSpec::from_toml(&text, name_or_path);
    }
    match BUILTIN.iter().find(|(name, _)| *name == name_or_path) {
        Some((name, text)) => ExperimentSpec::from_toml(text, name),
        None => {
            let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
            Err(refused(
                None,
                format!(
                    "unknown experiment {name_or_path:?}{}; expected one of: {} (or a path to a .toml file)",
                    did_you_mean(name_or_path, &names),
                    names.join(", ")
                ),
            ))
        }
    }
}

/// `" (did you mean \"x\"?)"` for the name among `choices` nearest to `name` by edit distance,
/// where one is near enough to be a slip (at most a third of its letters, at least 1), else "".
pub fn did_you_mean(name: &str, choices: &[&str]) -> String {
    let nearest = choices
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .min()
        .filter(|&(d, c)| d > 0 && d <= (c.chars().count() / 3).max(1));
    nearest.map_or_else(String::new, |(_, c)| format!(" (did you mean {c:?}?)"))
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_and_is_named_after_its_entry() {
        for (entry, spec) in BUILTIN.iter().zip(builtin()) {
            assert_eq!(entry.0, spec.name);
        }
    }

    /// What `kiln summary` prints: every built-in network fits its experiment's input size,
    /// and the parameter totals are the PyTorch originals' (hand-counted in kiln-models).
    #[test]
    fn every_builtin_model_fits_its_input_size() {
        type B = burn_ndarray::NdArray<f32>;
        let device = Default::default();
        for spec in builtin() {
            let input = spec.data.input_shape().unwrap();
            let summary = spec.model.summary::<B>(input, 10, &device).unwrap();
            assert!(summary.clashes.is_empty(), "{}: {summary}", spec.name);
            let expected = match spec.name.as_str() {
                "lenet5-fashion-mnist" | "lenet5-classic-fashion-mnist" => 61_706,
                "convnet-mnist" => 207_258,
                "simple-cnn-cifar10" => 36_458,
                "cnn-dropout-cifar10" => 4_210_090,
                // The counts of `../shared/TUTORIAL-NETWORKS.md`. The tutorial's ResNet is
                // larger than the standard ResNet-18 (11,173,962) by its 7x7 stem and the
                // biases of its stem and shortcuts, smaller by its shortcuts' lack of batch norm.
                "resnet-cifar10" => 11_180_810,
                // airbench94's sum(p.numel() for p in make_net94().parameters()), its frozen
                // whitening weights and batch-norm scales included (kiln-models counts it).
                "airbench94-cifar10" => 1_972_792,
                other => panic!("add {other}'s parameter count here"),
            };
            assert_eq!(summary.total_params(), expected, "{}", spec.name);
            assert_eq!(summary.rows.last().unwrap().output, [10], "{}", spec.name);
        }
    }

    #[test]
    fn unknown_name_lists_the_choices() {
        let err = load("lenet7").unwrap_err().to_string();
        assert!(err.contains("unknown experiment \"lenet7\";"), "{err}");
        assert!(err.contains("lenet5-fashion-mnist"), "{err}");
        let err = load("resnet-cifar").unwrap_err().to_string();
        assert!(
            err.contains("unknown experiment \"resnet-cifar\" (did you mean \"resnet-cifar10\"?)"),
            "{err}"
        );
    }

    #[test]
    fn suggestions_are_near_misses_only() {
        let choices = ["cpu", "ndarray", "wgpu", "tch"];
        assert_eq!(
            did_you_mean("ndaray", &choices),
            " (did you mean \"ndarray\"?)"
        );
        assert_eq!(did_you_mean("wgpuu", &choices), " (did you mean \"wgpu\"?)");
        assert_eq!(did_you_mean("tensorflow", &choices), "");
        assert_eq!(did_you_mean("cpu", &choices), "");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn missing_file_is_named() {
        let err = load("/nonexistent/x.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("/nonexistent/x.toml: cannot read experiment file"),
            "{err}"
        );
    }
}
