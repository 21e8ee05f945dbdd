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
//!
//! Data sets published as one archive (CIFAR-10) are found with [`Locator::locate_archive`]:
//! the same directories, searched for the unpacked folder or the archive; a downloaded archive
//! is unpacked into a temporary folder beside it and renamed into place when complete.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::read::MultiGzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::error::DataError;
use crate::files::{sync_dir, temp_builder};

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
    /// The files that make up the data set.
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

        self.download_missing_or_reason(ds)
            .map_err(|(dest, reason)| self.not_found(ds, &candidates, dest.as_deref(), &reason))
    }

    /// Downloads the files `ds` lacks into the download directory and returns it; otherwise
    /// the directory (if any) and the reason to give in a [`DataError::NotFound`] message.
    fn download_missing_or_reason(
        &self,
        ds: &DatasetFiles,
    ) -> Result<PathBuf, (Option<PathBuf>, String)> {
        let dest = self.download_dir(ds);
        if self.offline {
            return Err((dest, "offline mode (--offline): not downloading".into()));
        }
        let Some(dest) = dest else {
            return Err((
                None,
                "no directory to download into (no --data-dir, KILN_DATA_DIR or home directory)"
                    .into(),
            ));
        };
        match self.download_missing(ds, &dest) {
            Ok(()) => Ok(dest),
            Err(e) => Err((Some(dest), format!("could not download it: {e}"))),
        }
    }

    /// Downloads `url` into `dir/<file.name>`, verifying its SHA-256, and returns the path.
    ///
    /// The bytes go to a temporary file in `dir` first, renamed into place only when complete
    /// and verified; on any error the temporary file is removed and nothing is left behind.
    pub fn download(&self, url: &str, dir: &Path, file: &RemoteFile) -> Result<PathBuf, DataError> {
        let final_path = dir.join(file.name);
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

        let mut part = temp_builder(&format!(".{}.", file.name), ".part", 0o666)
            .tempfile_in(dir)
            .map_err(|e| DataError::io(dir, e))?;
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
            part.write_all(&buf[..n])
                .map_err(|e| DataError::io(part.path(), e))?;
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
        part.as_file()
            .sync_all()
            .map_err(|e| DataError::io(part.path(), e))?;
        part.persist(&final_path)
            .map_err(|e| DataError::io(&final_path, e.error))?;
        sync_dir(dir);
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

// ---------------------------------------------------------------------------------------------
// Data sets published as one archive
// ---------------------------------------------------------------------------------------------

/// A data set published as one tar archive (usually `.tar.gz`) that unpacks to one folder, such
/// as CIFAR-10's `cifar-10-binary.tar.gz` and its `cifar-10-batches-bin/`.
///
/// [`Locator::locate_archive`] looks for the unpacked folder first, then for the archive (which
/// it unpacks where it lies), and only then downloads the archive, verifies its SHA-256 and
/// unpacks it.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveDataset {
    /// Name (also the cache subdirectory), mirrors and system directories; `files` holds the
    /// archive, exactly one file.
    pub files: DatasetFiles,
    /// The archive's top-level folder, e.g. `"cifar-10-batches-bin"`.
    pub folder: &'static str,
    /// The files the unpacked folder must hold to count as complete. Other files of the folder
    /// (read-me, metadata) are unpacked too but not required.
    pub members: &'static [&'static str],
}

impl ArchiveDataset {
    /// True if `dir` holds every member (as a regular file).
    pub fn is_unpacked(&self, dir: &Path) -> bool {
        self.missing(dir).is_empty()
    }

