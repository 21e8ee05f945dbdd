//! From a spec to a finished run folder.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use kiln_data::{ImageBatch, ImageBatcher, ImageItem, ImageSet, Locator, Split};
use kiln_models::{Classifier, ImageClassifier};
use kiln_train::{Checkpoint, Collective, Event, FitData, FitOptions};

use crate::error::{io_error, RunError};
use crate::machine;
use crate::run_dir::{self, write_atomic, FixedBatchLogits, ParallelRun, RunStart, RunSummary};
use crate::spec::{DatasetName, MAX_SIDE, MIN_SIDE};
use crate::tensorboard;
use crate::weights::{load_weights, save_weights};
use crate::{ExperimentSpec, ValidSpec};

/// Where and how to run. Only `init_weights` changes the numbers a run produces, and the
/// summary records it.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run folders go under `runs_dir/<experiment>/`.
    pub runs_dir: PathBuf,
    /// Write the run into exactly this folder (created; it must not exist or be empty)
    /// instead of a new one under `runs_dir`: how `kiln compare` knows its children's folders.
    pub run_folder: Option<PathBuf>,
    /// Backend name for the folder and the summary (`ndarray`, `wgpu`, ...).
    pub backend: String,
    /// Where the data set's files are found or fetched.
    pub locator: Locator,
    /// Show progress bars on the terminal.
    pub progress: bool,
    /// Start from these weights (a `model.mpk` of the same experiment's network) instead of
    /// the seeded initialisation: how backends are compared from identical weights.
    pub init_weights: Option<PathBuf>,
    /// Write `logits.json`: the logits of the first N test images before and after training,
    /// for comparing backends on a fixed batch.
    pub logits_of: Option<usize>,
    /// Once set, training saves a checkpoint and stops at the next step (Ctrl-C).
    pub stop: Option<&'static AtomicBool>,
    /// Draws the run's pictures into `plots/` once its weights are saved (`kiln run` passes
    /// `kiln_report::write_run_pictures`); `None` draws none and skips the evaluation they
    /// are drawn from.
    pub draw: Option<DrawRun>,
    /// Train data-parallel with the other ranks of this group (see `kiln_train::parallel`):
    /// every rank calls [`run`] (or [`resume`]) with the same spec and options but its own
    /// member of the group. Rank 0 alone writes the run folder; every rank returns its path
    /// and the same summary.
    pub parallel: Option<&'static dyn Collective>,
}

/// What a finished run hands to [`RunOptions::draw`]: everything its pictures come from.
pub struct Finished<'a> {
    /// The run folder's `plots/`.
    pub plots: &'a Path,
    /// The experiment's name, for titles.
    pub experiment: &'a str,
    /// Every event of the run, those of the sessions before a resume included.
    pub events: &'a [Event],
    /// The test split.
    pub test: &'a ImageSet,
    /// The trained model's outputs on it ([`crate::inspect::look`]).
    pub looked: &'a crate::inspect::Looked,
}

/// Draws a finished run's pictures and returns the files written.
pub type DrawRun = fn(&Finished<'_>) -> Result<Vec<PathBuf>, RunError>;

/// Why a run's epochs all have test metrics.
const TESTED: &str = "a run evaluates its test split every epoch";

/// A finished run: where it is and its headline numbers.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run folder.
    pub dir: PathBuf,
    /// What `summary.json` holds.
    pub summary: RunSummary,
}

/// Runs `spec` on backend `B` and writes the run folder:
/// `config.toml` (the resolved spec), `layers.txt` (the layer table), `metrics.jsonl` (one
/// event per line), `model.mpk` (the final weights, Burn's named MessagePack format),
/// `plots/` (where [`RunOptions::draw`] is given) and `summary.json`.
pub fn run<B: AutodiffBackend>(
    spec: &ValidSpec,
    options: &RunOptions,
    device: &B::Device,
) -> Result<RunOutcome, RunError> {
    // Data first: a missing data set should fail before an empty run folder exists.
    let splits = load_splits(spec, &options.locator)?;
    let spec = &resolve_folder(spec, &splits.train)?;
    let train = &splits.train;

    // A model whose layers do not fit the images fails here, with the shapes that clash,
    // rather than deep inside the first batch. (Before seeding, so training's weights are
    // the same with or without this check.)
    let input = [
        train.channels,
        spec.data.resize.unwrap_or(train.height),
        spec.data.resize.unwrap_or(train.width),
    ];
    let summary = spec
        .model
        .summary::<B::InnerBackend>(input, train.classes.len(), device)
        .map_err(|e| {
            RunError::Spec(format!(
                "{}: the model cannot be built for {}x{}x{} input images: {e}",
                spec.name, input[0], input[1], input[2]
            ))
        })?;
    if !summary.clashes.is_empty() {
        return Err(RunError::Spec(format!(
            "{}: the model does not fit {}x{}x{} input images:\n{summary}",
            spec.name, input[0], input[1], input[2]
        )));
    }

    let created = match leads(options) {
        true => create_run_folder(spec, options, input, &summary),
        false => Ok(PathBuf::new()),
    };
    let dir = rank0_folder(options, created)?;
    train_in::<B>(spec, options, &splits, dir, None, Vec::new(), device)
}

