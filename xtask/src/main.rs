//! `cargo xtask ...`: project automation in Rust, so it runs wherever cargo does.
//!
//! - `run-experiment <experiment> [--backend NAME] [kiln run options...]`: builds `kiln` in
//!   release mode with the features the backend needs and runs the experiment (installing
//!   Debian's Fashion-MNIST package first when it is missing and we may).
//! - `test`: installs what the tests need (Fashion-MNIST from Debian's package), then runs the
//!   whole test suite in release mode (the tests train real models).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// `--backend` name -> the `kiln-cli` cargo features it needs.
const BACKENDS: &[(&str, &str)] = &[("ndarray", "ndarray")];

const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
const FASHION_MNIST_PACKAGE: &str = "dataset-fashion-mnist";

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  run-experiment <experiment> [--backend NAME] [options passed to `kiln run`]
      build kiln (release) with the backend's features and run the experiment;
      e.g. cargo xtask run-experiment lenet5-fashion-mnist --backend ndarray --epochs 1
  test [cargo test options]
      install the test data if missing, then run every test (release build)";

fn main() {
    if let Err(e) = run(std::env::args().skip(1).collect()) {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(());
    };
    match command.as_str() {
        "run-experiment" => run_experiment(rest),
        "test" => test(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

fn run_experiment(args: &[String]) -> Result<()> {
    let (backend, kiln_args) = take_backend(args)?;
    let Some(features) = BACKENDS
        .iter()
        .find(|(name, _)| *name == backend)
        .map(|(_, f)| *f)
    else {
        let names: Vec<&str> = BACKENDS.iter().map(|(n, _)| *n).collect();
        bail!(
            "unknown backend {backend:?}; expected one of: {}",
            names.join(", ")
        );
    };
    if kiln_args.first().is_none_or(|a| a.starts_with('-')) {
        bail!("missing the experiment name\n\n{USAGE}");
    }
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "--package",
        "kiln-cli",
        "--no-default-features",
    ])
    .args(["--features", features, "--", "run", "--backend", &backend])
    .args(&kiln_args);
    status(cmd)
}

/// Splits `--backend NAME` / `--backend=NAME` (anywhere in `args`) from the arguments for kiln.
fn take_backend(args: &[String]) -> Result<(String, Vec<String>)> {
    let mut backend = None;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--backend" {
            backend = Some(it.next().context("--backend needs a value")?.clone());
        } else if let Some(value) = arg.strip_prefix("--backend=") {
            backend = Some(value.to_string());
        } else {
            rest.push(arg.clone());
        }
    }
    Ok((backend.unwrap_or_else(|| "ndarray".into()), rest))
}

fn test(args: &[String]) -> Result<()> {
    ensure_fashion_mnist()?;
    let mut cmd = cargo();
    cmd.args(["test", "--release", "--workspace"]).args(args);
    status(cmd)
}

/// Installs Debian's Fashion-MNIST package (the real-data tests read it) when it is missing
/// and we may: as root or with password-less sudo.
fn ensure_fashion_mnist() -> Result<()> {
    if Path::new(FASHION_MNIST_DIR)
        .join("t10k-labels-idx1-ubyte.gz")
        .is_file()
    {
        return Ok(());
    }
    let install = format!("apt-get install -y {FASHION_MNIST_PACKAGE}");
    let as_root = is_root();
    let sudo = !as_root
        && Command::new("sudo")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !as_root && !sudo {
        bail!(
            "the tests need Fashion-MNIST in {FASHION_MNIST_DIR}; install it with\n    sudo apt-get update && sudo {install}\n\
             (or set KILN_DATA_DIR to a folder holding the four Fashion-MNIST IDX files)"
        );
    }
    eprintln!("xtask: installing {FASHION_MNIST_PACKAGE} (the real-data tests read it)");
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
    status(apt(&["install", "-y", "-q", FASHION_MNIST_PACKAGE]))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
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

fn status(mut cmd: Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn backend_is_taken_from_anywhere_and_the_rest_is_forwarded() {
        let (b, rest) =
            take_backend(&strings(&["exp", "--epochs", "1", "--backend", "ndarray"])).unwrap();
        assert_eq!(
            (b.as_str(), rest),
            ("ndarray", strings(&["exp", "--epochs", "1"]))
        );
        let (b, rest) = take_backend(&strings(&["--backend=wgpu", "exp"])).unwrap();
        assert_eq!((b.as_str(), rest), ("wgpu", strings(&["exp"])));
        let (b, _) = take_backend(&strings(&["exp"])).unwrap();
        assert_eq!(b, "ndarray");
        assert!(take_backend(&strings(&["exp", "--backend"])).is_err());
    }

    #[test]
    fn unknown_backend_lists_the_choices() {
        let err = run_experiment(&strings(&["exp", "--backend", "tpu"]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "unknown backend \"tpu\"; expected one of: ndarray");
    }
}
