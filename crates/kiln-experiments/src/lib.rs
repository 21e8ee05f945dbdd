//! Experiments: the spec (one TOML file: data + model + recipe), the registry of built-in
//! experiments, and the runner that turns a spec into a self-describing run folder (metrics,
//! weights, summary), read back for predictions and PyTorch export.
//!
//! What it is not: a place for backends (they are chosen in `kiln-cli`), for the training
//! loop itself (`kiln-train`) or for pictures and HTML reports (`kiln-report`, which the
//! runner calls through [`RunOptions::draw`] where asked, so that embedding the runner pulls
//! in no plotting). Embedding Kiln's loop without run folders needs only `kiln-train`,
//! `kiln-models` and `kiln-data`.

#![warn(missing_docs)]

pub mod bench;
mod error;
pub mod inspect;
pub mod machine;
pub mod models;
pub mod registry;
pub mod run_dir;
pub mod runner;
pub mod spec;
pub mod tensorboard;
pub mod weights;

pub use error::RunError;
pub use inspect::Looked;
pub use models::ModelSpec;
pub use registry::{builtin, load};
pub use run_dir::{FixedBatchLogits, ParallelRun, RunFolder, RunStart, RunSummary};
pub use runner::{
    load_splits, load_test_split, resume, run, DrawRun, Finished, RunOptions, RunOutcome, Splits,
};
pub use spec::{
    split_assignment, DataSpec, DatasetName, ExperimentSpec, Layout, NormalizeSpec, Overrides,
    SpecError, Statistics, TorchNaming, ValidSpec, ValidationSplit,
};
pub use weights::{export_safetensors, import_pytorch, load_weights, save_weights};
