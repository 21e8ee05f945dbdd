//! Checkpoints: everything a fit needs to go on exactly where it stopped.
//!
//! The loop hands a [`Checkpoint`] to the caller's sink at the end of every epoch, every
//! `recipe.checkpoint_every` steps, once before the first step (so an unwritable or full disk
//! shows before any training is lost) and when asked to stop; [`FitOptions::resume_from`]
//! takes one back. Where and how it is stored is the caller's business (Kiln's runner keeps the
//! last two in the run folder, written atomically).
//!
//! Resuming is exact: the model and optimizer records are full precision, the learning-rate
//! schedule and the shuffling are replayed from the seed, and the random draws of each batch
//! (augmentation on the worker thread, dropout through the backend's generator) are seeded from
//! the recipe's seed and the batch's position alone, never from what ran before. So a run
//! resumed from any checkpoint ends with the same weights and metrics as one that never stopped,
//! on a deterministic backend.
//!
//! [`FitOptions::resume_from`]: crate::FitOptions::resume_from

use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::eval::Tally;
use crate::{EpochMetrics, Recipe};

/// A fit's whole state at a step boundary: its position and metrics (plain data, JSON) and the
/// model's and optimizer's records (Burn's named MessagePack, full precision).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Where the fit stood.
    pub state: CheckpointState,
    /// The training model's record.
    pub model: Vec<u8>,
    /// The optimizer's record (Adam's moments, SGD's momentum, ...).
    pub optimizer: Vec<u8>,
    /// The lookahead average of the weights (`recipe.lookahead`), once the fit has one: a
    /// record of the model's type.
    pub lookahead: Option<Vec<u8>>,
}

/// Where a fit's checkpoints go ([`crate::FitOptions::save_checkpoint`]).
pub type CheckpointSink<'a> = dyn Fn(&Checkpoint) -> std::io::Result<()> + 'a;

/// Where a fit stood at a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointState {
    /// The version of Kiln that wrote it.
    pub kiln_version: String,
    /// The recipe of the fit; a resumed fit must have the same (bar `checkpoint_every`).
    pub recipe: Recipe,
    /// The size of the training set, which must not change either.
    pub train_images: usize,
    /// The 1-based epoch in progress, or to start next when `batch` is 0.
    pub epoch: usize,
    /// Batches of `epoch` already trained.
    pub batch: usize,
    /// Optimiser steps since the start of the fit.
    pub step: usize,
    /// Events the fit had emitted: a caller that logs every event keeps this many lines.
    pub events: usize,
    /// Every finished epoch's metrics.
    pub epochs: Vec<EpochMetrics>,
    /// Wall time of the fit so far, over all its processes.
    pub seconds: f64,
    pub(crate) last_finite: Option<f64>,
    pub(crate) epoch_tally: Tally,
    pub(crate) interval: Tally,
    pub(crate) epoch_seconds: f64,
    pub(crate) validation_seconds: f64,
}

/// Why a checkpoint cannot be taken back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResumeError {
    /// The checkpoint was written by a fit with another recipe or training set.
    #[error("the checkpoint belongs to another fit: {0}")]
    Mismatch(String),
    /// A record does not decode into this model or optimizer.
    #[error("the checkpoint's {what} record does not load: {message}")]
    Record {
        /// `model` or `optimizer`.
        what: &'static str,
        /// Burn's error.
        message: String,
    },
}

impl Checkpoint {
    /// `model` (the network the checkpoint was taken of) with the checkpoint's weights;
    /// refused where a tensor's shape differs from `model`'s (the run's network was changed
    /// since, or the file was).
    pub fn load_model<B: Backend, M: Module<B>>(
        &self,
        model: M,
        device: &B::Device,
    ) -> Result<M, ResumeError> {
        kiln_models::record::load_module(model, self.model.clone(), device).map_err(|e| {
            ResumeError::Record {
                what: "model",
                message: e.to_string(),
            }
        })
    }

    /// `optim` with the checkpoint's optimizer state (Adam's moments, SGD's momentum, ...) for
    /// `model`'s parameters (`model` as [`Checkpoint::load_model`] gave it back: the state is
    /// kept by parameter id); refused where the state of a parameter is not of its shape.
    pub fn load_optimizer<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(
        &self,
        optim: O,
        model: &M,
        device: &B::Device,
    ) -> Result<O, ResumeError> {
        let bytes = self.optimizer.clone();
        let record = kiln_models::record::decode_optimizer::<B, M, O::Record>(bytes, model, device)
            .map_err(|message| ResumeError::Record {
                what: "optimizer",
                message,
            })?;
        Ok(optim.load_record(record))
    }
}

