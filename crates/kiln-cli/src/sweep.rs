//! `kiln sweep` and `kiln sweep-status`: a grid of settings of one experiment, each point an
//! ordinary `kiln run` into a run folder of its own, run here N at a time or submitted to Slurm
//! as one job array; and the table that collects the points, finished or not.
//!
//! ```text
//! runs/sweeps/<name>-<timestamp>/
//!   experiment.toml      the experiment with the sweep's fixed flags applied
//!   sweep.json           the grid, and each point's backend, settings, folder and command
//!   sweep.sbatch         (--slurm) the job array script; its job id is in sweep.json
//!   points/<i>/          point i's run folder (its error.txt where it failed)
//!   logs/<i>.log         point i's output
//!   status.md, status.json, status.csv   the table, from kiln sweep-status
//! ```
//!
//! The table is ranked by validation accuracy where every point has a validation split, and
//! never by the test set: a choice made on the test set would make its accuracy optimistic.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kiln_experiments::run_dir::{self, write_atomic};
use kiln_experiments::{Overrides, RunSummary};
use serde::{Deserialize, Serialize};

use crate::args::{StatusFormat, SweepArgs, SweepStatusArgs};
use crate::slurm::{self, shell_line};

/// `sweep.json`.
const SWEEP: &str = "sweep.json";
/// The experiment every point starts from.
const EXPERIMENT: &str = "experiment.toml";
/// The job array script.
const SCRIPT: &str = "sweep.sbatch";

/// What `sweep.json` holds: everything `kiln sweep-status` needs to find and describe the points.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sweep {
    /// The experiment's name.
    pub experiment: String,
    /// The axes, in the order given.
    pub grid: Vec<Axis>,
    pub backends: Vec<String>,
    /// The `kiln` binary the points run.
    pub kiln: PathBuf,
    pub points: Vec<Point>,
    /// The Slurm job array, for a sweep submitted with `--slurm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job: Option<String>,
}

/// One key and the values it takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    pub key: String,
    /// As given on the command line (`--set` reads each as TOML, or as a word).
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    pub index: usize,
    pub backend: String,
    /// One `KEY=VALUE` per axis.
    pub settings: Vec<String>,
    /// Whether its experiment has a validation split to rank it by.
    pub validates: bool,
    /// `kiln` arguments that run it into its folder.
    pub args: Vec<String>,
}

impl Point {
    fn folder(&self, dir: &Path) -> PathBuf {
        dir.join("points").join(self.index.to_string())
    }

    fn log(&self, dir: &Path) -> PathBuf {
        dir.join("logs").join(format!("{}.log", self.index))
    }

    fn describe(&self) -> String {
        format!("{} on {}", self.settings.join(" "), self.backend)
    }
}

