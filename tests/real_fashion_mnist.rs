//! Real data: LeNet-5 on the real Fashion-MNIST (Debian's `dataset-fashion-mnist`, or
//! `$KILN_DATA_DIR`), one epoch on the full training set, through the real command path.
//! `cargo xtask test` installs the package; without the data this test fails, it never skips.

use std::fs;

use kiln_experiments::RunSummary;

#[test]
fn lenet5_one_epoch_on_real_fashion_mnist_reaches_80_percent() {
    let runs = tempfile::tempdir().unwrap();
    let runs_dir = runs.path().to_str().unwrap();
    kiln_cli::main_with_args([
        "kiln",
        "run",
        "lenet5-fashion-mnist",
        "--epochs",
        "1",
        "--offline",
        "--runs-dir",
        runs_dir,
        "--quiet",
    ])
    .expect("run on real Fashion-MNIST (install it with `apt-get install dataset-fashion-mnist`)");

    let experiment = runs.path().join("lenet5-fashion-mnist");
    let run = fs::read_dir(&experiment)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let summary: RunSummary =
        serde_json::from_str(&fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
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
