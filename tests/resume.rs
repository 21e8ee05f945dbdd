//! Runs that survive: a real `kiln run` process killed with SIGKILL at several moments (in
//! the middle of checkpoint writes, mid-epoch, during evaluation) or stopped with Ctrl-C or
//! SIGUSR1, then resumed with `kiln run --resume`, ends with exactly the weights, metrics and summary of a
//! run that never stopped, on the default CPU backend.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn_ndarray::NdArray;
use kiln_models::LeNet5Config;

mod common;
use common::{arg, only_entry, synthetic_setup};

/// Set in a child process: the `kiln` arguments (one per line) it runs.
const CHILD: &str = "KILN_RESUME_TEST_CHILD";

/// The child's half: this test binary running only this test becomes `kiln`.
#[test]
#[ignore = "run by the resume tests as their `kiln` process"]
fn kiln_process() {
    let Ok(args) = std::env::var(CHILD) else {
        return;
    };
    let args: Vec<&str> = std::iter::once("kiln").chain(args.lines()).collect();
    let status = kiln_cli::exit_status(kiln_cli::main_with_args(args));
    std::process::exit(i32::from(status));
}

/// Starts `kiln <args>` as a child process, with `env` set.
fn spawn(args: &[String], env: &[(&str, String)]) -> std::process::Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "kiln_process",
            "--exact",
            "--include-ignored",
            "--nocapture",
        ])
        .env(CHILD, args.join("\n"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().unwrap()
}

fn killed_by_sigkill(status: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(9)
}

/// Three epochs of `train_images / 32` steps of LeNet-5 (with a checkpoint every 3 steps and a step event
/// every step) on synthetic Fashion-MNIST files under `dir`. Returns the `kiln run` arguments
/// less `--runs-dir`.
fn setup(dir: &Path, train_images: usize) -> Vec<String> {
    let (data, experiment) = synthetic_setup(dir, train_images, 200, "resume.toml", |t| {
        t.replace("batch_size = 256", "batch_size = 32")
            .replace("log_every = 50", "log_every = 1")
    });
    run_args(&experiment, &data, &["--epochs", "3"])
}

/// `kiln run <experiment>` on `cpu` with a checkpoint every 3 steps, reading `data`, then
/// `extra`; less `--runs-dir`.
fn run_args(experiment: &Path, data: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        &arg(experiment),
        "--backend",
        "cpu",
        "--checkpoint-every",
        "3",
        "--data-dir",
        &arg(data),
        "--offline",
        "--quiet",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// `kiln run --resume <run>`, with `--data-dir` when given; without it the run's `run.json`
/// says where its data are.
fn resume_args(run: &Path, data_dir: Option<&str>) -> Vec<String> {
    let mut args = ["run", "--resume", &arg(run), "--offline", "--quiet"]
        .map(String::from)
        .to_vec();
    if let Some(dir) = data_dir {
        args.extend(["--data-dir".to_string(), dir.to_string()]);
    }
    args
}

/// The `--data-dir` of `args` (from [`setup`]).
fn data_dir(args: &[String]) -> &str {
    &args[args.iter().position(|a| a == "--data-dir").unwrap() + 1]
}

/// `metrics.jsonl` less what depends on the clock.
fn events_without_times(run: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut event: serde_json::Value = serde_json::from_str(l).unwrap();
            let object = event.as_object_mut().unwrap();
            for key in ["seconds", "train_images_per_sec", "eval_images_per_sec"] {
                object.remove(key);
            }
            event
        })
        .collect()
}

fn summary_without_times(run: &Path) -> serde_json::Value {
    let text = fs::read_to_string(run.join("summary.json")).unwrap();
    let mut summary: serde_json::Value = serde_json::from_str(&text).unwrap();
    let object = summary.as_object_mut().unwrap();
    for key in [
        "total_seconds",
        "train_images_per_sec",
        "eval_images_per_sec",
        "peak_rss_mib",
    ] {
        object.remove(key);
    }
    summary
}

