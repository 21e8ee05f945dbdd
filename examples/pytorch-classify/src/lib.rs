//! Classify images with weights trained in PyTorch, using only `kiln-models`.
//!
//! The Fashion-MNIST LeNet-5 tutorial saves its network with
//! `torch.save(net.state_dict(), "weights.pt")`; its module names (`conv1` ... `fc3`) are Kiln's
//! own, so the file loads into [`kiln_models::LeNet5`] as it is:
//!
//! ```sh
//! cargo run --release -p kiln-example-pytorch-classify -- weights.pt shirt.png boot.png
//! ```
//!
//! prints each image's three most likely classes. `tests/pytorch_weights.rs` runs
//! [`classify`] on weights that `tests/pytorch/tutorial_weights.py` saves and checks its
//! probabilities against PyTorch's.

use std::path::Path;

use burn::prelude::*;
use burn_ndarray::NdArray;
use kiln_models::{ImageClassifier, LeNet5Config, TorchNames};

/// Fashion-MNIST's classes, in label order.
pub const CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The normalisation the network was trained with: `(x / 255 - MEAN) / STD`, the tutorial's
/// `transforms.Normalize((0.5,), (0.5,))` (as lenet5-fashion-mnist's experiment file says).
pub const MEAN: f32 = 0.5;
/// See [`MEAN`].
pub const STD: f32 = 0.5;

/// An image file as the network sees it: grayscale, 28x28 (resized if need be), normalised,
/// row-major.
pub fn pixels(path: &Path) -> Result<Vec<f32>, String> {
    let image = image::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let gray = image
        .resize_exact(28, 28, image::imageops::FilterType::Triangle)
        .to_luma8();
    Ok(gray
        .as_raw()
        .iter()
        .map(|&p| (p as f32 / 255.0 - MEAN) / STD)
        .collect())
}

/// The softmax probabilities of the ten classes for each image, by LeNet-5 with the PyTorch
/// weights in `weights`.
pub fn classify(weights: &Path, images: &[&Path]) -> Result<Vec<Vec<f32>>, String> {
    type B = NdArray;
    let device = Default::default();
    let model = LeNet5Config::new().init::<B>(&device);
    let (model, _report) =
        kiln_models::load_pytorch(model, weights, &TorchNames::SAME).map_err(|e| e.to_string())?;
    let mut values = Vec::with_capacity(images.len() * 28 * 28);
    for path in images {
        values.extend(pixels(path)?);
    }
    let batch =
        Tensor::<B, 4>::from_data(TensorData::new(values, [images.len(), 1, 28, 28]), &device);
    let probabilities = burn::tensor::activation::softmax(model.logits(batch), 1);
    let flat: Vec<f32> = probabilities
        .into_data()
        .to_vec()
        .map_err(|e| format!("{e:?}"))?;
    Ok(flat.chunks(CLASSES.len()).map(<[f32]>::to_vec).collect())
}
