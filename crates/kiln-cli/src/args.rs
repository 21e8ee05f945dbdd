//! The command line: every command, flag and default, apart from what the commands do
//! (`lib.rs`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kiln_data::Locator;
use kiln_experiments::{Layout, Overrides};

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
    /// Compute with denormal floats instead of flushing them to zero. Flushing (the default)
    /// keeps late epochs as fast as early ones on the CPU and changes nothing a float32
    /// network resolves; each run's summary.json records which was used.
    #[arg(long, global = true)]
    pub keep_denormals: bool,
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
    /// Train one experiment data-parallel on several processes of this machine (or of the
    /// hosts in --hostfile): starts `mpirun -np N kiln run ARGS...` with what it needs (as
    /// root too), each process with its share of the cores. Needs a kiln built with the `mpi`
    /// feature and Open MPI's mpirun; `mpirun` and `srun --mpi=pmix` can start `kiln run`
    /// directly as well.
    Launch(LaunchArgs),
    /// List the built-in experiments.
    List,
    /// Print an experiment's network layer by layer: output shape and parameters for the
    /// experiment's input size, and any layer that size does not fit.
    Summary(SummaryArgs),
    /// Train one experiment on several backends from the same initial weights and batch order,
    /// and report speed, memory, accuracy and how far each backend's numbers are from the
    /// first's (runs/compare/<experiment>-<timestamp>/report.md and report.json).
    Compare(CompareArgs),
    /// List the backends and whether this binary was built with each.
    Backends,
    /// Train an experiment at every point of a grid (`--set KEY=V1,V2` per axis, times
    /// `--backends`), each point an ordinary run folder under runs/sweeps/<name>-<timestamp>/:
    /// here, --jobs at a time, or with --slurm as one Slurm job array. Ends with the table of
    /// `kiln sweep-status`.
    Sweep(SweepArgs),
    /// The table of a sweep's points, finished, running, stopped or failed: ranked by
    /// validation accuracy where the experiment has a validation split (never by the test set),
    /// each with its settings, its rerun command and, where it failed, why. Written to
    /// DIR/status.md, status.json and status.csv and printed.
    SweepStatus(SweepStatusArgs),
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
pub struct SweepArgs {
    /// A built-in experiment name (see `kiln list`) or a path to an experiment .toml file.
    pub experiment: String,
    /// Backends, comma-separated: every point of the grid runs on each (default: the default
    /// backend).
    #[arg(long, value_delimiter = ',')]
    pub backends: Vec<String>,
    /// How many points run at once: here, each with its share of the cores (default 1); on
    /// Slurm, the job array's limit on tasks running at once (default none).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// The sweep's name, which starts its folder's (default: the experiment's).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// The sweep folder is created under DIR/sweeps/.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
    #[command(flatten)]
    pub slurm: crate::slurm::SlurmArgs,
}