/// `KEY=V1,V2,...` as an axis: the values split at commas outside braces, brackets and quotes,
/// so a value may be a TOML table or array.
pub fn axis(assignment: &str) -> Result<Axis> {
    let (key, text) = kiln_experiments::split_assignment(assignment)?;
    let mut values = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None, 0);
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '{' | '[') => depth += 1,
            (None, '}' | ']') => depth -= 1,
            (None, ',') if depth == 0 => {
                values.push(text[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    values.push(text[start..].trim().to_string());
    if values.iter().any(String::is_empty) {
        bail!("--set {assignment:?}: a value between commas is empty");
    }
    Ok(Axis {
        key: key.to_string(),
        values,
    })
}

/// Every combination of the axes' values, the last axis changing fastest.
fn combinations(grid: &[Axis]) -> Vec<Vec<String>> {
    grid.iter().fold(vec![Vec::new()], |done, axis| {
        done.iter()
            .flat_map(|head| {
                axis.values.iter().map(move |value| {
                    let mut point = head.clone();
                    point.push(format!("{}={value}", axis.key));
                    point
                })
            })
            .collect()
    })
}

pub fn sweep(args: &SweepArgs, quiet: bool) -> Result<()> {
    let mut grid: Vec<Axis> = Vec::new();
    for assignment in &args.overrides.set {
        let axis = axis(assignment)?;
        if grid.iter().any(|a| a.key == axis.key) {
            bail!(
                "--set: {} is given twice; list its values in one --set",
                axis.key
            );
        }
        grid.push(axis);
    }
    let fixed = args.overrides.flag_overrides();
    let base = crate::load_valid(&args.experiment, &fixed)?;
    let backends = if args.backends.is_empty() {
        vec![crate::backend_name(None, None)]
    } else {
        args.backends.clone()
    };
    for (i, name) in backends.iter().enumerate() {
        if backends[..i].contains(name) {
            bail!("--backends: {name:?} is listed twice");
        }
        if !args.slurm.slurm && !crate::is_built(name) {
            bail!(
                "--backends: this kiln was built without {name:?} (kiln backends lists what it \
                 has; on Slurm the nodes' kiln runs it)"
            );
        }
    }
    if args.jobs == Some(0) {
        bail!("--jobs: expected at least 1, found 0");
    }
    // Every point is checked before anything runs: a typo in a key fails now, not in point 7.
    let settings = combinations(&grid);
    let mut validates = Vec::new();
    for point in &settings {
        let mut overrides = Overrides::default();
        for assignment in point {
            overrides = overrides.set_text(assignment)?;
        }
        let mut spec = (*base).clone();
        spec.apply(&overrides)
            .and_then(|()| spec.clone().validate())
            .with_context(|| format!("the sweep's point {}", point.join(" ")))?;
        validates.push(spec.data.validation.is_some());
    }

    let name = args.name.as_deref().unwrap_or(&base.name);
    let dir = run_dir::create(&args.runs_dir, "sweeps", name)
        .with_context(|| format!("creating a folder under {}", args.runs_dir.display()))?;
    let dir = dir.canonicalize().context("the sweep folder")?;
    let experiment = dir.join(EXPERIMENT);
    write_atomic(&experiment, base.to_toml().as_bytes())
        .with_context(|| experiment.display().to_string())?;
    for sub in ["points", "logs"] {
        fs::create_dir_all(dir.join(sub)).with_context(|| dir.join(sub).display().to_string())?;
    }
    let kiln = std::env::current_exe().context("finding the kiln executable")?;
    let mut points = Vec::new();
    for backend in &backends {
        for (point, &validates) in settings.iter().zip(&validates) {
            let index = points.len();
            let folder = dir.join("points").join(index.to_string());
            let mut args_of = vec![
                "run".to_string(),
                experiment.to_string_lossy().into_owned(),
                "--backend".to_string(),
                backend.clone(),
            ];
            for assignment in point {
                args_of.extend(["--set".to_string(), assignment.clone()]);
            }
            args_of.extend([
                "--run-folder".to_string(),
                folder.to_string_lossy().into_owned(),
            ]);
            args_of.push("--quiet".to_string());
            args_of.extend(args.data.child_args());
            points.push(Point {
                index,
                backend: backend.clone(),
                settings: point.clone(),
                validates,
                args: args_of,
            });
        }
    }
    let mut sweep = Sweep {
        experiment: base.name.clone(),
        grid,
        backends,
        kiln,
        points,
        slurm_job: None,
    };
    eprintln!(
        "sweep of {}: {} points, {}",
        sweep.experiment,
        sweep.points.len(),
        dir.display()
    );
    if args.slurm.slurm {
        let script = dir.join(SCRIPT);
        write_atomic(&script, job_array_script(&sweep, &dir, args).as_bytes())
            .with_context(|| script.display().to_string())?;
        let job = slurm::submit(&script, &[])?;
        sweep.slurm_job = Some(job.clone());
        save(&dir, &sweep)?;
        println!(
            "submitted job array {job} ({} tasks); the table: kiln sweep-status {}",
            sweep.points.len(),
            dir.display()
        );
        return Ok(());
    }
    save(&dir, &sweep)?;
    run_here(&sweep, &dir, args.jobs.unwrap_or(1), quiet)?;
    let status = collect(&sweep, &dir)?;
    write_status(&status, &dir)?;
    println!("{}", status.markdown());
    let failed = status
        .rows
        .iter()
        .filter(|r| r.state == State::Failed)
        .count();
    if failed > 0 {
        bail!(
            "{failed} of {} points failed (why: {})",
            status.rows.len(),
            dir.join("status.md").display()
        );
    }
    Ok(())
}

fn save(dir: &Path, sweep: &Sweep) -> Result<()> {
    let path = dir.join(SWEEP);
    let json = serde_json::to_vec_pretty(sweep).expect("a sweep always serialises");
    write_atomic(&path, &json).with_context(|| path.display().to_string())
}

/// One task per point; a point's output goes to its log; SIGUSR1 a minute before the time
/// limit stops it with a checkpoint (the `exec` makes `kiln` the process Slurm signals).
fn job_array_script(sweep: &Sweep, dir: &Path, args: &SweepArgs) -> String {
    let last = sweep.points.len() - 1;
    let array = match args.jobs {
        Some(n) => format!("--array=0-{last}%{n}"),
        None => format!("--array=0-{last}"),
    };
    let logs = dir.join("logs");
    let extra = [
        format!("--job-name=kiln-sweep-{}", sweep.experiment),
        array,
        format!("--output={}/%a.log", logs.display()),
        "--signal=B:USR1@60".to_string(),
    ];
    let mut script = format!(
        "#!/bin/bash\n# kiln sweep of {}: one task per point (sweep.json lists them).\n{}{}",
        sweep.experiment,
        args.slurm.directives(&extra),
        slurm::SCRIPT_PRELUDE
    );
    script.push_str("case \"$SLURM_ARRAY_TASK_ID\" in\n");
    let kiln = sweep.kiln.to_string_lossy();
    for point in &sweep.points {
        let mut words = vec![kiln.to_string()];
        words.extend(point.args.iter().cloned());
        script.push_str(&format!(
            "{}) exec {} ;;\n",
            point.index,
            shell_line(&words)
        ));
    }
    script
        .push_str("*) echo \"no point $SLURM_ARRAY_TASK_ID in this sweep\" >&2; exit 1 ;;\nesac\n");
    script
}

/// Runs the points here, `jobs` at a time, each with its share of the cores. Ctrl-C reaches
/// the running points too (one process group): they stop with a checkpoint, and no new one
/// starts.
fn run_here(sweep: &Sweep, dir: &Path, jobs: usize, quiet: bool) -> Result<()> {
    let stop = crate::stop_on_ctrl_c();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or((cores / jobs).max(1));
    let total = sweep.points.len();
    let mut waiting = sweep.points.iter();
    let mut running: Vec<(&Point, Child)> = Vec::new();
    let mut ended = 0;
    loop {
        let stopping = stop.is_some_and(|s| s.load(Ordering::SeqCst));
        while running.len() < jobs && !stopping {
            let Some(point) = waiting.next() else { break };
            let log = fs::File::create(point.log(dir))
                .with_context(|| point.log(dir).display().to_string())?;
            let child = Command::new(&sweep.kiln)
                .args(&point.args)
                .env("RAYON_NUM_THREADS", threads.to_string())
                .env("OMP_NUM_THREADS", threads.to_string())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting kiln run")?;
            if !quiet {
                eprintln!(
                    "point {} of {total} started: {}",
                    point.index,
                    point.describe()
                );
            }
            running.push((point, child));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut still = Vec::new();
        for (point, mut child) in running {
            match child.try_wait().context("waiting for kiln run")? {
                None => still.push((point, child)),
                Some(status) if status.code() == Some(i32::from(crate::STOPPED_EXIT_CODE)) => {
                    ended += 1;
                    eprintln!(
                        "point {} ({ended}/{total}) stopped with a checkpoint: kiln run --resume {}",
                        point.index,
                        point.folder(dir).display()
                    );
                }
                Some(status) => {
                    ended += 1;
                    let row = row_of(point, dir, None);
                    eprintln!(
                        "point {} ({ended}/{total}) {}: {}",
                        point.index,
                        row.state.word(),
                        match row.state {
                            State::Finished => row.scores(),
                            _ => row.error.clone().unwrap_or_else(|| status.to_string()),
                        }
                    );
                }
            }
        }
        running = still;
    }
    Ok(())
}

/// A point's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Finished,
    /// Started and not ended (here, or a task Slurm lists as running).
    Running,
    /// Waiting for its turn.
    Pending,
    /// Ended with a checkpoint and without a summary: stopped on request or by a time limit,
    /// or killed; `kiln run --resume` goes on.
    Stopped,
    Failed,
}

impl State {
    fn word(self) -> &'static str {
        match self {
            State::Finished => "finished",
            State::Running => "running",
            State::Pending => "pending",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// 1 for the best validation accuracy; absent where the table is not ranked or the point
    /// has not finished.
    pub rank: Option<usize>,
    pub point: usize,
    pub backend: String,
    pub settings: Vec<String>,
    pub state: State,
    pub valid_accuracy: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub seconds: Option<f64>,
    /// Epochs done, for a point that has not finished.
    pub epochs_done: Option<usize>,
    pub folder: PathBuf,
    /// A command that runs it again (a new run folder under runs/) or, for one that stopped
    /// or runs, goes on with it.
    pub rerun: String,
    /// Why it failed: its error.txt, or the end of its log.
    pub error: Option<String>,
}

impl Row {
    fn scores(&self) -> String {
        let pct = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{:.2}%", 100.0 * x));
        let mut text = format!("test {}", pct(self.test_accuracy));
        if self.valid_accuracy.is_some() {
            text = format!("validation {}, {text}", pct(self.valid_accuracy));
        }
        if let Some(s) = self.seconds {
            text.push_str(&format!(", {s:.0} s"));
        }
        text
    }
}

/// `status.json`: the table, and what it is ranked by.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub experiment: String,
    pub keys: Vec<String>,
    /// "validation accuracy", or absent where a point has no validation split.
    pub ranked_by: Option<String>,
    pub rows: Vec<Row>,
}

fn row_of(point: &Point, dir: &Path, queued: Option<&str>) -> Row {
    let folder = point.folder(dir);
    let mut row = Row {
        rank: None,
        point: point.index,
        backend: point.backend.clone(),
        settings: point.settings.clone(),
        state: State::Pending,
        valid_accuracy: None,
        test_accuracy: None,
        seconds: None,
        epochs_done: None,
        folder: folder.clone(),
        rerun: String::new(),
        error: None,
    };
    let summary = fs::read(folder.join(run_dir::SUMMARY))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<RunSummary>(&bytes).ok());
    let started = folder.join(run_dir::RUN_START).exists();
    if let Some(s) = summary {
        row.state = State::Finished;
        row.valid_accuracy = s.final_valid_accuracy;
        row.test_accuracy = Some(s.final_test_accuracy);
        row.seconds = Some(s.total_seconds);
    } else if let Ok(error) = fs::read_to_string(folder.join(run_dir::ERROR)) {
        row.state = State::Failed;
        row.error = Some(error.trim().to_string());
    } else if let Some(state) = queued {
        row.state = if state == "PENDING" {
            State::Pending
        } else {
            State::Running
        };
    } else if started {
        // On Slurm a started task that left the queue stopped; here nothing says it ended.
        row.state = if point_on_slurm(dir) {
            State::Stopped
        } else {
            State::Running
        };
    } else if let Some(end) = log_end(&point.log(dir)) {
        // It ended before kiln could write a word into its folder (killed, or no such binary).
        row.state = State::Failed;
        row.error = Some(end);
    }
    if matches!(row.state, State::Running | State::Stopped) {
        row.epochs_done = fs::read_to_string(folder.join(run_dir::METRICS))
            .ok()
            .map(|m| {
                m.lines()
                    .filter(|l| l.contains("\"event\":\"epoch\""))
                    .count()
            });
    }
    let kiln = "kiln".to_string();
    row.rerun = if matches!(row.state, State::Running | State::Stopped) {
        shell_line(&[
            kiln,
            "run".into(),
            "--resume".into(),
            folder.to_string_lossy().into(),
        ])
    } else {
        // The same command into a new folder under runs/.
        let mut words = vec![kiln];
        let mut args = point.args.iter();
        while let Some(a) = args.next() {
            if a == "--run-folder" {
                args.next();
            } else {
                words.push(a.clone());
            }
        }
        shell_line(&words)
    };
    row
}

fn point_on_slurm(dir: &Path) -> bool {
    dir.join(SCRIPT).exists()
}

/// The last lines of a log that has any.
fn log_end(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    (!lines.is_empty()).then(|| lines[lines.len().saturating_sub(3)..].join("\n"))
}

/// The table of every point, as the folder and (for a Slurm sweep) the queue say now.
pub fn collect(sweep: &Sweep, dir: &Path) -> Result<Status> {
    let queue = sweep
        .slurm_job
        .as_deref()
        .map(slurm::array_states)
        .unwrap_or_default();
    let mut rows: Vec<Row> = sweep
        .points
        .iter()
        .map(|p| row_of(p, dir, queue.get(&p.index).map(String::as_str)))
        .collect();
    let ranked = sweep.points.iter().all(|p| p.validates);
    if ranked {
        let mut finished: Vec<&mut Row> = rows
            .iter_mut()
            .filter(|r| r.valid_accuracy.is_some())
            .collect();
        finished.sort_by(|a, b| b.valid_accuracy.partial_cmp(&a.valid_accuracy).unwrap());
        for (i, row) in finished.into_iter().enumerate() {
            row.rank = Some(i + 1);
        }
        rows.sort_by_key(|r| (r.rank.is_none(), r.rank, r.point));
    }
    Ok(Status {
        experiment: sweep.experiment.clone(),
        keys: sweep.grid.iter().map(|a| a.key.clone()).collect(),
        ranked_by: ranked.then(|| "validation accuracy".to_string()),
        rows,
    })
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".to_string(), |x| format!("{:.2}", 100.0 * x))
}

/// A setting's value for `key`.
fn value_of<'a>(row: &'a Row, key: &str) -> &'a str {
    row.settings
        .iter()
        .find_map(|s| s.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("")
}

