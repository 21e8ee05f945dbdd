//! What `kiln sweep --slurm` and `kiln compare --slurm` share: the `#SBATCH` lines of a job
//! script, `sbatch`, and reading job states back from `squeue` (`sacct` needs the accounting
//! daemon, which many small clusters do not run).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};
use clap::Args;

/// Where and how a job runs, as `sbatch` takes it.
#[derive(Debug, Clone, Default, Args)]
pub struct SlurmArgs {
    /// Submit to Slurm (`sbatch`) instead of running here.
    #[arg(long)]
    pub slurm: bool,
    /// Slurm partition (`sbatch --partition`).
    #[arg(long, value_name = "NAME", requires = "slurm")]
    pub partition: Option<String>,
    /// Each job's time limit (`sbatch --time`, e.g. 30 or 2:00:00). Kiln gets SIGUSR1 a minute
    /// before it and stops with a checkpoint (status 75), which `kiln run --resume` continues.
    #[arg(long, value_name = "TIME", requires = "slurm")]
    pub time: Option<String>,
    /// Cores per job (`sbatch --cpus-per-task`); also Kiln's thread count in the job.
    #[arg(long, value_name = "N", requires = "slurm")]
    pub cpus_per_task: Option<usize>,
    /// Generic resources per job (`sbatch --gres`, e.g. gpu:1).
    #[arg(long, value_name = "GRES", requires = "slurm")]
    pub gres: Option<String>,
    /// Any other `sbatch` option, as one word (`--sbatch-arg=--account=ml`); repeatable.
    #[arg(
        long,
        value_name = "OPTION",
        requires = "slurm",
        allow_hyphen_values = true
    )]
    pub sbatch_arg: Vec<String>,
}

impl SlurmArgs {
    /// The `#SBATCH` lines for these options (and `extra`, appended).
    pub fn directives(&self, extra: &[String]) -> String {
        let mut lines = String::new();
        let mut add = |option: String| {
            lines.push_str("#SBATCH ");
            lines.push_str(&option);
            lines.push('\n');
        };
        if let Some(p) = &self.partition {
            add(format!("--partition={p}"));
        }
        if let Some(t) = &self.time {
            add(format!("--time={t}"));
        }
        if let Some(c) = self.cpus_per_task {
            add(format!("--cpus-per-task={c}"));
        }
        if let Some(g) = &self.gres {
            add(format!("--gres={g}"));
        }
        for option in self.sbatch_arg.iter().chain(extra) {
            add(option.clone());
        }
        lines
    }
}

/// The lines every Kiln job script starts with after its `#SBATCH` lines: stop on error, and
/// as many threads as the job was given cores.
pub const SCRIPT_PRELUDE: &str = "set -eu
if [ -n \"${SLURM_CPUS_PER_TASK:-}\" ]; then
    export RAYON_NUM_THREADS=$SLURM_CPUS_PER_TASK OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK
fi
";

/// `sbatch --parsable SCRIPT` (with `options` before it); returns the job id.
pub fn submit(script: &Path, options: &[String]) -> Result<String> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .args(options)
        .arg(script)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "--slurm: sbatch is not on PATH (run this on a Slurm login node, or without \
                     --slurm to run here)"
                )
            } else {
                anyhow::Error::new(e).context("starting sbatch")
            }
        })?;
    if !out.status.success() {
        bail!(
            "sbatch {} refused the job ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // `--parsable` prints `id` or `id;cluster`.
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch printed {text:?}, expected a job id");
    }
    Ok(id)
}

/// The state (`PENDING`, `RUNNING`, ...) of each task of job array `job` that Slurm still
/// lists, by task id; empty once the job has left the queue, or where `squeue` cannot be asked.
pub fn array_states(job: &str) -> BTreeMap<usize, String> {
    let out = Command::new("squeue")
        .args(["--noheader", "--array", "--jobs", job, "--format", "%K %T"])
        .output();
    let Ok(out) = out else {
        return BTreeMap::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (task, state) = line.trim().split_once(' ')?;
            Some((task.parse().ok()?, state.trim().to_string()))
        })
        .collect()
}

/// `text` as one word for a POSIX shell: as it is where that is safe, else single-quoted.
pub fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// `words` as one shell command line.
pub fn shell_line<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| shell_word(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_survive_a_shell() {
        let words = [
            "run",
            "a b",
            "it's",
            "data.validation={ from = \"train\", count = 50 }",
            "",
        ];
        let line = shell_line(&words);
        let out = Command::new("sh")
            .args([
                "-c",
                &format!("for w in {line}; do printf '%s\\n' \"$w\"; done"),
            ])
            .output()
            .unwrap();
        let got: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(got, words);
    }

    #[test]
    fn directives_list_every_option_given() {
        let args = SlurmArgs {
            slurm: true,
            partition: Some("gpu".into()),
            time: Some("30".into()),
            cpus_per_task: Some(4),
            gres: Some("gpu:1".into()),
            sbatch_arg: vec!["--account=ml".into()],
        };
        assert_eq!(
            args.directives(&["--array=0-3".into()]),
            "#SBATCH --partition=gpu\n#SBATCH --time=30\n#SBATCH --cpus-per-task=4\n\
             #SBATCH --gres=gpu:1\n#SBATCH --account=ml\n#SBATCH --array=0-3\n"
        );
    }
}
