//! The run folder: the one place its format is written down, named and read back.
//!
//! `kiln run` makes `runs/<experiment>/<backend>-<timestamp>/` (or the folder `--run-folder`
//! names) and writes, each file atomically (a temporary file, then a rename):
//!
//! | file | written | holds |
//! | --- | --- | --- |
//! | [`CONFIG`] `config.toml` | before training | the resolved experiment, overrides applied |
//! | [`RUN_START`] `run.json` | before training | [`RunStart`]: what `--resume` needs besides the config |
//! | [`LAYERS`] `layers.txt` | before training | the network's layer table for the data's shape |
//! | [`METRICS`] `metrics.jsonl` | as it trains | one [`kiln_train::Event`] a line ([`read_events`]) |
//! | [`CHECKPOINTS`] `checkpoints/` | as it trains | the newest two checkpoints, removed at the end |
//! | [`LOGITS`] `logits.json` | at the end, where asked | [`FixedBatchLogits`] |
//! | [`MODEL`] `model.mpk` | at the end | the trained weights, Burn's named MessagePack |
//! | [`PLOTS`] `plots/` | at the end, where asked | the pictures (`kiln-report`) |
//! | [`REPORT`] `index.html` | by `kiln report` | the run's HTML page |
//! | [`SUMMARY`] `summary.json` | last | [`RunSummary`]: a run with one has finished |
//! | [`ERROR`] `error.txt` | when `kiln` fails | the error, for `kiln compare` to read |
//!
//! [`RunFolder::open`] reads a finished run back.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_data::{DataError, ImageBatcher, Normalize};
use kiln_train::{Checkpoint, CheckpointState, Event};
use serde::{Deserialize, Serialize};

use crate::error::RunError;
use crate::ValidSpec;

/// `run.json`: what a run was started with that its `config.toml` does not say, written before
/// training so `kiln run --resume` can go on the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStart {
    /// The experiment's name.
    pub experiment: String,
    /// The backend's name, as `--backend` takes it.
    pub backend: String,
    /// Whether training flushes denormal floats to zero, which changes results slightly.
    pub flush_denormals: bool,
    /// The version of Kiln that started the run.
    pub kiln_version: String,
    /// `--data-dir` as given at the start, made absolute: where `--resume` reads the data from
    /// unless given another. (Absent: the run looked in the usual places.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

impl RunStart {
    /// Reads `run.json` of the run folder `run`; the error names the file and what is wrong.
    pub fn read(run: &Path) -> Result<RunStart, String> {
        let path = run.join(RUN_START);
        let text = fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: cannot read it ({e}); runs of Kiln before 0.2's checkpoints cannot be resumed",
                path.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: not a run.json: {e}", path.display()))
    }
}

/// The resolved experiment.
pub const CONFIG: &str = "config.toml";
/// The metrics and settings for TensorBoard ([`crate::tensorboard`]); "tfevents" in the name
/// is how TensorBoard finds event files.
pub const TENSORBOARD: &str = "events.out.tfevents.kiln";
/// [`RunStart`].
pub const RUN_START: &str = "run.json";
/// The layer table.
pub const LAYERS: &str = "layers.txt";
/// The events, one JSON object a line.
pub const METRICS: &str = "metrics.jsonl";
/// The checkpoints' folder.
pub const CHECKPOINTS: &str = "checkpoints";
/// [`FixedBatchLogits`].
pub const LOGITS: &str = "logits.json";
/// The trained weights (and, inside a checkpoint, the weights so far).
pub const MODEL: &str = "model.mpk";
/// The pictures' folder.
pub const PLOTS: &str = "plots";
/// The HTML page of a run (and of a `kiln compare` folder).
pub const REPORT: &str = "index.html";
/// [`RunSummary`], written last.
pub const SUMMARY: &str = "summary.json";
/// Why `kiln` failed.
pub const ERROR: &str = "error.txt";
const STATE: &str = "state.json";
const OPTIMIZER: &str = "optimizer.mpk";
/// The lookahead average of the weights, in a checkpoint of a recipe with one.
const LOOKAHEAD: &str = "lookahead.mpk";
/// How many checkpoints a run folder keeps: the newest, and one more should it be unreadable.
const KEEP: usize = 2;