/// The run folder's newest checkpoint loads; returns where it stood (epoch, batch).
fn newest_checkpoint_loads(run: &Path) -> (usize, usize) {
    let (dir, checkpoint) = kiln_experiments::run_dir::latest_checkpoint(run)
        .unwrap_or_else(|e| panic!("the newest checkpoint does not load: {e}"))
        .expect("a killed run keeps a checkpoint");
    // A half-written checkpoint is never taken for one.
    assert!(dir
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("epoch-"));
    assert!(!checkpoint.model.is_empty() && !checkpoint.optimizer.is_empty());
    (checkpoint.state.epoch, checkpoint.state.batch)
}

fn uninterrupted(dir: &Path, args: &[String]) -> (PathBuf, Duration) {
    let runs = dir.join("runs-straight");
    let mut args = args.to_vec();
    args.extend(["--runs-dir".to_string(), arg(&runs)]);
    let started = Instant::now();
    let status = spawn(&args, &[]).wait().unwrap();
    assert!(status.success(), "the uninterrupted run failed: {status}");
    (
        only_entry(&runs.join("lenet5-fashion-mnist")),
        started.elapsed(),
    )
}

/// Every value of a run's `model.mpk`, in the order of the network's parameters.
fn weights(run: &Path) -> Vec<f32> {
    struct Values(Vec<f32>);
    impl<B: Backend> ModuleVisitor<B> for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0
                .extend(param.val().into_data().to_vec::<f32>().unwrap());
        }
    }
    let model = common::load_lenet(run);
    let mut values = Values(Vec::new());
    model.visit(&mut values);
    assert_eq!(values.0.len(), 61_706, "LeNet-5's parameters");
    values.0
}

fn assert_same_run(resumed: &Path, straight: &Path) {
    assert_eq!(
        events_without_times(resumed),
        events_without_times(straight),
        "metrics.jsonl differs from the uninterrupted run's"
    );
    assert_eq!(
        summary_without_times(resumed),
        summary_without_times(straight)
    );
    // Bit for bit (the files themselves differ in the parameters' random ids).
    assert!(
        weights(resumed) == weights(straight),
        "the final weights differ from the uninterrupted run's"
    );
    // Both end with the same files: checkpoints are removed once the run has finished.
    let names = |run: &Path| {
        let mut names: Vec<String> = fs::read_dir(run)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(resumed), names(straight));
}

#[test]
fn a_run_killed_in_checkpoint_writes_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let args = setup(tmp.path(), 640);
    let (straight, _) = uninterrupted(tmp.path(), &args);

    let runs = tmp.path().join("runs");
    let mut first = args.clone();
    first.extend(["--runs-dir".to_string(), arg(&runs)]);
    // Resumed without --data-dir: from the folder the run recorded.
    let resume = |run: &Path| resume_args(run, None);
    // Each checkpoint is three files (state, model, optimizer); a child is killed after the
    // N-th file it writes: inside the 2nd, 3rd, ... checkpoint of its life, between files and
    // after the last file before the rename.
    let mut run: Option<PathBuf> = None;
    let mut positions = Vec::new();
    for kill_after_file in [5, 6, 4, 9, 8, 12] {
        let child_args = match &run {
            None => first.clone(),
            Some(run) => resume(run),
        };
        let status = spawn(
            &child_args,
            &[(
                "KILN_TEST_KILL_AT_CHECKPOINT_FILE",
                kill_after_file.to_string(),
            )],
        )
        .wait()
        .unwrap();
        assert!(
            killed_by_sigkill(status),
            "expected a SIGKILL, got {status}"
        );
        let folder = run.get_or_insert_with(|| only_entry(&runs.join("lenet5-fashion-mnist")));
        positions.push(newest_checkpoint_loads(folder));
    }
    println!("resume points (epoch, batch): {positions:?}");
    // Every resume got further than the one before.
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let run = run.unwrap();
    let status = spawn(&resume(&run), &[]).wait().unwrap();
    assert!(status.success(), "the last resume failed: {status}");
    assert_same_run(&run, &straight);
}

