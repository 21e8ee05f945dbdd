//! Finding data sets on disk and downloading them, against a local HTTP server the tests start.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kiln_data::fetch::{existing_file, DatasetFiles, Locator, RemoteFile};
use kiln_data::DataError;
use sha2::{Digest, Sha256};

const NAME: &str = "toy-set";
const FILES: [&str; 2] = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"];

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Test contents of the two files (any bytes do: downloads are checked by hash only).
fn contents() -> [Vec<u8>; 2] {
    [
        (0..5000u32).map(|i| (i * 7 % 251) as u8).collect(),
        (0..300u32).map(|i| (i % 10) as u8).collect(),
    ]
}

/// A data set description; its `'static` fields are leaked, which is fine in a test.
fn dataset(sha256s: [String; 2], mirrors: &[&str], system_dirs: &[&Path]) -> DatasetFiles {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let files: Vec<RemoteFile> = FILES
        .iter()
        .zip(sha256s)
        .map(|(&name, sha)| RemoteFile {
            name,
            sha256: leak(sha),
        })
        .collect();
    let mirrors: Vec<&'static str> = mirrors.iter().map(|m| leak(m.to_string())).collect();
    let system: Vec<&'static str> = system_dirs
        .iter()
        .map(|d| leak(d.display().to_string()))
        .collect();
    DatasetFiles {
        name: NAME,
        mirrors: Box::leak(mirrors.into_boxed_slice()),
        files: Box::leak(files.into_boxed_slice()),
        system_dirs: Box::leak(system.into_boxed_slice()),
    }
}

fn good_dataset(mirrors: &[&str], system_dirs: &[&Path]) -> DatasetFiles {
    let [a, b] = contents();
    dataset([sha256_hex(&a), sha256_hex(&b)], mirrors, system_dirs)
}

/// An offline locator with nothing configured; tests fill in what they need.
fn offline() -> Locator {
    Locator {
        offline: true,
        ..Locator::default()
    }
}

/// Writes every file of the set into `dir` (created), optionally without the `.gz` suffix.
fn put_all(dir: &Path, unpacked: bool) {
    fs::create_dir_all(dir).unwrap();
    for (name, body) in FILES.iter().zip(contents()) {
        let name = if unpacked {
            name.strip_suffix(".gz").unwrap()
        } else {
            name
        };
        fs::write(dir.join(name), body).unwrap();
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------------------------

#[test]
fn discovery_order_is_data_dir_env_cache_system() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (data, env, cache, sys1, sys2) = (
        r.join("data"),
        r.join("env"),
        r.join("cache"),
        r.join("sys1"),
        r.join("sys2"),
    );
    let ds = good_dataset(&["http://unused.invalid/"], &[&sys1, &sys2]);
    let loc = Locator {
        data_dir: Some(data.clone()),
        env_dir: Some(env.clone()),
        cache_root: Some(cache.clone()),
        ..offline()
    };

    // Complete sets everywhere; each step removes the winner, and the next one in order wins.
    put_all(&data, false);
    put_all(&env, false);
    put_all(&cache.join(NAME), false);
    put_all(&sys1, false);
    put_all(&sys2, false);
    assert_eq!(loc.locate(&ds).unwrap(), data);
    fs::remove_dir_all(&data).unwrap();
    assert_eq!(loc.locate(&ds).unwrap(), env);
    fs::remove_dir_all(&env).unwrap();
    assert_eq!(loc.locate(&ds).unwrap(), cache.join(NAME));
    fs::remove_dir_all(&cache).unwrap();
    assert_eq!(loc.locate(&ds).unwrap(), sys1);
    fs::remove_dir_all(&sys1).unwrap();
    assert_eq!(loc.locate(&ds).unwrap(), sys2);
    fs::remove_dir_all(&sys2).unwrap();
    assert!(matches!(loc.locate(&ds), Err(DataError::NotFound { .. })));
}

#[test]
fn incomplete_directory_is_skipped() {
    let root = tempfile::tempdir().unwrap();
    let (data, env) = (root.path().join("data"), root.path().join("env"));
    put_all(&env, false);
    // data has only the first file: not a match, even though it comes first.
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join(FILES[0]), b"x").unwrap();
    let ds = good_dataset(&[], &[]);
    let loc = Locator {
        data_dir: Some(data.clone()),
        env_dir: Some(env.clone()),
        ..offline()
    };
    assert_eq!(loc.locate(&ds).unwrap(), env);
}

