//! `cargo xtask ...`: project automation in Rust, so it runs wherever cargo does.
//!
//! - `run-experiment <experiment> [--backend NAME] [kiln run options...]`: checks the backend's
//!   runtime, builds `kiln` in release mode with exactly the features the backend needs and
//!   runs the experiment (installing Debian's Fashion-MNIST package first when it is missing
//!   and we may).
//! - `compare-backends <experiment> --backends a,b,c [kiln compare options...]`: the same for
//!   several backends at once, then `kiln compare`.
//! - `test`: installs what the tests need (Fashion-MNIST and Mesa's software Vulkan from
//!   Debian's packages, PyTorch 2.9.0 into a virtualenv of its own), then runs the whole test
//!   suite in release mode (the tests train real models), parity tests across backends included.

mod bench;
mod results;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

// The backends table `kiln` itself uses: one list for both, and xtask stays free of Burn.
#[path = "../../crates/kiln-cli/src/backend_table.rs"]
mod backend_table;

use backend_table::{Devices, Runtime, BACKENDS};

const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
const FASHION_MNIST_PACKAGE: &str = "dataset-fashion-mnist";
const VULKAN_PACKAGE: &str = "mesa-vulkan-drivers";
/// The libtorch version burn-tch 0.21 (tch 0.22) is built against.
const TORCH_VERSION: &str = "2.9.0";
/// The TensorBoard the tests read event files with.
const TENSORBOARD_VERSION: &str = "2.21.0";

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  run-experiment <experiment> [--backend NAME] [options passed to `kiln run`]
  run-experiment --resume RUN_FOLDER
      build kiln (release) with the backend's features and run the experiment (or go on
      with a stopped run, on its backend);
      e.g. cargo xtask run-experiment lenet5-fashion-mnist --backend tch --epochs 1
  compare-backends <experiment> --backends A,B,... [options passed to `kiln compare`]
      train on each backend from the same initial weights and report the differences;
      e.g. cargo xtask compare-backends lenet5-fashion-mnist --backends ndarray,tch --steps 50
  bench [--experiments A,B,...] [--backends A,B,...] [--warmup N] [--steps N] [--rounds N]
        [--check FILE] [--data-dir DIR] [--cifar-folder DIR] [--test-build]
      each experiment (default: all eight) on each backend (default cpu,flex,tch): training,
      evaluation and data-pipeline images/s and peak memory, as ratios to PyTorch eager on the
      same model, batch and threads measured in the same run; --rounds N measures each N
      times, alternating, and reports medians; --check fails when a ratio falls
      more than 25% below its record in FILE (e.g. xtask/bench/recorded.json); --data-dir
      goes to kiln for the MNIST-format data sets, --cifar-folder DIR reads CIFAR-10 as
      DIR/{train,test}/<class>/ image folders; --test-build times the `kiln` that
      `cargo xtask test` built (every tested backend) instead of building one (CI)
  test [cargo test options]
      install what the tests need if missing, then run every test (release build)
  doc [cargo doc options]
      the API documentation of every Kiln crate (target/doc/), failing on any rustdoc warning
  results RUN_FOLDER...
      the results table (markdown) of finished runs, from their summary.json files

backends:";

/// [`USAGE`] and every backend of the table, with its help.
fn usage() -> String {
    let mut text = USAGE.to_string();
    for b in BACKENDS {
        text.push_str(&format!("\n  {:<10} {}", b.name, b.help));
    }
    text
}