/// Saves `checkpoint` as `checkpoints/epoch-EEEE-batch-BBBBBB/` of `run` (names sort in the
/// order they were written), then deletes all but the newest two. The folder is written under
/// a temporary name, every file and the folder synced, then renamed into place and the
/// parent synced: a crash at any moment leaves the previous checkpoints whole.
pub fn save_checkpoint(run: &Path, checkpoint: &Checkpoint) -> io::Result<PathBuf> {
    let root = run.join(CHECKPOINTS);
    fs::create_dir_all(&root)?;
    let state = &checkpoint.state;
    let name = format!("epoch-{:04}-batch-{:06}", state.epoch, state.batch);
    let partial = root.join(format!(".partial-{name}"));
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    fs::create_dir(&partial)?;
    let json = serde_json::to_vec_pretty(state).expect("a checkpoint state always serialises");
    let files = [
        (STATE, Some(json.as_slice())),
        (MODEL, Some(checkpoint.model.as_slice())),
        (OPTIMIZER, Some(checkpoint.optimizer.as_slice())),
        (LOOKAHEAD, checkpoint.lookahead.as_deref()),
    ];
    for (file, bytes) in files.into_iter().filter_map(|(f, b)| Some((f, b?))) {
        let mut out = fs::File::create(partial.join(file))?;
        out.write_all(bytes)?;
        out.sync_all()?;
        test_kill_point();
    }
    sync_dir(&partial)?;
    let dest = root.join(&name);
    if dest.exists() {
        // Only a checkpoint of the very same position, from an earlier try of it.
        fs::remove_dir_all(&dest)?;
    }
    fs::rename(&partial, &dest)?;
    sync_dir(&root)?;
    let mut kept = checkpoint_dirs(&root)?;
    kept.truncate(kept.len().saturating_sub(KEEP));
    for old in kept {
        fs::remove_dir_all(old)?;
    }
    Ok(dest)
}

