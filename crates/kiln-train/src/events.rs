//! What the loop reports. Each event serialises to one JSON object (one line of a run's
//! `metrics.jsonl`), tagged by `"event"`.

use serde::{Deserialize, Serialize};

/// Metrics of one finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    /// Learning rate of the epoch's last batch.
    pub lr: f64,
    /// Mean training loss over the epoch's batches, weighted by batch size.
    pub train_loss: f64,
    /// Fraction of the epoch's training images classified right (top-1) as they were trained on.
    pub train_accuracy: f64,
    /// On the validation split, where the experiment has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_loss: Option<f64>,
    /// Top-1 accuracy on the validation split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_accuracy: Option<f64>,
    /// On the test split, where the fit has one (a run of `kiln run` always does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    /// Top-1 accuracy on the test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
    /// Wall time of the epoch: training and evaluation.
    pub seconds: f64,
    /// Training images per second (training time only).
    pub train_images_per_sec: f64,
    /// Test images per second, where the fit has a test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_images_per_sec: Option<f64>,
}

/// Mean training loss and accuracy over the batches since the previous step event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// 1-based epoch the step belongs to.
    pub epoch: usize,
    /// 1-based count of optimiser steps since the start of the run.
    pub step: usize,
    /// Learning rate of this step.
    pub lr: f64,
    /// Mean training loss of the batches since the previous step event.
    pub loss: f64,
    /// Top-1 training accuracy of the batches since the previous step event.
    pub accuracy: f64,
    /// The whole validation split at this step, every `recipe.validate_every` steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_loss: Option<f64>,
    /// Top-1 accuracy on the whole validation split at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_accuracy: Option<f64>,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Every `recipe.log_every` steps (and at each mid-epoch validation).
    Step(StepMetrics),
    /// At the end of each epoch.
    Epoch(EpochMetrics),
}

impl Event {
    /// The epoch events of a run, in order.
    pub fn epochs(events: &[Event]) -> impl Iterator<Item = &EpochMetrics> {
        events.iter().filter_map(|e| match e {
            Event::Epoch(m) => Some(m),
            Event::Step(_) => None,
        })
    }

    /// The step events of a run, in order.
    pub fn steps(events: &[Event]) -> impl Iterator<Item = &StepMetrics> {
        events.iter().filter_map(|e| match e {
            Event::Step(m) => Some(m),
            Event::Epoch(_) => None,
        })
    }
}
