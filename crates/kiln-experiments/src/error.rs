//! Why a run, or a command on a run folder, failed: one error type for the whole crate.

use std::path::{Path, PathBuf};

use kiln_data::DataError;

use crate::SpecError;

/// Why a run could not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The spec or the command line is invalid; the message says which key and why.
    #[error("{0}")]
    Spec(String),
    /// A value of the experiment is refused.
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// The data set could not be found, fetched or read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A file of the run folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Training stopped early: diverged, interrupted or unable to save a checkpoint. The run
    /// folder keeps its metrics and its last good checkpoint.
    #[error("{error}{}", stopped_hint(error, dir))]
    Fit {
        /// The run folder, named in the hint on how to resume.
        dir: PathBuf,
        /// (Not a `source`: the message says it, with what to do.)
        error: kiln_train::FitError,
    },
}

fn stopped_hint(error: &kiln_train::FitError, dir: &Path) -> String {
    match error {
        kiln_train::FitError::Resume(_) => format!(" ({})", dir.display()),
        kiln_train::FitError::Checkpoint { step: 0, .. } => format!(
            "; nothing was trained: make room, or train under another --runs-dir than {}",
            dir.parent().and_then(Path::parent).unwrap_or(dir).display()
        ),
        kiln_train::FitError::Diverged { .. } => format!(
            " (the metrics up to then are in {}/metrics.jsonl)",
            dir.display()
        ),
        _ => format!(
            "; the run folder keeps its last checkpoint: go on with `kiln run --resume {}`",
            dir.display()
        ),
    }
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}
