//! Each run's TensorBoard event file, read back with TensorBoard's own Python reader
//! (`tensorboard/read_run.py`, its `EventAccumulator`): every figure of `metrics.jsonl` at its
//! step or epoch, the experiment's settings and backend as the HParams plugin's session, and
//! the session ended as a success.
//!
//! Needs Python with `tensorboard`: `cargo xtask test` installs it into its PyTorch virtualenv
//! and puts that first on `PATH` (or set `KILN_TORCH_PYTHON`). Built with the `parity` feature,
//! like the other tests that need that Python.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;
use common::{python, tiny_run};

fn read_back(run: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tensorboard/read_run.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(run)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", python()));
    assert!(
        out.status.success(),
        "{} {}: {}",
        python(),
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `series` (a list of [step, value]) holds `want` at `step`, to float32's precision.
fn has(series: &Value, step: u64, want: f64, what: &str) {
    let found = series
        .as_array()
        .unwrap_or_else(|| panic!("no {what} series"))
        .iter()
        .find(|p| p[0].as_u64() == Some(step))
        .unwrap_or_else(|| panic!("{what}: no value at step {step}: {series}"));
    let got = found[1].as_f64().unwrap();
    assert!(
        (got - want).abs() <= 1e-6 * want.abs().max(1.0),
        "{what} at {step}: {got} in TensorBoard, {want} in metrics.jsonl"
    );
}

#[test]
fn tensorboard_reads_every_figure_and_the_settings_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path(), 2);
    let board = read_back(&run);
    let scalars = &board["scalars"];
    let metrics = fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let (mut steps, mut epochs) = (0, 0);
    for line in metrics.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        if e["event"] == "step" {
            steps += 1;
            let step = e["step"].as_u64().unwrap();
            for key in ["loss", "accuracy", "lr"] {
                has(
                    &scalars[format!("step/{key}")],
                    step,
                    e[key].as_f64().unwrap(),
                    key,
                );
            }
        } else {
            epochs += 1;
            let epoch = e["epoch"].as_u64().unwrap();
            for key in [
                "train_loss",
                "train_accuracy",
                "test_loss",
                "test_accuracy",
                "lr",
            ] {
                has(
                    &scalars[format!("epoch/{key}")],
                    epoch,
                    e[key].as_f64().unwrap(),
                    key,
                );
            }
        }
    }
    assert_eq!((steps, epochs), (8, 2), "{metrics}");
    // Nothing more than metrics.jsonl says.
    assert_eq!(scalars["step/loss"].as_array().unwrap().len(), steps);
    assert_eq!(
        scalars["epoch/test_accuracy"].as_array().unwrap().len(),
        epochs
    );

    let hparams = &board["hparams"];
    assert_eq!(hparams["recipe.optimizer.lr"], 0.01, "{hparams}");
    assert_eq!(hparams["recipe.batch_size"], 32.0, "{hparams}");
    assert_eq!(hparams["recipe.optimizer.name"], "adam", "{hparams}");
    assert_eq!(hparams["backend"], "ndarray", "{hparams}");
    assert_eq!(board["status"], "STATUS_SUCCESS");
}
