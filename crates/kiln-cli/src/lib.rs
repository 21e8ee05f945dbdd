//! The `kiln` command. This is the only place that names a concrete Burn backend: the
//! `--backend` name is matched once, here, and everything below is generic.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kiln_data::Locator;
use kiln_experiments::{ExperimentSpec, Layout, Overrides, RunOptions, RunOutcome};
use kiln_models::Summary;

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Train classic CNNs on any Burn backend"
)]
pub struct Cli {
    /// Only warnings and errors; no progress bars.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Log lines as text for people or JSON for machines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train an experiment and write its run folder.
    Run(RunArgs),
    /// List the built-in experiments.
    List,
    /// Print an experiment's network layer by layer: output shape and parameters for the
    /// experiment's input size, and any layer that size does not fit.
    Summary(SummaryArgs),
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// A built-in experiment name (see `kiln list`) or a path to an experiment .toml file.
    pub experiment: String,
    /// Backend to build the model on (the table is the same on every backend).
    #[arg(long, default_value = "ndarray")]
    pub backend: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A built-in experiment name (see `kiln list`) or a path to an experiment .toml file.
    pub experiment: String,
    /// Backend to train on; see BACKENDS below for the names.
    #[arg(long, default_value = "ndarray")]
    pub backend: String,
    /// Override the recipe's number of epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Train on the first N training images only.
    #[arg(long, value_name = "N")]
    pub limit_train: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long, value_name = "N")]
    pub limit_test: Option<usize>,
    /// Override the recipe's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Look for the data set's files here first (then $KILN_DATA_DIR, the user cache and the
    /// system folders); downloads go here too.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Read the data set in this layout instead of the experiment's: idx, binary, python or
    /// folder (`DIR/{train,test}/<class>/*.jpg|png` under --data-dir).
    #[arg(long, value_name = "LAYOUT")]
    pub layout: Option<Layout>,
    /// Never download; if the files are missing, say which files to place where.
    #[arg(long)]
    pub offline: bool,
    /// Run folders are created under DIR/<experiment>/.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
}

/// Backends this binary was built with, by `--backend` name. Each is a cargo feature of
/// `kiln-cli`; `cargo xtask run-experiment --backend NAME` turns the right one on.
pub const BACKENDS: &[(&str, bool)] = &[("ndarray", cfg!(feature = "ndarray"))];

/// Parses the arguments, sets up logging and runs the command.
pub fn main_with_args<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
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

pub fn execute(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::List => {
            for spec in kiln_experiments::builtin() {
                println!("{:<28} {}", spec.name, spec.description);
            }
            Ok(())
        }
        Command::Summary(args) => {
            let spec = kiln_experiments::load(&args.experiment).map_err(anyhow::Error::msg)?;
            let input = spec.data.input_shape();
            let summary = dispatch(&args.backend, SummaryTask { spec: &spec, input })?;
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
        Command::Run(args) => {
            let outcome = run(args, !cli.quiet && std::io::stderr().is_terminal())?;
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

/// Resolves the experiment and dispatches on the backend name.
pub fn run(args: &RunArgs, progress: bool) -> Result<RunOutcome> {
    let mut spec: ExperimentSpec =
        kiln_experiments::load(&args.experiment).map_err(anyhow::Error::msg)?;
    spec.apply(&Overrides {
        epochs: args.epochs,
        seed: args.seed,
        limit_train: args.limit_train,
        limit_test: args.limit_test,
        layout: args.layout,
    });
    spec.validate()
        .map_err(|e| anyhow::anyhow!("{} (after command-line overrides): {e}", args.experiment))?;

    let mut locator = Locator::from_env(args.data_dir.clone(), args.offline);
    locator.progress = progress;
    let options = RunOptions {
        runs_dir: args.runs_dir.clone(),
        backend: args.backend.clone(),
        locator,
        progress,
    };
    dispatch(
        &args.backend,
        RunTask {
            spec: &spec,
            options: &options,
        },
    )?
    .with_context(|| format!("running {} on {}", spec.name, args.backend))
}

/// Work to do on a backend chosen at run time. (A trait, because closures cannot be generic.)
pub trait BackendTask {
    type Output;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output;
}

/// Runs `task` on the backend called `name`: the one `match` over backends.
pub fn dispatch<T: BackendTask>(name: &str, task: T) -> Result<T::Output> {
    match name {
        #[cfg(feature = "ndarray")]
        "ndarray" => {
            type B = burn_autodiff::Autodiff<burn_ndarray::NdArray<f32>>;
            Ok(task.run::<B>(&Default::default()))
        }
        other => bail!(unknown_backend(other)),
    }
}

struct RunTask<'a> {
    spec: &'a ExperimentSpec,
    options: &'a RunOptions,
}

impl BackendTask for RunTask<'_> {
    type Output = Result<RunOutcome, kiln_experiments::RunError>;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output {
        kiln_experiments::run::<B>(self.spec, self.options, device)
    }
}

struct SummaryTask<'a> {
    spec: &'a ExperimentSpec,
    input: [usize; 3],
}

impl BackendTask for SummaryTask<'_> {
    type Output = Summary;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Summary {
        let classes = self.spec.data.dataset.classes().len();
        self.spec.model.summary::<B>(self.input, classes, device)
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
            "unknown backend {name:?}; expected one of: {}",
            all.join(", ")
        )
    }
}
