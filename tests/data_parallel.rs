//! Data-parallel training over MPI, through the real command path: `kiln launch` starts
//! `mpirun`, which starts this same binary as each rank's `kiln` (it is `kiln` when
//! `KILN_TEST_AS_KILN` is set; otherwise it runs the tests below, in order). Loopback only, on
//! `cpu`, one thread per rank.
//!
//! - Two ranks with 16 images each are where one process with batches of 32 is after 10
//!   steps, to rounding: PyTorch DDP's own correctness test, adapted, on LeNet-5 without
//!   dropout (no batch norm).
//! - A rank killed mid-run (SIGKILL) ends the run on every rank, the run folder keeps its last
//!   checkpoint, and `kiln launch ... --resume` finishes it with exactly the weights of the run
//!   that never stopped; `kiln run --resume` in one process takes the same steps (its losses
//!   those of the run that never stopped, to rounding).
//! - A rank that stops answering (SIGSTOP) ends every rank within KILN_COLLECTIVE_TIMEOUT.
//! - A batch that does not split over the ranks is refused, naming the key.
//! - A Slurm job step of two tasks (`srun --mpi=pmix -n 2 kiln run ...`) trains as two ranks,
//!   on the one-node cluster that `cargo xtask test` starts (`SLURM_CONF` names it); SIGUSR1
//!   from Slurm stops it with a checkpoint and status 75, and a second step resumes it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn_ndarray::NdArray;

mod common;
use common::{arg, load_lenet, only_entry, synthetic_setup, AS_KILN};

fn main() {
    common::kiln_or_tests(&[
        (
            "ranks_train_as_one_process_and_a_killed_run_resumes_to_the_same_weights",
            ranks_train_as_one_process_and_a_killed_run_resumes_to_the_same_weights,
        ),
        (
            "a_rank_that_stops_answering_ends_every_rank_within_the_timeout",
            a_rank_that_stops_answering_ends_every_rank_within_the_timeout,
        ),
        (
            "a_batch_that_does_not_split_over_the_ranks_is_refused",
            a_batch_that_does_not_split_over_the_ranks_is_refused,
        ),
        (
            "a_slurm_job_step_of_two_tasks_trains_as_two_ranks",
            a_slurm_job_step_of_two_tasks_trains_as_two_ranks,
        ),
    ]);
}

/// Synthetic Fashion-MNIST under `dir` and LeNet-5 without dropout, batches of 32 (100 steps
/// an epoch over 3,200 images: long enough to stop a run in its middle), a step event every 5
/// steps.
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    synthetic_setup(dir, 3200, 200, "lenet-dp.toml", |t| {
        t.replace("dropout = 0.5", "dropout = 0.0")
            .replace("batch_size = 256", "batch_size = 32")
            .replace("log_every = 50", "log_every = 5")
    })
}