fn main() {
    if let Err(e) = run(std::env::args().skip(1).collect()) {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        println!("{}", usage());
        return Ok(());
    };
    match command.as_str() {
        "run-experiment" => run_experiment(rest),
        "compare-backends" => compare_backends(rest),
        "bench" => bench::bench(rest),
        "test" => test(rest),
        "doc" => doc(rest),
        "results" => results::results(rest),
        "help" | "--help" | "-h" => {
            println!("{}", usage());
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{}", usage()),
    }
}

fn run_experiment(args: &[String]) -> Result<()> {
    let (backend, kiln_args) = take_option(args, "--backend")?;
    let (resume, _) = take_option(&kiln_args, "--resume")?;
    // A resumed run goes on with the backend it was started on.
    let backend = match (backend, &resume) {
        (Some(backend), _) => backend,
        (None, Some(run)) => backend_of_run(Path::new(run))?,
        (None, None) => "cpu".into(),
    };
    let features = features_of(&[backend.as_str()])?;
    if resume.is_none() && kiln_args.first().is_none_or(|a| a.starts_with('-')) {
        bail!("missing the experiment name\n\n{}", usage());
    }
    let env = runtime_env(&[backend.as_str()], Install::No)?;
    if resume.is_none() {
        offer_fashion_mnist(&kiln_args[0]);
    }
    let mut cmd = kiln(&features, &env);
    cmd.args(["run", "--backend", &backend]).args(&kiln_args);
    exit_as(cmd)
}

/// The backend a run folder's `run.json` names.
fn backend_of_run(run: &Path) -> Result<String> {
    let path = run.join("run.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: cannot read it (is {} a run folder?)",
            path.display(),
            run.display()
        )
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    json["backend"]
        .as_str()
        .map(String::from)
        .with_context(|| format!("{}: expected a \"backend\" string", path.display()))
}

fn compare_backends(args: &[String]) -> Result<()> {
    let (backends, kiln_args) = take_option(args, "--backends")?;
    let backends = backends.context("--backends A,B,... is required")?;
    let names: Vec<&str> = backends.split(',').map(str::trim).collect();
    let features = features_of(&names)?;
    if kiln_args.first().is_none_or(|a| a.starts_with('-')) {
        bail!("missing the experiment name\n\n{}", usage());
    }
    let env = runtime_env(&names, Install::No)?;
    offer_fashion_mnist(&kiln_args[0]);
    let mut cmd = kiln(&features, &env);
    cmd.args(["compare", "--backends", &backends])
        .args(&kiln_args);
    exit_as(cmd)
}

/// `cargo run` of the release `kiln` binary with exactly `features`.
fn kiln(features: &str, env: &[(String, String)]) -> Command {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "--package",
        "kiln-cli",
        "--no-default-features",
        "--features",
        features,
        "--",
    ])
    .envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// The comma-joined cargo features for `backends`, or an error listing the known names.
fn features_of(backends: &[&str]) -> Result<String> {
    let mut features = Vec::new();
    for name in backends {
        let Some(backend) = backend_table::find(name) else {
            bail!(
                "unknown backend {name:?}; expected one of: {}",
                backend_table::names().join(", ")
            );
        };
        if !features.contains(&backend.feature) {
            features.push(backend.feature);
        }
    }
    Ok(features.join(","))
}

/// Splits `NAME VALUE` / `NAME=VALUE` (anywhere in `args`) from the arguments for kiln.
fn take_option(args: &[String], name: &str) -> Result<(Option<String>, Vec<String>)> {
    let mut value = None;
    let mut rest = Vec::new();
    let mut it = args.iter();
    let prefix = format!("{name}=");
    while let Some(arg) = it.next() {
        if arg == name {
            value = Some(
                it.next()
                    .with_context(|| format!("{name} needs a value"))?
                    .clone(),
            );
        } else if let Some(v) = arg.strip_prefix(&prefix) {
            value = Some(v.to_string());
        } else {
            rest.push(arg.clone());
        }
    }
    Ok((value, rest))
}

/// The backends the tests build in (`kiln-integration-tests/parity`): every one a machine
/// without an NVIDIA GPU can run, those whose devices are not CUDA devices.
fn tested_backends() -> Vec<&'static str> {
    BACKENDS
        .iter()
        .filter(|b| b.devices != Devices::Cuda)
        .map(|b| b.name)
        .collect()
}

