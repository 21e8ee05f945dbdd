//! `index.html` reports: one per run (summary, layer table, metrics, every picture) and one
//! comparing several runs. Plain HTML with relative links, so a report opens offline from the
//! file system, and the folder can be zipped and sent.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use kiln_train::Event;

use kiln_experiments::run_dir::{self, write_atomic};
use kiln_experiments::{RunError, RunFolder};

use crate::pictures::{save, Curves, Series};

const STYLE: &str = "body{font-family:sans-serif;margin:2em auto;max-width:1250px;color:#222}\
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;font-size:.92em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}\
th{background:#f3f3f3}td.l,th.l{text-align:left}pre{background:#f7f7f7;padding:.8em;overflow-x:auto}\
figure{display:inline-block;margin:.6em;vertical-align:top}figcaption{font-size:.85em;color:#555}\
img{max-width:100%;border:1px solid #ddd}#status{padding:.5em;margin-top:2em}\
.broken{background:#fdd;color:#900}.ok{background:#efe;color:#060}";

/// Marks the page once it has loaded: how many pictures loaded, and which did not. Readers see
/// a broken report at once, and tests read `data-loaded` from the page.
const CHECK_IMAGES: &str = "<script>window.addEventListener('load',()=>{\
const imgs=[...document.images];const bad=imgs.filter(i=>!(i.complete&&i.naturalWidth>0));\
const s=document.getElementById('status');\
document.body.dataset.loaded=(imgs.length-bad.length)+'/'+imgs.length;\
if(bad.length){s.className='broken';s.textContent='pictures that did not load: '+bad.map(i=>i.getAttribute('src')).join(', ');}\
else{s.className='ok';s.textContent='all '+imgs.length+' pictures loaded';}});</script>";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style></head>\n<body>\n{body}\n<p id=\"status\">checking pictures…</p>\n\
         {CHECK_IMAGES}\n</body></html>\n",
        escape(title)
    )
}

fn percent(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// A path usable in a link from `from_dir` to `to` (both made absolute first).
fn relative(from_dir: &Path, to: &Path) -> PathBuf {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (from, to) = (abs(from_dir), abs(to));
    let from: Vec<Component> = from.components().collect();
    let to_parts: Vec<Component> = to.components().collect();
    let common = from
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for part in &to_parts[common..] {
        out.push(part);
    }
    out
}

fn link(from_dir: &Path, to: &Path) -> String {
    let rel = relative(from_dir, to);
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    escape(&parts.join("/"))
}

/// The PNGs under `plots/`, top level first, then each subfolder, in name order.
fn pictures(plots: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![plots.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for path in entries.into_iter().rev() {
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "png") {
                found.push(path);
            }
        }
    }
    // The run's story in order: how training went, what the model gets wrong, what it sees.
    const ORDER: [&str; 6] = [
        "loss",
        "accuracy",
        "error-by-step",
        "confusion",
        "predictions",
        "kernels",
    ];
    found.sort_by_key(|p| {
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rank = ORDER.iter().position(|o| *o == stem).unwrap_or(ORDER.len());
        (p.parent().map(Path::to_path_buf), rank, p.clone())
    });
    found
}