/// Whether this process writes the run folder: it runs alone, or is rank 0 of several.
fn leads(options: &RunOptions) -> bool {
    options.parallel.is_none_or(|g| g.rank() == 0)
}

/// The run folder rank 0 made (or failed to make), on every rank.
fn rank0_folder(
    options: &RunOptions,
    created: Result<PathBuf, RunError>,
) -> Result<PathBuf, RunError> {
    let Some(group) = options.parallel.filter(|g| g.size() > 1) else {
        return created;
    };
    let mut message = match &created {
        Ok(dir) => format!("ok {}", dir.display()),
        Err(e) => format!("error {e}"),
    }
    .into_bytes();
    let unreachable = |e: kiln_train::CollectiveError| RunError::Spec(e.to_string());
    group.broadcast(&mut message, 0).map_err(unreachable)?;
    if group.rank() == 0 {
        return created;
    }
    let message = String::from_utf8_lossy(&message);
    match message.split_once(' ') {
        Some(("ok", dir)) => Ok(PathBuf::from(dir)),
        _ => Err(RunError::Spec(format!(
            "rank 0 could not start the run: {}",
            message.trim_start_matches("error ")
        ))),
    }
}

/// Makes the run folder and writes what it holds before training: `config.toml`, `run.json`
/// and `layers.txt`.
fn create_run_folder(
    spec: &ExperimentSpec,
    options: &RunOptions,
    input: [usize; 3],
    summary: &impl std::fmt::Display,
) -> Result<PathBuf, RunError> {
    let dir = match &options.run_folder {
        Some(dir) => run_dir::create_exact(dir).map_err(io_error(dir))?,
        None => run_dir::create(&options.runs_dir, &spec.name, &options.backend)
            .map_err(io_error(&options.runs_dir))?,
    };
    tracing::info!(dir = %dir.display(), "run folder");
    let config_path = dir.join(run_dir::CONFIG);
    write_atomic(&config_path, spec.to_toml().as_bytes()).map_err(io_error(&config_path))?;
    let start = RunStart {
        experiment: spec.name.clone(),
        backend: options.backend.clone(),
        flush_denormals: kiln_train::denormals::flushes_denormals(),
        kiln_version: env!("CARGO_PKG_VERSION").to_string(),
        data_dir: options
            .locator
            .data_dir
            .as_deref()
            .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.to_path_buf())),
    };
    let start_path = dir.join(run_dir::RUN_START);
    let json = serde_json::to_vec_pretty(&start).expect("run.json always serialises");
    write_atomic(&start_path, &json).map_err(io_error(&start_path))?;
    let layers_path = dir.join(run_dir::LAYERS);
    let table = format!(
        "{} for {}x{}x{} images:\n{summary}\n",
        spec.name, input[0], input[1], input[2]
    );
    write_atomic(&layers_path, table.as_bytes()).map_err(io_error(&layers_path))?;
    Ok(dir)
}

