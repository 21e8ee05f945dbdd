//! Run folders: `runs/<experiment>/<backend>-<timestamp>/`, written atomically.
//!
//! A run folder holds `config.toml` (the resolved experiment), `run.json` ([`RunStart`]),
//! `layers.txt`, `metrics.jsonl` (one event a line), `checkpoints/` while it trains, and when
//! it has finished `model.mpk`, `summary.json` and `plots/`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_train::{Checkpoint, CheckpointState};
use serde::{Deserialize, Serialize};

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
        let path = run.join("run.json");
        let text = fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: cannot read it ({e}); runs of Kiln before 0.2's checkpoints cannot be resumed",
                path.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: not a run.json: {e}", path.display()))
    }
}

const CHECKPOINTS: &str = "checkpoints";
const STATE: &str = "state.json";
const MODEL: &str = "model.mpk";
const OPTIMIZER: &str = "optimizer.mpk";
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
    for (file, bytes) in [
        (STATE, json.as_slice()),
        (MODEL, &checkpoint.model),
        (OPTIMIZER, &checkpoint.optimizer),
    ] {
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
}