impl CheckpointState {
    /// A fit about to take its first step.
    pub(crate) fn start(recipe: &Recipe, train_images: usize) -> Self {
        CheckpointState {
            kiln_version: env!("CARGO_PKG_VERSION").to_string(),
            recipe: recipe.clone(),
            train_images,
            epoch: 1,
            batch: 0,
            step: 0,
            events: 0,
            epochs: Vec::new(),
            seconds: 0.0,
            last_finite: None,
            epoch_tally: Tally::default(),
            interval: Tally::default(),
            epoch_seconds: 0.0,
            validation_seconds: 0.0,
        }
    }

    /// Refuses a checkpoint of another fit: the recipe (bar `checkpoint_every`, which does not
    /// change results) and the training set's size must be the same.
    pub(crate) fn check_matches(
        &self,
        recipe: &Recipe,
        train_images: usize,
    ) -> Result<(), ResumeError> {
        let results_of = |r: &Recipe| r.clone().with_checkpoint_every(None);
        if results_of(&self.recipe) != results_of(recipe) {
            return Err(ResumeError::Mismatch(format!(
                "its recipe is {:?}, this fit's is {:?}",
                self.recipe, recipe
            )));
        }
        if self.train_images != train_images {
            return Err(ResumeError::Mismatch(format!(
                "it trained on {} images, this fit has {train_images}",
                self.train_images
            )));
        }
        Ok(())
    }
}

/// The seed of one batch's random draws (augmentation, dropout): a function of the recipe's
/// seed and the batch's position only, so a resumed fit draws what the uninterrupted one did.
pub(crate) fn batch_seed(seed: u64, epoch: usize, batch: usize) -> u64 {
    // Mixed over the three: nearby positions get unrelated seeds.
    mix(seed
        ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (batch as u64)
            .wrapping_mul(0xbf58_476d_1ce4_e5b9)
            .rotate_left(17))
}

/// SplitMix64's finaliser: every input bit moves about half the output bits.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_seeds_differ_between_positions() {
        let mut seeds: Vec<u64> = (1..=20)
            .flat_map(|e| (0..200).map(move |b| batch_seed(42, e, b)))
            .collect();
        let n = seeds.len();
        seeds.sort_unstable();
        seeds.dedup();
        assert_eq!(seeds.len(), n);
        assert_ne!(batch_seed(1, 1, 0), batch_seed(2, 1, 0));
    }

    #[test]
    fn a_checkpoint_loads_into_its_network_and_another_network_is_refused() {
        use kiln_models::{ImageClassifier, LeNet5Config};
        type B = burn_ndarray::NdArray;
        let device = Default::default();
        let ten = LeNet5Config::new().init::<B>(&device);
        let checkpoint = Checkpoint {
            state: CheckpointState::start(&Recipe::default(), 10),
            model: kiln_models::record::encode::<B, _>(ten.into_record()),
            optimizer: Vec::new(),
            lookahead: None,
        };
        let three = LeNet5Config::new().with_num_classes(3).init::<B>(&device);
        let err = checkpoint.load_model(three, &device).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the checkpoint's model record does not load: `fc3.weight` has shape [84, 10] in \
             the record, the module expects [84, 3]"
        );
        // The same network, initialised from another seed, takes the saved weights: its
        // logits become the saved network's, bit for bit. (Burn draws a parameter at its first
        // use, so the saved network's logits are taken before its record.)
        let images = Tensor::<B, 4>::ones([2, 1, 28, 28], &device);
        let logits = |m: &kiln_models::LeNet5<B>| m.logits(images.clone()).into_data();
        let saved = LeNet5Config::new().init::<B>(&device);
        let expected = logits(&saved);
        let checkpoint = Checkpoint {
            model: kiln_models::record::encode::<B, _>(saved.into_record()),
            ..checkpoint
        };
        B::seed(&device, 7);
        let other = LeNet5Config::new().init::<B>(&device);
        assert_ne!(
            logits(&other),
            expected,
            "the seeds give different networks"
        );
        let loaded = checkpoint.load_model(other, &device).unwrap();
        assert_eq!(logits(&loaded), expected);
    }
}