#[test]
fn name_subdirectory_layout_is_found_and_preferred() {
    let root = tempfile::tempdir().unwrap();
    let shared = root.path().join("datasets");
    // A shared data root holding several data sets: D/<name>.
    put_all(&shared.join(NAME), false);
    let ds = good_dataset(&[], &[]);
    let loc = Locator {
        env_dir: Some(shared.clone()),
        ..offline()
    };
    assert_eq!(loc.locate(&ds).unwrap(), shared.join(NAME));
    // With complete sets at both D and D/<name>, D/<name> wins.
    put_all(&shared, false);
    assert_eq!(loc.locate(&ds).unwrap(), shared.join(NAME));
}

#[test]
fn unpacked_files_without_gz_suffix_count() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("unpacked");
    put_all(&dir, true);
    let ds = good_dataset(&[], &[]);
    let loc = Locator {
        data_dir: Some(dir.clone()),
        ..offline()
    };
    // Local files are not checksummed: these unpacked files' hashes differ from nothing, but a
    // wrong hash in the description would not matter either.
    let ds_wrong_hash = dataset(["0".repeat(64), "0".repeat(64)], &[], &[]);
    assert_eq!(loc.locate(&ds).unwrap(), dir);
    assert_eq!(loc.locate(&ds_wrong_hash).unwrap(), dir);
    assert_eq!(
        existing_file(&dir, FILES[0]),
        Some(dir.join("train-images-idx3-ubyte"))
    );
    // The download name is preferred when both exist; a missing file is None.
    fs::write(dir.join(FILES[0]), b"gz").unwrap();
    assert_eq!(existing_file(&dir, FILES[0]), Some(dir.join(FILES[0])));
    assert_eq!(existing_file(&dir, "other.gz"), None);
}