/// The newest checkpoint of `run` that reads whole (an older one, with a warning, where the
/// newest does not), or `None` where it has none.
pub fn latest_checkpoint(run: &Path) -> Result<Option<(PathBuf, Checkpoint)>, String> {
    let root = run.join(CHECKPOINTS);
    if !root.is_dir() {
        return Ok(None);
    }
    let dirs = checkpoint_dirs(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut failure = None;
    for dir in dirs.into_iter().rev() {
        match read_checkpoint(&dir) {
            Ok(checkpoint) => {
                if let Some(e) = failure {
                    tracing::warn!("{e}; resuming from the checkpoint before it");
                }
                return Ok(Some((dir, checkpoint)));
            }
            Err(e) if failure.is_none() => failure = Some(e),
            Err(e) => return Err(format!("{}; and {e}", failure.unwrap_or_default())),
        }
    }
    failure.map_or(Ok(None), Err)
}

/// Deletes `run`'s checkpoints: a finished run's final weights are in `model.mpk`.
pub fn remove_checkpoints(run: &Path) -> io::Result<()> {
    match fs::remove_dir_all(run.join(CHECKPOINTS)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn read_checkpoint(dir: &Path) -> Result<Checkpoint, String> {
    let read = |file: &str| {
        let path = dir.join(file);
        fs::read(&path).map_err(|e| format!("{}: cannot read it: {e}", path.display()))
    };
    let state_path = dir.join(STATE);
    let state: CheckpointState = serde_json::from_slice(&read(STATE)?)
        .map_err(|e| format!("{}: not a checkpoint state: {e}", state_path.display()))?;
    Ok(Checkpoint {
        state,
        model: read(MODEL)?,
        optimizer: read(OPTIMIZER)?,
        lookahead: dir
            .join(LOOKAHEAD)
            .exists()
            .then(|| read(LOOKAHEAD))
            .transpose()?,
    })
}

/// The finished checkpoint folders under `root`, oldest first.
fn checkpoint_dirs(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("epoch-"))
        })
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Makes a rename or a new file in `dir` durable (Unix; elsewhere renames are already).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// For the resume tests only: with `KILN_TEST_KILL_AT_CHECKPOINT_FILE=N`, the process kills
/// itself with SIGKILL after writing the N-th checkpoint file of its life, in the middle of a
/// checkpoint, which a test cannot hit reliably from outside.
fn test_kill_point() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static WRITTEN: AtomicUsize = AtomicUsize::new(0);
    let Some(n) = std::env::var("KILN_TEST_KILL_AT_CHECKPOINT_FILE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    if WRITTEN.fetch_add(1, Ordering::SeqCst) + 1 == n {
        #[cfg(unix)]
        // SAFETY: kill(2) on our own pid; it does not return.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        std::process::abort();
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader (or a crash) never sees half a file and an older complete file survives a failure.
/// The file gets the permissions `File::create` gives (0o666 less the umask), not tempfile's
/// owner-only default: run folders are read by other users and web servers.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut tmp =
        kiln_data::files::temp_builder(&format!(".{name}."), ".tmp", 0o666).tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Creates a fresh `root/<experiment>/<backend>-<UTC timestamp>` folder (with a `-2`, `-3`, ...
/// suffix if two runs start in the same second).
pub fn create(root: &Path, experiment: &str, backend: &str) -> io::Result<PathBuf> {
    let parent = root.join(experiment);
    fs::create_dir_all(&parent)?;
    let base = format!("{backend}-{}", utc_timestamp(SystemTime::now()));
    for n in 1.. {
        let dir = if n == 1 {
            parent.join(&base)
        } else {
            parent.join(format!("{base}-{n}"))
        };
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

/// Creates `dir` (and its parents) as a run folder: it must not exist, or be an empty folder,
/// so no earlier run's files are mixed in or overwritten.
pub fn create_exact(dir: &Path) -> io::Result<PathBuf> {
    if !is_new_or_empty(dir)? {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "expected a new or empty folder for the run, found one with files in it",
        ));
    }
    fs::create_dir_all(dir)?;
    Ok(dir.to_path_buf())
}

/// Whether `dir` does not exist or is an empty folder: what [`create_exact`] accepts, and where
/// a failed run may leave its `error.txt` without touching another run's files. A path that
/// is a file, or cannot be read, is an error.
pub fn is_new_or_empty(dir: &Path) -> io::Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// `YYYYMMDD-HHMMSS` in UTC: sorts by time and is safe in file names on every OS.
pub fn utc_timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `summary.json`: the headline numbers of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The experiment's name.
    pub experiment: String,
    /// The backend's name, as `--backend` takes it.
    pub backend: String,
    /// Epochs trained: the recipe's count, fractional where its last epoch is cut short
    /// (airbench94's 9.9), written as an integer when whole.
    pub epochs: kiln_train::Epochs,
    /// Images in the training split.
    pub train_images: usize,
    /// Images in the test split.
    pub test_images: usize,
    /// Test accuracy after the last epoch, from 0 to 1.
    pub final_test_accuracy: f64,
    /// Mean test cross-entropy after the last epoch.
    pub final_test_loss: f64,
    /// Validation accuracy after the last epoch, when the experiment has a validation split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_valid_accuracy: Option<f64>,
    /// The highest test accuracy of any epoch.
    pub best_test_accuracy: f64,
    /// The epoch of [`RunSummary::best_test_accuracy`], from 1.
    pub best_epoch: usize,
    /// Wall time of training and evaluation in seconds, the parts of a resumed run added up.
    pub total_seconds: f64,
    /// Training images per second over the whole run.
    pub train_images_per_sec: f64,
    /// Evaluation images per second over the whole run.
    pub eval_images_per_sec: f64,
    /// The recipe's seed.
    pub seed: u64,
    /// The weights training started from, when not the seeded initialisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_weights: Option<PathBuf>,
    /// The process's peak resident memory (Linux `VmHWM`), in MiB: host memory only, so for a
    /// GPU backend it leaves out what lives on the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
    /// The normalisation applied (resolved where the spec asks for training-set statistics),
    /// so predictions on new images can apply the same.
    pub normalize: Normalize,
    /// Class names, in label order (absent in runs of Kiln before pictures).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// `[channels, height, width]` of the data set's images, before any resize: what
    /// `kiln predict` expects of an image file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_shape: Option<[usize; 3]>,
    /// The version of Kiln that wrote the summary.
    pub kiln_version: String,
    /// Whether training flushed denormal floats to zero (the `kiln` command does unless given
    /// `--keep-denormals`; see `kiln_train::denormals`). Absent in older runs: false.
    #[serde(default)]
    pub flush_denormals: bool,
    /// The processor it trained on ([`crate::machine::processor`]); absent in older runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor: Option<String>,
    /// How a data-parallel run was spread over processes; absent for one process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<ParallelRun>,
}

/// The processes of a data-parallel run, as `summary.json` records them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParallelRun {
    /// How many processes (MPI ranks) trained together.
    pub ranks: usize,
    /// Each rank's share of every batch (the recipe's batch over the ranks).
    pub batch_per_rank: usize,
    /// The recipe's batch size: the batch each optimiser step averages over.
    pub global_batch: usize,
    /// What carried the collective operations (the MPI library's version line).
    pub library: String,
}

/// `logits.json`: a model's logits on the first `images` test images, row-major
/// `[images, classes]`, before and after training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixedBatchLogits {
    /// Number of images.
    pub images: usize,
    /// Logits of the seeded (or `--init-weights`) model before training.
    pub initial: Vec<f32>,
    /// Logits after training.
    pub r#final: Vec<f32>,
}

