//! Turning images into normalised Burn tensors.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::transform::{resize_bilinear_pil, Augment, Position};
use crate::ImageSet;
use rand::rngs::SmallRng;

/// `(x / 255 - mean) / std`, per channel (one value applies to every channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    /// Per-channel means of the `[0, 1]`-scaled pixels.
    pub mean: Vec<f32>,
    /// Per-channel standard deviations of the `[0, 1]`-scaled pixels; none may be zero.
    pub std: Vec<f32>,
}

impl Normalize {
    /// Scaling to `[0, 1]` only.
    pub fn unit() -> Self {
        Self {
            mean: vec![0.0],
            std: vec![1.0],
        }
    }

    /// Checks the values for a set with `channels` channels; the message names the field.
    pub fn validate(&self, channels: usize) -> Result<(), String> {
        for (field, values) in [("mean", &self.mean), ("std", &self.std)] {
            if values.len() != 1 && values.len() != channels {
                return Err(format!(
                    "{field}: expected 1 or {channels} values (one per channel), found {}",
                    values.len()
                ));
            }
        }
        if let Some(s) = self.std.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
            return Err(format!("std: expected positive finite values, found {s}"));
        }
        Ok(())
    }

    /// `(scale, shift)` per channel so that `y = x * scale + shift` for `x` in 0..=255.
    fn affine(&self, channel: usize) -> (f32, f32) {
        let pick = |v: &[f32]| if v.len() == 1 { v[0] } else { v[channel] };
        let (mean, std) = (pick(&self.mean), pick(&self.std));
        (1.0 / (255.0 * std), -mean / std)
    }
}

/// One image and its label, as the batcher takes them.
#[derive(Debug, Clone)]
pub struct ImageItem {
    /// Channel-first `u8` pixels, `channels * height * width` of them.
    pub pixels: Vec<u8>,
    /// Class index.
    pub label: u8,
}

impl ImageSet {
    /// Image `index` and its label, copied out of the set.
    pub fn item(&self, index: usize) -> ImageItem {
        ImageItem {
            pixels: self.image(index).to_vec(),
            label: self.label(index),
        }
    }
}

/// An `ImageSet` is a Burn data set, so Kiln's loop and Burn's data loaders both take it.
impl Dataset<ImageItem> for ImageSet {
    fn get(&self, index: usize) -> Option<ImageItem> {
        (index < ImageSet::len(self)).then(|| self.item(index))
    }

    fn len(&self) -> usize {
        ImageSet::len(self)
    }
}

/// A batch: images `[batch, channels, height, width]` and class indices `[batch]`.
#[derive(Debug, Clone)]
pub struct ImageBatch<B: Backend> {
    /// `[batch, channels, height, width]`, normalised.
    pub images: Tensor<B, 4>,
    /// Class indices, `[batch]`.
    pub targets: Tensor<B, 1, Int>,
}

/// A batch still in host memory: what a worker thread prepares while the device trains.
#[derive(Debug, Clone)]
pub struct HostBatch {
    values: Vec<f32>,
    labels: Vec<i64>,
    shape: [usize; 4],
}

impl HostBatch {
    /// Number of images in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Moves the batch onto `device` as tensors.
    pub fn to_device<B: Backend>(self, device: &B::Device) -> ImageBatch<B> {
        let n = self.labels.len();
        ImageBatch {
            images: Tensor::from_data(TensorData::new(self.values, self.shape), device),
            targets: Tensor::from_data(TensorData::new(self.labels, [n]), device),
        }
    }
}

/// Turns [`ImageItem`]s of one shape into batches: optional augmentation (training only),
/// optional bilinear resize, then normalisation.
#[derive(Debug, Clone)]
pub struct ImageBatcher {
    /// `[channels, height, width]` of the source images.
    pub shape: [usize; 3],
    /// `[height, width]` to resize to, if any.
    pub resize: Option<[usize; 2]>,
    /// Random crop and flip, applied to training batches only.
    pub augment: Augment,
    /// Normalisation applied after augmentation and resizing.
    pub normalize: Normalize,
}

impl ImageBatcher {
    /// A batcher for the images of `set` that only normalises.
    pub fn for_set(set: &ImageSet, normalize: Normalize) -> Self {
        Self {
            shape: [set.channels, set.height, set.width],
            resize: None,
            augment: Augment::default(),
            normalize,
        }
    }

    /// `[channels, height, width]` of the batches' images.
    pub fn output_shape(&self) -> [usize; 3] {
        let [c, h, w] = self.shape;
        let [h, w] = self.resize.unwrap_or([h, w]);
        [c, h, w]
    }

