//! Finding a data set's files on this machine, or downloading them (with SHA-256 checks) into a
//! cache.
//!
//! [`Locator::locate`] searches, in order: the `--data-dir` directory, `$KILN_DATA_DIR`, the
//! user cache (`$XDG_CACHE_HOME/kiln/datasets/<name>` or `~/.cache/kiln/datasets/<name>`) and the
//! data set's system directories (e.g. Debian's `/usr/share/datasets/fashion-mnist`). A
//! directory matches when it (or its `<name>/` subdirectory) holds *every* file, each either as
//! downloaded (`x.gz`) or unpacked (`x`). Local files are not checksummed: users' copies and
//! distribution packages are often re-compressed, so their bytes differ from the published
//! ones; their structure is checked when they are opened.
//!
//! When nothing matches, the missing files are downloaded (unless offline) from the mirrors in
//! order; each download is streamed to a temporary file in the destination directory, hashed
//! on the way, and renamed into place only when complete and verified, so an interrupted or bad
//! download never leaves a file that could be mistaken for a good one.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::error::DataError;

/// One file of a data set as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteFile {
    /// The download file name, e.g. `"train-images-idx3-ubyte.gz"`.
    pub name: &'static str,
    /// The SHA-256 of the published file, lowercase hex.
    pub sha256: &'static str,
}

/// Where a data set's files come from and where a system may already have them.
#[derive(Debug, Clone, Copy)]
pub struct DatasetFiles {
    /// Short name, also the cache subdirectory, e.g. `"fashion-mnist"`.
    pub name: &'static str,
    /// Base URLs ending in `/`, tried in order; a file's URL is base + file name.
    pub mirrors: &'static [&'static str],
    pub files: &'static [RemoteFile],
    /// Directories where an OS package installs the files, e.g.
    /// `/usr/share/datasets/fashion-mnist`.
    pub system_dirs: &'static [&'static str],
}

/// Where to look for data sets and whether (and how) to download them.
#[derive(Debug, Clone, Default)]
pub struct Locator {
    /// `--data-dir`: searched first, and the download destination when given.
    pub data_dir: Option<PathBuf>,
    /// `$KILN_DATA_DIR`: searched second; downloads go to `<env_dir>/<name>`.
    pub env_dir: Option<PathBuf>,
    /// The user cache root; data set `<name>` lives in `<cache_root>/<name>`.
    pub cache_root: Option<PathBuf>,
    /// `--offline`: never download.
    pub offline: bool,
    /// Replaces every data set's mirrors (tests point this at a local server).
    pub mirrors_override: Option<Vec<String>>,
    /// Draw a progress bar for downloads.
    pub progress: bool,
}

/// The path under which the file published as `name` is present in `dir`: `dir/name`, or for a
/// `.gz` name also `dir/<name without .gz>` (unpacked by a user). Readers detect compression
/// from the content, so either is fine to open.
pub fn existing_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let as_downloaded = dir.join(name);
    if as_downloaded.is_file() {
        return Some(as_downloaded);
    }
    let unpacked = dir.join(name.strip_suffix(".gz")?);
    unpacked.is_file().then_some(unpacked)
}

/// A directory searched by [`Locator::locate`], with where it came from (for messages).
struct Candidate {
    dir: PathBuf,
    origin: &'static str,
}

impl Locator {
    /// A locator configured from the command line and the environment: `KILN_DATA_DIR` and the
    /// user cache root (`$XDG_CACHE_HOME/kiln/datasets`, else `$HOME/.cache/kiln/datasets`);
    /// progress bars when stderr is a terminal.
    pub fn from_env(data_dir: Option<PathBuf>, offline: bool) -> Locator {
        let env_path = |var: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        // The XDG spec says relative values are invalid and must be ignored.
        let cache_root = env_path("XDG_CACHE_HOME")
            .filter(|p| p.is_absolute())
            .or_else(|| env_path("HOME").map(|home| home.join(".cache")))
            .map(|cache| cache.join("kiln").join("datasets"));
        Locator {
            data_dir,
            env_dir: env_path("KILN_DATA_DIR"),
            cache_root,
            offline,
            mirrors_override: None,
            progress: io::stderr().is_terminal(),
        }
    }

