//! `kiln sweep` and `kiln sweep-status` through the real command path: the sweep starts its
//! points as `kiln run` children of its own binary, which is this one (`kiln` when
//! `KILN_TEST_AS_KILN` is set; otherwise it runs the tests below).
//!
//! The grid is three learning rates of LeNet-5 on synthetic Fashion-MNIST with a validation
//! split held out of the training images; the largest rate diverges. Run here two at a time,
//! and submitted as one job array to the one-node Slurm cluster that `cargo xtask test` starts
//! (`SLURM_CONF` names it), the table ranks the two that finish by validation accuracy (the
//! figures of their own summary.json), names why the third failed, and gives commands that
//! run each point again.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{arg, only_entry, synthetic_setup, AS_KILN};

fn main() {
    common::kiln_or_tests(&[
        (
            "a_local_sweep_ranks_its_points_by_validation_accuracy_and_names_a_failed_one",
            a_local_sweep_ranks_its_points_by_validation_accuracy_and_names_a_failed_one,
        ),
        (
            "a_sweep_on_slurm_runs_as_one_job_array_and_is_collected",
            a_sweep_on_slurm_runs_as_one_job_array_and_is_collected,
        ),
        (
            "a_key_the_experiment_lacks_fails_before_any_point_runs",
            a_key_the_experiment_lacks_fails_before_any_point_runs,
        ),
        (
            "a_comparison_on_slurm_runs_each_backend_as_a_job_and_reports",
            a_comparison_on_slurm_runs_each_backend_as_a_job_and_reports,
        ),
    ]);
}

const RATES: &str = "recipe.optimizer.lr=0.01,0.0003,1e30";

/// Two epochs of batches of 32 over 540 training images (100 more held out for validation).
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    synthetic_setup(dir, 640, 200, "lenet-sweep.toml", |t| {
        t.replace("batch_size = 256", "batch_size = 32")
            .replace("epochs = 14", "epochs = 2")
            .replace(
                "normalize = { mean = [0.5], std = [0.5] }",
                "normalize = { mean = [0.5], std = [0.5] }\n\
                 validation = { from = \"train\", count = 100 }",
            )
    })
}

