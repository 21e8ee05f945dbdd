//! Reading a run folder back and looking at its trained model: class probabilities of the
//! test split, feature maps of one image, the first layer's kernels (what the pictures of
//! `kiln-report` are drawn from) and predictions for image files (`kiln predict`).

use std::path::{Path, PathBuf};

use burn::data::dataloader::batcher::Batcher;
use burn::module::{AutodiffModule, Module};
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use kiln_data::{DataError, ImageBatch, ImageBatcher, ImageItem, ImageSet, Normalize};
use kiln_models::{first_conv_kernels, ImageClassifier, Maps};
use kiln_train::Event;

use crate::runner::{load_weights, RunError, RunSummary};
use crate::ExperimentSpec;

/// A finished run folder, read back: its spec, summary and events.
#[derive(Debug, Clone)]
pub struct RunFolder {
    /// The run folder.
    pub dir: PathBuf,
    /// Its `config.toml`: the spec the run trained with, overrides applied.
    pub spec: ExperimentSpec,
    /// Its `summary.json`.
    pub summary: RunSummary,
    /// Its `metrics.jsonl`, every event in order.
    pub events: Vec<Event>,
}

impl RunFolder {
    /// Reads `config.toml`, `summary.json` and `metrics.jsonl`; an error names the file and
    /// says what is wrong with it.
    pub fn open(dir: &Path) -> Result<RunFolder, RunError> {
        if !dir.is_dir() {
            return Err(RunError::Spec(format!(
                "{}: not a run folder (expected a folder written by `kiln run`)",
                dir.display()
            )));
        }
        let config = dir.join("config.toml");
        if !config.is_file() {
            return Err(RunError::Spec(format!(
                "{}: not a run folder: it has no config.toml (expected a folder written by `kiln run`)",
                dir.display()
            )));
        }
        let spec = crate::load(&config.to_string_lossy()).map_err(RunError::Spec)?;
        let summary_path = dir.join("summary.json");
        let text = std::fs::read_to_string(&summary_path).map_err(|e| {
            RunError::Spec(format!(
                "{}: cannot read it ({e}); a run writes it when it finishes, so this run may \
                 have stopped early",
                summary_path.display()
            ))
        })?;
        let summary: RunSummary = serde_json::from_str(&text).map_err(|e| {
            RunError::Spec(format!(
                "{}: not a run summary: {e}",
                summary_path.display()
            ))
        })?;
        let events = read_events(&dir.join("metrics.jsonl"))?;
        Ok(RunFolder {
            dir: dir.to_path_buf(),
            spec,
            summary,
            events,
        })
    }

    /// The class names, as the run recorded them (older runs: the data set's).
    pub fn classes(&self) -> Vec<String> {
        if self.summary.classes.is_empty() {
            self.spec.data.classes().unwrap_or_default()
        } else {
            self.summary.classes.clone()
        }
    }

    /// `[channels, height, width]` of the images the model was trained on, before any resize.
    pub fn image_shape(&self) -> [usize; 3] {
        self.summary.image_shape.unwrap_or_else(|| {
            // Runs older than `image_shape` in summaries: a known data set's published size.
            let data = &self.spec.data;
            let side = data.image_size.or(data.dataset.image_size()).unwrap_or(0);
            [data.channels(), side, side]
        })
    }

    /// An image file as the run's images were: its channels and size, resized where the run
    /// resized its own images as they loaded (a folder set's `image_size`), else refused when
    /// its size differs.
    pub fn read_image(&self, path: &Path) -> Result<Vec<u8>, DataError> {
        let shape = self.image_shape();
        if self.spec.data.image_size.is_some() {
            kiln_data::read_image_resized(path, shape)
        } else {
            kiln_data::read_image(path, shape)
        }
    }

    /// `[channels, height, width]` of what the network takes: the images after the run's
    /// resize.
    pub fn model_input(&self) -> [usize; 3] {
        let [c, h, w] = self.image_shape();
        let resize = self.spec.data.resize;
        [c, resize.unwrap_or(h), resize.unwrap_or(w)]
    }

    /// The evaluation batcher of the run: its resize and its resolved normalisation.
    pub fn batcher(&self) -> ImageBatcher {
        inference_batcher(
            &self.spec,
            self.image_shape(),
            self.summary.normalize.clone(),
        )
    }

    /// The folder pictures are written to (`plots/` in the run folder).
    pub fn plots_dir(&self) -> PathBuf {
        self.dir.join("plots")
    }
}

fn inference_batcher(
    spec: &ExperimentSpec,
    shape: [usize; 3],
    normalize: Normalize,
) -> ImageBatcher {
    ImageBatcher {
        shape,
        resize: spec.data.resize.map(|side| [side, side]),
        augment: Default::default(),
        normalize,
    }
}

