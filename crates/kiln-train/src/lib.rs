//! The training loop: generic over `B: AutodiffBackend` and over any model that implements
//! [`kiln_models::ImageClassifier`], driven by a [`Recipe`] (optimizer, schedule, batch size,
//! epochs, seed). It reports through [`Event`]s and never touches the file system: where the
//! events and checkpoints go is the runner's business.

pub mod bench;
pub mod denormals;
pub mod events;
pub mod fit;
pub mod recipe;

pub use events::{EpochMetrics, Event, StepMetrics};
pub use fit::{evaluate, fit, predict, probabilities, FitData, FitOptions, FitSummary, Metrics};
pub use recipe::{OptimizerSpec, Recipe, SchedulerSpec};
