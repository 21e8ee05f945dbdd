//! `cargo xtask bench`: every built-in experiment, and ResNet-18, on every CPU backend, beside
//! PyTorch eager measured in the same run on the same model, batch and threads.
//!
//! Each (experiment, backend) pair runs in its own `kiln bench` process and each PyTorch
//! figure in its own `xtask/bench/reference.py` process, one at a time, so that peak memory is
//! per pair and no two measurements share the cores. Results: bench.md and bench.json under
//! `runs/bench/<timestamp>/`. `--check FILE` compares the ratios with those recorded in FILE
//! and fails when one falls more than a quarter below its record (CI's short benchmark).
//!
//! `--rounds N` measures every pair N times, PyTorch and the backends alternating within each
//! round, and reports each figure's median over the rounds: one process that happens to run
//! fast or slow (a thread placed badly, another tenant, a clock change) then moves no ratio.
//! A single PyTorch process at 1.4x its usual speed once took LeNet-5's ratio below CI's floor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{
    features_of, kiln, output, project_root, runtime_env, take_option, tested_backends,
    tested_kiln, torch_venv, Install,
};

/// The six tutorial experiments, airbench94 and ResNet-18, smallest first. ResNet-18's recipe
/// is no longer a built-in (airbench94 replaced it) but its network is the bench's heaviest
/// row: `kiln bench` reads it from `tests/experiments/`.
pub const EXPERIMENTS: &[&str] = &[
    "lenet5-fashion-mnist",
    "lenet5-classic-fashion-mnist",
    "convnet-mnist",
    "simple-cnn-cifar10",
    "cnn-dropout-cifar10",
    "airbench94-cifar10",
    "resnet18-cifar10-fast",
    "resnet-cifar10",
];

/// How far below its recorded value a ratio may fall before `--check` fails.
const CHECK_TOLERANCE: f64 = 0.25;

struct Options {
    experiments: Vec<String>,
    backends: Vec<String>,
    warmup: String,
    steps: String,
    check: Option<PathBuf>,
    /// Measurements of each pair, alternated; figures are their medians.
    rounds: usize,
    /// Forwarded to `kiln bench` for the MNIST-format experiments.
    data_dir: Option<String>,
    /// CIFAR-10 as image folders (`DIR/{train,test}/<class>/`), for the CIFAR experiments.
    cifar_folder: Option<String>,
    /// Time the `kiln` of `cargo xtask test`'s build rather than build one.
    test_build: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let (experiments, rest) = take_option(args, "--experiments")?;
    let (backends, rest) = take_option(&rest, "--backends")?;
    let (warmup, rest) = take_option(&rest, "--warmup")?;
    let (steps, rest) = take_option(&rest, "--steps")?;
    let (check, rest) = take_option(&rest, "--check")?;
    let (data_dir, rest) = take_option(&rest, "--data-dir")?;
    let (cifar_folder, rest) = take_option(&rest, "--cifar-folder")?;
    let (rounds, rest) = take_option(&rest, "--rounds")?;
    let test_build = rest.iter().any(|a| a == "--test-build");
    let rest: Vec<String> = rest.into_iter().filter(|a| a != "--test-build").collect();
    if let Some(unknown) = rest.first() {
        bail!("bench: unexpected argument {unknown:?}\n\n{}", crate::USAGE);
    }
    let list = |s: Option<String>, default: &[&str]| -> Vec<String> {
        s.map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
            .unwrap_or_else(|| default.iter().map(|x| x.to_string()).collect())
    };
    let experiments = list(experiments, EXPERIMENTS);
    for e in &experiments {
        if !EXPERIMENTS.contains(&e.as_str()) {
            bail!(
                "bench: unknown experiment {e:?}; expected some of: {}",
                EXPERIMENTS.join(", ")
            );
        }
    }
    let rounds = match rounds {
        None => 1,
        Some(r) => match r.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => bail!("bench: --rounds expects a whole number of at least 1, found {r:?}"),
        },
    };
    Ok(Options {
        experiments,
        rounds,
        backends: list(backends, &["cpu", "flex", "tch"]),
        warmup: warmup.unwrap_or_else(|| "3".into()),
        steps: steps.unwrap_or_else(|| "10".into()),
        check: check.map(PathBuf::from),
        data_dir,
        cifar_folder,
        test_build,
    })
}

