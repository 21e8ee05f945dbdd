//! Evaluation and prediction, and what the training loop shares with them: the loss and
//! accuracy of a batch and their running sums.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::prelude::*;
use kiln_data::ImageBatch;
use kiln_models::ImageClassifier;
use serde::{Deserialize, Serialize};

use crate::Recipe;

/// Mean loss and accuracy over a set of images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Mean cross-entropy per image.
    pub loss: f64,
    /// Fraction of images whose top-1 prediction is their label.
    pub accuracy: f64,
}

/// Sums of loss (weighted by batch size), correct predictions and images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tally {
    #[serde(with = "exact_f64")]
    pub(crate) loss: f64,
    pub(crate) correct: u64,
    pub(crate) images: u64,
}

/// A running sum a checkpoint carries across a resume must come back bit for bit, or the
/// resumed epoch's mean loss differs from the uninterrupted run's in its last digit.
/// serde_json parses a float to within one unit in the last place unless its `float_roundtrip`
/// feature is on (which would rebuild Burn's whole stack, which shares the crate), so the sum
/// is written as text, Rust's shortest form that reads back exactly, and read back with
/// `str::parse`, which rounds correctly. A plain number (a checkpoint written before) still
/// reads.
mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Number(f64),
        }
        match Written::deserialize(d)? {
            Written::Text(text) => text.parse().map_err(|_| {
                serde::de::Error::custom(format!(
                    "expected a number written as text, found {text:?}"
                ))
            }),
            Written::Number(value) => Ok(value),
        }
    }
}

impl Tally {
    pub(crate) fn add(&mut self, mean_loss: f64, correct: u64, images: usize) {
        self.loss += mean_loss * images as f64;
        self.correct += correct;
        self.images += images as u64;
    }

    pub(crate) fn metrics(&self) -> Metrics {
        let n = self.images.max(1) as f64;
        Metrics {
            loss: self.loss / n,
            accuracy: self.correct as f64 / n,
        }
    }
}

/// What a fit minimises: the mean loss of a batch from its logits `[batch, classes]` and class
/// targets `[batch]`. [`fit`](crate::fit::fit) uses cross-entropy with the recipe's label smoothing.
pub trait ClassificationLoss<B: Backend> {
    /// The mean loss of the batch, a one-element tensor.
    fn loss(&self, logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1>;
}

impl<B: Backend> ClassificationLoss<B> for CrossEntropyLoss<B> {
    fn loss(&self, logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
        self.forward(logits, targets)
    }
}

/// The training loss of `recipe`: cross-entropy, with its label smoothing.
pub(crate) fn training_loss<B: Backend>(
    recipe: &Recipe,
    device: &B::Device,
) -> CrossEntropyLoss<B> {
    let smoothing = (recipe.label_smoothing > 0.0).then_some(recipe.label_smoothing);
    CrossEntropyLossConfig::new()
        .with_smoothing(smoothing)
        .init(device)
}

/// Item `index` of a set, which must have it (the loop asks only below `set.len()`).
pub(crate) fn item<I, D: Dataset<I> + ?Sized>(set: &D, index: usize) -> I {
    set.get(index).unwrap_or_else(|| {
        panic!(
            "the data set has {} items but returned none at index {index}",
            set.len()
        )
    })
}

/// The mean loss of a batch and the number of correct top-1 predictions.
pub(crate) fn batch_loss<B: Backend, M: ImageClassifier<B>>(
    model: &M,
    loss_fn: &impl ClassificationLoss<B>,
    batch: ImageBatch<B>,
) -> (Tensor<B, 1>, u64) {
    logits_loss(model.logits(batch.images), loss_fn, batch.targets)
}

/// [`batch_loss`] from the batch's logits.
fn logits_loss<B: Backend>(
    logits: Tensor<B, 2>,
    loss_fn: &impl ClassificationLoss<B>,
    targets: Tensor<B, 1, Int>,
) -> (Tensor<B, 1>, u64) {
    let n = targets.dims()[0];
    let predicted = logits.clone().argmax(1).reshape([n]);
    let correct: i64 = predicted
        .equal(targets.clone())
        .int()
        .sum()
        .into_scalar()
        .elem();
    (loss_fn.loss(logits, targets), correct as u64)
}

/// Mean cross-entropy and accuracy of `model` over all of `set`.
pub fn evaluate<B, M, I>(
    model: &M,
    set: &(impl Dataset<I> + ?Sized),
    batcher: &impl Batcher<B, I, ImageBatch<B>>,
    batch_size: usize,
    device: &B::Device,
) -> Metrics
where
    B: Backend,
    M: ImageClassifier<B>,
{
    let indices: Vec<usize> = (0..set.len()).collect();
    tally(model, set, &indices, batcher, batch_size, device, None).metrics()
}

/// The cross-entropy and correct predictions of `model` over the items `indices` of `set`;
/// with `keep`, also each item's class probabilities, in order, appended to it.
pub(crate) fn tally<B, M, I>(
    model: &M,
    set: &(impl Dataset<I> + ?Sized),
    indices: &[usize],
    batcher: &impl Batcher<B, I, ImageBatch<B>>,
    batch_size: usize,
    device: &B::Device,
    mut keep: Option<&mut Vec<Vec<f32>>>,
) -> Tally
where
    B: Backend,
    M: ImageClassifier<B>,
{
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut tally = Tally::default();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = batcher.batch(chunk.iter().map(|&i| item(set, i)).collect(), device);
        let logits = model.logits(batch.images);
        if let Some(rows) = keep.as_deref_mut() {
            rows.extend(softmax_rows(logits.clone()));
        }
        let (loss, correct) = logits_loss(logits, &loss_fn, batch.targets);
        tally.add(loss.into_scalar().elem(), correct, chunk.len());
    }
    tally
}