impl Status {
    pub fn markdown(&self) -> String {
        let mut out = format!("# Sweep of {}\n\n", self.experiment);
        match &self.ranked_by {
            Some(by) => out.push_str(&format!(
                "Ranked by {by} (the test set is not used to choose).\n\n"
            )),
            None => out.push_str(
                "Not ranked: a point has no validation split (data.validation), and choosing by \
                 the test set would make its accuracy optimistic. Points in grid order.\n\n",
            ),
        }
        let mut head = vec!["rank", "point", "backend"];
        head.extend(self.keys.iter().map(String::as_str));
        head.extend(["state", "valid acc %", "test acc %", "seconds", "rerun"]);
        out.push_str(&format!("| {} |\n", head.join(" | ")));
        out.push_str(&format!("|{}\n", " --- |".repeat(head.len())));
        for r in &self.rows {
            let mut cells = vec![
                r.rank.map_or("-".into(), |n| n.to_string()),
                r.point.to_string(),
                r.backend.clone(),
            ];
            cells.extend(self.keys.iter().map(|k| format!("`{}`", value_of(r, k))));
            let state = match (r.state, r.epochs_done) {
                (State::Running | State::Stopped, Some(n)) => {
                    format!("{} ({n} epochs done)", r.state.word())
                }
                _ => r.state.word().to_string(),
            };
            cells.extend([
                state,
                pct(r.valid_accuracy),
                pct(r.test_accuracy),
                r.seconds.map_or("-".into(), |s| format!("{s:.0}")),
                format!("`{}`", r.rerun),
            ]);
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        let failed: Vec<&Row> = self.rows.iter().filter(|r| r.error.is_some()).collect();
        if !failed.is_empty() {
            out.push_str("\nFailed points:\n\n");
            for r in failed {
                let error = r.error.as_deref().unwrap_or_default().replace('\n', " / ");
                out.push_str(&format!("- point {}: {error}\n", r.point));
            }
        }
        out
    }

    pub fn csv(&self) -> String {
        let mut head = vec!["rank".to_string(), "point".into(), "backend".into()];
        head.extend(self.keys.iter().cloned());
        for h in [
            "state",
            "valid_accuracy",
            "test_accuracy",
            "seconds",
            "folder",
            "rerun",
            "error",
        ] {
            head.push(h.to_string());
        }
        let mut out = csv_line(&head);
        let num = |x: Option<f64>| x.map_or(String::new(), |x| x.to_string());
        for r in &self.rows {
            let mut cells = vec![
                r.rank.map_or(String::new(), |n| n.to_string()),
                r.point.to_string(),
                r.backend.clone(),
            ];
            cells.extend(self.keys.iter().map(|k| value_of(r, k).to_string()));
            cells.extend([
                r.state.word().to_string(),
                num(r.valid_accuracy),
                num(r.test_accuracy),
                num(r.seconds),
                r.folder.to_string_lossy().into_owned(),
                r.rerun.clone(),
                r.error.clone().unwrap_or_default(),
            ]);
            out.push_str(&csv_line(&cells));
        }
        out
    }
}

/// One CSV record (RFC 4180 quoting).
fn csv_line(cells: &[String]) -> String {
    let quoted: Vec<String> = cells
        .iter()
        .map(|c| {
            if c.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.clone()
            }
        })
        .collect();
    format!("{}\n", quoted.join(","))
}

