//! A tiny run through the real command path (`kiln run ...` as parsed by the CLI) on generated
//! Fashion-MNIST-format files: the loss falls and the run folder holds every promised file.

use std::fs;

use burn_ndarray::NdArray;
use kiln_data::{ImageBatcher, Split};
use kiln_experiments::{ExperimentSpec, RunSummary, ValidSpec};

mod common;
use common::{arg, synthetic_setup, tiny_run};

#[test]
fn tiny_run_learns_and_writes_a_complete_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(tmp.path(), 3);
    let folder = run.file_name().unwrap().to_str().unwrap();
    assert!(folder.starts_with("ndarray-"), "{folder}");
    let mut files: Vec<String> = fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "config.toml",
            "events.out.tfevents.kiln",
            "layers.txt",
            "metrics.jsonl",
            "model.mpk",
            "plots",
            "run.json",
            "summary.json"
        ]
    );

    // The resolved config holds the overrides and parses back as a spec.
    let config = ValidSpec::from_toml(
        &fs::read_to_string(run.join("config.toml")).unwrap(),
        "config.toml",
    )
    .unwrap();
    assert_eq!(config.recipe.epochs, 3);
    assert_eq!(config.recipe.batch_size, 32);

    // metrics.jsonl: one JSON object a line; 20 steps an epoch, a step event every 5 steps.
    let events: Vec<serde_json::Value> = fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("invalid JSON line {l:?}: {e}")))
        .collect();
    let of_kind = |kind: &str| {
        events
            .iter()
            .filter(|e| e["event"] == kind)
            .cloned()
            .collect::<Vec<_>>()
    };
    let (epochs, steps) = (of_kind("epoch"), of_kind("step"));
    assert_eq!(epochs.len(), 3);
    assert_eq!(steps.len(), 12);
    assert_eq!(epochs.len() + steps.len(), events.len());
    let f = |e: &serde_json::Value, k: &str| {
        e[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing in {e}"))
    };
    // The loss falls, within the first epoch and from epoch to epoch.
    println!(
        "step losses: {:?}",
        steps.iter().map(|s| f(s, "loss")).collect::<Vec<_>>()
    );
    // Measured on 2026-12-05 (ndarray): step losses 2.215 -> 0.365 by step 20, epoch training
    // losses 1.130, 0.125, 0.034, test accuracy 100%. The bounds leave room for another
    // processor's rounding, not for a loop that learns markedly worse.
    assert!(f(&steps[3], "loss") < 0.3 * f(&steps[0], "loss"));
    assert!(f(&epochs[0], "train_loss") < 1.5);
    assert!(f(&epochs[2], "train_loss") < 0.1);
    for e in &epochs {
        for key in [
            "lr",
            "train_accuracy",
            "test_loss",
            "test_accuracy",
            "seconds",
            "train_images_per_sec",
        ] {
            assert!(f(e, key).is_finite());
        }
    }
    // StepLR with gamma 0.7 per epoch.
    assert!((f(&epochs[1], "lr") - 0.007).abs() < 1e-12);

    let summary: RunSummary =
        serde_json::from_str(&fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        (
            summary.epochs.get(),
            summary.train_images,
            summary.test_images
        ),
        (3.0, 640, 200)
    );
    println!(
        "epoch train losses {:?}, final test accuracy {}",
        epochs
            .iter()
            .map(|e| f(e, "train_loss"))
            .collect::<Vec<_>>(),
        summary.final_test_accuracy
    );
    assert_eq!(summary.final_test_accuracy, f(&epochs[2], "test_accuracy"));
    assert!(summary.best_test_accuracy >= summary.final_test_accuracy);
    assert!(
        summary.final_test_accuracy >= 0.95,
        "the synthetic classes are easy: {summary:?}"
    );

    // The checkpoint loads into a fresh model and reproduces the reported test accuracy.
    let device = Default::default();
    let model = common::load_lenet(&run);
    let test = kiln_data::mnist::FASHION_MNIST
        .load_from(&tmp.path().join("data"), Split::Test)
        .unwrap();
    let batcher = ImageBatcher::for_set(&test, summary.normalize.clone());
    let metrics = kiln_train::evaluate(&model, &test, &batcher, 100, &device);
    assert!(
        (metrics.accuracy - summary.final_test_accuracy).abs() < 1e-9,
        "{metrics:?} vs {summary:?}"
    );
}

#[test]
fn bad_experiment_file_fails_before_any_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let experiment = tmp.path().join("bad.toml");
    let builtin = include_str!("../experiments/lenet5-fashion-mnist.toml");
    fs::write(
        &experiment,
        builtin.replace("epochs = 14", "epochs = 14\nepoch = 3"),
    )
    .unwrap();
    let runs = tmp.path().join("runs");
    let err = kiln_cli::main_with_args([
        "kiln",
        "run",
        &arg(&experiment),
        "--runs-dir",
        &arg(&runs),
        "--quiet",
    ])
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("bad.toml") && message.contains("unknown field `epoch`"),
        "{message}"
    );
    assert!(!runs.exists());
}

