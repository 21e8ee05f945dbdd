//! Timing the training step and the evaluation pass, for `kiln bench`.
//!
//! A step here is exactly a step of [`fit()`](crate::fit()): forward, the recipe's loss,
//! backward and the recipe's optimiser, on a batch of the recipe's size, with the loss read back as the
//! loop reads it. Only the data differ: one prepared batch is reused, so the figures measure
//! the model on the backend and not the data pipeline (timed apart by the caller).

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use kiln_data::HostBatch;
use kiln_models::ImageClassifier;
use serde::{Deserialize, Serialize};

use crate::eval::{batch_loss, training_loss};
use crate::optimizer::RecipeOptimizer;
use crate::{Recipe, Trainable};

/// Seconds per timed training step and per timed evaluation pass, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTimes {
    /// Each timed training step (forward, loss, backward, optimiser).
    pub train: Vec<f64>,
    /// Each timed evaluation pass over the batch (forward only).
    pub eval: Vec<f64>,
}

/// The median of `seconds` (the mean of the middle two for an even count); NaN when empty.
pub fn median(seconds: &[f64]) -> f64 {
    let mut sorted = seconds.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Runs `warmup` untimed and then `steps` timed training steps of `model` by `recipe` on
/// `batch`, then the same counts of evaluation passes (no autodiff) of the trained model.
pub fn time_steps<B: AutodiffBackend, M: Trainable<B>>(
    model: M,
    recipe: &Recipe,
    batch: &HostBatch,
    warmup: usize,
    steps: usize,
    device: &B::Device,
) -> StepTimes {
    // The recipe was validated against this model when it was built.
    let mut optim = RecipeOptimizer::new(recipe, &model, warmup + steps)
        .expect("the recipe's parameter groups");
    let loss_fn = training_loss(recipe, device);
    let lr = recipe.optimizer.lr();
    let mut model = model;
    let mut times = StepTimes::default();
    for i in 0..warmup + steps {
        let batch = batch.clone().to_device::<B>(device);
        let started = Instant::now();
        let (loss, _) = batch_loss(&model, &loss_fn, batch);
        let _: f64 = loss.clone().into_scalar().elem();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads, 1, i + 1);
        // GPU backends queue work: wait for the step to finish before stopping the clock.
        let _ = B::sync(device);
        if i >= warmup {
            times.train.push(started.elapsed().as_secs_f64());
        }
    }
    let model = model.valid();
    for i in 0..warmup + steps {
        let batch = batch.clone().to_device::<B::InnerBackend>(device);
        let started = Instant::now();
        let predicted = model.logits(batch.images).argmax(1);
        let _: i64 = predicted.sum().into_scalar().elem();
        if i >= warmup {
            times.eval.push(started.elapsed().as_secs_f64());
        }
    }
    times
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_unsorted_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
