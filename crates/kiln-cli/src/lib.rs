//! The `kiln` command. This is the only place that names a concrete Burn backend: the
//! `--backend` name is matched once, here, and everything below is generic.

#![warn(missing_docs)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kiln_data::Locator;
use kiln_experiments::run_dir;
use kiln_experiments::{
    ExperimentSpec, Layout, Overrides, RunFolder, RunOptions, RunOutcome, RunStart, ValidSpec,
};
use kiln_report::FeatureInput;

mod compare;
use kiln_models::Summary;

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Train classic CNNs on any Burn backend"
)]
pub(crate) struct Cli {
    /// Only warnings and errors; no progress bars.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Log lines as text for people or JSON for machines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Compute with denormal floats instead of flushing them to zero. Flushing (the default)
    /// keeps late epochs as fast as early ones on the CPU and changes nothing a float32
    /// network resolves; each run's summary.json records which was used.
    #[arg(long, global = true)]
    pub keep_denormals: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Train an experiment and write its run folder.
    Run(RunArgs),
    /// List the built-in experiments.
    List,
    /// Print an experiment's network layer by layer: output shape and parameters for the
    /// experiment's input size, and any layer that size does not fit.
    Summary(SummaryArgs),
    /// Train one experiment on several backends from the same initial weights and batch order,
    /// and report speed, memory, accuracy and how far each backend's numbers are from the
    /// first's (runs/compare/<experiment>-<timestamp>/report.md and report.json).
    Compare(compare::CompareArgs),
    /// List the backends and whether this binary was built with each.
    Backends,
    /// Time an experiment on one backend: the data pipeline, the training step (forward,
    /// loss, backward, optimiser at the recipe's batch) and the evaluation pass, as medians
    /// after a warm-up, with the peak memory of the step phase. Prints one JSON object on
    /// stdout; `cargo xtask bench` runs it for every experiment and backend beside PyTorch.
    Bench(BenchArgs),
    /// Redraw a finished run's pictures into RUN/plots/ (curves, confusion matrix, prediction
    /// grid, kernels, feature maps); runs draw them when they finish, so this is for older
    /// runs or after deleting them. Evaluates the saved model on the test split again.
    Plots(PlotsArgs),
    /// Draw the first convolution's kernels and every convolution's feature maps for one
    /// image (a test image or a file) into RUN/plots/features-*/.
    Features(FeaturesArgs),
    /// Classify image files with a run's saved model: the top classes and their softmax
    /// probabilities. Files that cannot be read are reported; the others are still predicted.
    Predict(PredictArgs),
    /// Write RUN/index.html for each run (summary, layers, metrics, pictures), and with several
    /// runs a page comparing them; open them in a browser, no server needed.
    Report(ReportArgs),
    /// Load a PyTorch state dict (`torch.save(net.state_dict(), "weights.pt")`, saved by the
    /// experiment's own PyTorch code) into the experiment's network and save it as Kiln weights
    /// for `kiln run --init-weights`. Every tensor must fit; the error lists each that does not.
    Import(ImportArgs),
    /// Write a run's weights as safetensors under the experiment's PyTorch module names, for
    /// `net.load_state_dict(safetensors.torch.load_file(FILE))`.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// A built-in experiment name (see `kiln list`) or a path to an experiment .toml file.
    pub experiment: String,
    /// The `.pt` file.
    pub weights: PathBuf,
    /// Where the Kiln weights go.
    #[arg(long, value_name = "FILE", default_value = "model.mpk")]
    pub out: PathBuf,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// The formats `kiln export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ExportFormat {
    Safetensors,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// A run folder.
    pub run: PathBuf,
    #[arg(long, value_enum, default_value = "safetensors")]
    pub format: ExportFormat,
    /// Where the file goes (default RUN/model.safetensors).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PlotsArgs {
    /// Run folders (runs/<experiment>/<backend>-<timestamp>).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Debug, Args)]
pub(crate) struct FeaturesArgs {
    /// A run folder.
    pub run: PathBuf,
    /// A PNG or JPEG file of the run's image size.
    #[arg(long, value_name = "FILE", conflicts_with = "index")]
    pub image: Option<PathBuf>,
    /// The Nth image of the run's test split (default: the first).
    #[arg(long, value_name = "N")]
    pub index: Option<usize>,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PredictArgs {
    /// A run folder.
    pub run: PathBuf,
    /// PNG or JPEG files of the run's image size.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// Run folders.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Where the comparison page of several runs goes (default runs/reports/<timestamp>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct SummaryArgs {
    /// A built-in experiment name (see `kiln list`) or a path to an experiment .toml file.
    pub experiment: String,
    /// Backend to build the model on (the table is the same on every backend).
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Which backend, and which of its devices.
#[derive(Debug, Clone, Args)]
pub(crate) struct BackendArgs {
    /// cpu (Kiln's own), ndarray, flex, wgpu, tch, tch-cuda or cuda (each needs its cargo
    /// feature; see `kiln backends`). Default: for a command on a run folder, the run's own
    /// backend if this binary has it; otherwise the first one this binary has (cpu in a default
    /// build).
    #[arg(long)]
    pub backend: Option<String>,
    /// Device number, for backends with several (wgpu: the Nth discrete GPU; tch-cuda and cuda:
    /// the CUDA device). Default: the backend's default device.
    #[arg(long, value_name = "N")]
    pub device: Option<usize>,
}

impl BackendArgs {
    /// `--backend`, else `preferred` where this binary has it, else the first it has.
    pub fn name(&self, preferred: Option<&str>) -> String {
        backend_name(self.backend.as_deref(), preferred)
    }
}

/// The backend a command uses: `chosen` (`--backend`), else `preferred` (a run folder's own
/// backend) where this binary has it, else the first backend this binary has.
pub fn backend_name(chosen: Option<&str>, preferred: Option<&str>) -> String {
    let built = |name: &str| BACKENDS.iter().any(|(n, on)| *on && *n == name);
    chosen
        .or_else(|| preferred.filter(|p| built(p)))
        .or_else(|| BACKENDS.iter().find(|(_, on)| *on).map(|(n, _)| *n))
        .unwrap_or("cpu")
        .to_string()
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// A built-in experiment name (see `kiln list`) or a path to an experiment .toml file.
    pub experiment: String,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Read the data set in this layout instead of the experiment's: idx, binary, python or
    /// folder.
    #[arg(long, value_name = "LAYOUT")]
    pub layout: Option<Layout>,
    /// Untimed steps before the timed ones.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed steps (training and evaluation each); the figures are their medians.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// A built-in experiment name (see `kiln list`) or a path to an experiment .toml file.
    #[arg(required_unless_present = "resume")]
    pub experiment: Option<String>,
    /// Go on with a stopped run (killed, Ctrl-C, out of power) from its newest checkpoint, in
    /// its own folder, with its own config.toml and the --data-dir it started with (unless
    /// given another); it ends as if it had never stopped.
    #[arg(
        long,
        value_name = "RUN_FOLDER",
        conflicts_with_all = ["experiment", "init_weights", "logits_of", "runs_dir", "run_folder"]
    )]
    pub resume: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Run folders are created under DIR/<experiment>/.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Write the run into exactly DIR (created; it must not exist or be empty) instead of a
    /// new folder under --runs-dir; if the run fails, DIR/error.txt says why. For tools that
    /// start kiln and read its results (`kiln compare` does).
    #[arg(long, value_name = "DIR", conflicts_with = "runs_dir")]
    pub run_folder: Option<PathBuf>,
    /// Start from these weights (a model.mpk of the same network, e.g. a comparison's
    /// init.mpk) instead of the seeded initialisation.
    #[arg(long, value_name = "FILE")]
    pub init_weights: Option<PathBuf>,
    /// Also write logits.json: the logits of the first N test images before and after training.
    #[arg(long, value_name = "N")]
    pub logits_of: Option<usize>,
}

/// Changes to the experiment's recipe and data, recorded in the run's config.toml.
#[derive(Debug, Clone, Args)]
pub(crate) struct OverrideArgs {
    /// Override the recipe's number of epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop after N optimiser steps in all (the schedule still spans every epoch).
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,
    /// Train on the first N training images only.
    #[arg(long, value_name = "N")]
    pub limit_train: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long, value_name = "N")]
    pub limit_test: Option<usize>,
    /// Override the recipe's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Log the training loss every N steps (1: every step).
    #[arg(long, value_name = "N")]
    pub log_every: Option<usize>,
    /// Also save a checkpoint every N steps (one is always saved after each epoch).
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<usize>,
    /// Read the data set in this layout instead of the experiment's: idx, binary, python or
    /// folder (`DIR/{train,test}/<class>/*.jpg|png` under --data-dir).
    #[arg(long, value_name = "LAYOUT")]
    pub layout: Option<Layout>,
}

