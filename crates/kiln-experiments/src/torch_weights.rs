//! `kiln import` and `kiln export`: an experiment's network with PyTorch's weights, under the
//! module names of the experiment's PyTorch code (`torch_names` in its TOML).

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use kiln_models::{ImageClassifier, ImportReport};

use crate::runner::{load_weights, save_weights, RunError};
use crate::{ExperimentSpec, ModelTask};

fn weights_error(e: kiln_models::WeightsError) -> RunError {
    RunError::Spec(e.to_string())
}

/// Loads `weights` (a `torch.save(net.state_dict())` file) into `spec`'s network and saves it
/// as Kiln weights at `out` (what `kiln run --init-weights` and a run's `model.mpk` hold).
/// Nothing is written unless every tensor fits.
pub fn import_pytorch<B: AutodiffBackend>(
    spec: &ExperimentSpec,
    weights: &Path,
    out: &Path,
    device: &B::Device,
) -> Result<ImportReport, RunError> {
    let [channels, _, _] = spec.data.input_shape();
    let classes = spec.data.dataset.classes().len();
    let task = Import { spec, weights, out };
    spec.model.build::<B, _>(channels, classes, device, task)
}

struct Import<'a> {
    spec: &'a ExperimentSpec,
    weights: &'a Path,
    out: &'a Path,
}

impl<B: AutodiffBackend> ModelTask<B> for Import<'_> {
    type Output = Result<ImportReport, RunError>;

    fn run<M>(self, model: M) -> Self::Output
    where
        M: AutodiffModule<B> + ImageClassifier<B>,
        M::InnerModule: ImageClassifier<B::InnerBackend>,
    {
        let names = self.spec.torch_names.names();
        let (model, report) =
            kiln_models::load_pytorch(model, self.weights, &names).map_err(weights_error)?;
        save_weights(&model, self.out)?;
        Ok(report)
    }
}

/// Writes `weights` (Kiln weights of `spec`'s network for `channels`-channel images and
/// `classes` classes, such as a run's `model.mpk`) to `out` as safetensors, under the module
/// names of the experiment's PyTorch code, for `net.load_state_dict(load_file(out))`.
pub fn export_safetensors<B: AutodiffBackend>(
    spec: &ExperimentSpec,
    [channels, classes]: [usize; 2],
    weights: &Path,
    out: &Path,
    device: &B::Device,
) -> Result<(), RunError> {
    let task = Export::<B> {
        names: spec.torch_names.names(),
        weights,
        out,
        device,
    };
    spec.model.build(channels, classes, device, task)
}

struct Export<'a, B: AutodiffBackend> {
    names: kiln_models::TorchNames,
    weights: &'a Path,
    out: &'a Path,
    device: &'a B::Device,
}

impl<B: AutodiffBackend> ModelTask<B> for Export<'_, B> {
    type Output = Result<(), RunError>;

    fn run<M>(self, model: M) -> Self::Output
    where
        M: AutodiffModule<B> + ImageClassifier<B>,
        M::InnerModule: ImageClassifier<B::InnerBackend>,
    {
        let model = load_weights(model, self.weights, self.device)?;
        kiln_models::save_safetensors(&model.valid(), self.out, &self.names).map_err(weights_error)
    }
}
