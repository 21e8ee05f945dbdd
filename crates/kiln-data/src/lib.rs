//! Data for Kiln experiments: file formats, finding or fetching the files, in-memory image
//! sets, normalisation and a Burn [`Batcher`](burn::data::dataloader::batcher::Batcher).
//!
//! This crate knows nothing about models or training, so another Burn project can use it alone.

pub mod batcher;
pub mod error;
pub mod fetch;
pub mod idx;
pub mod images;
pub mod mnist;

pub use batcher::{ImageBatch, ImageBatcher, Normalize};
pub use error::DataError;
pub use fetch::{DatasetFiles, Locator, RemoteFile};
pub use images::{ImageSet, Split};
pub use mnist::IdxDataset;