/// A built-in experiment or experiment file with `overrides` applied, checked once: a refused
/// key that a flag set is blamed on the flags, any other on the file.
fn load_valid(name_or_path: &str, overrides: &Overrides) -> Result<ValidSpec> {
    let mut spec = kiln_experiments::load(name_or_path).map_err(anyhow::Error::msg)?;
    spec.apply(overrides);
    spec.validate().map_err(|e| {
        if overrides.keys().contains(&e.key.as_str()) {
            anyhow::anyhow!("{name_or_path} (after command-line overrides): {e}")
        } else {
            e.in_file(name_or_path).into()
        }
    })
}

impl OverrideArgs {
    /// The experiment `name_or_path` with these changes, validated.
    pub fn resolve(&self, name_or_path: &str) -> Result<ValidSpec> {
        let overrides = Overrides {
            epochs: self.epochs,
            seed: self.seed,
            limit_train: self.limit_train,
            limit_test: self.limit_test,
            layout: self.layout,
            max_steps: self.steps,
            log_every: self.log_every,
            checkpoint_every: self.checkpoint_every,
        };
        load_valid(name_or_path, &overrides)
    }
}

/// Where the data set's files are.
#[derive(Debug, Clone, Args)]
pub(crate) struct DataArgs {
    /// Look for the data set's files here first (then $KILN_DATA_DIR, the user cache and the
    /// system folders); downloads go here too.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Never download; if the files are missing, say which files to place where.
    #[arg(long)]
    pub offline: bool,
}

