//! The training loop of Kiln: generic over `B: AutodiffBackend`, over any model that implements
//! [`kiln_models::ImageClassifier`] and over any Burn [`Dataset`](burn::data::dataset::Dataset)
//! with a [`TrainBatcher`], driven by a [`Recipe`] (optimiser, schedule, batch size, epochs,
//! seed). It reports through [`Event`]s and never touches the file system: where the events and
//! checkpoints go is the caller's business (Kiln's runner writes them into a run folder).
//!
//! What it is not: a general training framework. It trains classifiers (images in, class
//! logits out) with one optimiser step per batch; for anything else, use Burn's own `Learner`.
//!
//! ```no_run
//! use burn_autodiff::Autodiff;
//! use burn_ndarray::NdArray;
//! use kiln_data::{ImageBatcher, ImageSet, Normalize};
//! use kiln_models::LeNet5Config;
//! use kiln_train::{fit, FitData, FitOptions, OptimizerSpec, Recipe};
//!
//! type B = Autodiff<NdArray>;
//! # fn load() -> (ImageSet, ImageSet) { unimplemented!() }
//! let (train, test): (ImageSet, ImageSet) = load(); // e.g. kiln_data's IDX reader
//! let device = Default::default();
//! let model = LeNet5Config::new().init::<B>(&device);
//! let batcher = ImageBatcher::for_set(&train, Normalize::unit());
//! let data = FitData { train: &train, valid: None, test: Some(&test), batcher: &batcher };
//! let recipe = Recipe::default().with_epochs(2).with_optimizer(OptimizerSpec::adam(1e-3));
//! let (model, summary) = fit(model, data, &recipe, &device, &FitOptions::default(), &mut |event| {
//!     println!("{}", serde_json::to_string(event).unwrap());
//! })?; // FitError::Diverged if the loss stops being finite
//! println!("best epoch: {:?}", summary.best());
//! # Ok::<(), kiln_train::FitError>(())
//! ```

#![warn(missing_docs)]

pub mod bench;
pub mod checkpoint;
pub mod denormals;
pub mod eval;
pub mod events;
pub mod fit;
mod lookahead;
mod optimizer;
pub mod parallel;
pub mod recipe;
mod schedule;

pub use checkpoint::{Checkpoint, CheckpointSink, CheckpointState, ResumeError};
pub use eval::{evaluate, predict, probabilities, ClassificationLoss, Metrics};
pub use events::{EpochMetrics, Event, StepMetrics};
pub use fit::{
    fit, fit_with_loss, FitData, FitError, FitOptions, FitSummary, Prepared, TrainBatcher,
    Trainable,
};
pub use parallel::{Collective, CollectiveError, ThreadGroup};
pub use recipe::{Epochs, LookaheadSpec, OptimizerSpec, ParamGroup, Recipe, SchedulerSpec};