/// `kiln <args>` as a child process (this binary), its output captured.
fn kiln(args: &[String], env: &[(&str, String)]) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(args)
        .env(AS_KILN, format!("{}", std::process::id()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().unwrap()
}

fn finished(child: Child, what: &str) -> Output {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `kiln launch --procs 2 --threads 1 <run args>`.
fn launch(procs: usize, run: &[String]) -> Vec<String> {
    let mut args: Vec<String> = ["launch", "--procs", &procs.to_string(), "--threads", "1"]
        .map(String::from)
        .to_vec();
    args.extend(run.iter().cloned());
    args
}

fn run_args(experiment: &Path, data: &Path, runs: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        arg(experiment),
        "--backend".into(),
        "cpu".into(),
        "--epochs".into(),
        "2".into(),
        "--data-dir".into(),
        arg(data),
        "--offline".into(),
        "--runs-dir".into(),
        arg(runs),
        "--quiet".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn weights(run: &Path) -> Vec<f32> {
    struct All(Vec<f32>);
    impl ModuleVisitor<NdArray> for All {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<NdArray, D>>) {
            self.0
                .extend(param.val().into_data().to_vec::<f32>().unwrap());
        }
    }
    let mut all = All(Vec::new());
    load_lenet(run).visit(&mut all);
    all.0
}

fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

/// The process ids of the ranks of the launch whose `kiln` processes carry `marker`, by rank
/// (Open MPI's `OMPI_COMM_WORLD_RANK`).
fn ranks_of(marker: &str) -> Vec<(usize, u32)> {
    ranks_by(marker, "OMPI_COMM_WORLD_RANK")
}

/// [`ranks_of`] by the rank in `rank_var`.
fn ranks_by(marker: &str, rank_var: &str) -> Vec<(usize, u32)> {
    let mut ranks = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<String> = environ
            .split(|&b| b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if !vars.iter().any(|v| *v == format!("{AS_KILN}={marker}")) {
            continue;
        }
        let rank = vars
            .iter()
            .find_map(|v| v.strip_prefix(&format!("{rank_var}=")))
            .and_then(|r| r.parse().ok());
        if let Some(rank) = rank {
            ranks.push((rank, pid));
        }
    }
    ranks.sort();
    ranks
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid and a signal number has no memory effects here.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// Waits for the launch `child` to start its ranks and checkpoint at least `steps` steps in.
fn wait_for_checkpoint(
    child: &mut Child,
    runs: &Path,
    marker: &str,
    steps: usize,
    rank_var: &str,
) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "no checkpoint within 120 s");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the launch ended early ({status})");
        }
        let checkpoints = runs.join("lenet5-fashion-mnist");
        let past = fs::read_dir(&checkpoints).ok().and_then(|mut runs| {
            let run = runs.next()?.ok()?.path();
            let names = fs::read_dir(run.join("checkpoints")).ok()?;
            let steps_seen = names.flatten().filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("epoch-0001-batch-")?
                    .parse::<usize>()
                    .ok()
            });
            steps_seen.max()
        });
        let ranks = ranks_by(marker, rank_var);
        if past.is_some_and(|s| s >= steps) && ranks.len() == 2 {
            return ranks.into_iter().map(|(_, pid)| pid).collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A two-rank launch of the experiment that checkpoints every 3 steps under `runs`, once it
/// has a checkpoint `steps` steps in: the launch, the marker its ranks carry (`label` and this
/// process's id) and their process ids by rank.
fn launch_checkpointing(
    experiment: &Path,
    data: &Path,
    runs: &Path,
    label: &str,
    steps: usize,
    env: &[(&str, String)],
) -> (Child, String, Vec<u32>) {
    let marker = format!("{label}-{}", std::process::id());
    let mut env = env.to_vec();
    env.push((AS_KILN, marker.clone()));
    let args = run_args(experiment, data, runs, &["--checkpoint-every", "3"]);
    let mut child = kiln(&launch(2, &args), &env);
    let pids = wait_for_checkpoint(&mut child, runs, &marker, steps, "OMPI_COMM_WORLD_RANK");
    (child, marker, pids)
}

/// The largest absolute difference between two weight lists of the same length.
fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

fn wait_within(child: Child, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(limit);
        signal(pid, libc::SIGKILL);
    });
    let out = child.wait_with_output().unwrap();
    drop(watchdog);
    (out, started.elapsed())
}

