//! `kiln compare` through the real binary: it re-runs itself once per backend.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_data::Split;
use serde_json::Value;

fn kiln(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("the kiln binary runs")
}

/// The one comparison folder under `runs/compare/`, and its report.json.
fn report(runs: &Path) -> (PathBuf, Value) {
    let compare = runs.join("compare");
    let dirs: Vec<PathBuf> = std::fs::read_dir(&compare)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let json = std::fs::read(dirs[0].join("report.json")).unwrap();
    (dirs[0].clone(), serde_json::from_slice(&json).unwrap())
}

/// A backend this binary lacks fails in its own row; the backend before it keeps its run and
/// the report is still written.
#[test]
fn a_failing_backend_is_reported_and_the_others_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_tiny_fashion_mnist(&data);
    let runs = tmp.path().join("runs");
    let out = kiln(&[
        "--quiet",
        "compare",
        "lenet5-fashion-mnist",
        "--backends",
        "ndarray,no-such-backend",
        "--steps",
        "2",
        "--limit-test",
        "20",
        "--offline",
        "--data-dir",
        data.to_str().unwrap(),
        "--runs-dir",
        runs.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("backend no-such-backend did not finish"),
        "{stderr}"
    );
    let (dir, report) = report(&runs);
    let rows = report["backends"].as_array().unwrap();
    assert_eq!(rows[0]["status"], "finished", "{report:#}");
    assert_eq!(rows[0]["steps"], 2);
    // The reference agrees with itself exactly.
    assert_eq!(rows[0]["agreement"]["initial_logits"], 0.0);
    assert_eq!(rows[1]["status"], "failed");
    let cause = rows[1]["cause"].as_str().unwrap();
    assert!(
        cause.contains("unknown backend \"no-such-backend\""),
        "{cause}"
    );
    let markdown = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        markdown.contains("| no-such-backend | failed: "),
        "{markdown}"
    );
    assert!(dir.join("init.mpk").is_file() && dir.join("experiment.toml").is_file());
    // Each child wrote into the folder it was handed; the failed one left its message there.
    assert!(dir.join("ndarray/summary.json").is_file());
    let error = std::fs::read_to_string(dir.join("no-such-backend/error.txt")).unwrap();
    assert!(
        error.contains("unknown backend \"no-such-backend\""),
        "{error}"
    );

    // A --run-folder with files in it is refused, and nothing is written among them.
    let taken = dir.join("ndarray");
    let out = kiln(&[
        "--quiet",
        "run",
        "lenet5-fashion-mnist",
        "--backend",
        "ndarray",
        "--steps",
        "1",
        "--offline",
        "--data-dir",
        data.to_str().unwrap(),
        "--run-folder",
        taken.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&*taken.to_string_lossy()) && stderr.contains("found one with files in it"),
        "{stderr}"
    );
    assert!(!taken.join("error.txt").exists());
}

/// The CI smoke run: LeNet-5 on real Fashion-MNIST (Debian's package, which `cargo xtask test`
/// installs), 20 steps on every CPU backend and wgpu, from one init.mpk.
#[cfg(all(feature = "wgpu", feature = "tch", feature = "flex"))]
#[test]
fn every_backend_starts_from_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let out = kiln(&[
        "--quiet",
        "compare",
        "lenet5-fashion-mnist",
        "--backends",
        "ndarray,flex,wgpu,tch",
        "--steps",
        "20",
        "--limit-train",
        "2560",
        "--limit-test",
        "1000",
        "--runs-dir",
        runs.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    println!("{stdout}");
    let (_, report) = report(&runs);
    for row in report["backends"].as_array().unwrap() {
        let backend = row["backend"].as_str().unwrap();
        assert_eq!(row["status"], "finished", "{backend}: {row:#}");
        assert_eq!(row["steps"], 20, "{backend}");
        let a = &row["agreement"];
        let relative = a["initial_logits"].as_f64().unwrap() / a["logit_scale"].as_f64().unwrap();
        // Same weights, same images, no dropout at inference: only float rounding differs.
        assert!(
            relative <= 1e-4,
            "{backend}: logits differ by {relative:e} of their scale"
        );
        // After 20 steps. flex draws dropout masks as ndarray does (measured 2026-12-05: final
        // logits 4.9e-6 apart, loss curves 2.4e-7): only rounding differs. wgpu and tch draw
        // their own masks, so their curves part by what dropout changes (0.27 and 0.16, final
        // logits 5.9 and 9.7 apart), and the bounds are twice that.
        let (final_logits, curve) = (
            a["final_logits"].as_f64().unwrap(),
            a["loss_curve"].as_f64().unwrap(),
        );
        let (logits_bound, curve_bound) = match backend {
            "ndarray" => (0.0, 0.0),
            "flex" => (1e-4, 1e-5),
            _ => (20.0, 0.5),
        };
        assert!(
            final_logits <= logits_bound && curve <= curve_bound,
            "{backend}: final logits {final_logits:e} apart (at most {logits_bound:e}), loss \
             curve {curve:e} (at most {curve_bound:e})"
        );
        // 20 Adam steps on 2,560 images lift LeNet-5 from chance (10%) to 64.6-68.9%.
        let accuracy = row["test_accuracy"].as_f64().unwrap();
        assert!(accuracy > 0.55, "{backend}: test accuracy {accuracy}");
        assert!(row["train_images_per_sec"].as_f64().unwrap() > 0.0);
    }
}

/// A few images per split in the Fashion-MNIST layout (gzipped IDX), enough for the steps.
fn write_tiny_fashion_mnist(dir: &Path) {
    for (split, n) in [(Split::Train, 600u32), (Split::Test, 40)] {
        let pixels: Vec<u8> = (0..n * 784).map(|i| (i * 37 % 251) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        kiln_data::mnist::write_split(dir, split, &pixels, &labels).unwrap();
    }
}
