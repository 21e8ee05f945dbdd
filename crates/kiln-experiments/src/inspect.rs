//! Reading a run folder back and looking at its trained model: class probabilities of the
//! test split, feature maps of one image, the first layer's kernels (what the pictures of
//! `kiln-report` are drawn from) and predictions for image files (`kiln predict`).

use std::path::PathBuf;

use burn::data::dataloader::batcher::Batcher;
use burn::module::{AutodiffModule, Module};
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use kiln_data::{DataError, ImageBatch, ImageBatcher, ImageItem, ImageSet};
use kiln_models::{first_conv_kernels, ImageClassifier, Maps};

use crate::error::RunError;
use crate::run_dir::RunFolder;
use crate::weights::load_weights;

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
    let weights = run.dir.join(crate::run_dir::MODEL);
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