fn ranks_train_as_one_process_and_a_killed_run_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (data, experiment) = setup(dir.path());

    // One process with batches of 32 against two ranks of 16 each, after 10 steps (PyTorch
    // DDP's test compares after a few): the sums differ only in their rounding. Over a whole
    // run such differences grow as training amplifies them (200 steps: 7.5e-6 on an Intel
    // Xeon, 6.5e-3 on an AMD EPYC), so that is not compared.
    let ten = ["--steps", "10"];
    let alone_runs = dir.path().join("alone");
    finished(
        kiln(
            &[
                &["run".to_string()][..],
                &run_args(&experiment, &data, &alone_runs, &ten),
            ]
            .concat(),
            &[],
        ),
        "one process",
    );
    let alone = only_entry(&alone_runs.join("lenet5-fashion-mnist"));
    let short_runs = dir.path().join("two-short");
    finished(
        kiln(
            &launch(2, &run_args(&experiment, &data, &short_runs, &ten)),
            &[],
        ),
        "two ranks",
    );
    // Rank 0 alone wrote a run folder.
    let short = only_entry(&short_runs.join("lenet5-fashion-mnist"));
    let worst = largest_difference(&weights(&alone), &weights(&short));
    assert!(worst < 1e-4, "the weights differ by up to {worst}");
    let (s1, s2) = (summary(&alone), summary(&short));
    let parallel = &s2["parallel"];
    assert_eq!(parallel["ranks"], 2, "{s2}");
    assert_eq!(parallel["batch_per_rank"], 16);
    assert_eq!(parallel["global_batch"], 32);
    assert!(
        parallel["library"].as_str().unwrap().contains("Open MPI"),
        "{parallel}"
    );
    assert!(s1.get("parallel").is_none());
    for key in ["final_test_loss", "final_test_accuracy"] {
        let (a, b) = (s1[key].as_f64().unwrap(), s2[key].as_f64().unwrap());
        assert!((a - b).abs() < 1e-3, "{key}: {a} alone, {b} with two ranks");
    }
    eprintln!("  two ranks against one process, 10 steps: weights within {worst:e}");

    // The whole two-rank run, uninterrupted: what the runs below resume to.
    let two_runs = dir.path().join("two");
    finished(
        kiln(
            &launch(2, &run_args(&experiment, &data, &two_runs, &[])),
            &[],
        ),
        "two ranks",
    );
    let two = only_entry(&two_runs.join("lenet5-fashion-mnist"));

    // The same two-rank run, rank 1 killed after the checkpoint of step 6.
    let killed_runs = dir.path().join("killed");
    let (child, marker, pids) =
        launch_checkpointing(&experiment, &data, &killed_runs, "killed", 6, &[]);
    signal(pids[1], libc::SIGKILL);
    let (out, took) = wait_within(child, Duration::from_secs(60));
    assert!(!out.status.success(), "the launch should fail");
    assert!(took < Duration::from_secs(30), "it took {took:?} to end");
    assert!(ranks_of(&marker).is_empty(), "a rank is still running");
    let run = only_entry(&killed_runs.join("lenet5-fashion-mnist"));
    assert!(!run.join("summary.json").exists());

    // SIGUSR1 to one rank of a launch: both stop at the same step, and so does the launch,
    // with the status that says "stopped, resumable".
    let stopped_runs = dir.path().join("stopped");
    let (child, _, pids) = launch_checkpointing(&experiment, &data, &stopped_runs, "usr1", 3, &[]);
    signal(pids[1], libc::SIGUSR1);
    let (out, _) = wait_within(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("stopped on request after step"), "{stderr}");
    // A copy goes on in one process instead: the checkpoint's position counts global batches.
    let copy = dir.path().join("killed-copy");
    copy_folder(&run, &copy);
    let resume = ["--resume".to_string(), arg(&run), "--quiet".to_string()];
    finished(kiln(&launch(2, &resume), &[]), "the resumed launch");
    assert_eq!(
        weights(&run),
        weights(&two),
        "the resumed run should end with the uninterrupted run's weights"
    );
    let resume = ["run", "--resume", &arg(&copy), "--quiet"].map(String::from);
    finished(kiln(&resume, &[]), "the resume in one process");
    // It goes on from the same global step with the same batches: its losses are the
    // uninterrupted run's to rounding, until rounding differences grow (as above).
    let (resumed, uninterrupted) = (step_losses(&copy), step_losses(&two));
    assert_eq!(resumed.len(), uninterrupted.len());
    let mut compared = 0;
    for (&(step, a), &(step_b, b)) in resumed.iter().zip(&uninterrupted) {
        assert_eq!(step, step_b);
        if step <= 30 {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs(),
                "resumed in one process: loss {a} at step {step}, {b} without the stop"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 6, "steps 5 to 30, every 5");
    eprintln!("  two ranks, then one process from a checkpoint: losses to step 30 within 1e-4");
}

