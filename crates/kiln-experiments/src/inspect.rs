//! Reading a run folder back and looking at its trained model: class probabilities of the
//! test split, feature maps of one image, the first layer's kernels (what the pictures of
//! `kiln-report` are drawn from) and predictions for image files (`kiln predict`).

use std::path::PathBuf;

use burn::data::dataloader::batcher::Batcher;
use burn::module::{AutodiffModule, Module};
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use kiln_data::{DataError, ImageBatch, ImageBatcher, ImageItem, ImageSet};
use kiln_models::{first_conv_kernels, ImageClassifier, Maps, TestTimeAugmentation, Tta};

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
    /// How every class probability is averaged over copies of the image: the run's recipe's
    /// `test_time_augmentation`, so that the probabilities are those its final accuracy was
    /// measured with.
    pub tta: TestTimeAugmentation,
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
    let averaged = Tta::new(model, request.tta);
    let test_probabilities = request.test.map_or_else(Vec::new, |set| {
        kiln_train::predict(&averaged, set, batcher, request.batch_size, device)
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
        kiln_train::probabilities(&averaged, batch.images)
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

/// `kiln predict`: the `top_k` classes with their softmax probabilities for each file (averaged
/// over the run's test-time augmentation, if its recipe has one). A file
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
            tta: run.spec.recipe.test_time_augmentation,
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
    use burn::tensor::activation::softmax;
    use burn::tensor::Tensor;
    use burn_ndarray::NdArray;
    use kiln_data::Normalize;

    type B = NdArray<f32>;

    /// Probabilities of one image with `tta` through [`look`].
    fn looked(
        model: &kiln_models::Classifier<B>,
        pixels: &[u8],
        tta: TestTimeAugmentation,
    ) -> Vec<f32> {
        let set = ImageSet::new(
            3,
            32,
            32,
            pixels.to_vec(),
            vec![0],
            (0..10).map(|c| c.to_string()).collect(),
        );
        let batcher = ImageBatcher::for_set(&set, Normalize::unit());
        let request = Request {
            batcher: &batcher,
            test: Some(&set),
            maps_of: None,
            images: &[pixels.to_vec()],
            batch_size: 1,
            tta,
        };
        let looked = look(model, &request, &Default::default());
        assert_eq!(
            looked.test_probabilities, looked.image_probabilities,
            "one image, both ways"
        );
        looked.image_probabilities[0].clone()
    }

    #[test]
    fn probabilities_are_averaged_over_the_runs_test_time_augmentation() {
        let device = Default::default();
        let model = crate::models::ModelSpec::SimpleCnn { image_size: None }.build::<B>(
            [3, 32, 32],
            10,
            &device,
        );
        let pixels: Vec<u8> = (0..3 * 32 * 32).map(|i| (i * 37 % 251) as u8).collect();
        // By hand: softmax of the mean of the image's logits and its mirror image's.
        let x = Tensor::<B, 1>::from_floats(
            pixels
                .iter()
                .map(|&p| p as f32 / 255.0)
                .collect::<Vec<_>>()
                .as_slice(),
            &device,
        )
        .reshape([1, 3, 32, 32]);
        let logits = (model.logits(x.clone()) + model.logits(x.flip([3]))) / 2.0;
        let want: Vec<f32> = softmax(logits, 1).into_data().to_vec().unwrap();

        let mirrored = looked(&model, &pixels, TestTimeAugmentation::Mirror);
        let plain = looked(&model, &pixels, TestTimeAugmentation::None);
        let differ = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max)
        };
        assert!(
            differ(&mirrored, &want) < 1e-6,
            "{mirrored:?} against {want:?}"
        );
        // The mirror changes this network's answer, so the check above could fail.
        assert!(differ(&plain, &want) > 1e-5, "{plain:?} against {want:?}");
    }
}
