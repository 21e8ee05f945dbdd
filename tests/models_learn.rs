//! The networks, built through the same `[model]` specs the experiment files use, learn: a few
//! epochs on a small fixed set of images lower their training loss. (LeNet-5 learning is shown
//! by tests/end_to_end.rs and tests/real_fashion_mnist.rs; the tutorial ResNet's 96x96 forward
//! by kiln-models' unit tests: 8 epochs of it here would take minutes.)

use burn_autodiff::Autodiff;
use burn_ndarray::NdArray;
use kiln_data::{ImageBatcher, ImageSet, Normalize};
use kiln_experiments::ModelSpec;
use kiln_models::Classifier;
use kiln_train::{FitData, FitOptions, Recipe};

type B = Autodiff<NdArray<f32>>;

/// 32 random images of `size`x`size` with `channels` channels, 4 classes.
fn noise_images(channels: usize, size: usize) -> ImageSet {
    let n = 32;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let pixels = (0..n * channels * size * size)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    let labels = (0..n).map(|i| (i % 4) as u8).collect();
    let classes = (0..4).map(|c| c.to_string()).collect();
    ImageSet::new(channels, size, size, pixels, labels, classes)
}

/// The training loss of each of 8 epochs on `set`.
fn learn(model: Classifier<B>, set: &ImageSet) -> Vec<f64> {
    let recipe: Recipe = toml::from_str(
        "epochs = 8\nbatch_size = 8\nseed = 1\n[optimizer]\nname = \"adam\"\nlr = 0.001\n",
    )
    .unwrap();
    let batcher = ImageBatcher::for_set(
        set,
        Normalize {
            mean: vec![0.5],
            std: vec![0.25],
        },
    );
    let data = FitData {
        train: set,
        valid: None,
        test: Some(set),
        batcher: &batcher,
    };
    let (_, summary) = kiln_train::fit(
        model,
        data,
        &recipe,
        &Default::default(),
        &FitOptions::default(),
        &mut |_| {},
    )
    .expect("the loss stays finite");
    summary.epochs.iter().map(|e| e.train_loss).collect()
}

/// Trains the `[model]` of `model_toml` for 8 epochs and asks that the last epoch's training
/// loss be below `at_most` times the first's. Each bound sits near what the network reached on
/// 2026-12-05 (ndarray, `cargo xtask test -- --nocapture models_learn` prints it), so a network
/// that learns markedly worse fails.
fn assert_learns(model_toml: &str, channels: usize, size: usize, at_most: f64) {
    let spec: ModelSpec = toml::from_str(model_toml).unwrap();
    spec.validate().unwrap();
    let set = noise_images(channels, size);
    let input = [channels, size, size];
    let losses = learn(spec.build::<B>(input, 4, &Default::default()), &set);
    println!(
        "{}: train loss by epoch {losses:?}",
        model_toml.lines().next().unwrap()
    );
    assert!(
        losses[7] < at_most * losses[0],
        "the loss fell to {:.3} of its first epoch's, expected below {at_most}: {losses:?}",
        losses[7] / losses[0]
    );
}

#[test]
fn convnet_learns() {
    // 1.496 -> 1.138: 0.76.
    assert_learns("name = \"convnet\"", 1, 28, 0.85);
}

#[test]
fn simple_cnn_and_cnn_dropout_learn() {
    // 3.246 -> 0.290: 0.089; 3.019 -> 1.308: 0.43.
    assert_learns("name = \"simple-cnn\"", 3, 32, 0.2);
    assert_learns("name = \"cnn-dropout\"", 3, 32, 0.55);
}

#[test]
fn resnets_learn() {
    assert_learns(
        "name = \"resnet\"\nblocks = [1, 1]\nwidths = [8, 16]\nstem = \"cifar\"\nhead_pool = \"global\"",
        3,
        32,
        // 1.416 -> 1.290: 0.91.
        0.95,
    );
}