/// `kiln <args>` (this binary), waited for.
fn kiln(args: &[String]) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args(args)
        .env(AS_KILN, "sweep")
        .env("RAYON_NUM_THREADS", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn sweep_args(experiment: &Path, data: &Path, runs: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "sweep".into(),
        arg(experiment),
        "--set".into(),
        RATES.into(),
    ];
    for (flag, path) in [("--data-dir", data), ("--runs-dir", runs)] {
        args.extend([flag.to_string(), arg(path)]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn status_json(dir: &Path) -> serde_json::Value {
    let out = kiln(&[
        "sweep-status".into(),
        arg(dir),
        "--format".into(),
        "json".into(),
    ]);
    assert!(
        out.status.success(),
        "kiln sweep-status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What both ways of running the grid must end with.
fn check_table(dir: &Path) {
    let status = status_json(dir);
    assert_eq!(status["ranked_by"], "validation accuracy", "{status}");
    let rows = status["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{status}");
    // Ranked first: the finished points, best validation accuracy first, each figure the one
    // in its own run folder's summary.json.
    let mut last = f64::INFINITY;
    for (i, row) in rows[..2].iter().enumerate() {
        assert_eq!(row["state"], "finished", "{row}");
        assert_eq!(row["rank"], i + 1, "{row}");
        let folder = PathBuf::from(row["folder"].as_str().unwrap());
        let summary: serde_json::Value =
            serde_json::from_slice(&fs::read(folder.join("summary.json")).unwrap()).unwrap();
        let valid = row["valid_accuracy"].as_f64().unwrap();
        assert_eq!(valid, summary["final_valid_accuracy"].as_f64().unwrap());
        assert_eq!(row["test_accuracy"], summary["final_test_accuracy"]);
        assert!(valid <= last, "not ranked by validation accuracy: {status}");
        last = valid;
        let rerun = row["rerun"].as_str().unwrap();
        let setting = row["settings"][0].as_str().unwrap();
        assert!(
            rerun.starts_with("kiln run ") && rerun.contains(&format!("--set {setting}")),
            "{rerun}"
        );
        assert!(!rerun.contains("--run-folder"), "{rerun}");
    }
    // Ten well-separated squares: the best point learnt them.
    assert!(
        rows[0]["valid_accuracy"].as_f64().unwrap() > 0.8,
        "{status}"
    );
    let failed = &rows[2];
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["rank"], serde_json::Value::Null);
    assert_eq!(failed["settings"][0], "recipe.optimizer.lr=1e30");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("diverged"), "{error}");

    // The same table in the other two forms, beside it.
    let csv = fs::read_to_string(dir.join("status.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[0].starts_with("rank,point,backend,recipe.optimizer.lr,state,"),
        "{csv}"
    );
    assert!(
        lines[1].starts_with("1,") && lines[3].contains(",failed,"),
        "{csv}"
    );
    let md = fs::read_to_string(dir.join("status.md")).unwrap();
    assert!(
        md.contains("Ranked by validation accuracy") && md.contains("diverged"),
        "{md}"
    );
}

fn a_local_sweep_ranks_its_points_by_validation_accuracy_and_names_a_failed_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, experiment) = setup(tmp.path());
    let runs = tmp.path().join("runs");
    let out = kiln(&sweep_args(&experiment, &data, &runs, &["--jobs", "2"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // One point failed, so the sweep did.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("1 of 3 points failed"), "{stderr}");
    let dir = only_entry(&runs.join("sweeps"));
    // Its table is printed and written.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        fs::read_to_string(dir.join("status.md")).unwrap().trim()
    );
    for i in 0..3 {
        assert!(dir.join(format!("logs/{i}.log")).exists());
    }
    check_table(&dir);
}

fn a_sweep_on_slurm_runs_as_one_job_array_and_is_collected() {
    common::slurm_conf();
    let tmp = tempfile::tempdir().unwrap();
    let (data, experiment) = setup(tmp.path());
    let runs = tmp.path().join("runs");
    let extra = [
        "--jobs",
        "2",
        "--slurm",
        "--time",
        "5",
        "--cpus-per-task",
        "1",
    ];
    let out = kiln(&sweep_args(&experiment, &data, &runs, &extra));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kiln sweep --slurm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("submitted job array"), "{stdout}");
    let dir = only_entry(&runs.join("sweeps"));
    let script = fs::read_to_string(dir.join("sweep.sbatch")).unwrap();
    assert!(
        script.contains("#SBATCH --array=0-2%2") && script.contains("#SBATCH --cpus-per-task=1"),
        "{script}"
    );
    // Until no point waits or runs.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let status = status_json(&dir);
        let rows = status["rows"].as_array().unwrap();
        if rows
            .iter()
            .all(|r| r["state"] == "finished" || r["state"] == "failed")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job array did not end within 300 s: {status}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    check_table(&dir);
}

fn a_key_the_experiment_lacks_fails_before_any_point_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, experiment) = setup(tmp.path());
    let runs = tmp.path().join("runs");
    let mut args = sweep_args(&experiment, &data, &runs, &[]);
    args.extend(["--set".into(), "recipe.optimiser.lr=0.1,0.2".into()]);
    let out = kiln(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("recipe.optimiser.lr"), "{stderr}");
    assert!(
        !runs.join("sweeps").exists(),
        "a refused sweep made a folder"
    );
}

fn a_comparison_on_slurm_runs_each_backend_as_a_job_and_reports() {
    common::slurm_conf();
    let tmp = tempfile::tempdir().unwrap();
    let (data, experiment) = setup(tmp.path());
    let runs = tmp.path().join("runs");
    let args: Vec<String> = [
        "compare",
        &arg(&experiment),
        "--backends",
        "cpu,ndarray",
        "--epochs",
        "1",
        "--data-dir",
        &arg(&data),
        "--runs-dir",
        &arg(&runs),
        "--slurm",
        "--time",
        "5",
        "--cpus-per-task",
        "1",
    ]
    .map(String::from)
    .to_vec();
    let out = kiln(&args);
    assert!(
        out.status.success(),
        "kiln compare --slurm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = only_entry(&runs.join("compare"));
    for backend in ["cpu", "ndarray"] {
        let script = fs::read_to_string(dir.join(format!("{backend}.sbatch"))).unwrap();
        assert!(
            script.contains("--backend") && script.contains(backend),
            "{script}"
        );
    }
    // The report job runs once both backends' jobs have ended.
    let report = dir.join("report.json");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !report.exists() {
        assert!(
            Instant::now() < deadline,
            "no report within 300 s; report.log: {:?}",
            fs::read_to_string(dir.join("report.log"))
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let report: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    let rows = report["backends"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{report}");
    for (row, backend) in rows.iter().zip(["cpu", "ndarray"]) {
        assert_eq!(row["backend"], backend);
        assert_eq!(row["status"], "finished", "{row}");
        // From the same initial weights, the two CPU backends' first logits agree.
        let initial = row["agreement"]["initial_logits"].as_f64().unwrap();
        assert!(initial < 1e-3, "{row}");
    }
}