/// Goes on with the run in `dir` from its newest checkpoint, as its `config.toml` and
/// `run.json` say (`options.backend` must be the run's; `runs_dir`, `run_folder`, `init_weights` and
/// `logits_of` are not used; the data come from the run's `--data-dir` unless
/// `options.locator` names another), checkpointing every `checkpoint_every` steps where given (which
/// does not change results) else as the run did. `metrics.jsonl` is cut back to the events the checkpoint had
/// seen, so the finished run's files are those of a run that never stopped.
pub fn resume<B: AutodiffBackend>(
    dir: &Path,
    checkpoint_every: Option<usize>,
    options: &RunOptions,
    device: &B::Device,
) -> Result<RunOutcome, RunError> {
    let start = RunStart::read(dir).map_err(RunError::Spec)?;
    if start.backend != options.backend {
        return Err(RunError::Spec(format!(
            "{}: the run trained on backend {}, not {}: resume it with --backend {} (backends \
             differ in their last digits, so a run stays on one)",
            dir.display(),
            start.backend,
            options.backend,
            start.backend
        )));
    }
    let flush = kiln_train::denormals::flushes_denormals();
    if start.flush_denormals != flush {
        return Err(RunError::Spec(format!(
            "{}: the run {} denormal floats and this process {}: resume it {} --keep-denormals",
            dir.display(),
            if start.flush_denormals {
                "flushed"
            } else {
                "kept"
            },
            if flush { "flushes them" } else { "keeps them" },
            if start.flush_denormals {
                "without"
            } else {
                "with"
            }
        )));
    }
    if dir.join(run_dir::SUMMARY).is_file() {
        return Err(RunError::Spec(format!(
            "{}: the run has finished (it has a summary.json); there is nothing to resume",
            dir.display()
        )));
    }
    let config = dir.join(run_dir::CONFIG);
    let mut spec = crate::load(&config.to_string_lossy())?;
    if checkpoint_every.is_some() {
        spec.recipe.checkpoint_every = checkpoint_every;
    }
    let spec = spec
        .validate()
        .map_err(|e| e.in_file(&config.display().to_string()))?;
    let (at, checkpoint) = run_dir::latest_checkpoint(dir)
        .map_err(RunError::Spec)?
        .ok_or_else(|| {
            RunError::Spec(format!(
                "{}: the run has no checkpoint to resume from (it stopped before its first)",
                dir.display()
            ))
        })?;
    tracing::info!(
        checkpoint = %at.display(),
        epoch = checkpoint.state.epoch,
        step = checkpoint.state.step,
        "resuming"
    );
    let mut locator = options.locator.clone();
    if locator.data_dir.is_none() {
        if let Some(data_dir) = start.data_dir {
            tracing::info!(data_dir = %data_dir.display(), "data folder the run started with");
            locator.data_dir = Some(data_dir);
        }
    }
    let splits = load_splits(&spec, &locator)?;
    if !leads(options) {
        // Rank 0 alone writes the folder: it cuts metrics.jsonl back.
        let dir = dir.to_path_buf();
        return train_in::<B>(
            &spec,
            options,
            &splits,
            dir,
            Some(&checkpoint),
            vec![],
            device,
        );
    }
    let metrics_path = dir.join(run_dir::METRICS);
    let kept = keep_first_lines(&metrics_path, checkpoint.state.events)
        .map_err(io_error(&metrics_path))?;
    // Parsed once, here: the run's pictures draw them with the events still to come.
    let kept = String::from_utf8(kept).map_err(|_| {
        RunError::Spec(format!(
            "{}: expected UTF-8 JSON lines",
            metrics_path.display()
        ))
    })?;
    let earlier = run_dir::parse_events(&metrics_path, &kept)?;
    train_in::<B>(
        &spec,
        options,
        &splits,
        dir.to_path_buf(),
        Some(&checkpoint),
        earlier,
        device,
    )
}

/// The spec as the run found its data: a folder set's classes and image size, where the spec
/// left them to the folders, are written in, so that the run's `config.toml` alone rebuilds
/// its network (`kiln import`, `export`, `summary`) and a resumed run reads the same classes.
fn resolve_folder(spec: &ExperimentSpec, train: &ImageSet) -> Result<ExperimentSpec, RunError> {
    let mut spec = spec.clone();
    if spec.data.dataset != DatasetName::Folder {
        return Ok(spec);
    }
    let (h, w) = (train.height, train.width);
    if h != w {
        return Err(RunError::Spec(format!(
            "data.image_size: the training images are {w}x{h} (width x height) and the networks \
             take square ones; give image_size to resize them as they load"
        )));
    }
    if !(MIN_SIDE..=MAX_SIDE).contains(&h) {
        return Err(RunError::Spec(format!(
            "data.image_size: the training images are {w}x{h}; expected {MIN_SIDE} to \
             {MAX_SIDE} pixels a side (give image_size to resize them as they load)"
        )));
    }
    spec.data.classes = Some(train.classes.clone());
    spec.data.image_size = Some(h);
    Ok(spec)
}

