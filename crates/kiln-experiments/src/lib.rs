//! Experiments: the spec (one TOML file: data + model + recipe), the registry of built-in
//! experiments, and the runner that turns a spec into a self-describing run folder.

pub mod bench;
pub mod inspect;
pub mod models;
pub mod pictures;
pub mod registry;
pub mod report;
pub mod run_dir;
pub mod runner;
pub mod spec;

pub use inspect::{FeatureInput, RunFolder};
pub use models::{ModelSpec, ModelTask, Summarise};
pub use registry::{builtin, load};
pub use runner::{
    load_splits, load_test_split, load_weights, run, FixedBatchLogits, RunError, RunOptions,
    RunOutcome, RunSummary, Splits,
};
pub use spec::{
    DataSpec, DatasetName, ExperimentSpec, Layout, NormalizeSpec, Overrides, Statistics,
    ValidationSplit,
};
