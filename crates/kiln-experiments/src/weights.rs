//! Weights in and out: Kiln's own (a run's `model.mpk`, full precision) and PyTorch's
//! (`kiln import` and `kiln export`, under the module names of the experiment's PyTorch code,
//! `torch_names` in its TOML).

use std::path::Path;

use burn::tensor::backend::Backend;
use kiln_models::{Classifier, ImportReport};

use crate::error::{io_error, RunError};
use crate::run_dir::write_atomic;
use crate::ValidSpec;

/// Loads weights written by [`save_weights`] (a run's `model.mpk`, `kiln import`'s output)
/// into `model`, which must be the same network.
pub fn load_weights<B: Backend>(
    model: Classifier<B>,
    path: &Path,
    device: &B::Device,
) -> Result<Classifier<B>, RunError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    model.load_mpk(bytes, device).map_err(|e| {
        RunError::Spec(format!(
            "{}: cannot load it as this experiment's weights: {e}",
            path.display()
        ))
    })
}

/// Writes `model`'s weights to `path` in full precision, atomically: what [`load_weights`]
/// reads. Pass an inference module (`model.valid()`) of a trained model: it carries the
/// up-to-date batch-norm statistics.
pub fn save_weights<B: Backend>(model: Classifier<B>, path: &Path) -> Result<(), RunError> {
    write_atomic(path, &model.into_mpk()).map_err(io_error(path))
}

fn weights_error(e: kiln_models::WeightsError) -> RunError {
    RunError::Spec(e.to_string())
}

/// Loads `weights` (a `torch.save(net.state_dict())` file) into `spec`'s network and saves it
/// as Kiln weights at `out` (what `kiln run --init-weights` and a run's `model.mpk` hold).
/// Nothing is written unless every tensor fits.
pub fn import_pytorch<B: Backend>(
    spec: &ValidSpec,
    weights: &Path,
    out: &Path,
    device: &B::Device,
) -> Result<ImportReport, RunError> {
    let input = spec.data.input_shape().map_err(RunError::Spec)?;
    let classes = spec.data.classes().map_err(RunError::Spec)?.len();
    let model = spec.model.build::<B>(input, classes, device);
    let names = spec.torch_names.names();
    let (model, report) =
        kiln_models::load_pytorch(model, weights, &names).map_err(weights_error)?;
    save_weights(model, out)?;
    Ok(report)
}

/// Writes `weights` (Kiln weights of `spec`'s network for `input` = `[channels, height,
/// width]` images and `classes` classes, such as a run's `model.mpk`) to `out` as safetensors, under the module
/// names of the experiment's PyTorch code, for `net.load_state_dict(load_file(out))`.
pub fn export_safetensors<B: Backend>(
    spec: &ValidSpec,
    (input, classes): ([usize; 3], usize),
    weights: &Path,
    out: &Path,
    device: &B::Device,
) -> Result<(), RunError> {
    let model = spec.model.build::<B>(input, classes, device);
    let model = load_weights(model, weights, device)?;
    kiln_models::save_safetensors(&model, out, &spec.torch_names.names()).map_err(weights_error)
}