impl DataArgs {
    fn locator(&self, progress: bool) -> Locator {
        let mut locator = Locator::from_env(self.data_dir.clone(), self.offline);
        locator.progress = progress;
        locator
    }
}

/// Backends this binary was built with, by `--backend` name. Each is a cargo feature of
/// `kiln-cli`; `cargo xtask run-experiment --backend NAME` turns the right one on.
pub const BACKENDS: &[(&str, bool)] = &[
    ("cpu", cfg!(feature = "cpu")),
    ("ndarray", cfg!(feature = "ndarray")),
    ("flex", cfg!(feature = "flex")),
    ("wgpu", cfg!(feature = "wgpu")),
    ("tch", cfg!(feature = "tch")),
    ("tch-cuda", cfg!(feature = "tch-cuda")),
    ("cuda", cfg!(feature = "cuda")),
];

/// Parses the arguments, sets up logging and runs the command.
pub fn main_with_args<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    // Before any thread pool starts: worker threads inherit the setting from this thread.
    kiln_train::denormals::set(!cli.keep_denormals);
    init_logging(&cli);
    execute(&cli)
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let default = if cli.quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not in a log file or CI output.
        .with_ansi(std::io::stderr().is_terminal());
    // try_init: tests call main_with_args several times in one process.
    let _ = match cli.log_format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub(crate) fn execute(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::List => {
            for spec in kiln_experiments::builtin() {
                println!("{:<28} {}", spec.name, spec.description);
            }
            Ok(())
        }
        Command::Backends => {
            for (name, built) in BACKENDS {
                let state = if *built {
                    "built in"
                } else {
                    "not built (cargo feature missing)"
                };
                println!("{name:<10} {state}");
            }
            Ok(())
        }
        Command::Compare(args) => compare::compare(args, cli.quiet),
        Command::Plots(args) => {
            let locator = args
                .data
                .locator(!cli.quiet && std::io::stderr().is_terminal());
            for dir in &args.runs {
                let run = open_run(dir)?;
                let task = PlotsTask {
                    run: &run,
                    locator: &locator,
                };
                let backend = args.backend.name(Some(&run.summary.backend));
                let files = dispatch(&backend, args.backend.device, task)??;
                println!(
                    "{}: {} pictures in {}",
                    dir.display(),
                    files.len(),
                    run.plots_dir().display()
                );
            }
            Ok(())
        }
        Command::Features(args) => {
            let run = open_run(&args.run)?;
            let input = match &args.image {
                Some(file) => FeatureInput::File(file.clone()),
                None => FeatureInput::TestIndex(args.index.unwrap_or(0)),
            };
            let locator = args
                .data
                .locator(!cli.quiet && std::io::stderr().is_terminal());
            let task = FeaturesTask {
                run: &run,
                input: &input,
                locator: &locator,
            };
            let backend = args.backend.name(Some(&run.summary.backend));
            let files = dispatch(&backend, args.backend.device, task)??;
            for f in files {
                println!("{}", f.display());
            }
            Ok(())
        }
        Command::Predict(args) => predict(args),
        Command::Report(args) => report(args),
        Command::Summary(args) => {
            let spec = load_valid(&args.experiment, &Overrides::default())?;
            let input = spec.data.input_shape().map_err(anyhow::Error::msg)?;
            let classes = spec.data.classes().map_err(anyhow::Error::msg)?.len();
            let summary = dispatch(
                &args.backend.name(None),
                args.backend.device,
                SummaryTask {
                    spec: &spec,
                    input,
                    classes,
                },
            )?;
            println!(
                "{} ({:?}) for {}x{}x{} {} images:\n{summary}",
                spec.name,
                spec.model,
                input[0],
                input[1],
                input[2],
                spec.data.dataset.name()
            );
            if !summary.clashes.is_empty() {
                bail!(
                    "{}: the model does not fit its input size (see the shape clash above)",
                    spec.name
                );
            }
            Ok(())
        }
        Command::Import(args) => {
            let spec = load_valid(&args.experiment, &Overrides::default())?;
            let task = ImportTask {
                spec: &spec,
                weights: &args.weights,
                out: &args.out,
            };
            let report = dispatch(&args.backend.name(None), args.backend.device, task)??;
            println!(
                "{}: {} tensors loaded into {}{}; saved {}",
                args.weights.display(),
                report.loaded.len(),
                spec.name,
                if report.ignored.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} num_batches_tracked counters ignored: Burn does not keep them)",
                        report.ignored.len()
                    )
                },
                args.out.display()
            );
            Ok(())
        }
        Command::Export(args) => {
            let run = open_run(&args.run)?;
            let ExportFormat::Safetensors = args.format;
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| args.run.join("model.safetensors"));
            let task = ExportTask {
                run: &run,
                out: &out,
            };
            let backend = args.backend.name(Some(&run.summary.backend));
            dispatch(&backend, args.backend.device, task)??;
            println!("{}", out.display());
            Ok(())
        }
        Command::Bench(args) => {
            let overrides = Overrides {
                layout: args.layout,
                ..Overrides::default()
            };
            let spec = load_valid(&args.experiment, &overrides)?;
            if args.steps == 0 {
                bail!("--steps must be at least 1");
            }
            let backend = args.backend.name(None);
            let options = kiln_experiments::bench::BenchOptions {
                locator: args.data.locator(false),
                warmup: args.warmup,
                steps: args.steps,
            };
            let report = dispatch(
                &backend,
                args.backend.device,
                BenchTask {
                    spec: &spec,
                    backend: &backend,
                    options: &options,
                },
            )?
            .with_context(|| format!("benchmarking {} on {backend}", spec.name))?;
            tracing::info!(
                "{} on {backend}: train {:.0} images/s, eval {:.0} images/s, data pipeline {:.0} images/s",
                spec.name,
                report.train_images_per_sec,
                report.eval_images_per_sec,
                report.pipeline_images_per_sec
            );
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Run(args) => {
            // An error.txt goes only into a folder this run made: never among another run's files.
            let fresh = args
                .run_folder
                .as_deref()
                .is_none_or(|dir| kiln_experiments::run_dir::is_new_or_empty(dir).unwrap_or(false));
            let outcome =
                run(args, !cli.quiet && std::io::stderr().is_terminal()).inspect_err(|e| {
                    if fresh {
                        record_failure(args, e)
                    }
                })?;
            let s = &outcome.summary;
            println!(
                "{}: test accuracy {:.2}% after {} epochs (best {:.2}% at epoch {}), {:.1} s, {:.0} train images/s",
                s.experiment,
                100.0 * s.final_test_accuracy,
                s.epochs,
                100.0 * s.best_test_accuracy,
                s.best_epoch,
                s.total_seconds,
                s.train_images_per_sec
            );
            println!("run folder: {}", outcome.dir.display());
            Ok(())
        }
    }
}