/// A finished run folder, read back: its spec, summary and events.
#[derive(Debug, Clone)]
pub struct RunFolder {
    /// The run folder.
    pub dir: PathBuf,
    /// Its `config.toml`: the spec the run trained with, overrides applied.
    pub spec: ValidSpec,
    /// Its `summary.json`.
    pub summary: RunSummary,
    /// Its `metrics.jsonl`, every event in order.
    pub events: Vec<Event>,
}

impl RunFolder {
    /// Reads `config.toml`, `summary.json` and `metrics.jsonl`; an error names the file and
    /// says what is wrong with it.
    pub fn open(dir: &Path) -> Result<RunFolder, RunError> {
        if !dir.is_dir() {
            return Err(RunError::Spec(format!(
                "{}: not a run folder (expected a folder written by `kiln run`)",
                dir.display()
            )));
        }
        let config = dir.join(CONFIG);
        if !config.is_file() {
            return Err(RunError::Spec(format!(
                "{}: not a run folder: it has no config.toml (expected a folder written by `kiln run`)",
                dir.display()
            )));
        }
        let spec = crate::load(&config.to_string_lossy())?
            .validate()
            .map_err(|e| e.in_file(&config.display().to_string()))?;
        let summary_path = dir.join(SUMMARY);
        let text = std::fs::read_to_string(&summary_path).map_err(|e| {
            RunError::Spec(format!(
                "{}: cannot read it ({e}); a run writes it when it finishes, so this run may \
                 have stopped early",
                summary_path.display()
            ))
        })?;
        let summary: RunSummary = serde_json::from_str(&text).map_err(|e| {
            RunError::Spec(format!(
                "{}: not a run summary: {e}",
                summary_path.display()
            ))
        })?;
        let events = read_events(&dir.join(METRICS))?;
        Ok(RunFolder {
            dir: dir.to_path_buf(),
            spec,
            summary,
            events,
        })
    }

    /// The class names, as the run recorded them (older runs: the data set's).
    pub fn classes(&self) -> Vec<String> {
        if self.summary.classes.is_empty() {
            self.spec.data.classes().unwrap_or_default()
        } else {
            self.summary.classes.clone()
        }
    }

    /// `[channels, height, width]` of the images the model was trained on, before any resize.
    pub fn image_shape(&self) -> [usize; 3] {
        self.summary.image_shape.unwrap_or_else(|| {
            // Runs older than `image_shape` in summaries: a known data set's published size.
            let data = &self.spec.data;
            let side = data.image_size.or(data.dataset.image_size()).unwrap_or(0);
            [data.channels(), side, side]
        })
    }

    /// An image file as the run's images were: its channels and size, resized where the run
    /// resized its own images as they loaded (a folder set's `image_size`), else refused when
    /// its size differs.
    pub fn read_image(&self, path: &Path) -> Result<Vec<u8>, DataError> {
        let shape = self.image_shape();
        if self.spec.data.image_size.is_some() {
            kiln_data::read_image_resized(path, shape)
        } else {
            kiln_data::read_image(path, shape)
        }
    }

    /// `[channels, height, width]` of what the network takes: the images after the run's
    /// resize.
    pub fn model_input(&self) -> [usize; 3] {
        let [c, h, w] = self.image_shape();
        let resize = self.spec.data.resize;
        [c, resize.unwrap_or(h), resize.unwrap_or(w)]
    }

