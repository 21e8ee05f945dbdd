//! The `kiln` command. This is the only place that names a concrete Burn backend: the
//! `--backend` name is matched once (`backends.rs`), and everything below is generic.
//!
//! `args.rs` holds the command line, `backend_table.rs` the backends, this file what each
//! command does.

#![warn(missing_docs)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use clap::Parser;
use kiln_experiments::run_dir;
use kiln_experiments::{Overrides, RunFolder, RunOptions, RunOutcome, RunStart, ValidSpec};
use kiln_report::FeatureInput;

mod args;
pub mod backend_table;
mod backends;
mod compare;
mod parallel;
mod slurm;
mod sweep;

use args::{
    BenchArgs, Cli, Command, ExportArgs, ExportFormat, FeaturesArgs, ImportArgs, LaunchArgs,
    LogFormat, PlotsArgs, PredictArgs, ReportArgs, RunArgs, SummaryArgs,
};
use backends::with_backend;
pub use backends::{backend_failure, backend_name, dispatch, is_built, BackendTask};

/// The exit status of a run stopped on request (Ctrl-C, SIGTERM, SIGUSR1) that saved a
/// checkpoint to go on from: EX_TEMPFAIL, "try again later", so a job script can tell it from
/// a failure and requeue.
pub const STOPPED_EXIT_CODE: u8 = 75;

/// Prints `result`'s error, if any, with its whole chain ("running X on ndarray: <file>: <what
/// was wrong>"), and gives the process's exit status: 0, [`STOPPED_EXIT_CODE`] for a run
/// stopped on request (printed as "stopped:", since the user asked for it), 1 for any other
/// error.
pub fn exit_status(result: Result<()>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(e) if stopped_on_request(&e) => {
            eprintln!("stopped: {e:#}");
            STOPPED_EXIT_CODE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// Whether `error` is a run that stopped on request, its checkpoint saved.
pub fn stopped_on_request(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let interrupted = matches!(
            cause.downcast_ref::<kiln_experiments::RunError>(),
            Some(kiln_experiments::RunError::Fit {
                error: kiln_train::FitError::Interrupted { .. },
                ..
            })
        );
        interrupted || cause.is::<StoppedRanks>()
    })
}

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

/// Kiln's own crates log at info (warn with `--quiet`), its dependencies at warn: Burn's and
/// CubeCL's info lines (autotune caches, one line per tuned kernel) are for their developers.
/// A directive's target matches every target it begins, so `kiln` covers the binary and every
/// `kiln_*` crate, new ones too. `KILN_LOG` (an `EnvFilter`, e.g. `KILN_LOG=info` or
/// `KILN_LOG=cubecl=debug`) replaces it.
fn log_filter(quiet: bool) -> String {
    let kiln = if quiet { "warn" } else { "info" };
    format!("warn,kiln={kiln}")
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    // Ranks other than 0 of a data-parallel run would repeat rank 0's lines.
    let quiet = cli.quiet || parallel::is_follower();
    let filter =
        EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| EnvFilter::new(log_filter(quiet)));
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

fn execute(cli: &Cli) -> Result<()> {
    let progress = !cli.quiet && std::io::stderr().is_terminal();
    match &cli.command {
        Command::List => {
            for spec in kiln_experiments::builtin() {
                println!("{:<28} {}", spec.name, spec.description);
            }
            Ok(())
        }
        Command::Backends => {
            backends::list();
            Ok(())
        }
        Command::Compare(args) => compare::compare(args, cli.quiet),
        Command::Sweep(args) => sweep::sweep(args, cli.quiet),
        Command::SweepStatus(args) => sweep::sweep_status(args),
        Command::Run(args) => run_command(args, progress),
        Command::Launch(args) => launch(args, cli),
        Command::Summary(args) => summary(args),
        Command::Bench(args) => bench(args),
        Command::Plots(args) => plots(args, progress),
        Command::Features(args) => features(args, progress),
        Command::Predict(args) => predict(args),
        Command::Report(args) => report(args),
        Command::Import(args) => import(args),
        Command::Export(args) => export(args),
    }
}

/// A built-in experiment or experiment file with `overrides` applied, checked once: a refused
/// key that a flag set is blamed on the flags, any other on the file.
fn load_valid(name_or_path: &str, overrides: &Overrides) -> Result<ValidSpec> {
    let mut spec = kiln_experiments::load(name_or_path).map_err(anyhow::Error::msg)?;
    let on_flags = |e| anyhow::anyhow!("{name_or_path} (after command-line overrides): {e}");
    spec.apply(overrides).map_err(on_flags)?;
    spec.validate().map_err(|e| {
        if overrides.keys().contains(&e.key.as_str()) {
            on_flags(e)
        } else {
            e.in_file(name_or_path).into()
        }
    })
}

