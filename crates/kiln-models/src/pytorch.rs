//! PyTorch weights in and out: a `torch.save(net.state_dict())` file loads into a Kiln model,
//! and a Kiln model saves as safetensors that PyTorch's `load_state_dict` takes.
//!
//! Burn's `burn-store` reads the `.pt` file (without running any of its pickle code) and does
//! what every network needs: batch-norm `weight`/`bias` are Burn's `gamma`/`beta`, and Linear
//! weights are stored transposed. What differs per network is the module names, given by a
//! [`TorchNames`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn_store::{
    ApplyError, BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot, PytorchStore, SafetensorsStore,
};

/// How a network's PyTorch state-dict keys name Kiln's module paths: pairs of dotted paths
/// `(kiln, torch)`, renamed where they start a key (`prefixes`) or wherever they appear between
/// dots inside one (`infixes`). Export applies the same pairs the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TorchNames {
    /// `(kiln, torch)` paths renamed where a key starts with them.
    pub prefixes: &'static [(&'static str, &'static str)],
    /// `(kiln, torch)` paths renamed wherever they stand between dots.
    pub infixes: &'static [(&'static str, &'static str)],
}

impl TorchNames {
    /// PyTorch's module names are Kiln's field names.
    pub const SAME: TorchNames = TorchNames {
        prefixes: &[],
        infixes: &[],
    };

    /// The key remapping PyTorch -> Kiln (`import`) or Kiln -> PyTorch (`!import`).
    fn remapper(&self, import: bool) -> KeyRemapper {
        let mut remapper = KeyRemapper::new();
        let pick = |&(kiln, torch): &(&'static str, &'static str)| {
            if import {
                (torch, kiln)
            } else {
                (kiln, torch)
            }
        };
        for (from, to) in self.prefixes.iter().map(pick) {
            remapper = remapper
                .add_pattern(format!("^{}\\.", regex_escape(from)), format!("{to}."))
                .expect("an escaped literal is a valid pattern");
        }
        for (from, to) in self.infixes.iter().map(pick) {
            remapper = remapper
                .add_pattern(format!("\\.{}\\.", regex_escape(from)), format!(".{to}."))
                .expect("an escaped literal is a valid pattern");
        }
        remapper
    }

    /// Kiln's path for a PyTorch key, as the import renames it (for messages and tests).
    pub fn kiln_path(&self, torch_key: &str) -> String {
        remap(&self.remapper(true), torch_key)
    }

    /// PyTorch's key for a Kiln path, as the export renames it.
    pub fn torch_key(&self, kiln_path: &str) -> String {
        remap(&self.remapper(false), kiln_path)
    }
}

/// `key` renamed as burn-store renames it: each pattern in turn, on the previous one's output.
fn remap(remapper: &KeyRemapper, key: &str) -> String {
    remapper
        .to_regex_pairs()
        .iter()
        .fold(key.to_string(), |key, (pattern, to)| {
            pattern.replace_all(&key, to.as_str()).into_owned()
        })
}