/// Cuts `path` back to its first `n` lines (a line cut short by a crash is not one) and returns
/// them.
fn keep_first_lines(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    let mut text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && n == 0 => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut end = 0;
    for _ in 0..n {
        match text[end..].iter().position(|&b| b == b'\n') {
            Some(i) => end += i + 1,
            None => {
                return Err(std::io::Error::other(format!(
                    "it has fewer than the {n} events the checkpoint saw"
                )))
            }
        }
    }
    if end < text.len() {
        text.truncate(end);
        write_atomic(path, &text)?;
    }
    Ok(text)
}

/// The network with what its initialisation takes from the training images (airbench's
/// whitening filters, from the first `Classifier::images_for_init` of them as airbench94
/// takes them; a folder layout interleaves the classes, so they are a mix), the rest as built.
pub fn init_from_data<B: Backend>(
    model: Classifier<B>,
    train: &ImageSet,
    batcher: &ImageBatcher,
    device: &B::Device,
) -> Classifier<B> {
    let Some(n) = model.images_for_init() else {
        return model;
    };
    let items = (0..n.min(train.len())).map(|i| train.item(i)).collect();
    let images = Batcher::<B, _, ImageBatch<B>>::batch(batcher, items, device).images;
    tracing::info!(
        images = images.dims()[0],
        "initialising the network from the training images"
    );
    model.init_from_images(images)
}

