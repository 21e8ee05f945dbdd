//! A seed fixes a run on the default backend (Kiln's own `cpu`, whose kernels split work so
//! that no sum depends on the thread count). This is its own test binary because the backend's
//! random generator (burn-flex's) is global to the process: another test training at the same
//! time would draw from it between this test's draws.

use std::fs;
use std::path::Path;

mod common;
use common::{arg, only_entry, write_synthetic_fashion_mnist};

/// The metrics of a run, without the timing fields that differ from run to run.
fn metrics_without_timings(run: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            for key in ["seconds", "train_images_per_sec", "eval_images_per_sec"] {
                v.as_object_mut().unwrap().remove(key);
            }
            v
        })
        .collect()
}

#[test]
fn same_seed_gives_the_same_numbers_and_another_seed_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir_all(&data).unwrap();
    write_synthetic_fashion_mnist(&data, 512, 100);
    let run = |seed: &str, runs: &Path| {
        kiln_cli::main_with_args([
            "kiln",
            "run",
            "lenet5-fashion-mnist",
            "--epochs",
            "2",
            "--seed",
            seed,
            "--data-dir",
            &arg(&data),
            "--offline",
            "--runs-dir",
            &arg(runs),
            "--quiet",
        ])
        .unwrap();
        metrics_without_timings(&only_entry(&runs.join("lenet5-fashion-mnist")))
    };
    let a = run("7", &tmp.path().join("a"));
    let b = run("7", &tmp.path().join("b"));
    let c = run("8", &tmp.path().join("c"));
    assert_eq!(a.len(), 2);
    assert_eq!(a, b, "two runs with seed 7 differ");
    assert_ne!(a, c, "seeds 7 and 8 gave identical runs");
}