/// What a resume must carry besides the weights and the optimiser state, in the recipe parts
/// airbench94 brought: the lookahead average (a file of its own in the checkpoints from step
/// 20 on), parameter groups with their own rates and a group frozen after epoch 1, a fractional
/// last epoch with the short batch dropped, the per-step triangle schedule, alternating flips
/// and reflected translations, test-time augmentation after the last epoch.
#[test]
fn a_run_with_lookahead_parameter_groups_and_a_fractional_epoch_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    // 600 images in batches of 32, the short batch dropped: 18 steps an epoch, 45 in 2.5.
    let (data, experiment) = synthetic_setup(tmp.path(), 600, 200, "fast.toml", |t| {
        let recipe = t.find("[recipe]").unwrap();
        let data_end = t.find("[model]").unwrap();
        format!(
            "{}augment = {{ crop_padding = 2, padding_mode = \"reflect\", hflip = true, \
             alternate_flip = true }}\n\n{}{}",
            &t[..data_end],
            &t[data_end..recipe],
            r#"[recipe]
epochs = 2.5
batch_size = 32
drop_last = true
seed = 42
log_every = 1
label_smoothing = 0.2
test_time_augmentation = "mirror-translate"

[recipe.optimizer]
name = "sgd"
lr = 0.05
momentum = 0.85
nesterov = true
weight_decay = 5e-4

[recipe.scheduler]
name = "triangle"
start = 0.2
peak = 0.25
end = 0.07

[[recipe.param_groups]]
params = "*.bias"
lr_scale = 4.0
weight_decay = 1e-4

[[recipe.param_groups]]
params = "conv1.*"
train_epochs = 1

[recipe.lookahead]
every = 2
from_epoch = 2
decay = 0.77
"#
        )
    });
    let args = run_args(&experiment, &data, &[]);
    let (straight, _) = uninterrupted(tmp.path(), &args);
    let epochs: Vec<serde_json::Value> = events_without_times(&straight)
        .into_iter()
        .filter(|e| e["event"] == "epoch")
        .collect();
    assert_eq!(epochs.len(), 3, "2.5 epochs start 3");
    let steps = events_without_times(&straight)
        .iter()
        .filter(|e| e["event"] == "step")
        .count();
    assert_eq!(steps, 45, "ceil(2.5 x 18) steps");
    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(straight.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["epochs"], 2.5,
        "the summary counts the epochs trained, not started"
    );

    let runs = tmp.path().join("runs");
    let mut first = args.clone();
    first.extend(["--runs-dir".to_string(), arg(&runs)]);
    // Killed inside the checkpoint of step 3 (the 2nd of the process, 3 files each); inside
    // that of step 15, resuming from step 12; inside that of step 24 (after 15, 18 at the
    // epoch's end and 21, the first with a lookahead file), resuming from step 21.
    let mut run: Option<PathBuf> = None;
    let mut positions = Vec::new();
    for kill_after_file in [5, 13, 13] {
        let child_args = match &run {
            None => first.clone(),
            Some(run) => resume_args(run, None),
        };
        let env = [(
            "KILN_TEST_KILL_AT_CHECKPOINT_FILE",
            kill_after_file.to_string(),
        )];
        let status = spawn(&child_args, &env).wait().unwrap();
        assert!(
            killed_by_sigkill(status),
            "expected a SIGKILL, got {status}"
        );
        let folder = run.get_or_insert_with(|| only_entry(&runs.join("lenet5-fashion-mnist")));
        positions.push(newest_checkpoint_loads(folder));
    }
    assert_eq!(positions, [(1, 0), (1, 12), (2, 3)]);
    let newest = fs::read_dir(run.as_ref().unwrap().join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    assert!(
        newest.join("lookahead.mpk").is_file(),
        "{}",
        newest.display()
    );
    let status = spawn(&resume_args(run.as_ref().unwrap(), None), &[])
        .wait()
        .unwrap();
    assert!(status.success(), "the last resume failed: {status}");
    assert_same_run(run.as_ref().unwrap(), &straight);
}