pub fn bench(args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    let names: Vec<&str> = opts.backends.iter().map(String::as_str).collect();
    crate::ensure_fashion_mnist()?;
    let (kiln, env) = if opts.test_build {
        let tested = tested_backends();
        if let Some(b) = names.iter().find(|b| !tested.contains(b)) {
            bail!(
                "bench: --test-build times the test build's kiln, which has the backends {}; \
                 {b:?} is not one of them",
                tested.join(", ")
            );
        }
        // The test build's own environment (tch, hence PyTorch, among its backends): another
        // would make cargo rebuild what reads it.
        let env = runtime_env(&tested, Install::Yes)?;
        let path = tested_kiln(&env)?;
        eprintln!("bench: timing the test build's kiln, {}", path.display());
        (Kiln::Binary(path), env)
    } else {
        // PyTorch is the reference, so it is needed whatever the backends.
        let mut all = names.clone();
        all.push("tch");
        (
            Kiln::Build(features_of(&names)?),
            runtime_env(&all, Install::Yes)?,
        )
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut rows = Vec::new();
    for experiment in &opts.experiments {
        let mut references = Vec::new();
        let mut kiln_runs = vec![Vec::new(); opts.backends.len()];
        for round in 1..=opts.rounds {
            if opts.rounds > 1 {
                eprintln!("bench: {experiment}, round {round} of {}", opts.rounds);
            }
            references.push(pytorch(experiment, threads, &opts)?);
            for (backend, runs) in opts.backends.iter().zip(&mut kiln_runs) {
                runs.push(kiln_bench(experiment, backend, &kiln, &env, &opts)?);
            }
        }
        let kiln_rows: Vec<Value> = kiln_runs.into_iter().map(medians).collect();
        rows.push(
            json!({ "experiment": experiment, "pytorch": medians(references),
            "kiln": kiln_rows }),
        );
    }

    // Ratios to PyTorch differ between processors of one machine kind: every figure names its.
    let processor = rows
        .iter()
        .flat_map(|r| r["kiln"].as_array().cloned().unwrap_or_default())
        .find_map(|k| k["processor"].as_str().map(String::from));
    let md = markdown(&rows, threads, processor.as_deref(), &opts);
    let dir = project_root().join("runs/bench").join(crate::timestamp());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ratios = ratios(&rows);
    let json = json!({ "threads": threads, "processor": processor, "warmup": opts.warmup,
        "steps": opts.steps, "rounds": opts.rounds, "results": rows, "ratios": ratios });
    std::fs::write(dir.join("bench.md"), &md)?;
    std::fs::write(dir.join("bench.json"), serde_json::to_vec_pretty(&json)?)?;
    println!("{md}\nwritten to {}", dir.join("bench.md").display());
    if let Some(file) = &opts.check {
        check(file, processor.as_deref(), &ratios)?;
    }
    Ok(())
}

/// Which `kiln` the bench times.
enum Kiln {
    /// Built (`cargo run`) with exactly these features: the benchmarked backends'.
    Build(String),
    /// This binary, built already (`--test-build`).
    Binary(PathBuf),
}

fn kiln_bench(
    experiment: &str,
    backend: &str,
    kiln_binary: &Kiln,
    env: &[(String, String)],
    opts: &Options,
) -> Result<Value> {
    let mut cmd = match kiln_binary {
        Kiln::Build(features) => kiln(features, env),
        Kiln::Binary(path) => {
            let mut cmd = Command::new(path);
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
            cmd
        }
    };
    let spec = spec_arg(experiment);
    cmd.args(["--quiet", "bench", &spec, "--backend", backend])
        .args([
            "--warmup",
            &opts.warmup,
            "--steps",
            &opts.steps,
            "--offline",
        ]);
    match (&opts.cifar_folder, &opts.data_dir) {
        (Some(dir), _) if experiment.contains("cifar10") => {
            cmd.args(["--layout", "folder", "--data-dir", dir]);
        }
        (_, Some(dir)) => {
            cmd.args(["--data-dir", dir]);
        }
        _ => {}
    }
    last_json_line(&output(cmd)?)
        .with_context(|| format!("kiln bench {experiment} --backend {backend}"))
}

/// What `kiln bench` takes for `experiment`: a built-in's name, or the path of a test-only
/// experiment's file (ResNet-18's, whose recipe airbench94 replaced).
fn spec_arg(experiment: &str) -> String {
    let test_only = project_root()
        .join("tests/experiments")
        .join(format!("{experiment}.toml"));
    match test_only.is_file() {
        true => test_only.to_string_lossy().into_owned(),
        false => experiment.to_string(),
    }
}

/// The figures a report's ratios and table are made of.
const FIGURES: &[&str] = &[
    "/train_images_per_sec",
    "/eval_images_per_sec",
    "/peak_rss_mib",
    "/pipeline_images_per_sec",
    "/decode_images_per_sec",
    "/by_layout/contiguous/train_images_per_sec",
    "/by_layout/contiguous/eval_images_per_sec",
    "/by_layout/channels_last/train_images_per_sec",
    "/by_layout/channels_last/eval_images_per_sec",
];

/// One report from several rounds of the same measurement: each of [`FIGURES`] is its median
/// over the rounds, the step times are every round's, and `rounds` keeps each round's figures
/// so that the spread stays visible in bench.json.
fn medians(reports: Vec<Value>) -> Value {
    let mut out = reports.first().cloned().unwrap_or(Value::Null);
    if reports.len() < 2 {
        return out;
    }
    for figure in FIGURES {
        let mut values: Vec<f64> = reports
            .iter()
            .filter_map(|r| r.pointer(figure)?.as_f64())
            .collect();
        // A figure some round lacks is left as the first round has it (absent or null).
        if values.len() != reports.len() {
            continue;
        }
        // kiln_train::bench::median's rule, written again: xtask builds before Burn's crates
        // and must not depend on them.
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        let median = if values.len() % 2 == 1 {
            values[mid]
        } else {
            (values[mid - 1] + values[mid]) / 2.0
        };
        *out.pointer_mut(figure).expect("the first round has it") = json!(median);
    }
    for steps in ["train_step_ms", "eval_step_ms"] {
        if out.get(steps).is_some() {
            let all: Vec<Value> = reports
                .iter()
                .flat_map(|r| r[steps].as_array().cloned().unwrap_or_default())
                .collect();
            out[steps] = Value::Array(all);
        }
    }
    let each: Vec<Value> = reports
        .iter()
        .map(|r| {
            FIGURES
                .iter()
                .filter_map(|f| Some((f[1..].replace('/', "."), r.pointer(f)?.clone())))
                .collect()
        })
        .collect();
    out["rounds"] = Value::Array(each);
    out
}

fn pytorch(experiment: &str, threads: usize, opts: &Options) -> Result<Value> {
    let mut py = Command::new(torch_venv().join("bin/python"));
    py.arg(project_root().join("xtask/bench/reference.py"))
        .arg(experiment)
        .args(["--threads", &threads.to_string()])
        .args(["--warmup", &opts.warmup, "--steps", &opts.steps]);
    last_json_line(&output(py)?).with_context(|| format!("PyTorch reference for {experiment}"))
}

fn last_json_line(out: &str) -> Result<Value> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("printed no JSON line")?;
    serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))
}

