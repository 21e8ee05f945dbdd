//! Looking at a trained model: the pictures of a run (`plots/`), feature maps of one image,
//! and predictions for image files. The runner draws the pictures at the end of every run;
//! `kiln plots`, `kiln features` and `kiln predict` do the same later from a run folder.

use std::path::{Path, PathBuf};

use burn::data::dataloader::batcher::Batcher;
use burn::module::{AutodiffModule, Module};
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use kiln_data::{DataError, ImageBatch, ImageBatcher, ImageItem, ImageSet, Locator, Normalize};
use kiln_models::{first_conv_kernels, ImageClassifier, Maps};
use kiln_train::Event;

use crate::pictures::{save, Confusion, Curves, ImageGrid, Series, Tile};
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

/// How many test images the prediction grid shows.
const GRID_IMAGES: usize = 32;

/// Writes every picture of a run into `plots`: loss and accuracy by epoch, error rate by
/// logging interval (where the run logged within epochs), the confusion matrix and the
/// prediction grid of the test set, the first layer's kernels, and the feature maps of the
/// first test image (in `plots/features-test-0/`). Returns the PNG files written.
pub fn write_run_pictures(
    plots: &Path,
    experiment: &str,
    events: &[Event],
    test: &ImageSet,
    looked: &Looked,
) -> Result<Vec<PathBuf>, RunError> {
    let io = |source| RunError::Io {
        path: plots.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(plots).map_err(io)?;
    let mut written = Vec::new();
    for (stem, curves) in curves(experiment, events) {
        written.push(save(&curves, &plots.join(stem)).map_err(io)?[0].clone());
    }
    if !looked.test_probabilities.is_empty() {
        let predicted: Vec<usize> = looked
            .test_probabilities
            .iter()
            .map(|p| argmax(p))
            .collect();
        let correct = (0..test.len())
            .filter(|&i| predicted[i] == test.label(i) as usize)
            .count();
        let confusion = Confusion::from_pairs(
            format!(
                "{experiment}: test set, {} images, {:.2}% correct",
                test.len(),
                100.0 * correct as f64 / test.len().max(1) as f64
            ),
            test.classes.clone(),
            (0..test.len()).map(|i| (test.label(i) as usize, predicted[i])),
        );
        written.push(save(&confusion, &plots.join("confusion")).map_err(io)?[0].clone());
        let grid = prediction_grid(experiment, test, &looked.test_probabilities);
        written.push(save(&grid, &plots.join("predictions")).map_err(io)?[0].clone());
    }
    if !test.is_empty() {
        let input = Tile::from_pixels(test.channels, test.height, test.width, test.image(0));
        let caption = format!("test image 0 ({})", test.classes[test.label(0) as usize]);
        written.extend(write_feature_pictures(
            plots,
            &plots.join("features-test-0"),
            looked,
            input,
            &caption,
        )?);
    }
    Ok(written)
}

/// `kernels.{png,svg}` in `kernels_dir`, and in `maps_dir` the input image and one picture of
/// feature maps per convolution.
pub fn write_feature_pictures(
    kernels_dir: &Path,
    maps_dir: &Path,
    looked: &Looked,
    input: Tile,
    caption: &str,
) -> Result<Vec<PathBuf>, RunError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Io { path, source }
    };
    std::fs::create_dir_all(maps_dir).map_err(io(maps_dir))?;
    let mut written = Vec::new();
    if let Some(([out, inp, kh, kw], values)) = &looked.kernels {
        let size = inp * kh * kw;
        let tiles = values
            .chunks(size)
            .enumerate()
            .map(|(k, v)| {
                Tile::from_kernel(*inp, *kh, *kw, v).with_caption(vec![format!("{k}")], false)
            })
            .collect();
        let what = match inp {
            1 => "",
            3 => " (as RGB)",
            _ => " (first input channel)",
        };
        let grid = ImageGrid {
            title: format!("first convolution: {out} kernels of {inp}x{kh}x{kw}{what}"),
            tiles,
            columns: 8,
            tile_px: 48,
        };
        written
            .push(save(&grid, &kernels_dir.join("kernels")).map_err(io(kernels_dir))?[0].clone());
    }
    let input_grid = ImageGrid {
        title: caption.to_string(),
        tiles: vec![input],
        columns: 1,
        tile_px: 128,
    };
    written.push(save(&input_grid, &maps_dir.join("input")).map_err(io(maps_dir))?[0].clone());
    // Wide layers show their first 64 maps: enough to see what the layer responds to.
    const MAX_MAPS: usize = 64;
    for (i, maps) in looked.maps.iter().enumerate() {
        let [c, h, w] = maps.shape;
        let tiles = maps
            .values
            .chunks(h * w)
            .take(MAX_MAPS)
            .enumerate()
            .map(|(k, v)| Tile::from_map(h, w, v).with_caption(vec![format!("{k}")], false))
            .collect();
        let shown = if c > MAX_MAPS {
            format!(", first {MAX_MAPS} shown")
        } else {
            String::new()
        };
        let grid = ImageGrid {
            title: format!(
                "{} ({}): {c} feature maps of {h}x{w}{shown}, {caption}",
                maps.layer, maps.kind
            ),
            tiles,
            columns: 8,
            tile_px: 64,
        };
        let stem = format!("maps-{:02}-{}", i + 1, maps.layer.replace('.', "-"));
        written.push(save(&grid, &maps_dir.join(stem)).map_err(io(maps_dir))?[0].clone());
    }
    Ok(written)
}

fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

/// The curves of a run: `(file stem, chart)`.
fn curves(experiment: &str, events: &[Event]) -> Vec<(&'static str, Curves)> {
    let epochs: Vec<&kiln_train::EpochMetrics> = Event::epochs(events).collect();
    let steps: Vec<&kiln_train::StepMetrics> = Event::steps(events).collect();
    let by_epoch = |f: &dyn Fn(&kiln_train::EpochMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
        epochs
            .iter()
            .filter_map(|m| f(m).map(|v| (m.epoch as f64, v)))
            .collect()
    };
    let series = |parts: Vec<(&str, Vec<(f64, f64)>)>| -> Vec<Series> {
        parts
            .into_iter()
            .filter(|(_, points)| !points.is_empty())
            .map(|(name, points)| Series {
                name: name.to_string(),
                points,
            })
            .collect()
    };
    let mut out = vec![
        (
            "loss",
            Curves {
                title: format!("{experiment}: loss by epoch"),
                x_label: "epoch".into(),
                y_label: "cross-entropy loss".into(),
                series: series(vec![
                    (
                        "train (mean over the epoch)",
                        by_epoch(&|m| Some(m.train_loss)),
                    ),
                    ("validation", by_epoch(&|m| m.valid_loss)),
                    ("test", by_epoch(&|m| m.test_loss)),
                ]),
                rising: false,
            },
        ),
        (
            "accuracy",
            Curves {
                title: format!("{experiment}: accuracy by epoch"),
                x_label: "epoch".into(),
                y_label: "accuracy (%)".into(),
                series: series(vec![
                    (
                        "train (mean over the epoch)",
                        by_epoch(&|m| Some(100.0 * m.train_accuracy)),
                    ),
                    (
                        "validation",
                        by_epoch(&|m| m.valid_accuracy.map(|a| 100.0 * a)),
                    ),
                    ("test", by_epoch(&|m| m.test_accuracy.map(|a| 100.0 * a))),
                ]),
                rising: true,
            },
        ),
    ];
    if !steps.is_empty() {
        let every = steps.first().map_or(1, |s| s.step);
        out.push((
            "error-by-step",
            Curves {
                title: format!("{experiment}: error rate every {every} steps"),
                x_label: "optimiser step".into(),
                y_label: "error rate (%)".into(),
                series: series(vec![
                    (
                        "train (mean since the previous point)",
                        steps
                            .iter()
                            .map(|s| (s.step as f64, 100.0 * (1.0 - s.accuracy)))
                            .collect(),
                    ),
                    (
                        "validation",
                        steps
                            .iter()
                            .filter_map(|s| {
                                s.valid_accuracy.map(|a| (s.step as f64, 100.0 * (1.0 - a)))
                            })
                            .collect(),
                    ),
                ]),
                rising: false,
            },
        ));
    }
    out
}