/// A JSON file of a folder Kiln wrote; an error names the file and what was wrong with it.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: unexpected contents", path.display()))
}

fn open_run(dir: &Path) -> Result<RunFolder> {
    Ok(RunFolder::open(dir)?)
}

fn run_command(args: &RunArgs, progress: bool) -> Result<()> {
    // An error.txt goes only into a folder this run made: never among another run's files.
    let fresh = args
        .run_folder
        .as_deref()
        .is_none_or(|dir| run_dir::is_new_or_empty(dir).unwrap_or(false));
    let outcome = run(args, progress).inspect_err(|e| {
        if fresh {
            record_failure(args, e)
        }
    })?;
    if parallel::is_follower() {
        return Ok(()); // rank 0 prints the results
    }
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

fn summary(args: &SummaryArgs) -> Result<()> {
    let spec = load_valid(&args.experiment, &Overrides::default())?;
    let input = spec.data.input_shape().map_err(anyhow::Error::msg)?;
    let classes = spec.data.classes().map_err(anyhow::Error::msg)?.len();
    let summary = with_backend!(
        &args.backend.name(None),
        args.backend.device,
        |B, device| {
            spec.model
                .summary::<<B as burn::tensor::backend::AutodiffBackend>::InnerBackend>(
                    input, classes, device,
                )
        }
    )?
    .map_err(|e| anyhow::anyhow!("{}: {e}", spec.name))?;
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

fn bench(args: &BenchArgs) -> Result<()> {
    let overrides = Overrides::default().set("data.layout", args.layout);
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
    let report = with_backend!(&backend, args.backend.device, |B, device| {
        kiln_experiments::bench::bench::<B>(&spec, &backend, &options, device)
    })?
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

fn plots(args: &PlotsArgs, progress: bool) -> Result<()> {
    let locator = args.data.locator(progress);
    for dir in &args.runs {
        let run = open_run(dir)?;
        let backend = args.backend.name(Some(&run.summary.backend));
        let files = with_backend!(&backend, args.backend.device, |B, device| {
            kiln_report::redraw::<B>(&run, &locator, device)
        })??;
        println!(
            "{}: {} pictures in {}",
            dir.display(),
            files.len(),
            run.plots_dir().display()
        );
    }
    Ok(())
}

fn features(args: &FeaturesArgs, progress: bool) -> Result<()> {
    let run = open_run(&args.run)?;
    let input = match &args.image {
        Some(file) => FeatureInput::File(file.clone()),
        None => FeatureInput::TestIndex(args.index.unwrap_or(0)),
    };
    let locator = args.data.locator(progress);
    let backend = args.backend.name(Some(&run.summary.backend));
    let files = with_backend!(&backend, args.backend.device, |B, device| {
        kiln_report::features::<B>(&run, &input, &locator, device)
    })??;
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}

fn import(args: &ImportArgs) -> Result<()> {
    let spec = load_valid(&args.experiment, &Overrides::default())?;
    let report = with_backend!(
        &args.backend.name(None),
        args.backend.device,
        |B, device| {
            kiln_experiments::import_pytorch::<B>(&spec, &args.weights, &args.out, device)
        }
    )??;
    let ignored = if report.ignored.is_empty() {
        String::new()
    } else {
        format!(
            " ({} num_batches_tracked counters ignored: Burn does not keep them)",
            report.ignored.len()
        )
    };
    println!(
        "{}: {} tensors loaded into {}{ignored}; saved {}",
        args.weights.display(),
        report.loaded.len(),
        spec.name,
        args.out.display()
    );
    Ok(())
}

fn export(args: &ExportArgs) -> Result<()> {
    let run = open_run(&args.run)?;
    let ExportFormat::Safetensors = args.format;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.run.join("model.safetensors"));
    let model = (run.model_input(), run.classes().len());
    let weights = run.dir.join(run_dir::MODEL);
    let backend = args.backend.name(Some(&run.summary.backend));
    with_backend!(&backend, args.backend.device, |B, device| {
        kiln_experiments::export_safetensors::<B>(&run.spec, model, &weights, &out, device)
    })??;
    println!("{}", out.display());
    Ok(())
}

fn predict(args: &PredictArgs) -> Result<()> {
    let run = open_run(&args.run)?;
    let backend = args.backend.name(Some(&run.summary.backend));
    let results = with_backend!(&backend, args.backend.device, |B, device| {
        kiln_experiments::inspect::predict_files::<B>(&run, &args.images, args.top, device)
    })??;
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

/// Leaves `error.txt` in the `--run-folder` of a run that failed, for whoever started it to
/// read: the message `kiln` prints, whole. Best effort: the error is printed anyway.
fn record_failure(args: &RunArgs, error: &anyhow::Error) {
    let Some(dir) = &args.run_folder else {
        return;
    };
    let path = dir.join(run_dir::ERROR);
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| run_dir::write_atomic(&path, format!("{error:#}\n").as_bytes()));
    if let Err(e) = written {
        tracing::warn!("could not write {}: {e}", path.display());
    }
}

/// Resolves the experiment (or the run to resume) and runs it on the chosen backend.
fn run(args: &RunArgs, progress: bool) -> Result<RunOutcome> {
    let stop = stop_on_ctrl_c();
    parallel::with_ranks(|ranks| match &args.resume {
        Some(dir) => resume(args, dir, progress, stop, ranks),
        None => start(args, progress, stop, ranks),
    })
}

fn start(
    args: &RunArgs,
    progress: bool,
    stop: Option<&'static AtomicBool>,
    parallel: Option<&'static dyn kiln_train::Collective>,
) -> Result<RunOutcome> {
    let experiment = args
        .experiment
        .as_deref()
        .expect("clap requires an experiment without --resume");
    let spec = load_valid(experiment, &args.overrides.overrides()?)?;
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
        parallel,
    };
    let backend = &options.backend;
    backends::announce(backend);
    let device = parallel::rank_device(backend, args.backend.device);
    with_backend!(backend, device, |B, device| {
        kiln_experiments::run::<B>(&spec, &options, device)
    })?
    .with_context(|| format!("running {} on {backend}", spec.name))
}

fn resume(
    args: &RunArgs,
    dir: &Path,
    progress: bool,
    stop: Option<&'static AtomicBool>,
    parallel: Option<&'static dyn kiln_train::Collective>,
) -> Result<RunOutcome> {
    let overrides = args.overrides.overrides()?;
    if overrides
        .keys()
        .iter()
        .any(|key| *key != "recipe.checkpoint_every")
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
        parallel,
        ..RunOptions::default()
    };
    let backend = &options.backend;
    let checkpoint_every = args.overrides.checkpoint_every;
    backends::announce(backend);
    let device = parallel::rank_device(backend, args.backend.device);
    with_backend!(backend, device, |B, device| {
        kiln_experiments::resume::<B>(dir, checkpoint_every, &options, device)
    })?
    .with_context(|| format!("resuming {} on {backend}", dir.display()))
}

