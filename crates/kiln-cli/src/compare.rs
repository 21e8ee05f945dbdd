//! `kiln compare`: one experiment on several backends, from the same initial weights and the
//! same batch order, and a report of how they differ.
//!
//! Each backend trains in its own `kiln run` process (this same binary), so a backend that
//! crashes or runs out of memory cannot take the others down and each one's peak memory is its
//! own. The comparison folder holds the resolved experiment, the initial weights, every run
//! folder and the report:
//!
//! ```text
//! runs/compare/<experiment>-<timestamp>/
//!   experiment.toml  init.mpk  report.md  report.json
//!   <backend>/   (one ordinary run folder per backend, handed to its `kiln run --run-folder`;
//!                 a backend that failed leaves its message in <backend>/error.txt)
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use kiln_experiments::run_dir::{self, write_atomic};
use kiln_experiments::{ExperimentSpec, FixedBatchLogits, RunSummary};
use kiln_train::Event;
use serde::{Deserialize, Serialize};

use crate::args::CompareArgs;
use crate::backends::with_backend;

/// `report.json`: one row per backend, in the order asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub experiment: String,
    pub reference: String,
    pub seed: u64,
    pub epochs: kiln_train::Epochs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    pub backends: Vec<BackendRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendRow {
    pub backend: String,
    /// The backend's run folder, or why it has none.
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Finished(Measured),
    Failed { cause: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    pub run_dir: PathBuf,
    pub wall_seconds: f64,
    pub train_images_per_sec: f64,
    pub eval_images_per_sec: f64,
    /// Mean training loss of the last logged step.
    pub final_train_loss: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub peak_rss_mib: Option<f64>,
    pub steps: usize,
    /// Against the reference backend (zero for the reference itself); `None` when either run
    /// lacks the numbers.
    pub agreement: Option<Agreement>,
}

/// Largest absolute differences from the reference backend.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Agreement {
    /// Logits of the fixed test batch from the shared initial weights.
    pub initial_logits: f64,
    /// Logits of the fixed test batch after training.
    pub final_logits: f64,
    /// Training loss, step by step, over the steps both runs logged.
    pub loss_curve: f64,
    /// The largest |logit| of the reference's initial logits, to read the first figure
    /// relative to.
    pub logit_scale: f64,
}

/// `compare.json`: what `kiln compare --report DIR` needs to write the report of a comparison
/// whose backends ran elsewhere (as Slurm jobs).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plan {
    backends: Vec<String>,
    /// The Slurm jobs, one per backend, where they went to Slurm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    jobs: Vec<String>,
}

const PLAN: &str = "compare.json";

pub fn compare(args: &CompareArgs, quiet: bool) -> Result<()> {
    if let Some(dir) = &args.report {
        return report_of(dir);
    }
    let experiment = args
        .experiment
        .as_deref()
        .expect("clap requires it without --report");
    let spec = crate::load_valid(experiment, &args.overrides.overrides()?)?;
    for (i, name) in args.backends.iter().enumerate() {
        if args.backends[..i].contains(name) {
            bail!("--backends: {name:?} is listed twice");
        }
    }
    let dir = run_dir::create(&args.runs_dir, "compare", &spec.name)
        .with_context(|| format!("creating a folder under {}", args.runs_dir.display()))?;
    let dir = dir.canonicalize().context("the comparison folder")?;
    eprintln!(
        "comparing {} on {}: {}",
        spec.name,
        args.backends.join(", "),
        dir.display()
    );

    // Every backend reads the resolved spec (overrides included) and starts from init.mpk.
    let spec_path = dir.join("experiment.toml");
    write_atomic(&spec_path, spec.to_toml().as_bytes())
        .with_context(|| spec_path.display().to_string())?;
    let init = dir.join("init.mpk");
    let locator = args.data.locator(!quiet);
    with_backend!(&args.backends[0], None, |B, device| {
        save_initial_weights::<B>(&spec, &locator, &init, device)
    })??;
    let plan = Plan {
        backends: args.backends.clone(),
        jobs: Vec::new(),
    };
    if args.slurm.slurm {
        return submit_to_slurm(args, &dir, &spec_path, &init, plan);
    }
    save_plan(&dir, &plan)?;

    let mut rows = Vec::new();
    for backend in &args.backends {
        eprintln!("--- {backend} ---");
        let mut cmd = Command::new(std::env::current_exe().context("finding the kiln executable")?);
        cmd.args(run_args(backend, &spec_path, &init, &dir, args, quiet));
        // The child's messages pass through to the terminal.
        let status = cmd
            .stdout(Stdio::null())
            .status()
            .context("starting kiln run")?;
        let outcome = outcome_of(&dir.join(backend), &status.to_string())?;
        if let Outcome::Failed { cause } = &outcome {
            eprintln!("{backend}: {cause}");
        }
        rows.push(BackendRow {
            backend: backend.clone(),
            outcome,
        });
    }
    write_report(&dir, &spec, rows)
}