    /// Returns the directory holding all of `ds`'s files (see [`existing_file`] for each
    /// file's path in it), downloading the missing ones unless offline.
    ///
    /// Fails with [`DataError::NotFound`], whose message tells the user what to place where,
    /// when the files are neither here nor downloadable.
    pub fn locate(&self, ds: &DatasetFiles) -> Result<PathBuf, DataError> {
        let candidates = self.candidates(ds);
        for c in &candidates {
            // `D/<name>` first: a shared data root holding several data sets.
            for dir in [c.dir.join(ds.name), c.dir.clone()] {
                if is_complete(&dir, ds) {
                    tracing::debug!(dataset = ds.name, dir = %dir.display(), "found data set");
                    return Ok(dir);
                }
            }
        }

        let dest = self.download_dir(ds);
        if self.offline {
            return Err(self.not_found(
                ds,
                &candidates,
                dest.as_deref(),
                "offline mode (--offline): not downloading",
            ));
        }
        let Some(dest) = dest else {
            return Err(self.not_found(
                ds,
                &candidates,
                None,
                "no directory to download into (no --data-dir, KILN_DATA_DIR or home directory)",
            ));
        };
        match self.download_missing(ds, &dest) {
            Ok(()) => Ok(dest),
            Err(e) => Err(self.not_found(
                ds,
                &candidates,
                Some(&dest),
                &format!("could not download it: {e}"),
            )),
        }
    }

    /// Downloads `url` into `dir/<file.name>`, verifying its SHA-256, and returns the path.
    ///
    /// The bytes go to a temporary file in `dir` first, renamed into place only when complete
    /// and verified; on any error the temporary file is removed and nothing is left behind.
    pub fn download(&self, url: &str, dir: &Path, file: &RemoteFile) -> Result<PathBuf, DataError> {
        let final_path = dir.join(file.name);
        let part_path = dir.join(format!(".{}.part-{}", file.name, std::process::id()));
        let dl_err = |message: String| DataError::Download {
            url: url.to_string(),
            message,
        };

        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            // Per read, not for the whole body: a slow but live transfer is fine.
            .timeout_read(Duration::from_secs(60))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build();
        let response = agent.get(url).call().map_err(|e| match e {
            ureq::Error::Status(code, r) => {
                dl_err(format!("HTTP status {code} {}", r.status_text()))
            }
            ureq::Error::Transport(t) => dl_err(t.to_string()),
        })?;
        // With a Content-Encoding, Content-Length counts the encoded bytes, not ours.
        let expected_len = if response.header("Content-Encoding").is_some() {
            None
        } else {
            response
                .header("Content-Length")
                .and_then(|v| v.trim().parse::<u64>().ok())
        };

        let bar = if self.progress {
            let bar = match expected_len {
                Some(n) => ProgressBar::new(n),
                None => ProgressBar::new_spinner(),
            };
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(file.name);
            bar
        } else {
            ProgressBar::hidden()
        };
        tracing::info!(url, dest = %final_path.display(), "downloading {}", file.name);

        let mut guard = TempFile::create(&part_path)?;
        let mut hasher = Sha256::new();
        let mut reader = response.into_reader();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total: u64 = 0;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    bar.abandon();
                    let of = expected_len.map_or(String::new(), |n| format!(" of {n}"));
                    return Err(dl_err(format!(
                        "transfer interrupted after {total}{of} bytes: {e}"
                    )));
                }
            };
            hasher.update(&buf[..n]);
            guard
                .file
                .write_all(&buf[..n])
                .map_err(|e| DataError::io(&part_path, e))?;
            total += n as u64;
            bar.set_position(total);
        }
        bar.finish_and_clear();
        if let Some(expected) = expected_len {
            if total != expected {
                return Err(dl_err(format!(
                    "body cut short: expected {expected} bytes (Content-Length), received {total}"
                )));
            }
        }

        let found = hex(&hasher.finalize());
        if !found.eq_ignore_ascii_case(file.sha256) {
            return Err(DataError::ChecksumMismatch {
                url: url.to_string(),
                expected: file.sha256.to_ascii_lowercase(),
                found,
            });
        }
        guard.persist(&final_path)?;
        tracing::info!(url, bytes = total, sha256 = %found, "downloaded {}", file.name);
        Ok(final_path)
    }

    /// Every directory `locate` searches, in order.
    fn candidates(&self, ds: &DatasetFiles) -> Vec<Candidate> {
        let mut out = Vec::new();
        if let Some(d) = &self.data_dir {
            out.push(Candidate {
                dir: d.clone(),
                origin: "--data-dir",
            });
        }
        if let Some(d) = &self.env_dir {
            out.push(Candidate {
                dir: d.clone(),
                origin: "KILN_DATA_DIR",
            });
        }
        if let Some(d) = &self.cache_root {
            out.push(Candidate {
                dir: d.join(ds.name),
                origin: "user cache",
            });
        }
        for d in ds.system_dirs {
            out.push(Candidate {
                dir: PathBuf::from(d),
                origin: "system",
            });
        }
        out
    }

    /// Where downloads go: `--data-dir` itself, else `<KILN_DATA_DIR>/<name>`, else the cache.
    fn download_dir(&self, ds: &DatasetFiles) -> Option<PathBuf> {
        self.data_dir
            .clone()
            .or_else(|| self.env_dir.as_ref().map(|d| d.join(ds.name)))
            .or_else(|| self.cache_root.as_ref().map(|d| d.join(ds.name)))
    }

    fn mirrors(&self, ds: &DatasetFiles) -> Vec<String> {
        match &self.mirrors_override {
            Some(m) => m.clone(),
            None => ds.mirrors.iter().map(|m| m.to_string()).collect(),
        }
    }

    /// Downloads every file not already in `dest` (earlier, partial runs left complete files
    /// only, thanks to the atomic rename, so those are reused as they are).
    fn download_missing(&self, ds: &DatasetFiles, dest: &Path) -> Result<(), DataError> {
        fs::create_dir_all(dest).map_err(|e| DataError::io(dest, e))?;
        let mirrors = self.mirrors(ds);
        for file in ds.files {
            if existing_file(dest, file.name).is_some() {
                tracing::debug!(file = file.name, "already downloaded");
                continue;
            }
            let mut last_err = None;
            for mirror in &mirrors {
                let url = file_url(mirror, file.name);
                match self.download(&url, dest, file) {
                    Ok(_) => {
                        last_err = None;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!("{e}");
                        last_err = Some(e);
                    }
                }
            }
            if mirrors.is_empty() {
                last_err = Some(DataError::Download {
                    url: file.name.to_string(),
                    message: "no mirror configured".to_string(),
                });
            }
            if let Some(e) = last_err {
                return Err(e);
            }
        }
        Ok(())
    }

    /// The [`DataError::NotFound`] telling the user how to get the files in place by hand.
    fn not_found(
        &self,
        ds: &DatasetFiles,
        candidates: &[Candidate],
        dest: Option<&Path>,
        reason: &str,
    ) -> DataError {
        // `write!` into a String cannot fail; the results are ignored on purpose.
        let mut m = String::new();
        let _ = writeln!(m, "{reason}");
        let _ = writeln!(
            m,
            "{} needs these files (as downloaded, or unpacked without the .gz suffix):",
            ds.name
        );
        for f in ds.files {
            let _ = writeln!(m, "  {}", f.name);
        }
        let _ = writeln!(
            m,
            "searched, in order (each directory itself and its {}/ subdirectory):",
            ds.name
        );
        if candidates.is_empty() {
            let _ = writeln!(m, "  (no directory to search)");
        }
        for c in candidates {
            let _ = writeln!(m, "  {} ({})", c.dir.display(), c.origin);
        }
        match dest {
            Some(d) => {
                let _ = writeln!(m, "place them in {}", d.display());
            }
            None => {
                let _ = writeln!(m, "place them in a directory of your choice");
            }
        }
        let _ = writeln!(
            m,
            "  (or in any directory named with --data-dir <DIR> or the KILN_DATA_DIR environment \
             variable)"
        );
        let mirrors = self.mirrors(ds);
        if mirrors.is_empty() {
            let _ = write!(m, "no download mirror is known for {}", ds.name);
        } else {
            let _ = write!(m, "download them from:");
            for f in ds.files {
                let _ = write!(m, "\n  {}", file_url(&mirrors[0], f.name));
            }
            if mirrors.len() > 1 {
                let _ = write!(
                    m,
                    "\n  (or the same names under: {})",
                    mirrors[1..].join(", ")
                );
            }
        }
        DataError::NotFound {
            dataset: ds.name.to_string(),
            message: m,
        }
    }
}