#[derive(Debug, Args)]
pub struct SweepStatusArgs {
    /// A sweep folder (runs/sweeps/<name>-<timestamp>).
    pub dir: PathBuf,
    /// What to print (all three are written into the folder).
    #[arg(long, value_enum, default_value = "markdown")]
    pub format: StatusFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Markdown,
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// How many processes (MPI ranks) train together; the recipe's batch is split over them.
    #[arg(long, short = 'n', value_name = "N")]
    pub procs: usize,
    /// Threads per process (RAYON_NUM_THREADS and OMP_NUM_THREADS). Default: this machine's
    /// cores over the processes, at least 1.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Open MPI hostfile: the machines to start the processes on (each line `host slots=N`);
    /// the run folder must be on a file system they share.
    #[arg(long, value_name = "FILE")]
    pub hostfile: Option<PathBuf>,
    /// Everything `kiln run` takes: the experiment and its options (or --resume RUN).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub run_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
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
pub enum ExportFormat {
    Safetensors,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
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
pub struct PlotsArgs {
    /// Run folders (runs/<experiment>/<backend>-<timestamp>).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Debug, Args)]
pub struct FeaturesArgs {
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
pub struct PredictArgs {
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
pub struct ReportArgs {
    /// Run folders.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Where the comparison page of several runs goes (default runs/reports/<timestamp>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// A built-in experiment name (see `kiln list`) or a path to an experiment .toml file.
    pub experiment: String,
    /// Backend to build the model on (the table is the same on every backend).
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Which backend, and which of its devices.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    #[arg(long, help = crate::backends::help())]
    pub backend: Option<String>,
    /// Device number, for backends with several (wgpu: the Nth discrete GPU; tch-cuda and cuda:
    /// the CUDA device). Default: the backend's default device.
    #[arg(long, value_name = "N")]
    pub device: Option<usize>,
}

impl BackendArgs {
    /// `--backend`, else `preferred` where this binary has it, else the first it has.
    pub fn name(&self, preferred: Option<&str>) -> String {
        crate::backends::backend_name(self.backend.as_deref(), preferred)
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
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
pub struct RunArgs {
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
pub struct OverrideArgs {
    /// Override the recipe's number of epochs (a fraction ends the last one early: 9.9).
    #[arg(long)]
    pub epochs: Option<f64>,
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
    /// Set any key of the experiment's TOML, after the flags above: KEY=VALUE with the value in
    /// TOML or a plain word (`--set recipe.optimizer.lr=0.05 --set recipe.optimizer.name=sgd`).
    /// Repeatable. In `kiln sweep`, KEY=V1,V2,... lists the values of one axis of the grid.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl OverrideArgs {
    /// The flags and every `--set`, in that order.
    pub fn overrides(&self) -> anyhow::Result<Overrides> {
        let mut overrides = self.flag_overrides();
        for assignment in &self.set {
            overrides = overrides.set_text(assignment)?;
        }
        Ok(overrides)
    }

    /// The one list of override flags: each flag's value under the spec key it sets. A new
    /// flag is its field above and its line here.
    pub fn flag_overrides(&self) -> Overrides {
        Overrides::default()
            .set("recipe.epochs", self.epochs)
            .set("recipe.max_steps", self.steps)
            .set("data.limit_train", self.limit_train)
            .set("data.limit_test", self.limit_test)
            .set("recipe.seed", self.seed)
            .set("recipe.log_every", self.log_every)
            .set("recipe.checkpoint_every", self.checkpoint_every)
            .set("data.layout", self.layout)
    }
}

/// Where the data set's files are.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Look for the data set's files here first (then $KILN_DATA_DIR, the user cache and the
    /// system folders); downloads go here too.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Never download; if the files are missing, say which files to place where.
    #[arg(long)]
    pub offline: bool,
}

impl DataArgs {
    pub fn locator(&self, progress: bool) -> Locator {
        let mut locator = Locator::from_env(self.data_dir.clone(), self.offline);
        locator.progress = progress;
        locator
    }

    /// These options for a child `kiln run` (of `kiln compare` or `kiln sweep`), the folder
    /// made absolute: the child may run elsewhere (a Slurm job starts in its own folder).
    pub fn child_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(dir) = &self.data_dir {
            let dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
            args.extend(["--data-dir".to_string(), dir.to_string_lossy().into_owned()]);
        }
        if self.offline {
            args.push("--offline".to_string());
        }
        args
    }
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// A built-in experiment name (see `kiln list`) or a path to an experiment .toml file.
    #[arg(required_unless_present = "report")]
    pub experiment: Option<String>,
    /// Backends to compare, comma-separated; the first is the reference the others are
    /// measured against.
    #[arg(long, value_delimiter = ',', required_unless_present = "report")]
    pub backends: Vec<String>,
    /// Write the report of an existing comparison folder from its runs as they stand (what
    /// the last job of `kiln compare --slurm` does once the backends' jobs have ended).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["experiment", "slurm"])]
    pub report: Option<PathBuf>,
    /// With --slurm: each backend is its own job; the backends that run on a GPU (wgpu,
    /// tch-cuda, cuda) go to this partition instead of --partition's.
    #[arg(long, value_name = "NAME", requires = "slurm")]
    pub gpu_partition: Option<String>,
    /// With --slurm: the generic resources of the GPU backends' jobs (e.g. gpu:1).
    #[arg(long, value_name = "GRES", requires = "slurm")]
    pub gpu_gres: Option<String>,
    #[command(flatten)]
    pub slurm: crate::slurm::SlurmArgs,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Number of test images whose logits are compared.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub logits_of: usize,
    /// The comparison folder is created under DIR/compare/.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
}