#[test]
fn offline_message_lists_files_directories_and_urls() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (env, cache, sys) = (r.join("env"), r.join("cache"), r.join("sys"));
    let ds = good_dataset(
        &[
            "https://mirror-one.invalid/toy/",
            "https://mirror-two.invalid/toy/",
        ],
        &[&sys],
    );
    let loc = Locator {
        env_dir: Some(env.clone()),
        cache_root: Some(cache.clone()),
        ..offline()
    };
    let err = loc.locate(&ds).unwrap_err();
    let DataError::NotFound { dataset, message } = &err else {
        panic!("expected NotFound, got {err:?}");
    };
    assert_eq!(dataset, NAME);
    assert!(
        message.contains("offline mode (--offline): not downloading"),
        "{message}"
    );
    for f in FILES {
        assert!(message.contains(f), "missing {f}: {message}");
        assert!(
            message.contains(&format!("https://mirror-one.invalid/toy/{f}")),
            "missing URL of {f}: {message}"
        );
    }
    assert!(
        message.contains("https://mirror-two.invalid/toy/"),
        "{message}"
    );
    // Searched directories, in order.
    let pos = |p: &Path| {
        message
            .find(&p.display().to_string())
            .unwrap_or_else(|| panic!("{} not in: {message}", p.display()))
    };
    assert!(pos(&env) < pos(&cache.join(NAME)));
    assert!(pos(&cache.join(NAME)) < pos(&sys));
    // Where to put them: the download directory, <KILN_DATA_DIR>/<name> here.
    let dest = env.join(NAME);
    assert!(
        message.contains(&format!("place them in {}", dest.display())),
        "{message}"
    );
    assert!(
        message.contains("--data-dir") && message.contains("KILN_DATA_DIR"),
        "{message}"
    );
    // Offline means no directory was created either.
    assert!(!env.exists());

    // With --data-dir, files go straight into it.
    let data = r.join("data");
    let loc = Locator {
        data_dir: Some(data.clone()),
        ..loc
    };
    let message = loc.locate(&ds).unwrap_err().to_string();
    assert!(
        message.contains(&format!("place them in {}\n", data.display())),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------------
// Downloading
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Reply {
    /// 200 with the whole body.
    Full,
    /// 200 with `Content-Length: N`, then only N/2 bytes and the connection closes.
    CutHalf,
}

/// A minimal HTTP/1.1 server on 127.0.0.1:0: serves at most `max_connections` connections (one
/// request each, `Connection: close`), answers 404 for unknown paths, records every request
/// path, and stops when dropped.
struct TestServer {
    base: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(routes: HashMap<String, (Vec<u8>, Reply)>, max_connections: usize) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (req, stp) = (requests.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut served = 0;
            while served < max_connections && !stp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        served += 1;
                        // Errors only end this one connection; the client sees them.
                        let _ = serve_one(stream, &routes, &req);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        });
        TestServer {
            base,
            requests,
            stop,
            handle: Some(handle),
        }
    }

    fn url(&self, prefix: &str) -> String {
        format!("{}{prefix}", self.base)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn serve_one(
    mut stream: TcpStream,
    routes: &HashMap<String, (Vec<u8>, Reply)>,
    requests: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    // Read the request head (a GET has no body).
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    requests.lock().unwrap().push(path.clone());
    match routes.get(&path) {
        None => {
            stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
        }
        Some((body, reply)) => {
            let header = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(header.as_bytes())?;
            match reply {
                Reply::Full => stream.write_all(body)?,
                Reply::CutHalf => stream.write_all(&body[..body.len() / 2])?,
            }
        }
    }
    stream.flush()?;
    stream.shutdown(Shutdown::Both)
}

/// Routes serving the good contents under `prefix`.
fn good_routes(prefix: &str, reply: Reply) -> HashMap<String, (Vec<u8>, Reply)> {
    FILES
        .iter()
        .zip(contents())
        .map(|(name, body)| (format!("{prefix}{name}"), (body, reply)))
        .collect()
}

fn downloading(cache: &Path, mirrors: Vec<String>) -> Locator {
    Locator {
        cache_root: Some(cache.to_path_buf()),
        offline: false,
        mirrors_override: Some(mirrors),
        progress: false,
        ..Locator::default()
    }
}

#[test]
fn download_verifies_caches_and_is_reused_without_requests() {
    let server = TestServer::start(good_routes("/toy/", Reply::Full), 10);
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    // The data set's own mirror is unreachable; the override points at the test server.
    let ds = good_dataset(&["http://unreachable.invalid/"], &[]);
    let loc = downloading(&cache, vec![server.url("/toy/")]);

    let dir = loc.locate(&ds).unwrap();
    assert_eq!(dir, cache.join(NAME));
    for (name, body) in FILES.iter().zip(contents()) {
        assert_eq!(fs::read(dir.join(name)).unwrap(), body, "{name}");
    }
    // Only the final files: no temporary file left behind.
    assert_eq!(entries(&dir), FILES.to_vec());
    // Readable by whoever could read a file created plainly there (not tempfile's owner-only
    // default): data folders are shared.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode();
        let plain = root.path().join("plain");
        fs::File::create(&plain).unwrap();
        assert_eq!(mode(&dir.join(FILES[0])), mode(&plain));
    }
    assert_eq!(
        server.requests(),
        vec![format!("/toy/{}", FILES[0]), format!("/toy/{}", FILES[1])]
    );

    // Second time: found in the cache, nothing requested.
    assert_eq!(loc.locate(&ds).unwrap(), dir);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn files_from_an_earlier_partial_download_are_reused() {
    let server = TestServer::start(good_routes("/toy/", Reply::Full), 10);
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    let dest = cache.join(NAME);
    fs::create_dir_all(&dest).unwrap();
    fs::write(dest.join(FILES[0]), &contents()[0]).unwrap();
    let ds = good_dataset(&[], &[]);
    let loc = downloading(&cache, vec![server.url("/toy/")]);

    assert_eq!(loc.locate(&ds).unwrap(), dest);
    assert_eq!(server.requests(), vec![format!("/toy/{}", FILES[1])]);
    assert_eq!(fs::read(dest.join(FILES[1])).unwrap(), contents()[1]);
}

#[test]
fn next_mirror_is_tried_after_a_failure() {
    // "/bad/" has no routes (404), "/good/" serves the files.
    let server = TestServer::start(good_routes("/good/", Reply::Full), 10);
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    let ds = good_dataset(&[], &[]);
    let loc = downloading(&cache, vec![server.url("/bad/"), server.url("/good/")]);

    let dir = loc.locate(&ds).unwrap();
    assert_eq!(entries(&dir), FILES.to_vec());
    assert_eq!(
        server.requests(),
        vec![
            format!("/bad/{}", FILES[0]),
            format!("/good/{}", FILES[0]),
            format!("/bad/{}", FILES[1]),
            format!("/good/{}", FILES[1]),
        ]
    );
}

#[test]
fn checksum_mismatch_is_rejected_and_leaves_nothing() {
    let server = TestServer::start(good_routes("/toy/", Reply::Full), 10);
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    let wrong = "ab".repeat(32);
    let ds = dataset([wrong.clone(), wrong.clone()], &[], &[]);
    let loc = downloading(&cache, vec![server.url("/toy/")]);

    // The downloader itself reports the mismatch with both hashes.
    let dir = root.path().join("direct");
    fs::create_dir_all(&dir).unwrap();
    let url = format!("{}{}", server.url("/toy/"), FILES[0]);
    let err = loc.download(&url, &dir, &ds.files[0]).unwrap_err();
    let good = sha256_hex(&contents()[0]);
    match &err {
        DataError::ChecksumMismatch {
            url: u,
            expected,
            found,
        } => {
            assert_eq!(u, &url);
            assert_eq!(expected, &wrong);
            assert_eq!(found, &good);
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    let m = err.to_string();
    assert!(
        m.contains(&url) && m.contains(&wrong) && m.contains(&good),
        "{m}"
    );
    assert_eq!(
        entries(&dir),
        Vec::<String>::new(),
        "no file, no .part file"
    );

    // Through locate(): NotFound with the cause and the instructions, and nothing kept.
    let err = loc.locate(&ds).unwrap_err();
    let DataError::NotFound { message, .. } = &err else {
        panic!("expected NotFound, got {err:?}");
    };
    assert!(
        message.contains("could not download it") && message.contains("checksum mismatch"),
        "{message}"
    );
    assert!(
        message.contains(&wrong) && message.contains(FILES[1]),
        "{message}"
    );
    assert_eq!(entries(&cache.join(NAME)), Vec::<String>::new());
}

#[test]
fn body_cut_short_is_an_error_and_leaves_nothing() {
    let server = TestServer::start(good_routes("/toy/", Reply::CutHalf), 10);
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    let ds = good_dataset(&[], &[]);
    let loc = downloading(&cache, vec![server.url("/toy/")]);

    let dir = root.path().join("direct");
    fs::create_dir_all(&dir).unwrap();
    let url = format!("{}{}", server.url("/toy/"), FILES[0]);
    let err = loc.download(&url, &dir, &ds.files[0]).unwrap_err();
    let DataError::Download { url: u, message } = &err else {
        panic!("expected Download, got {err:?}");
    };
    assert_eq!(u, &url);
    // 5000 bytes promised, 2500 sent.
    assert!(message.contains("2500 of 5000"), "{message}");
    assert_eq!(
        entries(&dir),
        Vec::<String>::new(),
        "no file, no .part file"
    );

    let err = loc.locate(&ds).unwrap_err();
    assert!(matches!(err, DataError::NotFound { .. }), "{err:?}");
    let m = err.to_string();
    assert!(
        m.contains("could not download it") && m.contains(&url),
        "{m}"
    );
    assert_eq!(entries(&cache.join(NAME)), Vec::<String>::new());
}

#[test]
fn unreachable_server_gives_not_found_with_the_cause() {
    // A port that was just free: connection refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let ds = good_dataset(&[], &[]);
    let loc = Locator {
        data_dir: Some(data.clone()),
        mirrors_override: Some(vec![format!("http://127.0.0.1:{port}/toy/")]),
        ..Locator::default()
    };
    let err = loc.locate(&ds).unwrap_err();
    let m = err.to_string();
    assert!(matches!(err, DataError::NotFound { .. }), "{err:?}");
    assert!(m.contains("could not download it"), "{m}");
    assert!(
        m.contains(&format!("place them in {}", data.display())),
        "{m}"
    );
    assert_eq!(entries(&data), Vec::<String>::new());
}
