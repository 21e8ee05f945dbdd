//! A data set of the user's own (`dataset = "folder"`), through the real command path with the
//! example experiment `experiments/own-images.toml`: three classes of generated images of
//! mixed sizes and colour modes train end to end, the run records the classes it found, and
//! bad folders give errors that name the difference.

use std::fs;
use std::path::Path;

use image::{GrayImage, Luma, Rgb, RgbImage};
use kiln_experiments::{ExperimentSpec, RunSummary, ValidSpec};

mod common;
use common::{arg, headless, only_entry};

/// A class name that is HTML: it must reach the report as text, never as markup.
const MARKUP: &str = "<img src=x onerror=alert(1)>";
const CLASSES: [&str; 3] = ["bars", "dots", MARKUP];

/// `n` images of class `class` (0, 1, 2) under `dir/<name>/`: vertical bars, a dot grid or a
/// filled centre square on noise, at one of three sizes; every third image is RGB.
fn write_class(dir: &Path, class: usize, n: usize, salt: u64) {
    let folder = dir.join(CLASSES[class]);
    fs::create_dir_all(&folder).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ salt ^ class as u64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 50) as u8
    };
    for i in 0..n {
        let side = [36u32, 40, 48][i % 3];
        let bright = |x: u32, y: u32| match class {
            0 => (x * 6 / side).is_multiple_of(2),
            1 => (x * 6 / side).is_multiple_of(2) && (y * 6 / side).is_multiple_of(2),
            _ => (side / 4..3 * side / 4).contains(&x) && (side / 4..3 * side / 4).contains(&y),
        };
        let mut value = |x, y| if bright(x, y) { 200 + noise() } else { noise() };
        let path = folder.join(format!("{i:03}.png"));
        if i % 3 == 2 {
            let img = RgbImage::from_fn(side, side, |x, y| {
                let v = value(x, y);
                Rgb([v, v, v])
            });
            img.save(&path).unwrap();
        } else {
            GrayImage::from_fn(side, side, |x, y| Luma([value(x, y)]))
                .save(&path)
                .unwrap();
        }
    }
}

fn write_set(root: &Path, train: usize, test: usize) {
    for class in 0..CLASSES.len() {
        write_class(&root.join("train"), class, train, 1);
        write_class(&root.join("test"), class, test, 2);
    }
}

fn example() -> &'static str {
    include_str!("../experiments/own-images.toml")
}

fn run(experiment: &Path, data: &Path, runs: &Path, epochs: &str) -> Result<(), String> {
    kiln_cli::main_with_args([
        "kiln",
        "run",
        &arg(experiment),
        "--epochs",
        epochs,
        "--data-dir",
        &arg(data),
        "--offline",
        "--runs-dir",
        &arg(runs),
        "--quiet",
    ])
    .map_err(|e| format!("{e:#}"))
}

#[test]
fn a_folder_of_three_classes_trains_end_to_end_and_the_run_records_its_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    write_set(&data, 60, 20);
    let experiment = tmp.path().join("own-images.toml");
    fs::write(&experiment, example()).unwrap();
    let runs = tmp.path().join("runs");
    run(&experiment, &data, &runs, "3").expect("the run succeeds");
    let dir = only_entry(&runs.join("own-images"));

    let summary: RunSummary =
        serde_json::from_slice(&fs::read(dir.join("summary.json")).unwrap()).unwrap();
    let mut sorted = CLASSES.map(String::from).to_vec();
    sorted.sort();
    assert_eq!(summary.classes, sorted, "the sub-folders of train/, sorted");
    assert_eq!(summary.image_shape, Some([1, 32, 32]));
    assert_eq!(summary.train_images, 180);
    println!("test accuracy {}", summary.final_test_accuracy);
    // Three classes: chance is a third; the patterns are plain enough for far more.
    assert!(
        summary.final_test_accuracy > 0.9,
        "accuracy {}",
        summary.final_test_accuracy
    );

    // The config the run keeps names what it found, so the run folder alone rebuilds the
    // network: classes and image size.
    let config = ValidSpec::from_toml(
        &fs::read_to_string(dir.join("config.toml")).unwrap(),
        "config.toml",
    )
    .unwrap();
    assert_eq!(config.data.classes, Some(sorted.clone()));
    assert_eq!(config.data.image_size, Some(32));
    assert_eq!(config.data.input_shape().unwrap(), [1, 32, 32]);

    // The report shows the class names as text.
    kiln_cli::main_with_args(["kiln", "report", &arg(&dir), "--quiet"])
        .expect("the report is written");
    let html = fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "the class name, escaped, is in the report"
    );
    assert!(!html.contains(MARKUP), "the raw markup is not");
    // And in a browser: the page's own check counts every <img> it loaded; an element made of
    // the class name (whose src `x` does not load) would add one and fail it.
    let pictures = html.matches("<img ").count();
    let dom = headless(
        &["--virtual-time-budget=5000", "--dump-dom"],
        &dir.join("index.html"),
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains(&format!("data-loaded=\"{pictures}/{pictures}\"")),
        "{:?}",
        dom.lines().find(|l| l.contains("<body"))
    );
    assert!(
        !dom.contains("<img src=\"x\""),
        "no element made of the class name"
    );
    assert!(
        dom.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "the name shown as text"
    );

    // Predictions name the user's classes.
    let image = data.join("test").join(CLASSES[2]).join("000.png");
    kiln_cli::main_with_args(["kiln", "predict", &arg(&dir), &arg(&image), "--quiet"])
        .expect("kiln predict takes the run's classes");
}