/// Trains in the run folder `dir` (from `resume_from` where given, after the `earlier` events
/// its `metrics.jsonl` holds) and writes its results.
fn train_in<B: AutodiffBackend>(
    spec: &ExperimentSpec,
    options: &RunOptions,
    splits: &Splits,
    dir: PathBuf,
    resume_from: Option<&Checkpoint>,
    earlier: Vec<Event>,
    device: &B::Device,
) -> Result<RunOutcome, RunError> {
    let (train, valid, test) = (&splits.train, splits.valid.as_ref(), &splits.test);
    B::seed(device, spec.recipe.seed);
    let batcher = spec.data.batcher(train);
    let batcher = &batcher;
    let model = spec
        .model
        .build::<B>(batcher.output_shape(), train.classes.len(), device);
    tracing::info!(
        parameters = kiln_models::probe::parameter_count(&model),
        model = ?spec.model,
        "model"
    );
    let model = match (&options.init_weights, model.images_for_init()) {
        (Some(path), _) => load_weights(model, path, device)?,
        // A resumed run's checkpoint replaces the weights anyway.
        (None, Some(_)) if resume_from.is_none() => init_from_data(model, train, batcher, device),
        (None, _) => model,
    };
    let fixed_batch = options.logits_of.map(|n| {
        let n = n.min(test.len());
        batcher.batch((0..n).map(|i| test.item(i)).collect(), device)
    });
    let initial_logits = fixed_batch
        .as_ref()
        .map(|b: &ImageBatch<B::InnerBackend>| logits_of(&model.valid(), b));
    let metrics_path = dir.join(run_dir::METRICS);
    let leader = leads(options);
    // A resumed run appends to the lines its checkpoint had seen.
    let file = leader
        .then(|| {
            OpenOptions::new()
                .create_new(resume_from.is_none())
                .create(true)
                .append(true)
                .open(&metrics_path)
        })
        .transpose()
        .map_err(io_error(&metrics_path))?;
    let board_path = dir.join(run_dir::TENSORBOARD);
    let board = leader
        .then(|| {
            let config = toml::Value::try_from(spec).expect("a spec always serialises");
            let mut hparams = tensorboard::hparams_of(&config);
            hparams.push((
                "backend".to_string(),
                tensorboard::HParam::Text(options.backend.clone()),
            ));
            tensorboard::EventFile::create(&board_path, &hparams, &earlier)
        })
        .transpose()
        .map_err(io_error(&board_path))?;
    let mut log = EventLog {
        out: file.map(BufWriter::new),
        board,
        error: None,
        events: earlier,
    };
    let save = |checkpoint: &Checkpoint| {
        let at = run_dir::save_checkpoint(&dir, checkpoint)?;
        tracing::debug!(checkpoint = %at.display(), "saved");
        Ok(())
    };
    let fit_options = FitOptions {
        progress: options.progress && leader,
        save_checkpoint: leader.then_some(&save as &kiln_train::CheckpointSink),
        resume_from,
        stop: options.stop,
        parallel: options.parallel,
    };
    let data = FitData {
        train,
        valid: valid.map(|v| v as &dyn Dataset<ImageItem>),
        test: Some(test),
        batcher,
    };
    let fitted = kiln_train::fit(
        model,
        data,
        &spec.recipe,
        device,
        &fit_options,
        &mut |event| log.write(event),
    );
    // A stopped run's session goes on when it resumes.
    let end = match &fitted {
        Ok(_) => Some(tensorboard::SessionEnd::Success),
        Err(kiln_train::FitError::Interrupted { .. }) => None,
        Err(_) => Some(tensorboard::SessionEnd::Failure),
    };
    if let (Some(board), Some(end), None) = (&mut log.board, end, &log.error) {
        if let Err(e) = board.end(end) {
            log.error = Some((run_dir::TENSORBOARD, e));
        }
    }
    if let Some((file, source)) = log.error {
        return Err(RunError::Io {
            path: dir.join(file),
            source,
        });
    }
    // metrics.jsonl keeps every finished step and epoch; no weights or summary are written
    // for a diverged run.
    let (model, mut fitted) = fitted.map_err(|error| RunError::Fit {
        dir: dir.clone(),
        error,
    })?;

    let parallel = options
        .parallel
        .filter(|g| g.size() > 1)
        .map(|g| ParallelRun {
            ranks: g.size(),
            batch_per_rank: spec.recipe.batch_size / g.size(),
            global_batch: spec.recipe.batch_size,
            library: g.library(),
        });
    let summary = |fitted: &kiln_train::FitSummary| {
        let best = fitted
            .best()
            .expect("a validated recipe runs at least one epoch");
        let last = fitted
            .last()
            .expect("a validated recipe runs at least one epoch");
        RunSummary {
            experiment: spec.name.clone(),
            backend: options.backend.clone(),
            // A fit that returns has run every epoch of the recipe (a diverging one stops
            // with an error), the last perhaps cut short.
            epochs: spec.recipe.epochs,
            train_images: train.len(),
            test_images: test.len(),
            final_test_accuracy: last.test_accuracy.expect(TESTED),
            final_test_loss: last.test_loss.expect(TESTED),
            final_valid_accuracy: last.valid_accuracy,
            best_test_accuracy: best.test_accuracy.expect(TESTED),
            best_epoch: best.epoch,
            total_seconds: fitted.seconds,
            train_images_per_sec: fitted.train_images_per_sec(),
            eval_images_per_sec: fitted.eval_images_per_sec().expect(TESTED),
            seed: spec.recipe.seed,
            init_weights: options.init_weights.clone(),
            peak_rss_mib: machine::peak_rss_mib(),
            processor: machine::processor(),
            normalize: batcher.normalize.clone(),
            classes: train.classes.clone(),
            image_shape: Some([train.channels, train.height, train.width]),
            kiln_version: env!("CARGO_PKG_VERSION").to_string(),
            flush_denormals: kiln_train::denormals::flushes_denormals(),
            parallel: parallel.clone(),
        }
    };
    if !leader {
        return Ok(RunOutcome {
            summary: summary(&fitted),
            dir,
        });
    }

    if let (Some(batch), Some(initial)) = (&fixed_batch, initial_logits) {
        let logits = FixedBatchLogits {
            images: batch.targets.dims()[0],
            initial,
            r#final: logits_of(&model.valid(), batch),
        };
        let path = dir.join(run_dir::LOGITS);
        let json = serde_json::to_vec(&logits).expect("logits always serialise");
        write_atomic(&path, &json).map_err(io_error(&path))?;
    }

    save_weights(model.valid(), &dir.join(run_dir::MODEL))?;

    // Pictures come last: the weights and metrics are safe whatever happens here.
    if let Some(draw) = options.draw {
        let model = model.valid();
        draw_pictures::<B::InnerBackend>(
            draw,
            spec,
            &model,
            batcher,
            test,
            fitted.test_probabilities.take(),
            &dir,
            &log.events,
            device,
        );
    }

    let summary = summary(&fitted);
    let summary_path = dir.join(run_dir::SUMMARY);
    let json = serde_json::to_vec_pretty(&summary).expect("a summary always serialises");
    write_atomic(&summary_path, &json).map_err(io_error(&summary_path))?;
    // The final weights are in model.mpk: the checkpoints have done their work.
    if let Err(e) = run_dir::remove_checkpoints(&dir) {
        tracing::warn!("the run is saved, but its checkpoints could not be removed: {e}");
    }
    Ok(RunOutcome { dir, summary })
}