fn open_run(dir: &std::path::Path) -> Result<RunFolder> {
    Ok(RunFolder::open(dir)?)
}

fn predict(args: &PredictArgs) -> Result<()> {
    let run = open_run(&args.run)?;
    let task = PredictTask {
        run: &run,
        files: &args.images,
        top: args.top,
    };
    let backend = args.backend.name(Some(&run.summary.backend));
    let results = dispatch(&backend, args.backend.device, task)??;
    let mut failed = 0;
    for (file, result) in results {
        match result {
            Ok(ranked) => {
                let parts: Vec<String> = ranked
                    .iter()
                    .map(|(class, p)| format!("{class} {:.1}%", 100.0 * p))
                    .collect();
                println!("{}: {}", file.display(), parts.join(", "));
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} files could not be predicted (see above)",
            args.images.len()
        );
    }
    Ok(())
}

fn report(args: &ReportArgs) -> Result<()> {
    let runs = args
        .runs
        .iter()
        .map(|d| open_run(d))
        .collect::<Result<Vec<_>>>()?;
    for run in &runs {
        let page = kiln_report::write_run_report(run)?;
        println!("{}", page.display());
    }
    if runs.len() > 1 {
        let out = args.out.clone().unwrap_or_else(|| {
            PathBuf::from("runs/reports").join(run_dir::utc_timestamp(std::time::SystemTime::now()))
        });
        let page = kiln_report::write_comparison(&runs, &out)?;
        println!("{}", page.display());
    }
    Ok(())
}