fn regex_escape(literal: &str) -> String {
    literal
        .chars()
        .flat_map(|c| {
            let special = !(c.is_ascii_alphanumeric() || c == '_');
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// What an import matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Kiln paths that took a tensor from the file.
    pub loaded: Vec<String>,
    /// Keys of the file that PyTorch keeps and Burn has no field for (`num_batches_tracked`).
    pub ignored: Vec<String>,
}

/// Why weights could not be imported or exported.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // the messages say what each field is
pub enum WeightsError {
    /// The file is missing, unreadable or not a state dict.
    #[error("{path}: cannot read it as a PyTorch state dict: {message}")]
    Read { path: PathBuf, message: String },
    /// Every tensor that does not fit: missing, unused or of another shape, one per line.
    #[error("{path}: the weights do not fit the model:\n{problems}")]
    Mismatch { path: PathBuf, problems: String },
    /// The safetensors file could not be written.
    #[error("{path}: cannot write the weights: {message}")]
    Write { path: PathBuf, message: String },
}

/// Loads a `torch.save(net.state_dict())` file into `model`, naming keys by `names`.
///
/// Every tensor of the model must come from the file with its exact shape, and every key of
/// the file must be used (except `num_batches_tracked`, which Burn's batch norm does not keep);
/// otherwise nothing is loaded and the error lists each missing key, unused key and shape
/// mismatch (with both shapes). The tensors keep the file's dtype.
pub fn load_pytorch<B: Backend, M: Module<B>>(
    model: M,
    path: &Path,
    names: &TorchNames,
) -> Result<(M, ImportReport), WeightsError> {
    let mut store = PytorchStore::from_file(path)
        .remap(names.remapper(true))
        .map_indices_contiguous(false)
        .validate(false)
        .allow_partial(true)
        // A `Classifier`'s paths start with its variant's name; PyTorch's keys do not.
        .skip_enum_variants(true);
    // `load_from` changes the model in place before it reports problems; on an error the
    // half-loaded model is dropped here, never returned.
    let mut loaded = model;
    let result = loaded
        .load_from(&mut store)
        .map_err(|e| WeightsError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let applied: std::collections::HashSet<&str> =
        result.applied.iter().map(String::as_str).collect();
    let mut ignored = Vec::new();
    let mut unused = Vec::new();
    // The keys are already renamed to Kiln's paths.
    for key in &result.unused {
        // burn-store lists a batch norm's `weight`/`bias` as unused even when it loaded them
        // into `gamma`/`beta`; those are not unused.
        let aliased = |suffix: &str, burn: &str| {
            key.strip_suffix(suffix)
                .is_some_and(|stem| applied.contains(format!("{stem}.{burn}").as_str()))
        };
        if key.ends_with("num_batches_tracked") {
            ignored.push(names.torch_key(key));
        } else if !(aliased(".weight", "gamma") || aliased(".bias", "beta")) {
            unused.push(key.clone());
        }
    }
    let mut problems = String::new();
    for error in &result.errors {
        match error {
            ApplyError::ShapeMismatch {
                path: kiln,
                expected,
                found,
            } => {
                let _ = writeln!(
                    problems,
                    "  shape mismatch: {}: Kiln expects {:?}, the file has {:?} (both in Burn's \
                     layout, where Linear weights are transposed)",
                    key_names(names, kiln),
                    expected.as_slice(),
                    found.as_slice()
                );
            }
            other => {
                let _ = writeln!(problems, "  {other}");
            }
        }
    }
    for (kiln, _) in &result.missing {
        let _ = writeln!(
            problems,
            "  missing: {} is not in the file",
            key_names(names, kiln)
        );
    }
    for key in &unused {
        let _ = writeln!(
            problems,
            "  unused: {} is in the file but not in the model",
            key_names(names, key)
        );
    }
    if !problems.is_empty() {
        return Err(WeightsError::Mismatch {
            path: path.to_path_buf(),
            problems,
        });
    }
    let mut loaded_paths = result.applied;
    loaded_paths.sort();
    ignored.sort();
    Ok((
        loaded,
        ImportReport {
            loaded: loaded_paths,
            ignored,
        },
    ))
}

/// A key as the file names it, with Kiln's path where that differs.
fn key_names(names: &TorchNames, kiln: &str) -> String {
    let torch = names.torch_key(kiln);
    if torch == kiln {
        format!("`{kiln}`")
    } else {
        format!("`{torch}` (Kiln's `{kiln}`)")
    }
}

/// Writes `model`'s weights to `path` as safetensors with PyTorch's names (by `names`) and
/// layout, for `net.load_state_dict(safetensors.torch.load_file(path))`. Pass an inference
/// module (`model.valid()`): it carries the up-to-date batch-norm statistics.
pub fn save_safetensors<B: Backend, M: Module<B>>(
    model: &M,
    path: &Path,
    names: &TorchNames,
) -> Result<(), WeightsError> {
    let mut store = SafetensorsStore::from_file(path)
        .with_to_adapter(BurnToPyTorchAdapter)
        .remap(names.remapper(false))
        .overwrite(true)
        .skip_enum_variants(true)
        .metadata("producer", concat!("kiln ", env!("CARGO_PKG_VERSION")));
    model
        .save_into(&mut store)
        .map_err(|e| WeightsError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESNET: TorchNames = crate::resnet::TUTORIAL_TORCH_NAMES;

    #[test]
    fn names_rename_prefixes_and_infixes_both_ways() {
        let pairs = [
            ("block1.0.weight", "conv1.weight"),
            ("block1.1.running_var", "bn1.running_var"),
            ("block2.1.conv1.weight", "layers.0.blocks.1.conv1.weight"),
            (
                "block5.0.conv3.bias",
                "layers.3.blocks.0.shortcut.conv.bias",
            ),
            ("block3.0.bn2.weight", "layers.1.blocks.0.bn2.weight"),
            ("classifier.weight", "fc.weight"),
        ];
        for (torch, kiln) in pairs {
            assert_eq!(RESNET.kiln_path(torch), kiln);
            assert_eq!(RESNET.torch_key(kiln), torch);
        }
        let classic = crate::lenet5::CLASSIC_TORCH_NAMES;
        assert_eq!(classic.kiln_path("11.weight"), "fc3.weight");
        assert_eq!(
            classic.kiln_path("1.weight"),
            "1.weight",
            "no `1.` in the table"
        );
        assert_eq!(classic.torch_key("fc1.bias"), "7.bias");
        assert_eq!(TorchNames::SAME.kiln_path("fc1.bias"), "fc1.bias");
    }

    #[test]
    fn literals_are_escaped() {
        assert_eq!(regex_escape("layers.0.blocks"), "layers\\.0\\.blocks");
    }
}
