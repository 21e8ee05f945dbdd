//! Real data: the MNIST tutorial's ConvNet, one epoch on the real MNIST (`../shared/datasets/
//! mnist`, or `$KILN_MNIST_DIR`) with the tutorial's split, through the real command path.

mod common;
use common::{arg, run_and_summarise, shared_dataset};

#[test]
fn convnet_one_epoch_on_real_mnist_with_the_tutorial_split() {
    let data = shared_dataset("mnist", "KILN_MNIST_DIR");
    let runs = tempfile::tempdir().unwrap();
    let (_, s) = run_and_summarise(
        runs.path(),
        "convnet-mnist",
        &["--epochs", "1", "--data-dir", &arg(&data)],
    );
    let valid = s.final_valid_accuracy.expect("convnet-mnist validates");
    println!(
        "real MNIST, 1 epoch: validation {:.2}%, test {:.2}%, {:.0} train images/s",
        100.0 * valid,
        100.0 * s.final_test_accuracy,
        s.train_images_per_sec
    );
    // The tutorial's split: validation = first 5,000 test images, test = the last 5,000.
    assert_eq!((s.train_images, s.test_images), (60_000, 5_000));
    // The tutorial's inputs (x/255, not standardised) learn slowly at first, and how far the
    // first epoch gets depends on the seed: PyTorch with this recipe and split ends it at 84.6%
    // to 88.6% validation and 90.8% to 93.8% test over seeds 1 to 6 and 42 (xtask/bench/
    // calibrate.py convnet-mnist --epochs 1 --seed S, 2026-11-30; the last 5,000 test digits
    // are the easier half). Kiln measured 83.4% and 89.5% here. A network that does not learn
    // stays near 10%.
    assert!(valid >= 0.80, "validation accuracy {valid:.4} < 0.80");
    assert!(
        s.final_test_accuracy >= 0.86,
        "test accuracy {:.4} < 0.86",
        s.final_test_accuracy
    );
}