fn test(args: &[String]) -> Result<()> {
    ensure_fashion_mnist()?;
    ensure_chromium()?;
    ensure_mpi()?;
    let mut env = runtime_env(&tested_backends(), Install::Yes)?;
    ensure_tensorboard()?;
    // The data-parallel and sweep tests send jobs through a real Slurm: this machine as a cluster
    // of one node, for as long as the tests run.
    let slurm = std::env::temp_dir().join(format!("kiln-slurm-{}", std::process::id()));
    slurm_cluster("start", &slurm)?;
    env.push((
        "SLURM_CONF".into(),
        slurm.join("slurm.conf").to_string_lossy().into_owned(),
    ));
    // wgpu runs on Mesa's software Vulkan here, where CubeCL's autotuning (each candidate
    // kernel timed 10 times per shape key after a warm-up) is most of the tests' wgpu time:
    // wgpu took about 65 s of the convnet-mnist parity test's 68 with a cold autotune cache,
    // about 50 at the minimal level, 13 with a warm cache (2026-12-07). The tests check
    // results, not speed, so they tune as little as CubeCL allows.
    if std::env::var_os("CUBECL_AUTOTUNE_LEVEL").is_none() {
        env.push(("CUBECL_AUTOTUNE_LEVEL".into(), "minimal".into()));
    }
    let mut cmd = test_build(&env);
    cmd.args(args);
    let tested = status(cmd);
    if let Err(e) = slurm_cluster("stop", &slurm) {
        eprintln!("xtask: the test cluster's daemons may still run: {e:#}");
    }
    tested
}

/// `cargo test` of the whole workspace as `cargo xtask test` builds it, in `env`: `parity`
/// builds the wgpu, tch and flex backends into kiln and the tests, once, in the release profile
/// the CLI uses too; `mpi` builds data-parallel training in; `slurm` turns on the tests that
/// need a Slurm cluster.
fn test_build(env: &[(String, String)]) -> Command {
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--release",
        "--workspace",
        "--features",
        "kiln-integration-tests/parity,kiln-integration-tests/mpi,kiln-integration-tests/slurm",
    ])
    .envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// The `kiln` binary of the test build (every tested backend in one binary), building
/// nothing where `cargo xtask test` ran before: cargo's own report of the build's artifacts
/// names it. Building the same features the way `cargo xtask test` does is what makes that
/// so; a `cargo run` with other features would rebuild the workspace's crates (six minutes of
/// CI's time, 2026-12-07).
fn tested_kiln(env: &[(String, String)]) -> Result<PathBuf> {
    let mut cmd = test_build(env);
    cmd.args(["--no-run", "--message-format=json-render-diagnostics"]);
    let shown = format!("{cmd:?}");
    // Not `output`: cargo's report is one JSON line per artifact, not for the terminal.
    let (stdout, status) = captured(cmd)?;
    status?;
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|m| {
            m["reason"] == "compiler-artifact"
                && m["target"]["name"] == "kiln"
                && m["target"]["kind"] == serde_json::json!(["bin"])
                && m["profile"]["test"] == false
        })
        .and_then(|m| m["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("{shown} reported no `kiln` binary"))
}

/// `xtask/slurm/one-node-cluster.sh start|stop STATE` (as root, or through password-less sudo).
fn slurm_cluster(action: &str, state: &Path) -> Result<()> {
    let script = project_root().join("xtask/slurm/one-node-cluster.sh");
    let mut cmd = if is_root() {
        Command::new(&script)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("-n").arg(&script);
        sudo
    };
    cmd.arg(action).arg(state);
    status(cmd).with_context(|| {
        format!(
            "the Slurm test cluster (it needs root or password-less sudo): {}",
            script.display()
        )
    })
}

/// `cargo doc` of the workspace with the test build's features (every backend's `dispatch`
/// arm), so it needs libtorch's location as a build does (kiln-tch is a member); a broken link
/// or a missing doc fails it.
fn doc(args: &[String]) -> Result<()> {
    let mut env = runtime_env(&tested_backends(), Install::No)?;
    env.push(("RUSTDOCFLAGS".into(), "-D warnings".into()));
    let mut cmd = cargo();
    cmd.args(["doc", "--release", "--no-deps", "--workspace"])
        .args(["--features", "kiln-integration-tests/parity"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)));
    status(cmd)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Install {
    /// Install what is missing (tests: a new machine sets itself up).
    Yes,
    /// Say what is missing and the commands that install it.
    No,
}

/// Checks the run-time needs of `backends` and returns the environment cargo and kiln need.
fn runtime_env(backends: &[&str], install: Install) -> Result<Vec<(String, String)>> {
    let needs = |r: Runtime| {
        BACKENDS
            .iter()
            .any(|b| b.runtime == r && backends.contains(&b.name))
    };
    let mut env = Vec::new();
    if needs(Runtime::Vulkan) {
        ensure_vulkan(install)?;
    }
    if needs(Runtime::Torch) {
        env.extend(torch_env(install)?);
    }
    Ok(env)
}

/// A Vulkan loader and at least one driver (ICD). wgpu would otherwise fail at its first
/// tensor with "no adapter".
fn ensure_vulkan(install: Install) -> Result<()> {
    if !cfg!(target_os = "linux") {
        return Ok(()); // Metal / DX12: nothing to install
    }
    let has_driver = std::env::var_os("VK_ICD_FILENAMES").is_some()
        || std::env::var_os("VK_DRIVER_FILES").is_some()
        || ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
            .iter()
            .any(|dir| std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()));
    let has_loader = Command::new("ldconfig")
        .arg("-p")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libvulkan.so.1"));
    if has_driver && has_loader {
        return Ok(());
    }
    let why = "the wgpu backend needs a Vulkan driver; without a GPU, Mesa's software one";
    match install {
        Install::Yes => apt_install(VULKAN_PACKAGE, why),
        Install::No => bail!(
            "no Vulkan driver found ({why}); install it with\n    sudo apt-get update && \
             sudo apt-get install -y {VULKAN_PACKAGE}\n(or your GPU vendor's Vulkan driver)"
        ),
    }
}