/// `(experiment, backend) -> {train, eval, memory}` ratios to PyTorch (speed: higher is
/// better; memory: Kiln's peak over PyTorch's, lower is better).
fn ratios(rows: &[Value]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for row in rows {
        let torch = &row["pytorch"];
        for k in row["kiln"].as_array().into_iter().flatten() {
            let ratio = |field: &str| {
                let (a, b) = (k[field].as_f64(), torch[field].as_f64());
                a.zip(b).map(|(a, b)| a / b)
            };
            let key = format!(
                "{}/{}",
                row["experiment"].as_str().unwrap_or("?"),
                k["backend"].as_str().unwrap_or("?")
            );
            // Against each of PyTorch's layouts too: records made against one keep meaning it.
            let by_layout: BTreeMap<&String, Value> = torch["by_layout"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(layout, t)| {
                    let ratio =
                        |field: &str| k[field].as_f64().zip(t[field].as_f64()).map(|(a, b)| a / b);
                    (
                        layout,
                        json!({ "train": ratio("train_images_per_sec"),
                                "eval": ratio("eval_images_per_sec") }),
                    )
                })
                .collect();
            out.insert(
                key,
                json!({
                    "train": ratio("train_images_per_sec"),
                    "eval": ratio("eval_images_per_sec"),
                    "memory": ratio("peak_rss_mib"),
                    "by_layout": by_layout,
                }),
            );
        }
    }
    out
}