fn save_plan(dir: &Path, plan: &Plan) -> Result<()> {
    let path = dir.join(PLAN);
    let json = serde_json::to_vec_pretty(plan).expect("a plan always serialises");
    write_atomic(&path, &json).with_context(|| path.display().to_string())
}

/// The report, written beside the runs and printed; an error if a backend did not finish.
fn write_report(dir: &Path, spec: &ExperimentSpec, rows: Vec<BackendRow>) -> Result<()> {
    let report = Report {
        experiment: spec.name.clone(),
        reference: rows[0].backend.clone(),
        seed: spec.recipe.seed,
        epochs: spec.recipe.epochs,
        max_steps: spec.recipe.max_steps,
        backends: agree(rows)?,
    };
    let markdown = report.markdown();
    let json = serde_json::to_vec_pretty(&report).expect("a report always serialises");
    for (name, bytes) in [
        ("report.json", json.as_slice()),
        ("report.md", markdown.as_bytes()),
    ] {
        let path = dir.join(name);
        write_atomic(&path, bytes).with_context(|| path.display().to_string())?;
    }
    println!("{markdown}");
    println!("report: {}", dir.join("report.md").display());
    if let Some(failed) = report
        .backends
        .iter()
        .find(|r| matches!(r.outcome, Outcome::Failed { .. }))
    {
        bail!("backend {} did not finish (see the report)", failed.backend);
    }
    Ok(())
}

/// `kiln compare --report DIR`: the report of a comparison whose runs have ended.
fn report_of(dir: &Path) -> Result<()> {
    let plan: Plan = crate::read_json(&dir.join(PLAN)).map_err(|e| {
        e.context("not a comparison folder (kiln compare makes them under runs/compare/)")
    })?;
    let spec_path = dir.join("experiment.toml");
    let text =
        std::fs::read_to_string(&spec_path).with_context(|| spec_path.display().to_string())?;
    let spec = ExperimentSpec::from_toml(&text, &spec_path.to_string_lossy())?;
    let mut rows = Vec::new();
    for backend in &plan.backends {
        let log = dir.join(format!("{backend}.log"));
        let outcome = outcome_of(&dir.join(backend), &format!("see {}", log.display()))?;
        rows.push(BackendRow {
            backend: backend.clone(),
            outcome,
        });
    }
    write_report(dir, &spec, rows)
}

/// The `kiln run` arguments that train `backend` into `dir/<backend>/`.
fn run_args(
    backend: &str,
    spec_path: &Path,
    init: &Path,
    dir: &Path,
    args: &CompareArgs,
    quiet: bool,
) -> Vec<String> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut words = Vec::new();
    if quiet {
        words.push("--quiet".to_string());
    }
    if !kiln_train::denormals::flushes_denormals() {
        words.push("--keep-denormals".to_string());
    }
    words.extend([
        "run".to_string(),
        path(spec_path),
        "--backend".to_string(),
        backend.to_string(),
        "--init-weights".to_string(),
        path(init),
        "--log-every".to_string(),
        "1".to_string(),
        "--logits-of".to_string(),
        args.logits_of.to_string(),
        "--run-folder".to_string(),
        path(&dir.join(backend)),
    ]);
    words.extend(args.data.child_args());
    words
}