/// The error of a run of the built-in LeNet-5 experiment with its `[model]` replaced by
/// `model` (TOML lines) on synthetic 28x28 images; fails if the run starts or leaves a run
/// folder.
fn refused_model(model: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let (data, experiment) = synthetic_setup(tmp.path(), 20, 10, "refused.toml", |t| {
        t.replace("name = \"lenet5\"\ndropout = 0.5", model)
    });
    let runs = tmp.path().join("runs");
    let err = kiln_cli::main_with_args([
        "kiln",
        "run",
        &arg(&experiment),
        "--data-dir",
        &arg(&data),
        "--offline",
        "--runs-dir",
        &arg(&runs),
        "--quiet",
    ])
    .unwrap_err();
    assert!(!runs.exists(), "no run folder for a run that cannot start");
    format!("{err:#}")
}

#[test]
fn a_model_that_does_not_fit_the_images_fails_before_any_run_folder() {
    // The networks take their input size from the data, but an experiment may pin it: the
    // one-conv CNN built for 32x32 gets 16 x 13 x 13 = 2704 features from 28x28 images.
    let message = refused_model("name = \"simple-cnn\"\nimage_size = 32");
    assert!(
        message.contains("does not fit 1x28x28 input images")
            && message.contains("shape clash: fc: expected 3600 input features, found 2704"),
        "{message}"
    );
}

#[test]
fn a_model_too_deep_for_the_images_fails_by_key_before_any_run_folder() {
    // airbench's groups each halve the side and its head pools 3x3. With a 6x6 whitening
    // convolution three groups fit the 32x32 images the spec is checked against (27, 13, 6,
    // 3, then 1 for the head), but leave 28x28 images (23, 11, 5, 2) nothing: only the data
    // can tell, so the run refuses it when it has loaded them.
    let message = refused_model("name = \"airbench\"\nwidths = [8, 8, 8]\nwhiten_kernel = 6");
    assert!(
        message.contains("cannot be built for 1x28x28 input images")
            && message
                .contains("model.widths: 3 groups leave nothing of 28x28 images for the head")
            && message.contains("at most 2 fit"),
        "{message}"
    );
}

/// The case: LeNet-5 with SGD at lr 1e6 used to train on NaN to the end and report
/// success. Now the run stops at the first non-finite loss and says where and what to try, with
/// the finished steps (all finite) in metrics.jsonl and no summary or weights.
#[test]
fn a_diverging_run_stops_at_the_first_non_finite_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, experiment) = synthetic_setup(tmp.path(), 640, 100, "diverge.toml", |t| {
        t.replace("batch_size = 256", "batch_size = 32")
            .replace("log_every = 50", "log_every = 1")
            .replace(
                "name = \"adam\"\nlr = 0.01\nweight_decay = 0.001",
                "name = \"sgd\"\nlr = 1e6",
            )
    });
    let runs = tmp.path().join("runs");
    let err = kiln_cli::main_with_args([
        "kiln",
        "run",
        &arg(&experiment),
        "--backend",
        "ndarray",
        "--data-dir",
        &arg(&data),
        "--offline",
        "--runs-dir",
        &arg(&runs),
        "--quiet",
    ])
    .unwrap_err();
    let message = format!("{err:#}");
    for needle in [
        "training diverged: the loss became",
        "with learning rate 1e6",
        "Try a smaller learning rate",
        "metrics.jsonl",
    ] {
        assert!(
            message.contains(needle),
            "expected {needle:?} in: {message}"
        );
    }
    let run = fs::read_dir(runs.join("lenet5-fashion-mnist"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(!run.join("summary.json").exists() && !run.join("model.mpk").exists());
    let steps: Vec<serde_json::Value> = fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        steps
            .iter()
            .all(|e| e["loss"].as_f64().is_some_and(f64::is_finite)),
        "only finite losses are logged: {steps:?}"
    );
    // The message names the step after the last one logged (a step event every step).
    let step = format!("at step {} ", steps.len() + 1);
    assert!(message.contains(&step), "expected {step:?} in: {message}");
}