/// The images of a run, split as the experiment says.
pub struct Splits {
    /// The training images (less any validation images taken from them).
    pub train: ImageSet,
    /// The validation images, when the experiment has a validation split.
    pub valid: Option<ImageSet>,
    /// The test images (less any validation images taken from them).
    pub test: ImageSet,
}

/// Finds (or fetches) the data set and splits it: validation hold-out first, then the
/// `limit_*` truncations.
pub fn load_splits(spec: &ExperimentSpec, locator: &Locator) -> Result<Splits, RunError> {
    let (mut train, valid_from_train) = load_split(spec, locator, Split::Train)?;
    let (test, valid_from_test) = load_split(spec, locator, Split::Test)?;
    check_same_kind(&train, &test)?;
    let test = limit_test(spec, test);
    if let Some(p) = spec.data.percent {
        let n = ((train.len() as f64) * p / 100.0).ceil() as usize;
        train = train.truncated(n);
    }
    if let Some(n) = spec.data.limit_train {
        train = train.truncated(n);
    }
    let valid = valid_from_train.or(valid_from_test);
    tracing::info!(
        train = train.len(),
        valid = valid.as_ref().map_or(0, ImageSet::len),
        test = test.len(),
        "loaded {}",
        spec.data.dataset.name()
    );
    Ok(Splits { train, valid, test })
}

/// A test split must have the training split's classes, in order, and image shape: a model
/// learns labels by index, and a shifted class list would score the wrong class silently.
fn check_same_kind(train: &ImageSet, test: &ImageSet) -> Result<(), RunError> {
    if train.classes != test.classes {
        let missing: Vec<&str> = (train.classes.iter())
            .filter(|c| !test.classes.contains(c))
            .map(String::as_str)
            .collect();
        let extra: Vec<&str> = (test.classes.iter())
            .filter(|c| !train.classes.contains(c))
            .map(String::as_str)
            .collect();
        return Err(RunError::Spec(format!(
            "the test split's classes differ from the training split's: expected [{}], found \
             [{}] (missing from test: [{}]; only in test: [{}])",
            train.classes.join(", "),
            test.classes.join(", "),
            missing.join(", "),
            extra.join(", ")
        )));
    }
    let shape = |s: &ImageSet| [s.channels, s.height, s.width];
    if shape(train) != shape(test) {
        return Err(RunError::Spec(format!(
            "the test split's images are {:?} (channels, height, width), the training split's \
             {:?}: expected one shape",
            shape(test),
            shape(train)
        )));
    }
    Ok(())
}

/// The test split alone, exactly as [`load_splits`] gives it, for the commands that look at a
/// finished run: they need not read and decode the (much larger) training split.
pub fn load_test_split(spec: &ExperimentSpec, locator: &Locator) -> Result<ImageSet, RunError> {
    let (test, _) = load_split(spec, locator, Split::Test)?;
    Ok(limit_test(spec, test))
}

/// One split, less the validation hold-out when the experiment takes it from this split (the
/// hold-out is returned beside it), converted to grayscale when the experiment asks.
fn load_split(
    spec: &ExperimentSpec,
    locator: &Locator,
    split: Split,
) -> Result<(ImageSet, Option<ImageSet>), RunError> {
    let mut images = spec.data.load(locator, split)?;
    let mut valid = None;
    if let Some(v) = spec.data.validation.filter(|v| v.from == split) {
        if v.count >= images.len() {
            return Err(RunError::Spec(format!(
                "data.validation.count: expected fewer than the {} images of the {:?} split, found {}",
                images.len(),
                v.from,
                v.count
            )));
        }
        let (head, rest) = images.split_at(v.count);
        images = rest;
        valid = Some(head);
    }
    if spec.data.grayscale {
        images = images.to_grayscale();
        valid = valid.map(ImageSet::to_grayscale);
    }
    Ok((images, valid))
}

