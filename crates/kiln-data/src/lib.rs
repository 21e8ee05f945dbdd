//! Data for Kiln experiments: file formats, finding or fetching the files, in-memory image
//! sets, normalisation and a Burn [`Batcher`](burn::data::dataloader::batcher::Batcher).
//!
//! What it is not: this crate knows nothing about models or training, so another Burn project
//! can use it alone; and it holds whole data sets in memory (the classic ones fit), with no
//! streaming from disk.

#![warn(missing_docs)]

pub mod batcher;
pub mod cifar;
pub mod error;
pub mod fetch;
pub mod files;
pub mod folder;
pub mod idx;
pub mod images;
pub mod mnist;
pub mod transform;

pub use batcher::{Draws, HostBatch, ImageBatch, ImageBatcher, ImageItem, Normalize};
pub use cifar::{Cifar10Format, CIFAR10_CLASSES};
pub use error::DataError;
pub use fetch::{ArchiveDataset, DatasetFiles, Locator, RemoteFile};
pub use folder::{load_image_folder, load_image_folder_sized, read_image, read_image_resized};
pub use images::{ImageSet, Split};
pub use mnist::IdxDataset;
pub use transform::{Augment, PaddingMode, Position};