/// True if `dir` holds every file of `ds` (as downloaded or unpacked).
fn is_complete(dir: &Path, ds: &DatasetFiles) -> bool {
    ds.files
        .iter()
        .all(|f| existing_file(dir, f.name).is_some())
}

fn file_url(mirror: &str, name: &str) -> String {
    if mirror.ends_with('/') {
        format!("{mirror}{name}")
    } else {
        format!("{mirror}/{name}")
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A temporary file that is deleted when dropped, unless persisted (renamed into place).
struct TempFile {
    path: PathBuf,
    file: File,
    keep: bool,
}

impl TempFile {
    fn create(path: &Path) -> Result<TempFile, DataError> {
        let file = File::create(path).map_err(|e| DataError::io(path, e))?;
        Ok(TempFile {
            path: path.to_path_buf(),
            file,
            keep: false,
        })
    }

    /// Flushes the data to disk and renames the file to `dest` atomically.
    fn persist(mut self, dest: &Path) -> Result<(), DataError> {
        self.file
            .sync_all()
            .map_err(|e| DataError::io(&self.path, e))?;
        fs::rename(&self.path, dest).map_err(|e| DataError::io(dest, e))?;
        self.keep = true;
        // Make the rename itself durable; best effort (not possible on every platform).
        if let Some(dir) = dest.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}
