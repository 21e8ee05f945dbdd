//! A model and a data set of your own, trained by Kiln's loop.
//!
//! The data: 16x16 grayscale images of three patterns (horizontal stripes, vertical stripes,
//! a checkerboard) at random phases under noise, generated on the fly. The model: one
//! convolution, a pooling and a linear layer. Only `ImageClassifier` (for the model) and
//! `TrainBatcher` (for the batcher, an empty impl without augmentation) are Kiln's; the rest
//! is plain Burn.
//!
//! `cargo run --release -p kiln-example-own-data [cpu|ndarray]` trains for three epochs on Kiln's
//! CPU backend (or Burn's ndarray) and prints the test accuracy.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::backend::AutodiffBackend;
use burn_autodiff::Autodiff;
use kiln_data::ImageBatch;
use kiln_models::{ImageClassifier, Probe};
use kiln_train::{fit, FitData, FitOptions, FitSummary, OptimizerSpec, Recipe, TrainBatcher};

const SIDE: usize = 16;
const CLASSES: [&str; 3] = ["horizontal", "vertical", "checkerboard"];

/// One image, `SIDE * SIDE` values in [0, 1], and its class.
#[derive(Clone, Debug)]
pub struct Pattern {
    pixels: Vec<f32>,
    class: usize,
}

/// `len` patterns, image `i` drawn from `seed` and `i` alone, so any index is ready at once.
pub struct Patterns {
    len: usize,
    seed: u64,
}

impl Dataset<Pattern> for Patterns {
    fn get(&self, index: usize) -> Option<Pattern> {
        if index >= self.len {
            return None;
        }
        let mut state = self.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut uniform = move || {
            // splitmix64: enough randomness for a toy set, no dependency.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f32 / (1u64 << 53) as f32
        };
        let class = index % CLASSES.len();
        let (period, phase) = (2 + (uniform() * 3.0) as usize, (uniform() * 4.0) as usize);
        let pixels = (0..SIDE * SIDE)
            .map(|p| {
                let (y, x) = (p / SIDE + phase, p % SIDE + phase);
                let on = match class {
                    0 => (y / period) % 2 == 0,
                    1 => (x / period) % 2 == 0,
                    _ => (y / period + x / period) % 2 == 0,
                };
                (if on { 0.8 } else { 0.2 }) + 0.3 * (uniform() - 0.5)
            })
            .collect();
        Some(Pattern { pixels, class })
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// Stacks patterns into Kiln's `ImageBatch`: images `[n, 1, SIDE, SIDE]`, classes `[n]`.
#[derive(Clone, Debug)]
pub struct PatternBatcher;

impl<B: Backend> Batcher<B, Pattern, ImageBatch<B>> for PatternBatcher {
    fn batch(&self, items: Vec<Pattern>, device: &B::Device) -> ImageBatch<B> {
        let n = items.len();
        let targets: Vec<i64> = items.iter().map(|p| p.class as i64).collect();
        let pixels: Vec<f32> = items.into_iter().flat_map(|p| p.pixels).collect();
        ImageBatch {
            images: Tensor::from_data(TensorData::new(pixels, [n, 1, SIDE, SIDE]), device),
            targets: Tensor::from_data(TensorData::new(targets, [n]), device),
        }
    }
}

/// No augmentation: the training batches are the evaluation ones.
impl<B: AutodiffBackend> TrainBatcher<B, Pattern> for PatternBatcher {}

/// conv 3x3 (8 channels) -> ReLU -> max pool 4x4 -> linear to the three classes.
#[derive(Module, Debug)]
pub struct TinyNet<B: Backend> {
    conv: Conv2d<B>,
    pool: MaxPool2d,
    fc: Linear<B>,
}

impl<B: Backend> TinyNet<B> {
    pub fn new(device: &B::Device) -> Self {
        TinyNet {
            conv: Conv2dConfig::new([1, 8], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device),
            pool: MaxPool2dConfig::new([4, 4]).with_strides([4, 4]).init(),
            fc: LinearConfig::new(8 * (SIDE / 4) * (SIDE / 4), CLASSES.len()).init(device),
        }
    }
}

impl<B: Backend> ImageClassifier<B> for TinyNet<B> {
    // A probe watches each layer for Kiln's summaries and feature-map pictures; a model that
    // does not need them can ignore it.
    fn forward_probed<P: Probe<B> + ?Sized>(
        &self,
        images: Tensor<B, 4>,
        _: &mut P,
    ) -> Tensor<B, 2> {
        let x = self.pool.forward(relu(self.conv.forward(images)));
        self.fc.forward(x.flatten::<2>(1, 3))
    }
}

/// Trains a fresh `TinyNet` on `B` and returns its summary (every epoch's metrics).
pub fn train<B: AutodiffBackend>(device: &B::Device, epochs: usize) -> FitSummary {
    B::seed(device, 7);
    let model = TinyNet::<B>::new(device);
    let (train, test) = (
        Patterns { len: 3000, seed: 1 },
        Patterns { len: 600, seed: 2 },
    );
    let recipe = Recipe::default()
        .with_epochs(epochs)
        .with_batch_size(32)
        .with_optimizer(OptimizerSpec::adam(3e-3));
    let data = FitData {
        train: &train,
        valid: None,
        test: Some(&test),
        batcher: &PatternBatcher,
    };
    let options = FitOptions {
        progress: true,
        ..FitOptions::default()
    };
    let (_model, summary) = fit(model, data, &recipe, device, &options, &mut |_event| {})
        .expect("a learning rate of 3e-3 keeps the loss finite");
    summary
}

fn main() {
    // The same code on any Burn backend: only the type changes.
    let summary = match std::env::args().nth(1).as_deref() {
        None | Some("cpu") => train::<Autodiff<kiln_cpu::KilnCpu>>(&Default::default(), 3),
        Some("ndarray") => train::<Autodiff<burn_ndarray::NdArray>>(&Default::default(), 3),
        Some(other) => {
            eprintln!("unknown backend {other:?}: expected cpu or ndarray");
            std::process::exit(2);
        }
    };
    for e in &summary.epochs {
        let test = e.test_accuracy.expect("the fit has a test split");
        println!(
            "epoch {}: train loss {:.3}, test accuracy {:.1}%",
            e.epoch,
            e.train_loss,
            100.0 * test
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patterns are easy: one epoch takes a working loop well past chance (33%).
    #[test]
    fn learns_the_three_patterns() {
        let summary = train::<Autodiff<kiln_cpu::KilnCpu>>(&Default::default(), 1);
        let accuracy = summary.last().and_then(|e| e.test_accuracy).unwrap();
        assert!(accuracy > 0.9, "test accuracy {accuracy}");
    }

    #[test]
    fn every_index_below_len_has_an_image_of_its_class() {
        let set = Patterns { len: 7, seed: 3 };
        for i in 0..7 {
            let p = set.get(i).unwrap();
            assert_eq!((p.pixels.len(), p.class), (SIDE * SIDE, i % 3));
        }
        assert!(set.get(7).is_none());
    }
}