fn limit_test(spec: &ExperimentSpec, test: ImageSet) -> ImageSet {
    match spec.data.limit_test {
        Some(n) => test.truncated(n),
        None => test,
    }
}

/// Hands a trained run to `draw`; its failure is a warning, since the run is saved.
/// `probabilities` are the test images' from the fit's last evaluation, if it kept them: with
/// test-time augmentation, computing them again would be several passes over the test set.
#[allow(clippy::too_many_arguments)] // the parts of one finished run, each used once
fn draw_pictures<B: Backend>(
    draw: DrawRun,
    spec: &ExperimentSpec,
    model: &Classifier<B>,
    batcher: &ImageBatcher,
    test: &ImageSet,
    probabilities: Option<Vec<Vec<f32>>>,
    dir: &Path,
    events: &[Event],
    device: &B::Device,
) {
    tracing::info!("drawing the run's pictures");
    let known = probabilities.filter(|rows| rows.len() == test.len());
    let test0 = (!test.is_empty()).then(|| test.image(0));
    let request = crate::inspect::Request {
        batcher,
        test: known.is_none().then_some(test),
        maps_of: test0,
        images: &[],
        batch_size: spec.recipe.batch_size.max(64),
        tta: spec.recipe.test_time_augmentation,
    };
    let mut looked = crate::inspect::look(model, &request, device);
    if let Some(rows) = known {
        looked.test_probabilities = rows;
    }
    let finished = Finished {
        plots: &dir.join(run_dir::PLOTS),
        experiment: &spec.name,
        events,
        test,
        looked: &looked,
    };
    match draw(&finished) {
        Ok(files) => tracing::info!(pictures = files.len(), "plots written"),
        Err(e) => tracing::warn!("the run is saved, but its pictures failed: {e}"),
    }
}

fn logits_of<B: burn::tensor::backend::Backend, M: ImageClassifier<B>>(
    model: &M,
    batch: &ImageBatch<B>,
) -> Vec<f32> {
    model
        .logits(batch.images.clone())
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("converted to f32")
}

