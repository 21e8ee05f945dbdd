//! An in-memory set of labelled images: the common form every data source is loaded into.

use serde::{Deserialize, Serialize};

/// Which part of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

/// Labelled images as raw `u8` pixels, channel-first (`[channels, height, width]` per image).
///
/// Pixels stay `u8` until batching: a 60,000-image set then costs 47 MB instead of 188 MB, and
/// normalisation happens once per batch in [`crate::ImageBatcher`].
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pixels: Vec<u8>,
    labels: Vec<u8>,
    /// Class names; a label is an index into this list.
    pub classes: Vec<String>,
}

impl ImageSet {
    /// Builds a set, checking that the buffers agree with the shape.
    ///
    /// # Panics
    /// If `pixels` is not `labels.len() * channels * height * width` long or a label is not a
    /// class index: callers build sets from already validated files, so this is a bug, not input.
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        pixels: Vec<u8>,
        labels: Vec<u8>,
        classes: Vec<String>,
    ) -> Self {
        assert_eq!(
            pixels.len(),
            labels.len() * channels * height * width,
            "pixel buffer size"
        );
        assert!(
            labels.iter().all(|&l| (l as usize) < classes.len()),
            "label outside classes"
        );
        Self {
            channels,
            height,
            width,
            pixels,
            labels,
            classes,
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of image `index`, channel-first.
    pub fn image(&self, index: usize) -> &[u8] {
        let size = self.image_size();
        &self.pixels[index * size..(index + 1) * size]
    }

    pub fn label(&self, index: usize) -> u8 {
        self.labels[index]
    }

    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// Values per image (`channels * height * width`).
    pub fn image_size(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The first `n` images (all of them if `n >= len`), as the `--limit-*` options ask.
    pub fn truncated(mut self, n: usize) -> Self {
        let n = n.min(self.len());
        self.pixels.truncate(n * self.image_size());
        self.labels.truncate(n);
        self
    }
}