/// The virtualenv `cargo xtask` owns for PyTorch, outside any clone so every checkout and CI
/// run reuses it: `$KILN_TORCH_VENV`, else `~/.cache/kiln/torch-venv`.
fn torch_venv() -> PathBuf {
    if let Some(dir) = std::env::var_os("KILN_TORCH_VENV") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/kiln/torch-venv")
}

/// Where libtorch is, as environment for building (torch-sys) and running (the dynamic
/// loader): `LIBTORCH` if set, else the virtualenv's torch.
fn torch_env(install: Install) -> Result<Vec<(String, String)>> {
    if let Some(libtorch) = std::env::var_os("LIBTORCH") {
        let lib = Path::new(&libtorch).join("lib");
        if !lib.join("libtorch_cpu.so").is_file() && !lib.join("libtorch_cpu.dylib").is_file() {
            bail!(
                "LIBTORCH={} has no lib/libtorch_cpu.so; point it at an unpacked libtorch {TORCH_VERSION}",
                lib.parent().unwrap_or(&lib).display()
            );
        }
        return Ok(vec![library_path(&lib)]);
    }
    let venv = torch_venv();
    let python = venv.join("bin/python");
    let torch_dir = match torch_dir(&python) {
        Some(dir) => dir,
        None if install == Install::Yes => {
            install_torch(&venv)?;
            torch_dir(&python).with_context(|| {
                format!(
                    "{} still has no torch {TORCH_VERSION} after installing it",
                    venv.display()
                )
            })?
        }
        None => bail!(
            "the tch backends need libtorch {TORCH_VERSION}; none found (no LIBTORCH, no torch \
             {TORCH_VERSION} in {}). Install it with\n    python3 -m venv {0}\n    \
             {0}/bin/pip install torch=={TORCH_VERSION}\n(or set LIBTORCH to an unpacked \
             libtorch {TORCH_VERSION}; `cargo xtask test` installs the virtualenv itself)",
            venv.display()
        ),
    };
    let path = std::env::var("PATH").unwrap_or_default();
    Ok(vec![
        ("LIBTORCH_USE_PYTORCH".into(), "1".into()),
        // torch-sys asks `python` for torch's location: the virtualenv's must come first.
        (
            "PATH".into(),
            format!("{}:{path}", venv.join("bin").display()),
        ),
        library_path(&torch_dir.join("lib")),
    ])
}

/// torch's folder if `python` imports torch of the right version.
fn torch_dir(python: &Path) -> Option<PathBuf> {
    let out = Command::new(python)
        .args([
            "-c",
            "import os, torch; print(torch.__version__); print(os.path.dirname(torch.__file__))",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let version = lines.next()?;
    let dir = lines.next()?;
    (out.status.success() && version.split('+').next() == Some(TORCH_VERSION))
        .then(|| PathBuf::from(dir))
}

fn install_torch(venv: &Path) -> Result<()> {
    eprintln!(
        "xtask: installing PyTorch {TORCH_VERSION} into {} (the tch backend links its libtorch; \
         a download of a few GB, once)",
        venv.display()
    );
    if !venv.join("bin/python").exists() {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "venv"]).arg(venv);
        status(cmd).context("creating the virtualenv (Debian: apt-get install python3-venv)")?;
    }
    let mut cmd = Command::new(venv.join("bin/pip"));
    cmd.args(["install", "--quiet", &format!("torch=={TORCH_VERSION}")]);
    status(cmd)
}