fn markdown(rows: &[Value], threads: usize, processor: Option<&str>, opts: &Options) -> String {
    let peak = rows
        .iter()
        .flat_map(|r| r["kiln"].as_array().cloned().unwrap_or_default())
        .find_map(|k| k["fp32_peak_gflops"].as_f64());
    let mut md = format!(
        "# Kiln vs PyTorch eager, {threads} threads, {}\n\n\
         `cargo xtask bench --warmup {} --steps {} --rounds {}`: medians of {} timed steps after \
         {} warm-up steps{}, at each recipe's batch size; PyTorch {} on the same model, \
         optimiser, batch and threads, measured in the same run. Ratios are Kiln / PyTorch (speed: above 1 is \
         faster; memory: below 1 is smaller). Data pipeline: images/s preparing training \
         batches (augment, resize, normalise) on one thread, and loading + decoding the files.\n\n\
         PyTorch is timed in its contiguous and channels_last layouts and the faster one \
         counts (named in its row). FLOP per image: PyTorch's FLOP counter (matrix products and \
         convolutions) over one training step and one evaluation pass of the same network; \
         GFLOP/s = images/s x FLOP per image, and its share of the nominal fp32 peak of \
         these threads ({}).\n\n\
         | experiment (batch; train GFLOP/img) | backend | train img/s | vs PyTorch | train GFLOP/s (of peak) | eval img/s | vs PyTorch | eval GFLOP/s (of peak) | peak MiB | vs PyTorch | pipeline img/s | pipeline / step | decode img/s |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        processor.unwrap_or("processor unknown"),
        opts.warmup,
        opts.steps,
        opts.rounds,
        opts.steps,
        opts.warmup,
        if opts.rounds > 1 {
            format!(
                ", each figure the median of {} rounds with PyTorch and Kiln alternating",
                opts.rounds
            )
        } else {
            String::new()
        },
        rows.first()
            .and_then(|r| r["pytorch"]["torch"].as_str())
            .unwrap_or("?"),
        peak.map_or("unknown".into(), |p| format!("{p:.0} GFLOP/s")),
    );
    let num = |v: &Value| v.as_f64().map_or("?".into(), |x| format!("{x:.0}"));
    let ratio = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) => format!("{:.2}x", a / b),
        _ => "?".into(),
    };
    // GFLOP/s of `images_per_sec` at `flop` per image, with its share of the peak.
    let gflops =
        |images_per_sec: &Value, flop: &Value| match (images_per_sec.as_f64(), flop.as_f64()) {
            (Some(i), Some(f)) => {
                let g = i * f / 1e9;
                match peak {
                    Some(p) => format!("{g:.1} ({:.0}%)", 100.0 * g / p),
                    None => format!("{g:.1}"),
                }
            }
            _ => "?".into(),
        };
    for row in rows {
        let torch = &row["pytorch"];
        let experiment = row["experiment"].as_str().unwrap_or("?");
        let (train_flop, eval_flop) = (
            &torch["train_flop_per_image"],
            &torch["eval_flop_per_image"],
        );
        let layouts = match (
            torch["train_layout"].as_str(),
            torch["eval_layout"].as_str(),
        ) {
            (Some(t), Some(e)) if t == e => format!(" ({t})"),
            (Some(t), Some(e)) => format!(" (train {t}, eval {e})"),
            _ => String::new(),
        };
        md.push_str(&format!(
            "| {experiment} ({}; {}) | pytorch{layouts} | {} | | {} | {} | | {} | {} | | | | |\n",
            torch["batch"],
            train_flop
                .as_f64()
                .map_or("?".into(), |f| format!("{:.4}", f / 1e9)),
            num(&torch["train_images_per_sec"]),
            gflops(&torch["train_images_per_sec"], train_flop),
            num(&torch["eval_images_per_sec"]),
            gflops(&torch["eval_images_per_sec"], eval_flop),
            num(&torch["peak_rss_mib"]),
        ));
        for k in row["kiln"].as_array().into_iter().flatten() {
            md.push_str(&format!(
                "| | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                k["backend"].as_str().unwrap_or("?"),
                num(&k["train_images_per_sec"]),
                ratio(&k["train_images_per_sec"], &torch["train_images_per_sec"]),
                gflops(&k["train_images_per_sec"], train_flop),
                num(&k["eval_images_per_sec"]),
                ratio(&k["eval_images_per_sec"], &torch["eval_images_per_sec"]),
                gflops(&k["eval_images_per_sec"], eval_flop),
                num(&k["peak_rss_mib"]),
                ratio(&k["peak_rss_mib"], &torch["peak_rss_mib"]),
                num(&k["pipeline_images_per_sec"]),
                ratio(&k["pipeline_images_per_sec"], &k["train_images_per_sec"]),
                num(&k["decode_images_per_sec"]),
            ));
        }
    }
    md
}

