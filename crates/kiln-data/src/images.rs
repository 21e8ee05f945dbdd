//! An in-memory set of labelled images: the common form every data source is loaded into.

use serde::{Deserialize, Serialize};

/// Which part of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The training split.
    Train,
    /// The test split.
    Test,
}

/// Labelled images as raw `u8` pixels, channel-first (`[channels, height, width]` per image).
///
/// Pixels stay `u8` until batching: a 60,000-image set then costs 47 MB instead of 188 MB, and
/// normalisation happens once per batch in [`crate::ImageBatcher`].
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// Channels per image (1 grayscale, 3 RGB).
    pub channels: usize,
    /// Height of each image in pixels.
    pub height: usize,
    /// Width of each image in pixels.
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

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of image `index`, channel-first.
    pub fn image(&self, index: usize) -> &[u8] {
        let size = self.image_size();
        &self.pixels[index * size..(index + 1) * size]
    }

    /// Label (class index) of image `index`.
    pub fn label(&self, index: usize) -> u8 {
        self.labels[index]
    }

    /// All labels, in image order.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// Values per image (`channels * height * width`).
    pub fn image_size(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The first `n` images (all of them if `n >= len`), as the `--limit-*` options ask.
    pub fn truncated(self, n: usize) -> Self {
        self.split_at(n).0
    }

    /// The first `n` images and the rest (the MNIST tutorial's validation/test split).
    pub fn split_at(mut self, n: usize) -> (Self, Self) {
        let n = n.min(self.len());
        let rest = ImageSet {
            pixels: self.pixels.split_off(n * self.image_size()),
            labels: self.labels.split_off(n),
            classes: self.classes.clone(),
            ..self
        };
        (self, rest)
    }
}

impl ImageSet {
    /// Luma of RGB images (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B, as PIL's `convert("L")`);
    /// single-channel sets are returned as they are.
    pub fn to_grayscale(self) -> Self {
        if self.channels != 3 {
            return self;
        }
        let plane = self.height * self.width;
        let pixels = self
            .pixels
            .chunks_exact(3 * plane)
            .flat_map(|img| {
                (0..plane).map(move |i| {
                    let (r, g, b) = (
                        img[i] as f32,
                        img[plane + i] as f32,
                        img[2 * plane + i] as f32,
                    );
                    (0.299 * r + 0.587 * g + 0.114 * b)
                        .round()
                        .clamp(0.0, 255.0) as u8
                })
            })
            .collect();
        ImageSet {
            channels: 1,
            pixels,
            ..self
        }
    }

    /// Single-channel images as RGB (the plane repeated three times); colour sets are returned
    /// as they are.
    pub fn to_rgb(self) -> Self {
        if self.channels != 1 {
            return self;
        }
        let plane = self.height * self.width;
        let pixels = self
            .pixels
            .chunks_exact(plane)
            .flat_map(|img| img.iter().chain(img).chain(img).copied())
            .collect();
        ImageSet {
            channels: 3,
            pixels,
            ..self
        }
    }

    /// Mean and standard deviation of the pixels scaled to [0, 1]: over all channels together
    /// (`per_channel = false`, one value each) or per channel.
    pub fn pixel_stats(&self, per_channel: bool) -> (Vec<f32>, Vec<f32>) {
        let groups = if per_channel { self.channels } else { 1 };
        let plane = self.height * self.width;
        let mut sum = vec![0f64; groups];
        let mut sum_sq = vec![0f64; groups];
        for img in self.pixels.chunks_exact(self.image_size().max(1)) {
            for (c, channel) in img.chunks_exact(plane).enumerate() {
                let g = if per_channel { c } else { 0 };
                for &p in channel {
                    let x = p as f64 / 255.0;
                    sum[g] += x;
                    sum_sq[g] += x * x;
                }
            }
        }
        let count = (self.pixels.len() / groups).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
        let std = sum_sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| (q / count - m * m).max(0.0).sqrt() as f32)
            .collect();
        (mean.into_iter().map(|m| m as f32).collect(), std)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grayscale_uses_bt601_luma() {
        // One 1x2 RGB image: a pure red and a white pixel.
        let set = ImageSet::new(
            3,
            1,
            2,
            vec![255, 255, 0, 255, 0, 255],
            vec![0],
            vec!["a".into()],
        );
        let gray = set.to_grayscale();
        assert_eq!((gray.channels, gray.image(0)), (1, &[76u8, 255][..]));
    }

    #[test]
    fn pixel_stats_global_and_per_channel() {
        // Two 2-channel 1x1 images: channel 0 = {0, 255}, channel 1 = {255, 255}.
        let set = ImageSet::new(
            2,
            1,
            1,
            vec![0, 255, 255, 255],
            vec![0, 0],
            vec!["a".into()],
        );
        let (mean, std) = set.pixel_stats(true);
        assert_eq!(mean, vec![0.5, 1.0]);
        assert_eq!(std, vec![0.5, 0.0]);
        let (mean, std) = set.pixel_stats(false);
        assert_eq!(mean, vec![0.75]);
        assert!((std[0] - 0.4330127).abs() < 1e-6, "{std:?}");
    }

    #[test]
    fn split_at_keeps_order_and_shape() {
        let classes = vec!["a".to_string(), "b".to_string()];
        let set = ImageSet::new(1, 1, 2, vec![0, 1, 2, 3, 4, 5], vec![0, 1, 1], classes);
        let (head, tail) = set.clone().split_at(1);
        assert_eq!((head.len(), tail.len()), (1, 2));
        assert_eq!(head.image(0), &[0, 1]);
        assert_eq!(tail.image(1), &[4, 5]);
        assert_eq!(tail.labels(), &[1, 1]);
        assert_eq!(set.clone().truncated(10).len(), 3);
        assert_eq!(set.split_at(5).1.len(), 0);
    }
}