/// `kiln launch`: the global flags given to it go to every `kiln run` it starts.
fn launch(args: &LaunchArgs, cli: &Cli) -> Result<()> {
    let mut global = Vec::new();
    if cli.quiet {
        global.push("--quiet".to_string());
    }
    if cli.keep_denormals {
        global.push("--keep-denormals".to_string());
    }
    if cli.log_format == LogFormat::Json {
        global.extend(["--log-format".to_string(), "json".to_string()]);
    }
    let status = parallel::launch(args, &global)?;
    match status.code() {
        Some(0) => Ok(()),
        // The ranks stopped on request, together, with a checkpoint: say so by the status too.
        Some(code) if code == i32::from(STOPPED_EXIT_CODE) => Err(anyhow::Error::new(StoppedRanks)),
        _ => bail!("mpirun ended with {status} (the ranks' errors are above)"),
    }
}

/// `kiln launch`'s ranks stopped on request (each said so, with the command that resumes).
#[derive(Debug)]
struct StoppedRanks;

impl std::fmt::Display for StoppedRanks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the ranks stopped on request; the run folder keeps their checkpoint")
    }
}

impl std::error::Error for StoppedRanks {}

/// Set by the first Ctrl-C, SIGTERM or SIGUSR1: training saves a checkpoint and stops at the
/// next step.
static STOP: AtomicBool = AtomicBool::new(false);

/// The first Ctrl-C (or SIGTERM, which Slurm sends at a time limit, a preemption or `scancel`)
/// asks training to save a checkpoint and stop at the next step; a second one exits at once.
/// SIGUSR1 asks the same, silently: the signal `sbatch --signal=USR1@SECONDS` sends that long
/// before a job's time limit. `None` where the handler cannot be installed (a second run in
/// the same process: the first run's flag is reused).
fn stop_on_ctrl_c() -> Option<&'static AtomicBool> {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let installed = *INSTALLED.get_or_init(|| {
        #[cfg(unix)]
        {
            extern "C" fn on_usr1(_: libc::c_int) {
                // An atomic store is all a signal handler may safely do here.
                STOP.store(true, Ordering::SeqCst);
            }
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            unsafe {
                let handler: extern "C" fn(libc::c_int) = on_usr1;
                libc::signal(libc::SIGUSR1, handler as libc::sighandler_t);
            }
        }
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