/// TensorBoard, whose own reader the TensorBoard test reads each run's event file with: into
/// the Python the tests use (`$KILN_TORCH_PYTHON`, else the PyTorch virtualenv's).
fn ensure_tensorboard() -> Result<()> {
    let python = std::env::var_os("KILN_TORCH_PYTHON")
        .map_or_else(|| torch_venv().join("bin/python"), PathBuf::from);
    let has = Command::new(&python)
        .args(["-c", "import tensorboard"])
        .output()
        .is_ok_and(|out| out.status.success());
    if has {
        return Ok(());
    }
    eprintln!(
        "xtask: installing tensorboard {TENSORBOARD_VERSION} into {} (the TensorBoard test \
         reads runs with its reader)",
        python.display()
    );
    let mut cmd = Command::new(&python);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        &format!("tensorboard=={TENSORBOARD_VERSION}"),
    ]);
    status(cmd)
}

/// `LD_LIBRARY_PATH` (macOS: `DYLD_LIBRARY_PATH`) with `lib` first.
fn library_path(lib: &Path) -> (String, String) {
    let var = if cfg!(target_os = "macos") {
        "DYLD_LIBRARY_PATH"
    } else {
        "LD_LIBRARY_PATH"
    };
    let value = match std::env::var(var) {
        Ok(old) if !old.is_empty() => format!("{}:{old}", lib.display()),
        _ => lib.display().to_string(),
    };
    (var.into(), value)
}

/// The Fashion-MNIST experiments (the quick start's among them) read Debian's package where
/// there is one, so a machine without internet access runs them too; where it cannot be
/// installed, kiln looks elsewhere and downloads, and says so if that fails.
fn offer_fashion_mnist(experiment: &str) {
    if experiment.contains("fashion-mnist") {
        if let Err(e) = ensure_fashion_mnist() {
            eprintln!("xtask: note: {e:#}");
        }
    }
}

/// Installs Debian's Fashion-MNIST package (the quick start and the real-data tests read it)
/// when it is missing.
fn ensure_fashion_mnist() -> Result<()> {
    if Path::new(FASHION_MNIST_DIR)
        .join("t10k-labels-idx1-ubyte.gz")
        .is_file()
    {
        return Ok(());
    }
    apt_install(
        FASHION_MNIST_PACKAGE,
        &format!("Fashion-MNIST in {FASHION_MNIST_DIR}"),
    )
    .context("or set KILN_DATA_DIR to a folder holding the four Fashion-MNIST IDX files")
}

/// Installs Debian's Chromium, in which the report test opens `kiln report`'s pages headless,
/// unless `KILN_CHROMIUM` names another browser binary.
fn ensure_chromium() -> Result<()> {
    let name = std::env::var("KILN_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = Command::new(&name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Ok(());
    }
    apt_install("chromium", "headless Chromium for the HTML report test")
        .context("or set KILN_CHROMIUM to a Chromium or Chrome binary")
}

/// Open MPI (its mpirun and headers), libclang, which the `mpi` crate's bindings are generated
/// with, and Slurm: what the data-parallel tests build and run with.
fn ensure_mpi() -> Result<()> {
    for (package, what) in [
        (
            "openmpi-bin",
            "Open MPI's mpirun, for the data-parallel tests",
        ),
        (
            "libopenmpi-dev",
            "Open MPI's headers, to build kiln with the `mpi` feature",
        ),
        (
            "libclang-dev",
            "libclang, which the `mpi` crate generates its bindings with",
        ),
        ("slurm-wlm", "Slurm, for the data-parallel test's job step"),
        ("munge", "Slurm's authentication daemon"),
    ] {
        let installed = Command::new("dpkg")
            .args(["-s", package])
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            apt_install(package, what)?;
        }
    }
    Ok(())
}