struct PlotsTask<'a> {
    run: &'a RunFolder,
    locator: &'a Locator,
}

impl BackendTask for PlotsTask<'_> {
    type Output = Result<Vec<PathBuf>, kiln_experiments::RunError>;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output {
        kiln_report::redraw::<B>(self.run, self.locator, device)
    }
}

struct FeaturesTask<'a> {
    run: &'a RunFolder,
    input: &'a FeatureInput,
    locator: &'a Locator,
}

impl BackendTask for FeaturesTask<'_> {
    type Output = Result<Vec<PathBuf>, kiln_experiments::RunError>;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output {
        kiln_report::features::<B>(self.run, self.input, self.locator, device)
    }
}

struct ImportTask<'a> {
    spec: &'a ValidSpec,
    weights: &'a std::path::Path,
    out: &'a std::path::Path,
}

impl BackendTask for ImportTask<'_> {
    type Output = Result<kiln_models::ImportReport, kiln_experiments::RunError>;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output {
        kiln_experiments::import_pytorch::<B>(self.spec, self.weights, self.out, device)
    }
}

struct ExportTask<'a> {
    run: &'a RunFolder,
    out: &'a std::path::Path,
}

impl BackendTask for ExportTask<'_> {
    type Output = Result<(), kiln_experiments::RunError>;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output {
        let model = (self.run.model_input(), self.run.classes().len());
        let weights = self.run.dir.join(run_dir::MODEL);
        kiln_experiments::export_safetensors::<B>(&self.run.spec, model, &weights, self.out, device)
    }
}