/// A backend's run folder as a row: its numbers, or the error its `kiln run` wrote, or (where
/// it wrote none: killed, or a crash before it could) `otherwise`.
fn outcome_of(folder: &Path, otherwise: &str) -> Result<Outcome> {
    if folder.join(run_dir::SUMMARY).exists() {
        return Ok(Outcome::Finished(measure(folder)?));
    }
    let error_file = folder.join(run_dir::ERROR);
    let cause = match std::fs::read_to_string(&error_file) {
        Ok(message) => message.trim_end().to_string(),
        Err(_) => format!(
            "kiln run ended without a summary or a word in {} ({otherwise})",
            error_file.display()
        ),
    };
    Ok(Outcome::Failed { cause })
}

/// One Slurm job per backend (GPU backends with --gpu-partition and --gpu-gres), then a job
/// that writes the report once they have all ended, however they ended.
fn submit_to_slurm(
    args: &CompareArgs,
    dir: &Path,
    spec_path: &Path,
    init: &Path,
    mut plan: Plan,
) -> Result<()> {
    let kiln = std::env::current_exe().context("finding the kiln executable")?;
    let kiln = kiln.to_string_lossy().into_owned();
    let script = |name: &str, extra: &[String], words: &[String]| -> Result<PathBuf> {
        let mut text = format!(
            "#!/bin/bash
# kiln compare: {name}
{}{}",
            args.slurm.directives(extra),
            crate::slurm::SCRIPT_PRELUDE
        );
        text.push_str(&format!(
            "exec {}
",
            crate::slurm::shell_line(words)
        ));
        let path = dir.join(format!("{name}.sbatch"));
        write_atomic(&path, text.as_bytes()).with_context(|| path.display().to_string())?;
        Ok(path)
    };
    for backend in &plan.backends {
        let mut extra = vec![
            format!("--job-name=kiln-compare-{backend}"),
            format!("--output={}", dir.join(format!("{backend}.log")).display()),
            "--signal=B:USR1@60".to_string(),
        ];
        if crate::backend_table::is_gpu(backend) {
            extra.extend(
                args.gpu_partition
                    .iter()
                    .map(|p| format!("--partition={p}")),
            );
            extra.extend(args.gpu_gres.iter().map(|g| format!("--gres={g}")));
        }
        let mut words = vec![kiln.clone()];
        words.extend(run_args(backend, spec_path, init, dir, args, true));
        let path = script(backend, &extra, &words)?;
        plan.jobs.push(crate::slurm::submit(&path, &[])?);
    }
    save_plan(dir, &plan)?;
    let report = script(
        "report",
        &[
            "--job-name=kiln-compare-report".to_string(),
            format!("--output={}", dir.join("report.log").display()),
        ],
        &[
            kiln.clone(),
            "compare".to_string(),
            "--report".to_string(),
            dir.to_string_lossy().into_owned(),
        ],
    )?;
    let after = format!("--dependency=afterany:{}", plan.jobs.join(":"));
    let report_job = crate::slurm::submit(&report, &[after])?;
    println!(
        "submitted jobs {} ({}) and {report_job} for the report: {} once they end (or kiln \
         compare --report {} at any time)",
        plan.jobs.join(", "),
        plan.backends.join(", "),
        dir.join("report.md").display(),
        dir.display()
    );
    Ok(())
}

/// The headline numbers of a finished run folder (agreement is filled in later).
fn measure(run: &Path) -> Result<Measured> {
    let summary: RunSummary = crate::read_json(&run.join(run_dir::SUMMARY))?;
    let losses = loss_curve(run)?;
    Ok(Measured {
        run_dir: run.to_path_buf(),
        wall_seconds: summary.total_seconds,
        train_images_per_sec: summary.train_images_per_sec,
        eval_images_per_sec: summary.eval_images_per_sec,
        final_train_loss: losses.last().copied().unwrap_or(f64::NAN),
        test_loss: summary.final_test_loss,
        test_accuracy: summary.final_test_accuracy,
        peak_rss_mib: summary.peak_rss_mib,
        steps: losses.len(),
        agreement: None,
    })
}

/// The step-by-step training loss of a run logged with `--log-every 1`.
fn loss_curve(run: &Path) -> Result<Vec<f64>> {
    let events = run_dir::read_events(&run.join(run_dir::METRICS))?;
    Ok(Event::steps(&events).map(|s| s.loss).collect())
}