/// Softmax probabilities of every class for each image of the batch, one row per image.
pub fn probabilities<B: Backend, M: ImageClassifier<B>>(
    model: &M,
    images: Tensor<B, 4>,
) -> Vec<Vec<f32>> {
    softmax_rows(model.logits(images))
}

/// The softmax of each row of `logits` `[images, classes]`.
fn softmax_rows<B: Backend>(logits: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [_, classes] = logits.dims();
    let values: Vec<f32> = burn::tensor::activation::softmax(logits, 1)
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("converted to f32");
    values.chunks(classes).map(<[f32]>::to_vec).collect()
}

/// [`probabilities`] for every image of `set`, in order, in batches of `batch_size`.
pub fn predict<B, M, I>(
    model: &M,
    set: &(impl Dataset<I> + ?Sized),
    batcher: &impl Batcher<B, I, ImageBatch<B>>,
    batch_size: usize,
    device: &B::Device,
) -> Vec<Vec<f32>>
where
    B: Backend,
    M: ImageClassifier<B>,
{
    let indices: Vec<usize> = (0..set.len()).collect();
    let mut rows = Vec::with_capacity(set.len());
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = batcher.batch(chunk.iter().map(|&i| item(set, i)).collect(), device);
        rows.extend(probabilities(model, batch.images));
    }
    rows
}

#[cfg(test)]
mod exact_f64_tests {
    use super::Tally;

    #[test]
    fn a_tally_survives_json_bit_for_bit_and_old_checkpoints_still_read() {
        // Sums of many 17-digit values: the kind serde_json's default parser can miss by one
        // unit in the last place.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut sum = 0.0f64;
        for _ in 0..20_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            sum += (state >> 11) as f64 / (1u64 << 53) as f64 * 3.0;
            let tally = Tally {
                loss: sum,
                correct: 1,
                images: 2,
            };
            let json = serde_json::to_string(&tally).unwrap();
            let back: Tally = serde_json::from_str(&json).unwrap();
            assert_eq!(back.loss.to_bits(), sum.to_bits(), "{json}");
        }
        let old: Tally = serde_json::from_str(r#"{"loss":1.5,"correct":3,"images":4}"#).unwrap();
        assert_eq!(
            old,
            Tally {
                loss: 1.5,
                correct: 3,
                images: 4
            }
        );
    }
}