    /// Builds a batch in host memory. `augment` is `Some` for training batches, which are
    /// then augmented (if the batcher augments) with draws from its generator, each image at
    /// its position (its index in the training set, the epoch, the seed); evaluation passes
    /// `None`.
    pub fn prepare(&self, items: &[ImageItem], mut augment: Option<Draws<'_>>) -> HostBatch {
        let [c, h, w] = self.shape;
        let [oc, oh, ow] = self.output_shape();
        let plane = oh * ow;
        let affine: Vec<(f32, f32)> = (0..c).map(|ch| self.normalize.affine(ch)).collect();
        let mut values = Vec::with_capacity(items.len() * oc * plane);
        let mut labels = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            assert_eq!(
                item.pixels.len(),
                c * h * w,
                "image size differs from the batcher's shape"
            );
            let augmented;
            let pixels = match augment.as_mut() {
                Some(draws) if !self.augment.is_identity() => {
                    let at = Position {
                        seed: draws.seed,
                        epoch: draws.epoch,
                        index: draws.indices.get(i).copied().unwrap_or(i),
                    };
                    augmented = self.augment.apply(&item.pixels, c, h, w, draws.rng, at);
                    &augmented
                }
                _ => &item.pixels,
            };
            // Resized in 8 bits, as torchvision's Resize does on the PIL images the tutorials
            // feed it, then scaled.
            let resized;
            let pixels = match self.resize {
                Some([rh, rw]) if [rh, rw] != [h, w] => {
                    resized = resize_bilinear_pil(pixels, c, h, w, rh, rw);
                    &resized
                }
                _ => pixels,
            };
            let image: Vec<f32> = pixels.iter().map(|&p| p as f32).collect();
            for (ch, channel) in image.chunks_exact(plane).enumerate() {
                let (scale, shift) = affine[ch];
                values.extend(channel.iter().map(|&p| p * scale + shift));
            }
            labels.push(item.label as i64);
        }
        HostBatch {
            values,
            labels,
            shape: [items.len(), oc, oh, ow],
        }
    }
}

/// What augmenting a training batch draws from: its generator, and where the batch's images
/// sit in the fit (their indices in the training set; the image's position in the batch
/// where none are given).
pub struct Draws<'a> {
    /// The batch's generator.
    pub rng: &'a mut SmallRng,
    /// The recipe's seed.
    pub seed: u64,
    /// The epoch, from 1.
    pub epoch: usize,
    /// The images' indices in the training set, in batch order.
    pub indices: &'a [usize],
}

/// Burn's batcher interface: the evaluation path (no augmentation).
impl<B: Backend> Batcher<B, ImageItem, ImageBatch<B>> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &B::Device) -> ImageBatch<B> {
        self.prepare(&items, None).to_device(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_ndarray::NdArray;

    #[test]
    fn normalizes_each_channel_and_keeps_labels() {
        let set = ImageSet::new(
            2,
            1,
            2,
            vec![0, 255, 51, 102, 255, 0, 0, 0],
            vec![1, 0],
            vec!["a".into(), "b".into()],
        );
        let batcher = ImageBatcher::for_set(
            &set,
            Normalize {
                mean: vec![0.5, 0.2],
                std: vec![0.5, 0.1],
            },
        );
        let batch: ImageBatch<NdArray> =
            batcher.batch(vec![set.item(0), set.item(1)], &Default::default());
        assert_eq!(batch.images.dims(), [2, 2, 1, 2]);
        let got = batch.images.into_data().to_vec::<f32>().unwrap();
        // channel 0: (x/255 - 0.5)/0.5; channel 1: (x/255 - 0.2)/0.1
        let want = [-1.0, 1.0, 0.0, 2.0, 1.0, -1.0, -2.0, -2.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "got {got:?}, want {want:?}");
        }
        let labels = batch
            .targets
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap();
        assert_eq!(labels, vec![1, 0]);
    }

    #[test]
    fn validate_names_the_field() {
        let bad = Normalize {
            mean: vec![0.1, 0.2],
            std: vec![0.3],
        };
        assert!(bad
            .validate(3)
            .unwrap_err()
            .starts_with("mean: expected 1 or 3 values"));
        let zero = Normalize {
            mean: vec![0.1],
            std: vec![0.0],
        };
        assert!(zero
            .validate(1)
            .unwrap_err()
            .starts_with("std: expected positive"));
    }
}
