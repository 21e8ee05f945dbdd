//! Helpers shared by the integration tests.

// Every test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_data::Split;

/// Writes a learnable 10-class data set in the Fashion-MNIST file layout: class `k` is a bright
/// 7x7 square at one of ten positions, on noise.
pub fn write_synthetic_fashion_mnist(dir: &Path, train: usize, test: usize) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 60) as u8
    };
    for (split, n) in [(Split::Train, train), (Split::Test, test)] {
        let mut pixels = Vec::with_capacity(n * 784);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let label = (i % 10) as u8;
            let (top, left) = (2 + 12 * (label as usize / 5), 1 + 5 * (label as usize % 5));
            for r in 0..28 {
                for c in 0..28 {
                    let inside = (top..top + 7).contains(&r) && (left..left + 7).contains(&c);
                    pixels.push(if inside { 200 + noise() / 2 } else { noise() });
                }
            }
            labels.push(label);
        }
        kiln_data::mnist::write_split(dir, split, &pixels, &labels).unwrap();
    }
}

/// Synthetic Fashion-MNIST files under `dir/data` and, at `dir/<name>`, the built-in LeNet-5
/// experiment as changed by `edit`. Returns (data dir, experiment file).
pub fn synthetic_setup(
    dir: &Path,
    train: usize,
    test: usize,
    name: &str,
    edit: impl Fn(&str) -> String,
) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    fs::create_dir_all(&data).unwrap();
    write_synthetic_fashion_mnist(&data, train, test);
    let experiment = dir.join(name);
    let builtin = include_str!("../../experiments/lenet5-fashion-mnist.toml");
    fs::write(&experiment, edit(builtin)).unwrap();
    (data, experiment)
}

/// Trains the built-in LeNet-5 experiment for `epochs` epochs on synthetic Fashion-MNIST files
/// (640 train, 200 test images; batch 32 so an epoch has 20 steps, a step event every 5)
/// through the command line, under `dir`. Returns the run folder.
pub fn tiny_run(dir: &Path, epochs: usize) -> PathBuf {
    let (data, experiment) = synthetic_setup(dir, 640, 200, "tiny.toml", |t| {
        t.replace("batch_size = 256", "batch_size = 32")
            .replace("log_every = 50", "log_every = 5")
    });
    let runs = dir.join("runs");
    let epochs = epochs.to_string();
    kiln_cli::main_with_args([
        "kiln",
        "run",
        &arg(&experiment),
        "--backend",
        "ndarray",
        "--epochs",
        &epochs,
        "--data-dir",
        &arg(&data),
        "--offline",
        "--runs-dir",
        &arg(&runs),
        "--quiet",
    ])
    .expect("the run succeeds");
    only_entry(&runs.join("lenet5-fashion-mnist"))
}

/// What `kiln_experiments::load` and the command line take for experiment `name`: a built-in's
/// name, or the path of a test-only experiment in `tests/experiments/` (ResNet-18's, whose
/// recipe airbench94 replaced while its network stays tested).
pub fn experiment_arg(name: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("experiments")
        .join(format!("{name}.toml"));
    match file.is_file() {
        true => file.to_string_lossy().into_owned(),
        false => name.to_string(),
    }
}

/// The Python with PyTorch and TensorBoard: `$KILN_TORCH_PYTHON`, else `python` (`cargo xtask
/// test` puts its virtualenv first on PATH).
pub fn python() -> String {
    std::env::var("KILN_TORCH_PYTHON").unwrap_or_else(|_| "python".to_string())
}

/// A LeNet-5 run's final weights (`model.mpk`) in a fresh model on ndarray.
pub fn load_lenet(run: &Path) -> kiln_models::LeNet5<burn_ndarray::NdArray> {
    use burn::module::Module;
    use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
    let device = Default::default();
    kiln_models::LeNet5Config::new()
        .init(&device)
        .load_file(
            run.join("model.mpk"),
            &NamedMpkFileRecorder::<FullPrecisionSettings>::new(),
            &device,
        )
        .expect("model.mpk loads")
}