/// Fails when a speed ratio fell more than [`CHECK_TOLERANCE`] below its record in `file`
/// (`{"<experiment>/<backend>": {"train": r, "eval": r}}`); pairs not measured now are
/// skipped, pairs measured but not recorded are listed so they can be added. Where the file
/// has records of this `processor` (`"by_processor": {"<processor>": {pairs}}`, the name
/// `kiln bench` reports), they replace the general ones, which hold for any other processor.
fn check(file: &Path, processor: Option<&str>, measured: &BTreeMap<String, Value>) -> Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the recorded ratios {}", file.display()))?;
    let mut recorded: BTreeMap<String, Value> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected a JSON object of \"<experiment>/<backend>\": {{\"train\": ratio, \"eval\": ratio}}",
            file.display()
        )
    })?;
    let own = records_for(&mut recorded, processor);
    println!(
        "bench check: {own} records of this processor ({}), the general ones for the rest",
        processor.unwrap_or("unknown")
    );
    let measured = &against_layout(measured, recorded.get("layout").and_then(Value::as_str));
    let failures = regressions(&recorded, measured);
    for key in measured.keys().filter(|k| !recorded.contains_key(*k)) {
        println!(
            "bench check: {key} has no recorded ratio in {}",
            file.display()
        );
    }
    if !failures.is_empty() {
        bail!(
            "bench check: {} ratio(s) fell more than {:.0}% below {}:\n{}",
            failures.len(),
            CHECK_TOLERANCE * 100.0,
            file.display(),
            failures.join("\n")
        );
    }
    println!(
        "bench check: every ratio within {:.0}% of {}",
        CHECK_TOLERANCE * 100.0,
        file.display()
    );
    Ok(())
}

/// The ratios to PyTorch in `layout` (`"contiguous"`, `"channels_last"`) where the records
/// were made against that one layout rather than the faster of the two (`None` or
/// `"faster"`; a processor's own records may say so over the file's general `layout`).
fn against_layout(
    measured: &BTreeMap<String, Value>,
    layout: Option<&str>,
) -> BTreeMap<String, Value> {
    let Some(layout) = layout.filter(|l| *l != "faster") else {
        return measured.clone();
    };
    measured
        .iter()
        .map(|(key, r)| (key.clone(), r["by_layout"][layout].clone()))
        .collect()
}

/// Replaces `recorded`'s general records by those of `processor` where it has some; returns
/// how many there were.
fn records_for(recorded: &mut BTreeMap<String, Value>, processor: Option<&str>) -> usize {
    let own = processor
        .and_then(|p| recorded.get("by_processor")?.get(p)?.as_object().cloned())
        .unwrap_or_default();
    let n = own.keys().filter(|k| k.contains('/')).count();
    recorded.extend(own);
    n
}