/// Waits until the run under `runs` has `lines` lines of metrics.jsonl (or the child exits).
fn wait_for_lines(runs: &Path, lines: usize, child: &mut std::process::Child) {
    let parent = runs.join("lenet5-fashion-mnist");
    while child.try_wait().unwrap().is_none() {
        let count = fs::read_dir(&parent)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| fs::read_to_string(e.unwrap().path().join("metrics.jsonl")).ok())
            .map_or(0, |t| t.lines().count());
        if count >= lines {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_run_killed_mid_epoch_in_evaluation_or_stopped_with_ctrl_c_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    // Three epochs of 100 steps; with a step event every step, epoch e's step k is line
    // 101 (e - 1) + k of metrics.jsonl and its epoch event line 101 e.
    let args = setup(tmp.path(), 3200);
    let (straight, _) = uninterrupted(tmp.path(), &args);
    let runs = tmp.path().join("runs");
    let mut child_args = args.clone();
    child_args.extend(["--runs-dir".to_string(), arg(&runs)]);

    // (signal, the line count after which it is sent): mid-epoch, at once and a little later;
    // during epoch 1's evaluation (after its last step, before its epoch event); right after
    // an epoch event (the epoch's checkpoint being written); Ctrl-C mid-epoch; SIGUSR1 (what
    // `sbatch --signal=USR1@60` sends before a time limit) mid-epoch.
    let plan = [
        ("KILL", 37, 0),
        ("INT", 80, 3),
        ("KILL", 100, 0),
        ("USR1", 120, 0),
        ("KILL", 150, 7),
        ("KILL", 202, 0),
        ("KILL", 260, 2),
    ];
    let mut run: Option<PathBuf> = None;
    let mut positions = Vec::new();
    for (signal, line, jitter_ms) in plan {
        let mut child = spawn(&child_args, &[]);
        wait_for_lines(&runs, line, &mut child);
        std::thread::sleep(Duration::from_millis(jitter_ms));
        let number = match signal {
            "INT" => libc::SIGINT,
            "USR1" => libc::SIGUSR1,
            _ => libc::SIGKILL,
        };
        // SAFETY: kill(2) on our own child, which has not been waited for, so its pid is ours.
        let sent = unsafe { libc::kill(child.id() as libc::pid_t, number) };
        assert_eq!(sent, 0, "the child had exited before line {line}");
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if signal != "KILL" {
            // Stopped at a step boundary with a checkpoint, saying how to go on.
            assert_eq!(
                output.status.code(),
                Some(i32::from(kiln_cli::STOPPED_EXIT_CODE)),
                "{stderr}"
            );
            assert!(stderr.contains("stopped on request after step"), "{stderr}");
            assert!(stderr.contains("kiln run --resume"), "{stderr}");
        } else {
            assert!(
                killed_by_sigkill(output.status),
                "{}: {stderr}",
                output.status
            );
        }
        let folder = run.get_or_insert_with(|| only_entry(&runs.join("lenet5-fashion-mnist")));
        let at = newest_checkpoint_loads(folder);
        println!("{signal} after line {line}: resuming from {at:?}");
        positions.push(at);
        child_args = resume_args(folder, Some(data_dir(&args)));
    }
    assert!(positions.windows(2).all(|w| w[0] <= w[1]), "{positions:?}");
    let status = spawn(&child_args, &[]).wait().unwrap();
    assert!(status.success(), "the last resume failed: {status}");
    assert_same_run(run.as_ref().unwrap(), &straight);
}

/// A checkpoint that cannot be written (a full disk, an unwritable folder) stops the fit: the
/// first one, before any step is trained; a later one, at once, with the step it was for.
#[test]
fn a_checkpoint_that_cannot_be_written_stops_the_fit() {
    use kiln_data::{ImageBatcher, Normalize, Split};
    use kiln_train::{
        fit, Checkpoint, Event, FitData, FitError, FitOptions, OptimizerSpec, Recipe,
    };
    type B = burn_autodiff::Autodiff<NdArray>;

    let tmp = tempfile::tempdir().unwrap();
    common::write_synthetic_fashion_mnist(tmp.path(), 128, 32);
    let train = kiln_data::mnist::FASHION_MNIST
        .load_from(tmp.path(), Split::Train)
        .unwrap();
    let batcher = ImageBatcher::for_set(&train, Normalize::unit());
    let recipe = Recipe::default()
        .with_epochs(2)
        .with_batch_size(16)
        .with_log_every(1)
        .with_optimizer(OptimizerSpec::adam(1e-3))
        .with_checkpoint_every(Some(2));
    let device = Default::default();
    for (failing_call, trained_steps) in [(1, 0), (3, 4)] {
        let calls = std::cell::Cell::new(0);
        let sink = |_: &Checkpoint| {
            calls.set(calls.get() + 1);
            if calls.get() == failing_call {
                Err(std::io::Error::other("No space left on device"))
            } else {
                Ok(())
            }
        };
        let options = FitOptions {
            save_checkpoint: Some(&sink),
            ..FitOptions::default()
        };
        let data = FitData {
            train: &train,
            valid: None,
            test: None,
            batcher: &batcher,
        };
        let mut steps = 0;
        let model = LeNet5Config::new().init::<B>(&device);
        let err = fit(model, data, &recipe, &device, &options, &mut |e| {
            steps += usize::from(matches!(e, Event::Step(_)));
        })
        .map(|_| ())
        .unwrap_err();
        assert_eq!(
            err,
            FitError::Checkpoint {
                step: trained_steps,
                message: "No space left on device".into()
            }
        );
        assert_eq!(
            steps, trained_steps,
            "no step trains past a failed checkpoint"
        );
        assert!(
            err.to_string()
                .contains(&format!("at step {trained_steps}")),
            "{err}"
        );
    }
}

#[test]
fn resume_refuses_what_it_cannot_go_on_with() {
    let tmp = tempfile::tempdir().unwrap();
    let finished = common::tiny_run(tmp.path(), 1);
    let resume = |dir: &Path, extra: &[&str]| {
        let mut args = vec!["kiln", "run", "--resume"];
        let dir = arg(dir);
        args.push(&dir);
        args.extend(extra);
        format!("{:#}", kiln_cli::main_with_args(args).unwrap_err())
    };
    let err = resume(&finished, &[]);
    assert!(err.contains("the run has finished"), "{err}");
    let err = resume(&finished, &["--backend", "cpu"]);
    assert!(
        err.contains("trained on backend ndarray, not cpu") && err.contains("--backend ndarray"),
        "{err}"
    );
    let err = resume(&finished, &["--epochs", "5"]);
    assert!(
        err.contains("--resume goes on exactly as the run's config.toml says"),
        "{err}"
    );
    let err = resume(&tmp.path().join("nowhere"), &[]);
    assert!(err.contains("nowhere/run.json: cannot read it"), "{err}");

    // A run folder without checkpoints (stopped before its first).
    fs::remove_file(finished.join("summary.json")).unwrap();
    let err = resume(&finished, &[]);
    assert!(err.contains("has no checkpoint to resume from"), "{err}");
    // A checkpoint state that is not one names its file.
    let broken = finished.join("checkpoints/epoch-0001-batch-000000");
    fs::create_dir_all(&broken).unwrap();
    fs::write(broken.join("state.json"), "{}").unwrap();
    let err = resume(&finished, &[]);
    assert!(
        err.contains("epoch-0001-batch-000000/state.json: not a checkpoint state"),
        "{err}"
    );
}