pub fn only_entry(dir: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "expected exactly one entry in {}: {entries:?}",
        dir.display()
    );
    entries.into_iter().next().unwrap()
}

pub fn arg(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Runs `kiln run <experiment> <extra...>` into a fresh runs directory under `runs` and returns
/// the run folder and its summary.
pub fn run_and_summarise(
    runs: &Path,
    experiment: &str,
    extra: &[&str],
) -> (PathBuf, kiln_experiments::RunSummary) {
    let mut args = vec!["kiln", "run", experiment, "--offline", "--quiet"];
    let runs_dir = arg(runs);
    args.extend(["--runs-dir", &runs_dir]);
    args.extend(extra);
    kiln_cli::main_with_args(args.clone()).unwrap_or_else(|e| panic!("kiln {args:?}: {e:#}"));
    let run = only_entry(&runs.join(experiment));
    let summary =
        serde_json::from_str(&fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    (run, summary)
}

/// A real data set from `../shared/datasets/` beside the repository, or from `$env_var`. The
/// tests that use it fail, never skip, when it is missing.
pub fn shared_dataset(name: &str, env_var: &str) -> PathBuf {
    let path = match std::env::var_os(env_var).filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/datasets")
            .join(name),
    };
    assert!(
        path.exists(),
        "real data set missing: expected {} (set {env_var} to its path)",
        path.display()
    );
    path
}

/// The Chromium binary: `$KILN_CHROMIUM`, else `chromium` on the PATH. The report test fails,
/// never skips, without it; `cargo xtask test` installs it.
pub fn chromium() -> String {
    let name = std::env::var("KILN_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = Command::new(&name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} not found: the report test opens the page in headless Chromium \
         (Debian: apt-get install chromium; or set KILN_CHROMIUM)"
    );
    name
}

/// Opens `page` in headless Chromium with `args` (`--dump-dom`, `--screenshot=...`); fails
/// the test when Chromium does.
pub fn headless(args: &[&str], page: &Path) -> std::process::Output {
    let url = format!("file://{}", std::path::absolute(page).unwrap().display());
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `cargo metadata --format-version 1 --offline` of the workspace for this machine's target,
/// with `extra` arguments (`--no-deps` for Kiln's own packages only), as JSON. Filtered to this
/// platform because the crates only other platforms use (`android_system_properties`, ...) are
/// never downloaded by a build here, and offline they cannot be.
pub fn cargo_metadata(extra: &[&str]) -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &host_triple()])
        .args(extra)
        .current_dir(workspace_root())
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The repository's root folder.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Set (to any value) in the processes a `harness = false` test binary starts as `kiln`.
pub const AS_KILN: &str = "KILN_TEST_AS_KILN";

/// The `main` of a test binary whose children are `kiln` (this same binary, started by the
/// test, by mpirun or by Slurm with [`AS_KILN`] set): as `kiln`, it runs the command line and
/// exits with kiln's status; otherwise it runs `tests` in order, or those whose names contain
/// an argument.
pub fn kiln_or_tests(tests: &[(&str, fn())]) {
    if std::env::var_os(AS_KILN).is_some() {
        let status = kiln_cli::exit_status(kiln_cli::main_with_args(std::env::args_os()));
        std::process::exit(i32::from(status));
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        eprintln!("test {name} ...");
        let started = std::time::Instant::now();
        test();
        eprintln!(
            "test {name} ... ok ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }
}

/// The Slurm cluster's `slurm.conf` (`SLURM_CONF`), for the tests that send jobs to the
/// one-node cluster `cargo xtask test` starts.
pub fn slurm_conf() -> String {
    let conf = std::env::var("SLURM_CONF").unwrap_or_else(|_| {
        panic!(
            "SLURM_CONF is not set: start a one-node Slurm cluster with \
             `xtask/slurm/one-node-cluster.sh start DIR` and export SLURM_CONF=DIR/slurm.conf \
             (cargo xtask test does both)"
        )
    });
    assert!(
        Path::new(&conf).exists(),
        "SLURM_CONF={conf} does not exist"
    );
    conf
}

/// This machine's target triple, as `rustc -vV` names it.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("-vV").output().expect("rustc runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}