struct PredictTask<'a> {
    run: &'a RunFolder,
    files: &'a [PathBuf],
    top: usize,
}

impl BackendTask for PredictTask<'_> {
    type Output =
        Result<Vec<kiln_experiments::inspect::FilePrediction>, kiln_experiments::RunError>;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output {
        kiln_experiments::inspect::predict_files::<B>(self.run, self.files, self.top, device)
    }
}

/// Leaves `error.txt` in the `--run-folder` of a run that failed, for whoever started it to
/// read: the message `kiln` prints, whole. Best effort: the error is printed anyway.
fn record_failure(args: &RunArgs, error: &anyhow::Error) {
    let Some(dir) = &args.run_folder else {
        return;
    };
    let path = dir.join(run_dir::ERROR);
    let written = std::fs::create_dir_all(dir).and_then(|()| {
        kiln_experiments::run_dir::write_atomic(&path, format!("{error:#}\n").as_bytes())
    });
    if let Err(e) = written {
        tracing::warn!("could not write {}: {e}", path.display());
    }
}

/// Resolves the experiment (or the run to resume) and dispatches on the backend name.
pub(crate) fn run(args: &RunArgs, progress: bool) -> Result<RunOutcome> {
    let stop = stop_on_ctrl_c();
    if let Some(dir) = &args.resume {
        return resume(args, dir, progress, stop);
    }
    let experiment = args
        .experiment
        .as_deref()
        .expect("clap requires an experiment without --resume");
    let spec = args.overrides.resolve(experiment)?;
    let options = RunOptions {
        runs_dir: args.runs_dir.clone(),
        run_folder: args.run_folder.clone(),
        backend: args.backend.name(None),
        locator: args.data.locator(progress),
        progress,
        init_weights: args.init_weights.clone(),
        logits_of: args.logits_of,
        stop,
        draw: Some(kiln_report::write_run_pictures),
    };
    let backend = &options.backend;
    dispatch(
        backend,
        args.backend.device,
        RunTask {
            spec: &spec,
            options: &options,
        },
    )?
    .with_context(|| format!("running {} on {backend}", spec.name))
}

fn resume(
    args: &RunArgs,
    dir: &std::path::Path,
    progress: bool,
    stop: Option<&'static AtomicBool>,
) -> Result<RunOutcome> {
    let o = &args.overrides;
    if o.epochs.is_some()
        || o.steps.is_some()
        || o.limit_train.is_some()
        || o.limit_test.is_some()
        || o.seed.is_some()
        || o.log_every.is_some()
        || o.layout.is_some()
    {
        bail!(
            "--resume goes on exactly as the run's config.toml says; only --checkpoint-every, \
             --backend, --device, --data-dir and --offline can be given with it"
        );
    }
    let start = RunStart::read(dir).map_err(anyhow::Error::msg)?;
    let options = RunOptions {
        backend: args.backend.name(Some(&start.backend)),
        locator: args.data.locator(progress),
        progress,
        stop,
        draw: Some(kiln_report::write_run_pictures),
        ..RunOptions::default()
    };
    let backend = &options.backend;
    dispatch(
        backend,
        args.backend.device,
        ResumeTask {
            dir,
            checkpoint_every: o.checkpoint_every,
            options: &options,
        },
    )?
    .with_context(|| format!("resuming {} on {backend}", dir.display()))
}

