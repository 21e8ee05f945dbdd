//! One experiment's speed on one backend, for `kiln bench` (and `cargo xtask bench`, which
//! runs it per backend and per experiment in separate processes so that each peak memory
//! figure is its own).
//!
//! Three figures, each measured apart: the data pipeline (loading and decoding the files, then
//! augmenting, resizing, normalising and batching training batches), the training step and the
//! evaluation pass (see [`kiln_train::bench`]), with the peak memory of the step phase alone.

use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use kiln_data::ImageItem;
use kiln_train::bench::{median, time_steps};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::error::RunError;
use crate::machine;
use crate::runner::load_splits;
use crate::ValidSpec;

/// What to time.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Where the data set's files are found or fetched.
    pub locator: kiln_data::Locator,
    /// Untimed steps first (allocations, caches, lazily built kernels).
    pub warmup: usize,
    /// Timed steps; the figures are medians over them.
    pub steps: usize,
}

/// The figures of one experiment on one backend (`summary.json`-style, one JSON object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// The experiment's name.
    pub experiment: String,
    /// The backend's name, as `--backend` takes it.
    pub backend: String,
    /// Images per training step (the experiment's batch size).
    pub batch: usize,
    /// `[channels, height, width]` of the network's input.
    pub input_shape: [usize; 3],
    /// Parameters of the network as PyTorch counts them (`kiln_models::probe::parameter_count`).
    pub parameters: usize,
    /// Images per second of the median training step (forward, loss, backward, optimiser).
    pub train_images_per_sec: f64,
    /// Images per second of the median evaluation pass (forward only, no autodiff).
    pub eval_images_per_sec: f64,
    /// Every timed training step, in milliseconds.
    pub train_step_ms: Vec<f64>,
    /// Every timed evaluation pass, in milliseconds.
    pub eval_step_ms: Vec<f64>,
    /// Images per second loading and decoding the training and test files.
    pub decode_images_per_sec: f64,
    /// Images per second preparing training batches from decoded images (augmentation,
    /// resize, normalisation, batching), on one thread as the training loop's worker does.
    pub pipeline_images_per_sec: f64,
    /// Peak resident memory of the step phase (MiB), the data set already dropped. `None`
    /// where the system cannot tell (not Linux).
    pub peak_rss_mib: Option<f64>,
    /// Whether denormals were flushed to zero (see `kiln_train::denormals`).
    pub flush_denormals: bool,
    /// The processor ([`crate::machine::processor`]): ratios to PyTorch differ between them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor: Option<String>,
    /// The nominal fp32 peak of the threads the step ran on ([`crate::machine::fp32_peak_gflops`]),
    /// so the bench can say what share of the machine each figure uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp32_peak_gflops: Option<f64>,
}

/// Times `spec` on backend `B` (named `backend` in the report).
pub fn bench<B: AutodiffBackend>(
    spec: &ValidSpec,
    backend: &str,
    options: &BenchOptions,
    device: &B::Device,
) -> Result<BenchReport, RunError> {
    let loading = Instant::now();
    let splits = load_splits(spec, &options.locator)?;
    let loaded = splits.train.len() + splits.test.len();
    let decode_images_per_sec = loaded as f64 / loading.elapsed().as_secs_f64();

    let train = &splits.train;
    let batcher = spec.data.batcher(train);
    let batch_size = spec.recipe.batch_size.min(train.len());
    let mut rng = SmallRng::seed_from_u64(spec.recipe.seed);
    let batches = options.steps.max(1);
    let mut prepared = Vec::with_capacity(batches);
    let preparing = Instant::now();
    for b in 0..batches {
        let items: Vec<ImageItem> = (0..batch_size)
            .map(|i| train.item((b * batch_size + i) % train.len()))
            .collect();
        let draws = kiln_data::Draws {
            rng: &mut rng,
            seed: spec.recipe.seed,
            epoch: 1,
            indices: &[],
        };
        prepared.push(batcher.prepare(&items, Some(draws)));
    }
    let pipeline_images_per_sec = (batches * batch_size) as f64 / preparing.elapsed().as_secs_f64();
    let batch = prepared.swap_remove(0);
    let classes = train.classes.len();
    drop(prepared);
    drop(splits);
    reset_peak_rss();

    B::seed(device, spec.recipe.seed);
    let model = spec
        .model
        .build::<B>(batcher.output_shape(), classes, device);
    let parameters = kiln_models::probe::parameter_count(&model);
    let times = time_steps(
        model,
        &spec.recipe,
        &batch,
        options.warmup,
        options.steps,
        device,
    );
    let ms = |s: &[f64]| s.iter().map(|t| t * 1e3).collect::<Vec<_>>();
    Ok(BenchReport {
        experiment: spec.name.clone(),
        backend: backend.to_string(),
        batch: batch.len(),
        input_shape: batcher.output_shape(),
        parameters,
        train_images_per_sec: batch.len() as f64 / median(&times.train),
        eval_images_per_sec: batch.len() as f64 / median(&times.eval),
        train_step_ms: ms(&times.train),
        eval_step_ms: ms(&times.eval),
        decode_images_per_sec,
        pipeline_images_per_sec,
        peak_rss_mib: machine::peak_rss_mib(),
        processor: machine::processor(),
        fp32_peak_gflops: machine::fp32_peak_gflops(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        ),
        flush_denormals: kiln_train::denormals::flushes_denormals(),
    })
}

/// Resets the kernel's peak-RSS mark to the current RSS (Linux), so that the step phase's
/// peak is not the data set's.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