/// Writes `<run>/index.html` and returns its path.
pub fn write_run_report(run: &RunFolder) -> Result<PathBuf, RunError> {
    let s = &run.summary;
    let mut body = String::new();
    let _ = writeln!(
        body,
        "<h1>{} on {}</h1>\n<p>{}</p>",
        escape(&s.experiment),
        escape(&s.backend),
        escape(&run.spec.description)
    );
    let mut facts = vec![
        ("test accuracy (final)", percent(s.final_test_accuracy)),
        (
            "best test accuracy",
            format!("{} (epoch {})", percent(s.best_test_accuracy), s.best_epoch),
        ),
        ("epochs", s.epochs.to_string()),
        ("wall time", format!("{:.1} s", s.total_seconds)),
        (
            "training speed",
            format!("{:.0} images/s", s.train_images_per_sec),
        ),
        (
            "evaluation speed",
            format!("{:.0} images/s", s.eval_images_per_sec),
        ),
        (
            "images",
            format!("{} train, {} test", s.train_images, s.test_images),
        ),
        ("seed", s.seed.to_string()),
        // The user's own folder names, for a folder set: text, escaped below like every value.
        ("classes", run.classes().join(", ")),
        ("Kiln", s.kiln_version.clone()),
    ];
    if let Some(v) = s.final_valid_accuracy {
        facts.insert(1, ("validation accuracy (final)", percent(v)));
    }
    if let Some(m) = s.peak_rss_mib {
        facts.push(("peak host memory", format!("{m:.0} MiB")));
    }
    body.push_str("<h2>Summary</h2>\n<table>\n");
    for (k, v) in facts {
        let _ = writeln!(
            body,
            "<tr><th class=\"l\">{k}</th><td>{}</td></tr>",
            escape(&v)
        );
    }
    body.push_str("</table>\n");

    body.push_str("<h2>Network</h2>\n");
    match std::fs::read_to_string(run.dir.join(run_dir::LAYERS)) {
        Ok(text) => {
            let _ = writeln!(body, "<pre>{}</pre>", escape(&text));
        }
        Err(_) => {
            let _ = writeln!(
                body,
                "<p>No layers.txt in this run (older runs lack it); <code>kiln summary {}</code> prints the table.</p>",
                escape(&s.experiment)
            );
        }
    }

    body.push_str("<h2>Metrics by epoch</h2>\n");
    body.push_str(&metrics_table(&run.events));

    body.push_str("<h2>Pictures</h2>\n");
    let found = pictures(&run.plots_dir());
    if found.is_empty() {
        let _ = writeln!(
            body,
            "<p class=\"broken\">No pictures: this run has no plots/ folder. <code>kiln plots {}</code> draws them.</p>",
            escape(&run.dir.display().to_string())
        );
    }
    let mut section = None;
    for png in &found {
        let folder = png.parent().map(Path::to_path_buf);
        if folder != section {
            if let Some(f) = &folder {
                if f != &run.plots_dir() {
                    let name = f
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let _ = writeln!(body, "<h3>{}</h3>", escape(&name));
                }
            }
            section = folder;
        }
        let svg = png.with_extension("svg");
        let name = png
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let svg_link = if svg.is_file() {
            format!(" · <a href=\"{}\">SVG</a>", link(&run.dir, &svg))
        } else {
            String::new()
        };
        let _ = writeln!(
            body,
            "<figure><a href=\"{src}\"><img src=\"{src}\" alt=\"{alt}\"></a><figcaption>{alt}{svg_link}</figcaption></figure>",
            src = link(&run.dir, png),
            alt = escape(&name),
        );
    }

    body.push_str("<h2>Experiment (config.toml)</h2>\n");
    if let Ok(text) = std::fs::read_to_string(run.dir.join(run_dir::CONFIG)) {
        let _ = writeln!(body, "<pre>{}</pre>", escape(&text));
    }
    let path = run.dir.join(run_dir::REPORT);
    let html = page(&format!("{} on {}", s.experiment, s.backend), &body);
    write_atomic(&path, html.as_bytes()).map_err(|source| RunError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn metrics_table(events: &[Event]) -> String {
    let epochs: Vec<&kiln_train::EpochMetrics> = Event::epochs(events).collect();
    let valid = epochs.iter().any(|m| m.valid_accuracy.is_some());
    let mut out = String::from(
        "<table>\n<tr><th>epoch</th><th>lr</th><th>train loss</th><th>train acc.</th>",
    );
    if valid {
        out.push_str("<th>valid. loss</th><th>valid. acc.</th>");
    }
    out.push_str(
        "<th>test loss</th><th>test acc.</th><th>seconds</th><th>train images/s</th></tr>\n",
    );
    for m in epochs {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.4}</td><td>{}</td>",
            m.epoch,
            m.lr,
            m.train_loss,
            percent(m.train_accuracy)
        );
        if valid {
            let _ = write!(
                out,
                "<td>{}</td><td>{}</td>",
                m.valid_loss.map_or("".into(), |l| format!("{l:.4}")),
                m.valid_accuracy.map_or("".into(), percent)
            );
        }
        let _ = writeln!(
            out,
            "<td>{}</td><td>{}</td><td>{:.1}</td><td>{:.0}</td></tr>",
            m.test_loss.map_or("".into(), |l| format!("{l:.4}")),
            m.test_accuracy.map_or("".into(), percent),
            m.seconds,
            m.train_images_per_sec
        );
    }
    out.push_str("</table>\n");
    out
}