/// The first Ctrl-C (or SIGTERM) asks training to save a checkpoint and stop at the next step;
/// a second one exits at once. `None` where the handler cannot be installed (a second run in
/// the same process: the first run's flag is reused).
fn stop_on_ctrl_c() -> Option<&'static AtomicBool> {
    static STOP: AtomicBool = AtomicBool::new(false);
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let installed = *INSTALLED.get_or_init(|| {
        ctrlc::set_handler(|| {
            if STOP.swap(true, Ordering::SeqCst) {
                eprintln!("\nstopped at once: the run keeps its last checkpoint");
                std::process::exit(130);
            }
            eprintln!(
                "\nstopping after this step and saving a checkpoint (Ctrl-C again to quit at once)"
            );
        })
        .map_err(|e| tracing::warn!("Ctrl-C will stop training at once, without a checkpoint: {e}"))
        .is_ok()
    });
    installed.then_some(&STOP)
}

/// Work to do on a backend chosen at run time. (A trait, because closures cannot be generic.)
pub trait BackendTask {
    /// What the task gives back.
    type Output;
    /// Does the task on backend `B`'s `device`.
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output;
}

/// Runs `task` on the backend called `name`, on its device number `device` where it has
/// several (`None`: the backend's default device). This is the one `match` over backends.
///
/// A backend that fails at run time (no adapter, out of memory, an op it lacks) panics inside
/// Burn; the panic is caught here and returned as an error that names the backend, so callers
/// keep what they wrote before it.
pub fn dispatch<T: BackendTask>(name: &str, device: Option<usize>, task: T) -> Result<T::Output> {
    // Used by the arms of single-device backends, which a build may leave out.
    #[cfg_attr(
        not(any(
            feature = "cpu",
            feature = "ndarray",
            feature = "flex",
            feature = "tch"
        )),
        allow(unused_variables)
    )]
    let single = |name: &str| -> Result<()> {
        match device {
            Some(n) => bail!("backend {name:?} has one device; found --device {n}"),
            None => Ok(()),
        }
    };
    match name {
        #[cfg(feature = "cpu")]
        "cpu" => {
            single(name)?;
            type B = burn_autodiff::Autodiff<kiln_cpu::KilnCpu>;
            catch(name, || task.run::<B>(&kiln_cpu::KilnCpuDevice))
        }
        #[cfg(feature = "ndarray")]
        "ndarray" => {
            single(name)?;
            type B = burn_autodiff::Autodiff<burn_ndarray::NdArray<f32>>;
            catch(name, || task.run::<B>(&Default::default()))
        }
        #[cfg(feature = "flex")]
        "flex" => {
            single(name)?;
            type B = burn_autodiff::Autodiff<burn_flex::Flex<f32>>;
            catch(name, || task.run::<B>(&burn_flex::FlexDevice))
        }
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            type B = burn_autodiff::Autodiff<burn_wgpu::Wgpu<f32>>;
            let device = match device {
                None => burn_wgpu::WgpuDevice::DefaultDevice,
                Some(n) => burn_wgpu::WgpuDevice::DiscreteGpu(n),
            };
            catch(name, || task.run::<B>(&device))
        }
        #[cfg(feature = "tch")]
        "tch" => {
            single(name)?;
            type B = burn_autodiff::Autodiff<kiln_tch::KilnTch>;
            catch(name, || task.run::<B>(&kiln_tch::KilnTchDevice::Cpu))
        }
        #[cfg(feature = "tch-cuda")]
        "tch-cuda" => {
            type B = burn_autodiff::Autodiff<kiln_tch::KilnTch>;
            let device = kiln_tch::KilnTchDevice::Cuda(device.unwrap_or(0));
            catch(name, || task.run::<B>(&device))
        }
        #[cfg(feature = "cuda")]
        "cuda" => {
            type B = burn_autodiff::Autodiff<burn_cuda::Cuda<f32>>;
            let device = burn_cuda::CudaDevice::new(device.unwrap_or(0));
            catch(name, || task.run::<B>(&device))
        }
        other => bail!(unknown_backend(other)),
    }
}

