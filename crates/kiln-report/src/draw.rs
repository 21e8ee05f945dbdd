//! The pictures of a run, drawn from what `kiln-experiments` computes with its model: curves,
//! the confusion matrix, a prediction grid, the first layer's kernels and feature maps.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use kiln_data::{ImageSet, Locator};
use kiln_experiments::inspect::{look_at_run, Looked, Request};
use kiln_experiments::{load_test_split, Finished, RunError, RunFolder};
use kiln_train::Event;

use crate::pictures::{save, Confusion, Curves, ImageGrid, Series, Tile};

/// How many test images the prediction grid shows.
const GRID_IMAGES: usize = 32;

/// Writes every picture of a run into its `plots/`: loss and accuracy by epoch, error rate by
/// logging interval (where the run logged within epochs), the confusion matrix and the
/// prediction grid of the test set, the first layer's kernels, and the feature maps of the
/// first test image (in `plots/features-test-0/`). Returns the PNG files written. A
/// [`kiln_experiments::DrawRun`]: `kiln run` hands it to the runner.
pub fn write_run_pictures(run: &Finished<'_>) -> Result<Vec<PathBuf>, RunError> {
    let Finished {
        plots,
        experiment,
        events,
        test,
        looked,
    } = *run;
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
            let test = load_test_split(&run.spec, locator)?;
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
            tta: run.spec.recipe.test_time_augmentation,
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
    let test = load_test_split(&run.spec, locator)?;
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
            tta: run.spec.recipe.test_time_augmentation,
        },
        device,
    )?;
    write_run_pictures(&Finished {
        plots: &run.plots_dir(),
        experiment: &run.spec.name,
        events: &run.events,
        test: &test,
        looked: &looked,
    })
}