/// `metrics.jsonl`, flushed after every line so a crashed run keeps every finished event,
/// and every event of the run in memory for its pictures. The first write error is kept and
/// reported when training returns.
struct EventLog {
    /// `None` on the ranks other than 0 of a data-parallel run: they keep the events only.
    out: Option<BufWriter<File>>,
    /// The same events for TensorBoard (rank 0 only).
    board: Option<tensorboard::EventFile>,
    /// The first write that failed: the file's name in the run folder, and why.
    error: Option<(&'static str, std::io::Error)>,
    events: Vec<Event>,
}

impl EventLog {
    fn write(&mut self, event: &Event) {
        if self.error.is_some() {
            return;
        }
        self.events.push(event.clone());
        let Some(out) = &mut self.out else {
            return;
        };
        let line = serde_json::to_string(event).expect("events always serialise");
        if let Err(e) = writeln!(out, "{line}").and_then(|_| out.flush()) {
            self.error = Some((run_dir::METRICS, e));
        } else if let Some(Err(e)) = self.board.as_mut().map(|b| b.write(event)) {
            self.error = Some((run_dir::TENSORBOARD, e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MNIST-layout files whose image `i` of each split is filled with the value `i` (test
    /// images start at 100), so every image says where it came from.
    fn write_numbered_mnist(dir: &Path, train: usize, test: usize) {
        for (split, n, first) in [(Split::Train, train, 0), (Split::Test, test, 100)] {
            let pixels: Vec<u8> = (0..n).flat_map(|i| [(first + i) as u8; 784]).collect();
            let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
            kiln_data::mnist::write_split(dir, split, &pixels, &labels).unwrap();
        }
    }

    #[test]
    fn airbench_whitening_comes_from_the_first_training_images() {
        type B = burn_ndarray::NdArray;
        let device = Default::default();
        // Six 3x12x12 images.
        let pixels: Vec<u8> = (0..6 * 3 * 144)
            .map(|i| ((i * 37 + i / 7) % 251) as u8)
            .collect();
        let classes = vec!["a".to_string(), "b".to_string()];
        let set = ImageSet::new(3, 12, 12, pixels.clone(), vec![0, 0, 0, 1, 1, 1], classes);
        let spec: crate::ModelSpec =
            toml::from_str("name = \"airbench\"\nwidths = [4]\nwhiten_images = 3").unwrap();
        let model = spec.build::<B>([3, 12, 12], 2, &device);
        let batcher = ImageBatcher::for_set(&set, kiln_data::Normalize::unit());
        let (_, drawn) = kiln_models::first_conv_kernels(&model).unwrap();
        let model = init_from_data(model, &set, &batcher, &device);
        let (shape, whitened) = kiln_models::first_conv_kernels(&model).unwrap();
        assert_eq!(shape, [24, 3, 2, 2]);
        assert_ne!(whitened, drawn);
        let chosen: Vec<f32> = pixels[..3 * 432]
            .iter()
            .map(|&p| p as f32 / 255.0)
            .collect();
        let expected = kiln_models::airbench::whitening_filters(&chosen, [3, 3, 12, 12], 2, 5e-4);
        // The batcher normalises as `p * (1/255) + 0`, a rounding away from `p / 255`.
        for (found, want) in whitened.iter().zip(&expected) {
            assert!(
                (found - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{found} vs {want}"
            );
        }
        // Any other network is left as built.
        let lenet = crate::load("lenet5-fashion-mnist").unwrap().model;
        let one_channel = ImageSet::new(1, 28, 28, vec![7; 784], vec![0], vec!["x".into()]);
        let model = lenet.build::<B>([1, 28, 28], 1, &device);
        let before = kiln_models::first_conv_kernels(&model).unwrap();
        let batcher = ImageBatcher::for_set(&one_channel, kiln_data::Normalize::unit());
        let model = init_from_data(model, &one_channel, &batcher, &device);
        assert_eq!(kiln_models::first_conv_kernels(&model).unwrap(), before);
    }

    #[test]
    fn a_test_split_of_other_classes_or_shape_is_refused_naming_the_difference() {
        let set = |classes: &[&str], size: usize| {
            let names = classes.iter().map(|c| c.to_string()).collect();
            ImageSet::new(1, size, size, vec![0; size * size], vec![0], names)
        };
        let train = set(&["cat", "dog", "fox"], 4);
        assert!(check_same_kind(&train, &set(&["cat", "dog", "fox"], 4)).is_ok());
        let err = check_same_kind(&train, &set(&["cat", "dog", "owl"], 4))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected [cat, dog, fox], found [cat, dog, owl]")
                && err.contains("missing from test: [fox]; only in test: [owl]"),
            "{err}"
        );
        let err = check_same_kind(&train, &set(&["cat", "dog", "fox"], 5))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[1, 5, 5]") && err.contains("[1, 4, 4]"),
            "{err}"
        );
    }

    #[test]
    fn the_test_split_alone_is_the_test_split_of_a_full_load() {
        let dir = tempfile::tempdir().unwrap();
        write_numbered_mnist(dir.path(), 20, 30);
        let locator = Locator::from_env(Some(dir.path().to_path_buf()), true);
        let mut spec = crate::load("convnet-mnist").unwrap();
        // Validation from the test split, as the tutorial does, so the test split is its tail.
        spec.data.validation = Some(crate::ValidationSplit {
            from: Split::Test,
            count: 5,
        });
        spec.data.limit_test = Some(12);

        let full = load_splits(&spec, &locator).unwrap();
        let alone = load_test_split(&spec, &locator).unwrap();
        let firsts = |set: &ImageSet| (0..set.len()).map(|i| set.image(i)[0]).collect::<Vec<_>>();
        assert_eq!(firsts(&alone), (105..117).collect::<Vec<u8>>());
        assert_eq!(firsts(&alone), firsts(&full.test));
        assert_eq!(
            firsts(full.valid.as_ref().unwrap()),
            (100..105).collect::<Vec<u8>>()
        );
        assert_eq!(firsts(&full.train), (0..20).collect::<Vec<u8>>());

        // With the hold-out taken from the training split, the test split is whole.
        spec.data.validation = Some(crate::ValidationSplit {
            from: Split::Train,
            count: 5,
        });
        let full = load_splits(&spec, &locator).unwrap();
        assert_eq!(
            firsts(&load_test_split(&spec, &locator).unwrap()),
            firsts(&full.test)
        );
        assert_eq!(firsts(&full.test), (100..112).collect::<Vec<u8>>());
        assert_eq!(firsts(&full.train), (5..20).collect::<Vec<u8>>());
    }
}
