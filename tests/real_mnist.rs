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
    // PyTorch with this recipe reaches 91.3% after the first epoch; this test measures 92.5%
    // validation and 95.8% test (the last 5,000 test digits are the easier half). The full
    // 20-epoch run's first epoch gave 91.8% / 95.5%: see the note on determinism under load.
    assert!(valid >= 0.89, "validation accuracy {valid:.4} < 0.89");
    assert!(
        s.final_test_accuracy >= 0.93,
        "test accuracy {:.4} < 0.93",
        s.final_test_accuracy
    );
}