/// Test images spread evenly over the split (image folders are sorted by class, so the first
/// few would all be one class), with their true and predicted classes; wrong ones in red.
fn prediction_grid(experiment: &str, test: &ImageSet, probabilities: &[Vec<f32>]) -> ImageGrid {
    let total = test.len().min(probabilities.len());
    let n = total.min(GRID_IMAGES);
    let mut wrong = 0;
    let tiles = (0..n)
        .map(|k| {
            let i = k * total / n;
            let p = &probabilities[i];
            let (truth, guess) = (test.label(i) as usize, argmax(p));
            wrong += usize::from(truth != guess);
            Tile::from_pixels(test.channels, test.height, test.width, test.image(i)).with_caption(
                vec![
                    format!("true: {}", test.classes[truth]),
                    format!("pred: {} {:.0}%", test.classes[guess], 100.0 * p[guess]),
                ],
                truth != guess,
            )
        })
        .collect();
    ImageGrid {
        title: format!("{experiment}: {n} test images spread over the split, {wrong} wrong (red)"),
        tiles,
        columns: 8,
        tile_px: 96,
    }
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

/// Where `kiln features` takes its image from.
#[derive(Debug, Clone)]
pub enum FeatureInput {
    /// The Nth image of the run's test split.
    TestIndex(usize),
    /// An image file (PNG, JPEG, ...), converted to the run's input shape.
    File(PathBuf),
}

/// `kiln features`: the first layer's kernels and every convolution's feature maps for one
/// image, into `plots/` and `plots/features-<test-N or file stem>/`. Returns the PNGs.
pub fn features<B: AutodiffBackend>(
    run: &RunFolder,
    input: &FeatureInput,
    locator: &Locator,
    device: &B::Device,
) -> Result<Vec<PathBuf>, RunError> {
    let shape = run.image_shape();
    let (pixels, caption, folder) = match input {
        FeatureInput::File(path) => {
            let stem = path
                .file_stem()
                .map_or("image".into(), |s| s.to_string_lossy().into_owned());
            (
                run.read_image(path)?,
                path.display().to_string(),
                format!("features-{stem}"),
            )
        }
        FeatureInput::TestIndex(n) => {
            let test = crate::load_test_split(&run.spec, locator)?;
            if *n >= test.len() {
                return Err(RunError::Spec(format!(
                    "--index: expected a test image index below {}, found {n}",
                    test.len()
                )));
            }
            let class = &test.classes[test.label(*n) as usize];
            (
                test.image(*n).to_vec(),
                format!("test image {n} ({class})"),
                format!("features-test-{n}"),
            )
        }
    };
    let batcher = run.batcher();
    let looked = look_at_run::<B>(
        run,
        Request {
            batcher: &batcher,
            test: None,
            maps_of: Some(&pixels),
            images: &[],
            batch_size: 1,
        },
        device,
    )?;
    let [c, h, w] = shape;
    let plots = run.plots_dir();
    write_feature_pictures(
        &plots,
        &plots.join(folder),
        &looked,
        Tile::from_pixels(c, h, w, &pixels),
        &caption,
    )
}

/// `kiln plots`: redraws every picture of a finished run from its files (evaluating the saved
/// model on the test split again).
pub fn redraw<B: AutodiffBackend>(
    run: &RunFolder,
    locator: &Locator,
    device: &B::Device,
) -> Result<Vec<PathBuf>, RunError> {
    let test = crate::load_test_split(&run.spec, locator)?;
    let batcher = run.batcher();
    let test0 = (!test.is_empty()).then(|| test.image(0));
    let looked = look_at_run::<B>(
        run,
        Request {
            batcher: &batcher,
            test: Some(&test),
            maps_of: test0,
            images: &[],
            batch_size: run.spec.recipe.batch_size.max(64),
        },
        device,
    )?;
    write_run_pictures(
        &run.plots_dir(),
        &run.spec.name,
        &run.events,
        &test,
        &looked,
    )
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