fn write_status(status: &Status, dir: &Path) -> Result<()> {
    let json = serde_json::to_vec_pretty(status).expect("a status always serialises");
    for (name, bytes) in [
        ("status.md", status.markdown().into_bytes()),
        ("status.json", json),
        ("status.csv", status.csv().into_bytes()),
    ] {
        let path = dir.join(name);
        write_atomic(&path, &bytes).with_context(|| path.display().to_string())?;
    }
    Ok(())
}

/// `kiln sweep-status DIR`: the table now, written to DIR/status.{md,json,csv} and printed.
pub fn sweep_status(args: &SweepStatusArgs) -> Result<()> {
    let sweep: Sweep = crate::read_json(&args.dir.join(SWEEP))
        .map_err(|e| e.context("not a sweep folder (kiln sweep makes them under runs/sweeps/)"))?;
    let dir = args.dir.canonicalize().context("the sweep folder")?;
    let status = collect(&sweep, &dir)?;
    write_status(&status, &dir)?;
    match args.format {
        StatusFormat::Markdown => println!("{}", status.markdown()),
        StatusFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("a status always serialises")
        ),
        StatusFormat::Csv => print!("{}", status.csv()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_split_at_top_level_commas_and_the_grid_is_their_product() {
        let a = axis("recipe.optimizer.lr=0.1, 0.01").unwrap();
        assert_eq!(a.values, ["0.1", "0.01"]);
        let b =
            axis("data.validation={ from = \"test\", count = 50 },{ from = \"train\", count = 9 }")
                .unwrap();
        assert_eq!(b.values.len(), 2, "{b:?}");
        let c = axis("recipe.optimizer.name=\"a,b\",sgd").unwrap();
        assert_eq!(c.values, ["\"a,b\"", "sgd"]);
        let grid = combinations(&[a, axis("recipe.batch_size=32,64,128").unwrap()]);
        assert_eq!(grid.len(), 6);
        assert_eq!(grid[1], ["recipe.optimizer.lr=0.1", "recipe.batch_size=64"]);
        assert!(axis("recipe.batch_size=32,,64").is_err());
        assert!(axis("recipe.batch_size").is_err());
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let line = csv_line(&["a".into(), "b,c".into(), "say \"x\"".into()]);
        assert_eq!(line, "a,\"b,c\",\"say \"\"x\"\"\"\n");
    }
}