fn regressions(
    recorded: &BTreeMap<String, Value>,
    measured: &BTreeMap<String, Value>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (key, now) in measured {
        let Some(then) = recorded.get(key) else {
            continue;
        };
        for figure in ["train", "eval"] {
            let Some(record) = then[figure].as_f64() else {
                continue;
            };
            match now[figure].as_f64() {
                Some(r) if r >= record * (1.0 - CHECK_TOLERANCE) => {}
                got => failures.push(format!(
                    "  {key} {figure}: {} (recorded {record:.3})",
                    got.map_or("no figure".into(), |r| format!("{r:.3}"))
                )),
            }
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, f64, f64)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, t, e)| (k.to_string(), json!({ "train": t, "eval": e })))
            .collect()
    }

    #[test]
    fn a_ratio_more_than_a_quarter_below_its_record_fails_the_check() {
        let recorded = map(&[("lenet5/cpu", 1.2, 2.0), ("convnet/cpu", 1.0, 1.0)]);
        // 0.91 >= 0.75 * 1.2 = 0.9 passes; 1.4 < 1.5 fails; convnet is not measured.
        let measured = map(&[("lenet5/cpu", 0.91, 1.4), ("new/cpu", 0.1, 0.1)]);
        let failures = regressions(&recorded, &measured);
        assert_eq!(
            failures,
            vec!["  lenet5/cpu eval: 1.400 (recorded 2.000)".to_string()]
        );
    }

    #[test]
    fn a_processor_with_records_of_its_own_is_checked_against_them() {
        let mut recorded = map(&[("convnet/cpu", 0.85, 1.0), ("lenet5/cpu", 0.8, 0.9)]);
        recorded.insert(
            "by_processor".into(),
            json!({ "Xeon (family 6 model 207, AVX-512)": { "convnet/cpu": { "train": 0.6, "eval": 0.9 } } }),
        );
        let mut general = recorded.clone();
        assert_eq!(
            records_for(&mut general, Some("AMD EPYC (family 25 model 1, AVX2)")),
            0
        );
        assert_eq!(general["convnet/cpu"]["train"], 0.85);
        let mut xeon = recorded;
        assert_eq!(
            records_for(&mut xeon, Some("Xeon (family 6 model 207, AVX-512)")),
            1
        );
        assert_eq!(xeon["convnet/cpu"]["train"], 0.6);
        assert_eq!(
            xeon["lenet5/cpu"]["train"], 0.8,
            "the general record where it has none"
        );
        let measured = map(&[("convnet/cpu", 0.5, 1.0)]);
        assert!(
            regressions(&xeon, &measured).is_empty(),
            "0.5 is within 25% of 0.6"
        );
        assert_eq!(regressions(&general, &measured).len(), 1);
    }

    #[test]
    fn a_missing_figure_fails_where_one_was_recorded() {
        let recorded = map(&[("lenet5/cpu", 1.0, 1.0)]);
        let measured = BTreeMap::from([(
            "lenet5/cpu".to_string(),
            json!({ "train": null, "eval": 1.0 }),
        )]);
        assert_eq!(regressions(&recorded, &measured).len(), 1);
    }

    #[test]
    fn records_made_against_one_layout_are_checked_against_that_layout() {
        let torch = json!({ "train_images_per_sec": 200.0, "eval_images_per_sec": 400.0,
            "by_layout": {
                "contiguous": { "train_images_per_sec": 100.0, "eval_images_per_sec": 400.0 },
                "channels_last": { "train_images_per_sec": 200.0, "eval_images_per_sec": 300.0 },
            } });
        let kiln = json!({ "backend": "cpu", "train_images_per_sec": 90.0,
                           "eval_images_per_sec": 360.0 });
        let measured = ratios(&[json!({ "experiment": "a", "pytorch": torch, "kiln": [kiln] })]);
        assert_eq!(measured["a/cpu"]["train"], json!(0.45));
        let recorded = map(&[("a/cpu", 0.9, 0.9)]);
        // Against the faster layout 0.45 is far below 0.9; against contiguous it is 0.9.
        assert_eq!(regressions(&recorded, &measured).len(), 1);
        let contiguous = against_layout(&measured, Some("contiguous"));
        assert!(regressions(&recorded, &contiguous).is_empty());
        // A processor's records may be against the faster layout while the file's are not.
        let mut file = map(&[("a/cpu", 0.9, 0.9)]);
        file.insert("layout".into(), json!("contiguous"));
        let own = json!({ "x": { "layout": "faster", "a/cpu": { "train": 0.5, "eval": 0.9 } } });
        file.insert("by_processor".into(), own);
        records_for(&mut file, Some("x"));
        let layout = file.get("layout").and_then(Value::as_str);
        assert!(regressions(&file, &against_layout(&measured, layout)).is_empty());
        // A layout the reference did not time is no figure, and fails.
        let missing = against_layout(&measured, Some("nhwc16c"));
        assert_eq!(regressions(&recorded, &missing).len(), 2);
    }

    #[test]
    fn rounds_report_the_median_of_each_figure_and_keep_every_step() {
        let round = |train: f64, steps: &[f64]| {
            json!({ "backend": "pytorch", "batch": 256, "train_images_per_sec": train,
                    "eval_images_per_sec": 2.0 * train, "peak_rss_mib": 600.0,
                    "by_layout": { "contiguous": { "train_images_per_sec": train / 2.0 } },
                    "train_step_ms": steps })
        };
        // The middle round is the outlier a single measurement could have drawn.
        let one = medians(vec![
            round(13_900.0, &[1.0]),
            round(19_300.0, &[2.0]),
            round(13_400.0, &[3.0]),
        ]);
        assert_eq!(one["train_images_per_sec"], json!(13_900.0));
        assert_eq!(one["eval_images_per_sec"], json!(27_800.0));
        // Each layout's figures too: the check may compare with one of them.
        assert_eq!(
            one["by_layout"]["contiguous"]["train_images_per_sec"],
            json!(6_950.0)
        );
        assert_eq!(
            one["rounds"][1]["by_layout.contiguous.train_images_per_sec"],
            json!(9_650.0)
        );
        assert_eq!(one["batch"], json!(256));
        assert_eq!(one["train_step_ms"], json!([1.0, 2.0, 3.0]));
        assert_eq!(one["rounds"].as_array().unwrap().len(), 3);
        assert_eq!(one["rounds"][1]["train_images_per_sec"], json!(19_300.0));
        assert!(one["rounds"][1].get("decode_images_per_sec").is_none());
        // Kiln's reports have pipeline figures PyTorch's lack: absent stays absent.
        assert!(one.get("pipeline_images_per_sec").is_none());

        let even = medians(vec![round(10.0, &[]), round(20.0, &[])]);
        assert_eq!(even["train_images_per_sec"], json!(15.0));
        let single = round(5.0, &[]);
        assert_eq!(medians(vec![single.clone()]), single);
    }

    #[test]
    fn every_benched_experiment_is_a_builtin_or_a_test_only_file() {
        let root = project_root();
        for experiment in EXPERIMENTS {
            let arg = spec_arg(experiment);
            let file = match arg == *experiment {
                true => root.join("experiments").join(format!("{experiment}.toml")),
                false => PathBuf::from(&arg),
            };
            assert!(file.is_file(), "{experiment}: no {}", file.display());
        }
        assert!(spec_arg("resnet18-cifar10-fast")
            .ends_with("tests/experiments/resnet18-cifar10-fast.toml"));
    }

    #[test]
    fn options_default_to_every_experiment_on_the_pure_rust_backends_and_tch() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.experiments, EXPERIMENTS);
        assert_eq!(o.backends, ["cpu", "flex", "tch"]);
        assert_eq!(o.rounds, 1);
        assert!(!o.test_build, "builds its own kiln unless told otherwise");
        let o = parse(&["--test-build".into(), "--backends".into(), "cpu".into()]).unwrap();
        assert!(o.test_build);
        assert_eq!(o.backends, ["cpu"]);
        let err = parse(&["--rounds".into(), "0".into()]).err().unwrap();
        assert!(
            err.to_string()
                .contains("--rounds expects a whole number of at least 1, found \"0\""),
            "{err}"
        );
        let err = parse(&["--experiments".into(), "mnist".into()])
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("unknown experiment \"mnist\""),
            "{err}"
        );
    }
}
