//! `cargo xtask results RUN...`: the README's results table, made from the runs' own
//! `summary.json` files instead of typed by hand, so that every figure in it is one a run
//! recorded, with the processor it ran on.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub fn results(runs: &[String]) -> Result<()> {
    if runs.is_empty() {
        bail!("usage: cargo xtask results RUN_FOLDER...");
    }
    let mut summaries = Vec::new();
    for run in runs {
        let path = Path::new(run).join("summary.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: cannot read it (a finished run has one)",
                path.display()
            )
        })?;
        let summary: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        summaries.push((run.as_str(), summary));
    }
    print!("{}", table(&summaries)?);
    Ok(())
}

/// One markdown row per run, in the order given.
fn table(runs: &[(&str, Value)]) -> Result<String> {
    let mut md = String::from(
        "| experiment | backend | processor | epochs | final (best) test accuracy | train img/s | seconds |\n\
         | --- | --- | --- | ---: | --- | ---: | ---: |\n",
    );
    for (run, s) in runs {
        let number = |key: &str| {
            s[key]
                .as_f64()
                .with_context(|| format!("{run}/summary.json: expected a number at {key:?}"))
        };
        let text = |key: &str| {
            s[key]
                .as_str()
                .with_context(|| format!("{run}/summary.json: expected a string at {key:?}"))
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.2}% ({:.2}%) | {:.0} | {:.0} |\n",
            text("experiment")?,
            text("backend")?,
            s["processor"].as_str().unwrap_or("not recorded"),
            number("epochs")?,
            100.0 * number("final_test_accuracy")?,
            100.0 * number("best_test_accuracy")?,
            number("train_images_per_sec")?,
            number("total_seconds")?,
        ));
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_per_run_from_its_summary_and_a_missing_figure_is_named() {
        let run = serde_json::json!({
            "experiment": "lenet5-fashion-mnist", "backend": "cpu", "epochs": 14,
            "final_test_accuracy": 0.8938, "best_test_accuracy": 0.89461,
            "train_images_per_sec": 6080.4, "total_seconds": 146.0,
            "processor": "Intel(R) Xeon(R) Processor (family 6 model 207, AVX-512)"
        });
        let md = table(&[("runs/a", run.clone())]).unwrap();
        assert_eq!(
            md.lines().nth(2).unwrap(),
            "| lenet5-fashion-mnist | cpu | Intel(R) Xeon(R) Processor (family 6 model 207, \
             AVX-512) | 14 | 89.38% (89.46%) | 6080 | 146 |"
        );
        let mut old = run;
        old.as_object_mut().unwrap().remove("processor");
        old.as_object_mut().unwrap().remove("epochs");
        let err = table(&[("runs/b", old)]).unwrap_err().to_string();
        assert_eq!(err, "runs/b/summary.json: expected a number at \"epochs\"");
    }
}