/// Writes `out/index.html` comparing `runs` (a table and test curves of all of them, drawn into
/// `out/`), linking to each run's own report. Returns its path.
pub fn write_comparison(runs: &[RunFolder], out: &Path) -> Result<PathBuf, RunError> {
    let io = |source| RunError::Io {
        path: out.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(out).map_err(io)?;
    let label = |r: &RunFolder| {
        let folder = r
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{} / {folder}", r.summary.experiment)
    };
    let curve = |f: fn(&kiln_train::EpochMetrics) -> Option<f64>| -> Vec<Series> {
        runs.iter()
            .map(|r| Series {
                name: label(r),
                points: Event::epochs(&r.events)
                    .filter_map(|m| Some((m.epoch as f64, f(m)?)))
                    .collect(),
            })
            .collect()
    };
    let charts = [
        (
            "test-accuracy",
            Curves {
                title: "test accuracy by epoch".into(),
                x_label: "epoch".into(),
                y_label: "test accuracy (%)".into(),
                series: curve(|m| m.test_accuracy.map(|a| 100.0 * a)),
                rising: true,
            },
        ),
        (
            "train-loss",
            Curves {
                title: "training loss by epoch".into(),
                x_label: "epoch".into(),
                y_label: "cross-entropy loss (mean over the epoch)".into(),
                series: curve(|m| Some(m.train_loss)),
                rising: false,
            },
        ),
    ];
    let mut body = format!("<h1>Comparison of {} runs</h1>\n<table>\n", runs.len());
    body.push_str(
        "<tr><th class=\"l\">run</th><th class=\"l\">backend</th><th>epochs</th><th>test acc. (final)</th>\
         <th>best</th><th>wall time</th><th>train images/s</th><th>peak host memory</th></tr>\n",
    );
    for r in runs {
        let s = &r.summary;
        let _ = writeln!(
            body,
            "<tr><td class=\"l\"><a href=\"{}\">{}</a></td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{:.1} s</td><td>{:.0}</td><td>{}</td></tr>",
            link(out, &r.dir.join("index.html")),
            escape(&label(r)),
            escape(&s.backend),
            s.epochs,
            percent(s.final_test_accuracy),
            percent(s.best_test_accuracy),
            s.total_seconds,
            s.train_images_per_sec,
            s.peak_rss_mib.map_or("".into(), |m| format!("{m:.0} MiB"))
        );
    }
    body.push_str("</table>\n<h2>Curves</h2>\n");
    for (stem, chart) in &charts {
        let [png, svg] = save(chart, &out.join(stem)).map_err(io)?;
        let _ = writeln!(
            body,
            "<figure><img src=\"{}\" alt=\"{stem}\"><figcaption>{stem} · <a href=\"{}\">SVG</a></figcaption></figure>",
            link(out, &png),
            link(out, &svg)
        );
    }
    let path = out.join(run_dir::REPORT);
    write_atomic(&path, page("Kiln comparison", &body).as_bytes()).map_err(io)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_relative_between_folders() {
        let r = relative(
            Path::new("/a/runs/reports/x"),
            Path::new("/a/runs/exp/run1/index.html"),
        );
        assert_eq!(r, PathBuf::from("../../exp/run1/index.html"));
        assert_eq!(
            relative(Path::new("/a/b"), Path::new("/a/b/plots/l.png")),
            PathBuf::from("plots/l.png")
        );
        assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
