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
    pub train_loss: f64,
    pub train_accuracy: f64,
    /// On the validation split, where the experiment has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_accuracy: Option<f64>,
    pub test_loss: f64,
    pub test_accuracy: f64,
    /// Wall time of the epoch: training and evaluation.
    pub seconds: f64,
    /// Training images per second (training time only).
    pub train_images_per_sec: f64,
    pub eval_images_per_sec: f64,
}

/// Mean training loss and accuracy over the batches since the previous step event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub epoch: usize,
    /// 1-based count of optimiser steps since the start of the run.
    pub step: usize,
    pub lr: f64,
    pub loss: f64,
    pub accuracy: f64,
    /// The whole validation split at this step, every `recipe.validate_every` steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_accuracy: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Step(StepMetrics),
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