#[test]
fn a_test_split_with_other_classes_is_refused_naming_the_difference() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    write_set(&data, 3, 3);
    fs::rename(data.join("test/dots"), data.join("test/spots")).unwrap();
    let experiment = tmp.path().join("own-images.toml");
    fs::write(&experiment, example()).unwrap();
    let runs = tmp.path().join("runs");
    let err = run(&experiment, &data, &runs, "1").unwrap_err();
    assert!(
        err.contains("the test split's classes differ from the training split's")
            && err.contains("missing from test: [dots]")
            && err.contains("only in test: [spots]"),
        "{err}"
    );
    assert!(!runs.exists(), "no run folder for a run that cannot start");
}

#[test]
fn mixed_sizes_without_image_size_are_refused_naming_the_file_and_both_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    write_set(&data, 3, 3);
    let experiment = tmp.path().join("own-images.toml");
    fs::write(&experiment, example().replace("image_size = 32\n", "")).unwrap();
    let err = run(&experiment, &data, &tmp.path().join("runs"), "1").unwrap_err();
    assert!(
        err.contains("001.png") && err.contains("image is 40x40 pixels, expected 36x36"),
        "{err}"
    );
}

#[test]
fn folder_keys_are_checked_by_name() {
    let spec = |edits: &[(&str, &str)]| {
        let text = edits
            .iter()
            .fold(example().to_string(), |t, (from, to)| t.replace(from, to));
        ValidSpec::from_toml(&text, "own-images.toml")
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    spec(&[]).unwrap();
    let with_classes = |list: &str| format!("image_size = 32\nclasses = {list}");
    let (bad_name, twice) = (
        with_classes(r#"["cats", "../etc"]"#),
        with_classes(r#"["a", "a"]"#),
    );
    let cases: [(Vec<(&str, &str)>, &str); 5] = [
        (
            vec![("channels = 1", "channels = 2")],
            "data.channels: expected 1 (grayscale) or 3 (colour), found 2",
        ),
        (
            vec![("image_size = 32", "image_size = 4")],
            "data.image_size: expected 16 to 1024 pixels, found 4",
        ),
        (
            vec![("image_size = 32", bad_name.as_str())],
            "data.classes: expected folder names",
        ),
        (
            vec![("image_size = 32", twice.as_str())],
            "data.classes: \"a\" is listed twice",
        ),
        (
            vec![
                ("dataset = \"folder\"", "dataset = \"mnist\""),
                ("channels = 1\n", ""),
            ],
            "data.image_size: only for dataset = \"folder\"",
        ),
    ];
    for (edits, expected) in cases {
        let err = spec(&edits).unwrap_err();
        assert!(err.contains(expected), "{err}\nexpected: {expected}");
    }
    // Without classes, what needs them before the folders are read says which key to give.
    let spec = ExperimentSpec::from_toml(example(), "own-images.toml").unwrap();
    let err = spec.data.classes().unwrap_err();
    assert!(err.starts_with("data.classes: "), "{err}");
}