/// Runs `f`, turning a panic into an error that names the backend and, where we know one, the
/// remedy.
#[allow(dead_code)] // unused only when no backend feature is on
fn catch<R>(backend: &str, f: impl FnOnce() -> R) -> Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        let cause = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("a panic without a message");
        backend_failure(backend, cause)
    })
}

/// The error for a backend that panicked with `cause`: it names the backend and, where Kiln
/// knows one, the remedy.
pub fn backend_failure(backend: &str, cause: &str) -> anyhow::Error {
    let hint = match backend {
        "wgpu" if cause.to_lowercase().contains("adapter") => {
            "\nno GPU adapter was found: install your GPU's Vulkan driver, or Mesa's software \
             Vulkan device (Debian/Ubuntu: apt-get install mesa-vulkan-drivers)"
        }
        "tch-cuda" | "cuda" if cause.to_lowercase().contains("cuda") => {
            "\nthis backend needs an NVIDIA GPU and its driver"
        }
        _ => "",
    };
    anyhow::anyhow!("backend {backend} failed: {cause}{hint}")
}

struct RunTask<'a> {
    spec: &'a ValidSpec,
    options: &'a RunOptions,
}

impl BackendTask for RunTask<'_> {
    type Output = Result<RunOutcome, kiln_experiments::RunError>;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output {
        kiln_experiments::run::<B>(self.spec, self.options, device)
    }
}

struct ResumeTask<'a> {
    dir: &'a std::path::Path,
    checkpoint_every: Option<usize>,
    options: &'a RunOptions,
}

impl BackendTask for ResumeTask<'_> {
    type Output = Result<RunOutcome, kiln_experiments::RunError>;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output {
        kiln_experiments::resume::<B>(self.dir, self.checkpoint_every, self.options, device)
    }
}

struct BenchTask<'a> {
    spec: &'a ValidSpec,
    backend: &'a str,
    options: &'a kiln_experiments::bench::BenchOptions,
}

impl BackendTask for BenchTask<'_> {
    type Output = Result<kiln_experiments::bench::BenchReport, kiln_experiments::RunError>;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output {
        kiln_experiments::bench::bench::<B>(self.spec, self.backend, self.options, device)
    }
}

struct SummaryTask<'a> {
    spec: &'a ExperimentSpec,
    input: [usize; 3],
    classes: usize,
}

impl BackendTask for SummaryTask<'_> {
    type Output = Summary;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Summary {
        self.spec
            .model
            .summary::<B::InnerBackend>(self.input, self.classes, device)
    }
}

fn unknown_backend(name: &str) -> String {
    let built: Vec<&str> = BACKENDS
        .iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| *n)
        .collect();
    let all: Vec<&str> = BACKENDS.iter().map(|(n, _)| *n).collect();
    if all.contains(&name) {
        format!(
            "backend {name:?} is not built into this binary (built: {}); build with `--features {name}` \
             or use `cargo xtask run-experiment <experiment> --backend {name}`",
            built.join(", ")
        )
    } else {
        format!(
            "unknown backend {name:?}{}; expected one of: {}",
            kiln_experiments::registry::did_you_mean(name, &all),
            all.join(", ")
        )
    }
}