    /// The members `dir` lacks.
    fn missing(&self, dir: &Path) -> Vec<&'static str> {
        self.members
            .iter()
            .copied()
            .filter(|m| !dir.join(m).is_file())
            .collect()
    }

    /// Unpacks `archive` (a tar file, gzip-compressed or not: detected from its content, never
    /// from its name) into `parent` and returns `parent/<folder>`.
    ///
    /// Only regular files directly inside the archive's `<folder>/` are written, so no entry
    /// name can make it write outside `parent`; anything else (other folders, links, devices)
    /// is skipped. The files go to a temporary folder in `parent` first, renamed to `<folder>`
    /// only when every member is there: an interrupted or failed unpack leaves nothing that
    /// could be mistaken for a complete folder. An existing complete `<folder>` is returned as
    /// it is; an incomplete one is an error (it is never deleted).
    pub fn unpack(&self, archive: &Path, parent: &Path) -> Result<PathBuf, DataError> {
        let target = parent.join(self.folder);
        if target.exists() {
            let missing = self.missing(&target);
            if missing.is_empty() {
                return Ok(target);
            }
            return Err(DataError::format(
                &target,
                format!(
                    "folder exists but is incomplete: expected {}, missing {}; remove the folder \
                     to unpack {} again",
                    self.members.join(", "),
                    missing.join(", "),
                    archive.display()
                ),
            ));
        }

        let tmp = temp_builder(&format!(".{}.unpack-", self.folder), "", 0o777)
            .tempdir_in(parent)
            .map_err(|e| DataError::io(parent, e))?;
        let staged = tmp.path().join(self.folder);
        fs::create_dir(&staged).map_err(|e| DataError::io(&staged, e))?;

        let io_err = |e| DataError::io(archive, e);
        let mut reader = BufReader::new(File::open(archive).map_err(io_err)?);
        let gzip = reader
            .fill_buf()
            .map_err(io_err)?
            .starts_with(&[0x1f, 0x8b]);
        let input: Box<dyn Read> = if gzip {
            Box::new(MultiGzDecoder::new(reader))
        } else {
            Box::new(reader)
        };
        let corrupt = |e: io::Error| {
            DataError::format(
                archive,
                format!("cannot read the archive (not a tar file, or corrupt or truncated): {e}"),
            )
        };
        let mut tar = tar::Archive::new(input);
        let mut buf = vec![0u8; 256 * 1024];
        for entry in tar.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let path = entry.path().map_err(corrupt)?.into_owned();
            let kind = entry.header().entry_type();
            let name = match member_name(&path, self.folder) {
                Some(name) if kind.is_file() => name,
                _ => {
                    tracing::debug!(entry = %path.display(), "archive entry skipped");
                    continue;
                }
            };
            let out_path = staged.join(&name);
            let mut out = File::create(&out_path).map_err(|e| DataError::io(&out_path, e))?;
            loop {
                let n = match entry.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(corrupt(e)),
                };
                out.write_all(&buf[..n])
                    .map_err(|e| DataError::io(&out_path, e))?;
            }
            out.sync_all().map_err(|e| DataError::io(&out_path, e))?;
        }

        let missing = self.missing(&staged);
        if !missing.is_empty() {
            let missing: Vec<String> = missing
                .iter()
                .map(|m| format!("{}/{m}", self.folder))
                .collect();
            return Err(DataError::format(
                archive,
                format!(
                    "the archive lacks {}: expected a {}/ folder holding {}",
                    missing.join(", "),
                    self.folder,
                    self.members.join(", ")
                ),
            ));
        }
        if let Err(e) = fs::rename(&staged, &target) {
            // Another process may have unpacked the same archive meanwhile.
            if !self.is_unpacked(&target) {
                return Err(DataError::io(&target, e));
            }
        }
        sync_dir(parent);
        tracing::info!(folder = %target.display(), "unpacked {}", archive.display());
        Ok(target)
    }
}

/// The file name of a tar entry `<folder>/<name>` (a leading `./` allowed), or `None` for any
/// other path (another folder, a deeper path, `..`, an absolute path).
fn member_name(path: &Path, folder: &str) -> Option<std::ffi::OsString> {
    use std::path::Component;
    let mut parts = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir));
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Component::Normal(f)), Some(Component::Normal(name)), None) if f == folder => {
            Some(name.to_os_string())
        }
        _ => None,
    }
}

impl Locator {
    /// Returns the unpacked folder of `ds` (holding every member), unpacking its archive or
    /// downloading it first when needed.
    ///
    /// Searches the directories of [`Locator::locate`], in the same order; in each (its
    /// `<name>/` subdirectory first, then itself) it takes the first of: the unpacked folder
    /// (`<dir>/<folder>/`), `<dir>` itself when it holds the members (a user pointing
    /// `--data-dir` at the folder), or the archive (as downloaded, or un-gzipped: `x.tar`),
    /// which it unpacks next to itself (see [`ArchiveDataset::unpack`]). Copies found on disk
    /// are not checksummed (see the module docs); their structure is checked when they are
    /// read. Otherwise, unless offline, the archive is downloaded into the download directory,
    /// verified and unpacked there; the archive is kept beside its folder.
    ///
    /// Fails with [`DataError::NotFound`] (with instructions) when there is nothing to find or
    /// download, or with the unpacking error (naming the archive or folder).
    pub fn locate_archive(&self, ds: &ArchiveDataset) -> Result<PathBuf, DataError> {
        let files = &ds.files;
        let candidates = self.candidates(files);
        for c in &candidates {
            for dir in [c.dir.join(files.name), c.dir.clone()] {
                let folder = dir.join(ds.folder);
                if ds.is_unpacked(&folder) {
                    tracing::debug!(dataset = files.name, dir = %folder.display(), "found data set");
                    return Ok(folder);
                }
                if ds.is_unpacked(&dir) {
                    tracing::debug!(dataset = files.name, dir = %dir.display(), "found data set");
                    return Ok(dir);
                }
                if let Some(archive) = files.files.iter().find_map(|f| existing_file(&dir, f.name))
                {
                    tracing::info!(archive = %archive.display(), "unpacking {}", files.name);
                    return ds.unpack(&archive, &dir);
                }
            }
        }

        let dest = self
            .download_missing_or_reason(files)
            .map_err(|(dest, reason)| {
                self.archive_not_found(ds, &candidates, dest.as_deref(), &reason)
            })?;
        let Some(file) = files.files.first() else {
            return Err(self.archive_not_found(
                ds,
                &candidates,
                Some(&dest),
                "no archive is configured for this data set",
            ));
        };
        ds.unpack(&dest.join(file.name), &dest)
    }

    /// [`Locator::not_found`] for an archive, also saying that the unpacked folder will do.
    fn archive_not_found(
        &self,
        ds: &ArchiveDataset,
        candidates: &[Candidate],
        dest: Option<&Path>,
        reason: &str,
    ) -> DataError {
        match self.not_found(&ds.files, candidates, dest, reason) {
            DataError::NotFound {
                dataset,
                mut message,
            } => {
                let _ = write!(
                    message,
                    "\ninstead of the archive, its unpacked folder {}/ will do, holding: {}",
                    ds.folder,
                    ds.members.join(", ")
                );
                DataError::NotFound { dataset, message }
            }
            other => other,
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