    /// The evaluation batcher of the run: its resize and its resolved normalisation.
    pub fn batcher(&self) -> ImageBatcher {
        self.spec
            .data
            .eval_batcher(self.image_shape(), self.summary.normalize.clone())
    }

    /// The folder pictures are written to (`plots/` in the run folder).
    pub fn plots_dir(&self) -> PathBuf {
        self.dir.join(PLOTS)
    }
}

/// Reads `metrics.jsonl`, one event per line; an error names the file and the line.
pub fn read_events(path: &Path) -> Result<Vec<Event>, RunError> {
    let text = std::fs::read_to_string(path).map_err(|source| RunError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_events(path, &text)
}

/// The events of `text`, the contents of the `metrics.jsonl` at `path` (which errors name).
pub fn parse_events(path: &Path, text: &str) -> Result<Vec<Event>, RunError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                RunError::Spec(format!(
                    "{}:{}: expected a metrics event (JSON with \"event\": \"step\" or \"epoch\"): {e}",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_calendar_times() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "19700101-000000");
        // 2000-02-29 12:34:56 UTC (a leap day of a century leap year).
        assert_eq!(
            utc_timestamp(UNIX_EPOCH + Duration::from_secs(951_827_696)),
            "20000229-123456"
        );
        assert_eq!(
            utc_timestamp(UNIX_EPOCH + Duration::from_secs(1_795_305_600)),
            "20261122-000000"
        );
    }

    #[test]
    fn same_second_runs_get_distinct_folders() {
        let root = tempfile::tempdir().unwrap();
        let a = create(root.path(), "exp", "ndarray").unwrap();
        let b = create(root.path(), "exp", "ndarray").unwrap();
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
    }

    #[test]
    fn an_exact_run_folder_must_be_new_or_empty() {
        let root = tempfile::tempdir().unwrap();
        let new = root.path().join("a/b/run");
        assert!(is_new_or_empty(&new).unwrap());
        assert_eq!(create_exact(&new).unwrap(), new);
        assert!(new.is_dir() && is_new_or_empty(&new).unwrap());
        // An empty folder is taken as it is ...
        create_exact(&new).unwrap();
        // ... one with a file in it is refused and left alone.
        std::fs::write(new.join("summary.json"), "{}").unwrap();
        assert!(!is_new_or_empty(&new).unwrap());
        let err = create_exact(&new).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(
            err.to_string().contains("found one with files in it"),
            "{err}"
        );
        assert_eq!(std::fs::read(new.join("summary.json")).unwrap(), b"{}");
        // A file where the folder should be is neither.
        let file = new.join("summary.json");
        assert!(is_new_or_empty(&file).is_err());
        assert!(create_exact(&file).is_err());
    }

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new contents").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new contents");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A write into a missing directory fails and leaves nothing behind.
        assert!(write_atomic(&dir.path().join("missing/x"), b"x").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn atomic_write_gives_the_permissions_of_a_plain_create() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode();
        let plain = dir.path().join("plain");
        fs::File::create(&plain).unwrap();
        let atomic = dir.path().join("atomic");
        write_atomic(&atomic, b"x").unwrap();
        assert_eq!(mode(&atomic), mode(&plain));
    }

    #[test]
    fn a_folder_that_is_not_a_finished_run_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = |d: &Path| RunFolder::open(d).unwrap_err().to_string();
        assert!(err(&dir.path().join("nope"))
            .ends_with("nope: not a run folder (expected a folder written by `kiln run`)"));
        assert!(err(dir.path()).contains("not a run folder: it has no config.toml"));
        let spec = crate::builtin().remove(0);
        std::fs::write(dir.path().join("config.toml"), spec.to_toml()).unwrap();
        let e = err(dir.path());
        assert!(
            e.contains("summary.json: cannot read it") && e.contains("stopped early"),
            "{e}"
        );
        std::fs::write(dir.path().join("summary.json"), "{}").unwrap();
        assert!(err(dir.path()).contains("summary.json: not a run summary: missing field"));
    }

    #[test]
    fn a_bad_metrics_line_is_named_by_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, "{\"event\":\"step\",\"epoch\":1,\"step\":5,\"lr\":0.1,\"loss\":2.0,\"accuracy\":0.1}\n{oops\n").unwrap();
        let e = read_events(&path).unwrap_err().to_string();
        assert!(
            e.contains("metrics.jsonl:2: expected a metrics event"),
            "{e}"
        );
    }
}
