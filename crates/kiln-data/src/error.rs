//! The error type of every data source in this crate.
//!
//! Each message names the file (or URL) it is about, what was expected and what was found, so a
//! user can act on it without a debugger. Messages are lowercase and carry no trailing period so
//! they compose inside `anyhow` chains.

use std::path::PathBuf;

/// Everything that can go wrong while finding, downloading or reading a data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An operating-system error while reading or writing `path`.
    ///
    /// The cause is part of the message (and also the error's `source()`), so printing the
    /// error alone with `{}` is enough to act on it.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// The file does not start with the magic number of the expected format.
    #[error(
        "{}: not {expected_kind} file: expected magic number 0x{expected:08x}, found \
         0x{found:08x}{found_kind}",
        .path.display()
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The magic number of the format asked for.
        expected: u32,
        /// What that format is, as the message names it ("an IDX image").
        expected_kind: &'static str,
        /// The first four bytes of the file, big-endian.
        found: u32,
        /// What they are where the reader knows (" (an IDX label file)"), else "".
        found_kind: &'static str,
    },

    /// The file is shorter than its header says.
    ///
    /// `expected_bytes` is the whole file's size as the header declares it (header included);
    /// `found_bytes` is what the file really has. For gzip files both count decompressed bytes.
    /// A header that is itself cut short reports the header's size as `expected_bytes`.
    #[error(
        "{}: file is truncated: the header promises {expected_bytes} bytes, the file has only \
         {found_bytes}",
        .path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The size the header declares, header included.
        expected_bytes: u64,
        /// The size the file has.
        found_bytes: u64,
    },

    /// An images file and its labels file disagree on how many examples there are.
    #[error(
        "{} holds {images} images but {} holds {labels} labels: expected the same count",
        .images_path.display(),
        .labels_path.display()
    )]
    CountMismatch {
        /// The images file.
        images_path: PathBuf,
        /// The labels file.
        labels_path: PathBuf,
        /// Images in the images file.
        images: usize,
        /// Labels in the labels file.
        labels: usize,
    },

    /// A label names a class the data set does not have.
    #[error(
        "{}: label {label} at index {index} is out of range: expected a label below \
         {num_classes} ({num_classes} classes)",
        .path.display()
    )]
    LabelOutOfRange {
        /// The labels file.
        path: PathBuf,
        /// Position of the label in the file, from 0.
        index: usize,
        /// The label found.
        label: u8,
        /// Classes the data set has.
        num_classes: usize,
    },

    /// A downloaded file's SHA-256 is not the published one (the file was discarded).
    #[error("{url}: checksum mismatch: expected sha256 {expected}, found {found}")]
    ChecksumMismatch {
        /// Where the file came from.
        url: String,
        /// The published SHA-256, hex.
        expected: String,
        /// The downloaded file's SHA-256, hex.
        found: String,
    },

    /// A download failed (connection, HTTP status, short body, ...); nothing was kept.
    #[error("{url}: download failed: {message}")]
    Download {
        /// The address tried last.
        url: String,
        /// What went wrong.
        message: String,
    },

    /// A data set is not on this machine and could not be downloaded.
    ///
    /// `message` holds the full, multi-line instructions: the files to place, the directories
    /// searched, where to put the files and where to get them.
    #[error("data set '{dataset}' not found: {message}")]
    NotFound {
        /// The data set's short name, e.g. `fashion-mnist`.
        dataset: String,
        /// What to do, over several lines.
        message: String,
    },

    /// Any other structural problem with a file: a zero dimension in a header, data after the
    /// declared end, a corrupt gzip stream, a size too large to address, ...
    #[error("{}: {message}", .path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

impl DataError {
    /// Shorthand for [`DataError::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`DataError::Format`].
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}