/// Reads `metrics.jsonl`, one event per line; an error names the file and the line.
pub fn read_events(path: &Path) -> Result<Vec<Event>, RunError> {
    let text = std::fs::read_to_string(path).map_err(|source| RunError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_events(path, &text)
}

/// The events of `text`, the contents of the `metrics.jsonl` at `path` (which errors name).
pub fn parse_events(path: &Path, text: &str) -> Result<Vec<Event>, RunError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                RunError::Spec(format!(
                    "{}:{}: expected a metrics event (JSON with \"event\": \"step\" or \"epoch\"): {e}",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}

/// What to compute with a model.
pub struct Request<'a> {
    /// Turns images into the model's input, as in training (without augmentation).
    pub batcher: &'a ImageBatcher,
    /// Class probabilities of every image of this set (confusion matrix, prediction grid).
    pub test: Option<&'a ImageSet>,
    /// Feature maps of this image (raw pixels in the batcher's source shape).
    pub maps_of: Option<&'a [u8]>,
    /// Class probabilities of each of these images.
    pub images: &'a [Vec<u8>],
    /// Images per forward pass.
    pub batch_size: usize,
}

/// What a model gave for a [`Request`].
#[derive(Debug, Clone, Default)]
pub struct Looked {
    /// One row of class probabilities per image of [`Request::test`].
    pub test_probabilities: Vec<Vec<f32>>,
    /// The first convolution's kernels, `[out, in, height, width]` and row-major values, if the network has one.
    pub kernels: Option<([usize; 4], Vec<f32>)>,
    /// The feature maps of [`Request::maps_of`], one entry per layer the network exposes.
    pub maps: Vec<Maps>,
    /// One row of class probabilities per image of [`Request::images`].
    pub image_probabilities: Vec<Vec<f32>>,
}

/// Runs `request` on an inference model (`model.valid()`).
pub fn look<B: Backend, M: ImageClassifier<B> + Module<B>>(
    model: &M,
    request: &Request<'_>,
    device: &B::Device,
) -> Looked {
    let batcher = request.batcher;
    let item = |pixels: &[u8]| ImageItem {
        pixels: pixels.to_vec(),
        label: 0,
    };
    let test_probabilities = request.test.map_or_else(Vec::new, |set| {
        kiln_train::predict(model, set, batcher, request.batch_size, device)
    });
    let maps = request.maps_of.map_or_else(Vec::new, |pixels| {
        let batch: ImageBatch<B> = batcher.batch(vec![item(pixels)], device);
        let [_, c, h, w] = batch.images.dims();
        model.feature_maps(batch.images.reshape([c, h, w]))
    });
    let image_probabilities = if request.images.is_empty() {
        Vec::new()
    } else {
        let batch: ImageBatch<B> =
            batcher.batch(request.images.iter().map(|p| item(p)).collect(), device);
        kiln_train::probabilities(model, batch.images)
    };
    Looked {
        test_probabilities,
        kernels: first_conv_kernels(model),
        maps,
        image_probabilities,
    }
}

/// Builds the run's network with its saved weights (`model.mpk`) and runs `request`.
pub fn look_at_run<B: AutodiffBackend>(
    run: &RunFolder,
    request: Request<'_>,
    device: &B::Device,
) -> Result<Looked, RunError> {
    let weights = run.dir.join("model.mpk");
    if !weights.is_file() {
        return Err(RunError::Spec(format!(
            "{}: missing; the run saves its weights there when training ends",
            weights.display()
        )));
    }
    let model = run
        .spec
        .model
        .build::<B>(run.model_input(), run.classes().len(), device);
    let model = load_weights(model, &weights, device)?;
    Ok(look(&model.valid(), &request, device))
}

/// One file's top classes, or why it could not be predicted.
pub type FilePrediction = (PathBuf, Result<Vec<(String, f32)>, DataError>);

/// `kiln predict`: the `top_k` classes with their softmax probabilities for each file. A file
/// that cannot be read as an image of the run's size gets its own error; the others are still
/// predicted.
pub fn predict_files<B: AutodiffBackend>(
    run: &RunFolder,
    files: &[PathBuf],
    top_k: usize,
    device: &B::Device,
) -> Result<Vec<FilePrediction>, RunError> {
    let read: Vec<Result<Vec<u8>, DataError>> = files.iter().map(|f| run.read_image(f)).collect();
    let images: Vec<Vec<u8>> = read
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    let batcher = run.batcher();
    let looked = look_at_run::<B>(
        run,
        Request {
            batcher: &batcher,
            test: None,
            maps_of: None,
            images: &images,
            batch_size: 64,
        },
        device,
    )?;
    let classes = run.classes();
    let mut probabilities = looked.image_probabilities.into_iter();
    Ok(files
        .iter()
        .zip(read)
        .map(|(file, r)| {
            let result = r.map(|_| {
                let p = probabilities.next().expect("one row per readable image");
                let mut ranked: Vec<(String, f32)> = classes.iter().cloned().zip(p).collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                ranked.truncate(top_k.max(1));
                ranked
            });
            (file.clone(), result)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_that_is_not_a_finished_run_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = |d: &Path| RunFolder::open(d).unwrap_err().to_string();
        assert!(err(&dir.path().join("nope"))
            .ends_with("nope: not a run folder (expected a folder written by `kiln run`)"));
        assert!(err(dir.path()).contains("not a run folder: it has no config.toml"));
        let spec = crate::builtin().remove(0);
        std::fs::write(dir.path().join("config.toml"), spec.to_toml()).unwrap();
        let e = err(dir.path());
        assert!(
            e.contains("summary.json: cannot read it") && e.contains("stopped early"),
            "{e}"
        );
        std::fs::write(dir.path().join("summary.json"), "{}").unwrap();
        assert!(err(dir.path()).contains("summary.json: not a run summary: missing field"));
    }

    #[test]
    fn a_bad_metrics_line_is_named_by_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, "{\"event\":\"step\",\"epoch\":1,\"step\":5,\"lr\":0.1,\"loss\":2.0,\"accuracy\":0.1}\n{oops\n").unwrap();
        let e = read_events(&path).unwrap_err().to_string();
        assert!(
            e.contains("metrics.jsonl:2: expected a metrics event"),
            "{e}"
        );
    }
}
