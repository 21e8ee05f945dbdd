//! Real data: the simple CNN tutorial's model, one epoch on all of CIFAR-10 from the JPEG
//! image-folder copy (`../shared/datasets/cifar10-jpeg.tar.gz`, or `$KILN_CIFAR10_JPEG`),
//! through the real command path with `--layout folder`.

use std::fs::File;
use std::io::BufReader;

mod common;
use common::{arg, run_and_summarise, shared_dataset};

#[test]
fn simple_cnn_one_epoch_on_real_cifar10_jpeg_folders() {
    let archive = shared_dataset("cifar10-jpeg.tar.gz", "KILN_CIFAR10_JPEG");
    let data = tempfile::tempdir().unwrap();
    let file = File::open(&archive).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)))
        .unpack(data.path())
        .unwrap_or_else(|e| panic!("unpacking {}: {e}", archive.display()));

    let runs = tempfile::tempdir().unwrap();
    let (run, s) = run_and_summarise(
        runs.path(),
        "simple-cnn-cifar10",
        &[
            "--epochs",
            "1",
            "--layout",
            "folder",
            "--data-dir",
            &arg(data.path()),
        ],
    );
    println!(
        "real CIFAR-10 (JPEG folders), 1 epoch: test {:.2}%, {:.0} train images/s",
        100.0 * s.final_test_accuracy,
        s.train_images_per_sec
    );
    assert_eq!((s.train_images, s.test_images), (50_000, 10_000));
    // The run's config records that it read the JPEG folders, so its numbers are labelled.
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("layout = \"folder\""), "{config}");
    // Global statistics of the training pixels, as the tutorial computes them (about 0.47 and
    // 0.25 of 255 for CIFAR-10).
    let kiln_data::Normalize { mean, std } = &s.normalize;
    assert!(
        (mean[0] - 0.473).abs() < 0.01 && (std[0] - 0.251).abs() < 0.01,
        "{:?}",
        s.normalize
    );
    assert!(
        s.final_test_accuracy >= THRESHOLD,
        "test accuracy {:.4} < {THRESHOLD}",
        s.final_test_accuracy
    );
}

const THRESHOLD: f64 = 0.45;