/// Fills in each finished row's agreement with the first row.
fn agree(mut rows: Vec<BackendRow>) -> Result<Vec<BackendRow>> {
    let Some(Outcome::Finished(reference)) = rows.first().map(|r| r.outcome.clone()) else {
        return Ok(rows);
    };
    let ref_logits: FixedBatchLogits = crate::read_json(&reference.run_dir.join(run_dir::LOGITS))?;
    let ref_losses = loss_curve(&reference.run_dir)?;
    for row in &mut rows {
        let Outcome::Finished(m) = &mut row.outcome else {
            continue;
        };
        let logits: FixedBatchLogits = crate::read_json(&m.run_dir.join(run_dir::LOGITS))?;
        let losses = loss_curve(&m.run_dir)?;
        m.agreement = Some(Agreement {
            initial_logits: max_abs_diff(&ref_logits.initial, &logits.initial),
            final_logits: max_abs_diff(&ref_logits.r#final, &logits.r#final),
            loss_curve: max_abs_diff_f64(&ref_losses, &losses),
            logit_scale: ref_logits
                .initial
                .iter()
                .fold(0.0f64, |m, &x| m.max(f64::from(x).abs())),
        });
    }
    Ok(rows)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max(f64::from(x - y).abs()))
}

fn max_abs_diff_f64(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# {} on {} backends\n\nSeed {}, {} epochs{}; every backend starts from the same \
             init.mpk and sees the same batches. Differences are against {} (largest absolute \
             difference: logits of the first test images from the shared initial weights and \
             after training, and the training loss step by step). Peak memory is the host \
             process's (VmHWM); memory on a GPU is not included.\n\n",
            self.experiment,
            self.backends.len(),
            self.seed,
            self.epochs,
            self.max_steps
                .map(|s| format!(", stopped after {s} steps"))
                .unwrap_or_default(),
            self.reference,
        );
        out.push_str(
            "| backend | wall s | train img/s | eval img/s | final train loss | test loss | \
             test acc | peak MiB | max Δ logits (initial) | max Δ logits (final) | max Δ loss curve |\n",
        );
        out.push_str(
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for row in &self.backends {
            match &row.outcome {
                Outcome::Failed { cause } => {
                    let cause = cause.replace('|', "\\|").replace('\n', " ");
                    out.push_str(&format!(
                        "| {} | failed: {cause} |||||||||||\n",
                        row.backend
                    ));
                }
                Outcome::Finished(m) => {
                    let (a, b, c) = m
                        .agreement
                        .map_or(("-".into(), "-".into(), "-".into()), |a| {
                            (
                                sci(a.initial_logits),
                                sci(a.final_logits),
                                sci(a.loss_curve),
                            )
                        });
                    out.push_str(&format!(
                        "| {} | {:.1} | {:.0} | {:.0} | {:.4} | {:.4} | {:.2}% | {} | {a} | {b} | {c} |\n",
                        row.backend,
                        m.wall_seconds,
                        m.train_images_per_sec,
                        m.eval_images_per_sec,
                        m.final_train_loss,
                        m.test_loss,
                        100.0 * m.test_accuracy,
                        m.peak_rss_mib.map_or("-".into(), |p| format!("{p:.0}")),
                    ));
                }
            }
        }
        out
    }
}

fn sci(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else {
        format!("{x:.1e}")
    }
}

/// Draws the experiment's initial weights (seeded, as a run would), with what the network
/// takes from the training images where it takes any, and saves them to `path`.
fn save_initial_weights<B: AutodiffBackend>(
    spec: &ExperimentSpec,
    locator: &kiln_data::Locator,
    path: &Path,
    device: &B::Device,
) -> Result<()> {
    let input = spec.data.input_shape().map_err(anyhow::Error::msg)?;
    let classes = spec.data.classes().map_err(anyhow::Error::msg)?.len();
    B::seed(device, spec.recipe.seed);
    let mut model = spec.model.build::<B>(input, classes, device);
    if model.images_for_init().is_some() {
        let splits = kiln_experiments::runner::load_splits(spec, locator)?;
        let batcher = spec.data.batcher(&splits.train);
        model = kiln_experiments::runner::init_from_data(model, &splits.train, &batcher, device);
    }
    kiln_experiments::save_weights(model.valid(), path)
        .with_context(|| format!("saving the initial weights to {}", path.display()))
}
