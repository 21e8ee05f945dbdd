//! Real data: LeNet-5 on the real Fashion-MNIST (Debian's `dataset-fashion-mnist`, or
//! `$KILN_DATA_DIR`), one epoch on the full training set, through the real command path.
//! `cargo xtask test` installs the package; without the data this test fails, it never skips.

mod common;
use common::run_and_summarise;

#[test]
fn lenet5_one_epoch_on_real_fashion_mnist_reaches_80_percent() {
    let runs = tempfile::tempdir().unwrap();
    let (_, summary) = run_and_summarise(runs.path(), "lenet5-fashion-mnist", &["--epochs", "1"]);
    println!(
        "real Fashion-MNIST, 1 epoch: test accuracy {:.2}%, {:.0} train images/s",
        100.0 * summary.final_test_accuracy,
        summary.train_images_per_sec
    );
    assert_eq!(
        (summary.train_images, summary.test_images),
        (60_000, 10_000)
    );
    assert!(
        summary.final_test_accuracy >= 0.80,
        "test accuracy {:.4} < 0.80",
        summary.final_test_accuracy
    );
}