/// Installs a Debian package when we may: as root or with password-less sudo; otherwise says
/// which command to run.
fn apt_install(package: &str, why: &str) -> Result<()> {
    let install = format!("apt-get install -y {package}");
    let as_root = is_root();
    let sudo = !as_root
        && Command::new("sudo")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !as_root && !sudo {
        bail!("{why}: install it with\n    sudo apt-get update && sudo {install}");
    }
    eprintln!("xtask: installing {package} ({why})");
    let apt = |args: &[&str]| {
        let mut cmd = if sudo {
            Command::new("sudo")
        } else {
            Command::new("apt-get")
        };
        if sudo {
            cmd.args(["-n", "apt-get"]);
        }
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    status(apt(&["update", "-q"]))?;
    status(apt(&["install", "-y", "-q", package]))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `YYYYMMDD-HHMMSS` in UTC, for result folders.
fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_timestamp(secs)
}

fn utc_timestamp(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(project_root());
    cmd
}

/// The checkout `cargo xtask` was invoked in. `cargo run` sets CARGO_MANIFEST_DIR at run time;
/// the compile-time value is only a fallback, because clones sharing one CARGO_TARGET_DIR (as
/// CI's do) reuse an xtask binary built in another clone.
fn project_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("xtask lives in the project root")
        .to_path_buf()
}

/// Runs `cmd` with stderr passing through and returns its stdout, echoed.
fn output(cmd: Command) -> Result<String> {
    let (stdout, status) = captured(cmd)?;
    print!("{stdout}");
    status.map(|()| stdout)
}

/// Runs `cmd` with its stderr shown: its stdout, and whether it succeeded.
fn captured(mut cmd: Command) -> Result<(String, Result<()>)> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = match out.status.success() {
        true => Ok(()),
        false => Err(anyhow::anyhow!("{shown} failed ({})", out.status)),
    };
    Ok((stdout, status))
}

/// Runs `kiln` (through `cargo run`) and, where it fails, exits with its status: `kiln` (or
/// cargo, for a build error) has said why, and a Ctrl-C'd run's resume command should be the
/// last thing on the screen, not this command line.
/// Runs `cmd`; a failure ends xtask with the child's own exit code, so that a caller (CI, a
/// script) sees what `kiln` or the test runner returned rather than xtask's generic 1.
fn exit_as(cmd: Command) -> Result<()> {
    let (_, status) = run_child(cmd)?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

fn status(cmd: Command) -> Result<()> {
    let (shown, status) = run_child(cmd)?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` to its end: its command line (for messages) and how it ended.
fn run_child(mut cmd: Command) -> Result<(String, std::process::ExitStatus)> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    Ok((shown, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn backend_is_taken_from_anywhere_and_the_rest_is_forwarded() {
        let take = |args: &[&str]| take_option(&strings(args), "--backend");
        let (b, rest) = take(&["exp", "--epochs", "1", "--backend", "ndarray"]).unwrap();
        assert_eq!(
            (b.as_deref(), rest),
            (Some("ndarray"), strings(&["exp", "--epochs", "1"]))
        );
        let (b, rest) = take(&["--backend=wgpu", "exp"]).unwrap();
        assert_eq!((b.as_deref(), rest), (Some("wgpu"), strings(&["exp"])));
        let (b, _) = take(&["exp"]).unwrap();
        assert_eq!(b, None);
        assert!(take(&["exp", "--backend"]).is_err());
    }

    #[test]
    fn each_backend_turns_on_its_own_features_once() {
        assert_eq!(features_of(&["ndarray"]).unwrap(), "ndarray");
        assert_eq!(
            features_of(&["ndarray", "tch", "wgpu", "tch"]).unwrap(),
            "ndarray,tch,wgpu"
        );
        assert_eq!(features_of(&["tch-cuda"]).unwrap(), "tch-cuda");
    }

    #[test]
    fn the_tests_build_every_backend_but_the_cuda_ones() {
        assert_eq!(tested_backends(), ["cpu", "ndarray", "flex", "wgpu", "tch"]);
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(0), "19700101-000000");
        // 2026-11-29 13:28:24 UTC, and a leap day.
        assert_eq!(utc_timestamp(1_795_958_904), "20261129-132824");
        assert_eq!(utc_timestamp(951_782_400 + 3_661), "20000229-010101");
    }

    #[test]
    fn unknown_backend_lists_the_choices() {
        let err = run_experiment(&strings(&["exp", "--backend", "tpu"]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "unknown backend \"tpu\"; expected one of: cpu, ndarray, flex, wgpu, tch, tch-cuda, cuda"
        );
    }
}