/// `(step, loss)` of every step event of a run's metrics.jsonl.
fn step_losses(run: &Path) -> Vec<(u64, f64)> {
    fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "step")
        .map(|e| (e["step"].as_u64().unwrap(), e["loss"].as_f64().unwrap()))
        .collect()
}

fn copy_folder(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_folder(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn a_rank_that_stops_answering_ends_every_rank_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (data, experiment) = setup(dir.path());
    let runs = dir.path().join("runs");
    let (child, _, pids) = launch_checkpointing(
        &experiment,
        &data,
        &runs,
        "stopped",
        3,
        &[("KILN_COLLECTIVE_TIMEOUT", "3".into())],
    );
    signal(pids[1], libc::SIGSTOP);
    let (out, took) = wait_within(child, Duration::from_secs(60));
    for pid in pids {
        signal(pid, libc::SIGKILL); // whatever is left of them
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the launch should fail:\n{stderr}");
    assert!(
        took < Duration::from_secs(30),
        "it took {took:?} to end:\n{stderr}"
    );
    assert!(
        stderr.contains("rank 0: the other ranks did not join"),
        "{stderr}"
    );
}

fn a_batch_that_does_not_split_over_the_ranks_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (data, experiment) = setup(dir.path());
    let runs = dir.path().join("runs");
    let child = kiln(&launch(3, &run_args(&experiment, &data, &runs, &[])), &[]);
    let (out, _) = wait_within(child, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("recipe.batch_size = 32 is the global batch")
            && stderr.contains("does not divide over 3 ranks"),
        "{stderr}"
    );
}

fn a_slurm_job_step_of_two_tasks_trains_as_two_ranks() {
    let conf = common::slurm_conf();
    let dir = tempfile::tempdir().unwrap();
    let (data, experiment) = setup(dir.path());
    let runs = dir.path().join("runs");
    let srun = |kiln_args: &[String]| {
        let mut srun = Command::new("srun");
        srun.args(["--mpi=pmix", "-n", "2", "--time=5"])
            .arg(std::env::current_exe().unwrap())
            .args(kiln_args)
            .env("SLURM_CONF", &conf)
            .env(AS_KILN, "srun")
            .env("RAYON_NUM_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        srun.spawn()
            .unwrap_or_else(|e| panic!("starting srun: {e}"))
    };
    // The signal Slurm sends before a time limit (`--signal=USR1@...`), here from scancel:
    // both tasks checkpoint and stop at the same step with status 75, and a second job step
    // resumes the run to its end.
    let mut args = vec!["run".to_string()];
    args.extend(run_args(
        &experiment,
        &data,
        &runs,
        &["--checkpoint-every", "3"],
    ));
    let mut child = srun(&args);
    wait_for_checkpoint(&mut child, &runs, "srun", 3, "SLURM_PROCID");
    let slurm = |tool: &str, args: &[&str]| {
        let out = Command::new(tool)
            .args(args)
            .env("SLURM_CONF", &conf)
            .output();
        let out = out.unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(out.status.success(), "{tool} {args:?}: {}", out.status);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let jobs = slurm("squeue", &["-h", "-o", "%i"]);
    let job = jobs
        .split_whitespace()
        .next()
        .expect("squeue lists the running job");
    slurm("scancel", &["--signal=USR1", job]);
    let (out, _) = wait_within(child, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    let run = only_entry(&runs.join("lenet5-fashion-mnist"));
    assert!(!run.join("summary.json").exists());
    let resume = ["run", "--resume", &arg(&run), "--quiet"].map(String::from);
    let (out, _) = wait_within(srun(&resume), Duration::from_secs(180));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "srun failed ({}):\n{stderr}",
        out.status
    );
    let s = summary(&run);
    assert_eq!(s["parallel"]["ranks"], 2, "{s}");
    assert_eq!(s["parallel"]["global_batch"], 32);
    // Ten well-separated squares: two epochs learn them.
    let accuracy = s["final_test_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.9, "test accuracy {accuracy}");
}