#[test]
fn bench_times_every_figure_it_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, experiment) = synthetic_setup(tmp.path(), 300, 100, "bench.toml", |t| {
        t.replace("batch_size = 256", "batch_size = 64")
    });
    let spec =
        ValidSpec::from_toml(&fs::read_to_string(&experiment).unwrap(), "bench.toml").unwrap();
    let options = kiln_experiments::bench::BenchOptions {
        locator: kiln_data::Locator::from_env(Some(data), true),
        warmup: 1,
        steps: 4,
    };
    type B = burn_autodiff::Autodiff<NdArray>;
    let report =
        kiln_experiments::bench::bench::<B>(&spec, "ndarray", &options, &Default::default())
            .unwrap();
    assert_eq!((report.batch, report.input_shape), (64, [1, 28, 28]));
    assert_eq!(report.parameters, 61_706, "LeNet-5's parameter count");
    assert_eq!(
        (report.train_step_ms.len(), report.eval_step_ms.len()),
        (4, 4)
    );
    // Each images/s figure is the batch over the median of the timed steps.
    let mut steps = report.train_step_ms.clone();
    steps.sort_by(f64::total_cmp);
    let median_ms = (steps[1] + steps[2]) / 2.0;
    assert!(
        (report.train_images_per_sec - 64.0 / (median_ms / 1e3)).abs()
            < 1e-6 * report.train_images_per_sec
    );
    for (name, v) in [
        ("eval", report.eval_images_per_sec),
        ("decode", report.decode_images_per_sec),
        ("pipeline", report.pipeline_images_per_sec),
    ] {
        assert!(v.is_finite() && v > 0.0, "{name} images/s: {v}");
    }
    if cfg!(target_os = "linux") {
        assert!(report.peak_rss_mib.is_some_and(|m| m > 1.0), "{report:?}");
    }
}

/// The runner as a library: without `RunOptions::draw` it writes the whole run folder but no
/// pictures (so an embedder need not build kiln-report); given kiln-report's drawer, it draws.
#[test]
fn the_runner_draws_pictures_only_where_given_a_drawer() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, experiment) = synthetic_setup(tmp.path(), 64, 20, "embed.toml", |t| {
        t.replace("batch_size = 256", "batch_size = 32")
    });
    let text = fs::read_to_string(&experiment).unwrap();
    let mut spec = ExperimentSpec::from_toml(&text, "embed.toml").unwrap();
    spec.recipe.epochs = 1.into();
    let spec = spec.validate().unwrap();
    type B = burn_autodiff::Autodiff<NdArray>;
    let run = |draw: Option<kiln_experiments::DrawRun>| {
        let options = kiln_experiments::RunOptions {
            runs_dir: tmp.path().join("runs"),
            backend: "ndarray".into(),
            locator: kiln_data::Locator::from_env(Some(data.clone()), true),
            draw,
            ..Default::default()
        };
        kiln_experiments::run::<B>(&spec, &options, &Default::default())
            .unwrap()
            .dir
    };
    let plain = run(None);
    for file in ["config.toml", "metrics.jsonl", "model.mpk", "summary.json"] {
        assert!(
            plain.join(file).is_file(),
            "{} lacks {file}",
            plain.display()
        );
    }
    assert!(!plain.join("plots").exists(), "{}", plain.display());
    let drawn = run(Some(kiln_report::write_run_pictures));
    for picture in ["accuracy.png", "confusion.png", "kernels.png"] {
        assert!(drawn.join("plots").join(picture).is_file(), "{picture}");
    }
}

/// Bad flags stop `kiln run` before any data is read or folder made, naming the flag's key.
#[test]
fn bad_flags_are_refused_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let run = |extra: &[&str]| {
        let runs = arg(&runs);
        let mut args = vec!["kiln", "run", "--runs-dir", &runs, "--offline", "--quiet"];
        args.extend(extra);
        format!("{:#}", kiln_cli::main_with_args(args).unwrap_err())
    };
    for (flags, message) in [
        (
            &["lenet5-fashion-mnist", "--limit-train", "0"][..],
            "lenet5-fashion-mnist (after command-line overrides): data.limit_train: expected at least 1, found 0",
        ),
        (
            &["lenet5-fashion-mnist", "--epochs", "0"],
            "recipe.epochs: expected a number above 0, found 0",
        ),
        (
            &["lenet5-fashion-mnist", "--checkpoint-every", "0"],
            "recipe.checkpoint_every: expected at least 1, found 0",
        ),
        (
            &["lenet5-fashion-mnist", "--backend", "ndaray"],
            "unknown backend \"ndaray\" (did you mean \"ndarray\"?)",
        ),
        (
            &["lenet5-fashion-mnis"],
            "unknown experiment \"lenet5-fashion-mnis\" (did you mean \"lenet5-fashion-mnist\"?)",
        ),
    ] {
        let err = run(flags);
        assert!(err.contains(message), "{flags:?}: expected {message:?} in: {err}");
    }
    // A value the file itself gets wrong is the file's, whatever flags came with it.
    let file = tmp.path().join("negative-lr.toml");
    let text = include_str!("../experiments/lenet5-fashion-mnist.toml");
    fs::write(&file, text.replace("lr = 0.01", "lr = -3.0")).unwrap();
    let err = run(&[&arg(&file), "--epochs", "1"]);
    assert_eq!(
        err,
        format!(
            "{}: recipe.optimizer.lr: expected a positive number, found -3",
            file.display()
        )
    );
    assert!(!runs.exists(), "no run folder for refused flags");
}
