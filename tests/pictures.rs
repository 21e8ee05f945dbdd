//! What a person looks at after a run: every picture of the run folder (decoded and checked as
//! images), `kiln features`, `kiln predict` on a known checkpoint, and the HTML report opened in
//! headless Chromium.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_experiments::inspect::predict_files;
use kiln_experiments::RunFolder;

mod common;
use common::{arg, headless, tiny_run};

type B = burn_autodiff::Autodiff<burn_ndarray::NdArray<f32>>;

fn tiny() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(tmp.path(), 2);
    (tmp, run)
}

/// Decodes a PNG and checks it is a picture: at least `min` pixels each way and more than a
/// handful of colours (a blank or single-colour image fails).
fn assert_picture(path: &Path, min: (u32, u32)) -> (u32, u32) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: not a decodable PNG: {e}", path.display()))
        .to_rgb8();
    let (w, h) = img.dimensions();
    assert!(
        w >= min.0 && h >= min.1,
        "{}: {w}x{h}, expected at least {min:?}",
        path.display()
    );
    let mut colours: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        colours.len() > 8,
        "{}: only {} colours, looks blank",
        path.display(),
        colours.len()
    );
    let svg = fs::read_to_string(path.with_extension("svg")).unwrap();
    assert!(
        svg.starts_with("<svg"),
        "{}: no SVG beside it",
        path.display()
    );
    (w, h)
}

/// The points of the first polyline stroked in `colour` (`#RRGGBB`): in plotters' SVG, a curve's
/// line (its legend sample, drawn later, has the same colour).
fn polyline(svg: &str, colour: &str) -> Vec<(f64, f64)> {
    let element = svg
        .split("<polyline")
        .skip(1)
        .map(|e| &e[..e.find("/>").unwrap()])
        .find(|e| e.contains(&format!("stroke=\"{colour}\"")))
        .unwrap_or_else(|| panic!("no line in {colour}"));
    let points = element.split("points=\"").nth(1).unwrap();
    points[..points.find('"').unwrap()]
        .split_whitespace()
        .map(|xy| {
            let (x, y) = xy.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

/// loss.svg draws metrics.jsonl's epochs: one point per epoch for the training and the test
/// loss, at the same x for the same epoch, and heights that are one linear map of the losses
/// (to plotters' whole pixels).
fn assert_loss_curves_draw_the_metrics(run: &Path) {
    let events = kiln_experiments::run_dir::read_events(&run.join("metrics.jsonl")).unwrap();
    let epochs: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            kiln_train::Event::Epoch(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    let svg = fs::read_to_string(run.join("plots/loss.svg")).unwrap();
    // The first two series colours: training, then test (this run has no validation split).
    let train = polyline(&svg, "#1F77B4");
    let test = polyline(&svg, "#D62728");
    assert_eq!((train.len(), test.len()), (epochs.len(), epochs.len()));
    let mut drawn = Vec::new();
    for (k, m) in epochs.iter().enumerate() {
        assert_eq!(train[k].0, test[k].0, "epoch {} at one x", m.epoch);
        if k > 0 {
            assert!(train[k].0 > train[k - 1].0, "epochs left to right");
        }
        drawn.push((m.train_loss, train[k].1));
        drawn.push((m.test_loss.unwrap(), test[k].1));
    }
    // The map from the lowest and the highest loss; every other point must lie on it.
    let lo = drawn
        .iter()
        .copied()
        .fold((f64::INFINITY, 0.0), |a, p| if p.0 < a.0 { p } else { a });
    let hi = drawn.iter().copied().fold(
        (f64::NEG_INFINITY, 0.0),
        |a, p| if p.0 > a.0 { p } else { a },
    );
    assert!(hi.1 < lo.1, "a higher loss is drawn higher up: {drawn:?}");
    let y = |loss: f64| lo.1 + (loss - lo.0) / (hi.0 - lo.0) * (hi.1 - lo.1);
    for (loss, py) in drawn {
        assert!(
            (y(loss) - py).abs() <= 1.5,
            "loss {loss} at y {py}, expected {}",
            y(loss)
        );
    }
}

/// The synthetic data set's image of class `label` (its bright square), as a 28x28 PNG.
fn write_class_image(path: &Path, label: usize, size: u32) {
    let (top, left) = (2 + 12 * (label / 5), 1 + 5 * (label % 5));
    let img = image::GrayImage::from_fn(size, size, |c, r| {
        let inside =
            (top..top + 7).contains(&(r as usize)) && (left..left + 7).contains(&(c as usize));
        image::Luma([if inside { 220 } else { 20 }])
    });
    img.save(path).unwrap();
}

#[test]
fn a_run_leaves_every_picture_and_predict_and_features_work_on_its_checkpoint() {
    let (tmp, run) = tiny();
    let plots = run.join("plots");
    // Curves, the confusion matrix and the prediction grid, and the first test image's
    // kernels and feature maps: each a real image of a sensible size.
    assert_eq!(
        assert_picture(&plots.join("loss.png"), (800, 500)),
        (800, 500)
    );
    assert_picture(&plots.join("accuracy.png"), (800, 500));
    assert_picture(&plots.join("error-by-step.png"), (800, 500));
    assert_picture(&plots.join("confusion.png"), (600, 600));
    assert_picture(&plots.join("predictions.png"), (700, 500));
    assert_picture(&plots.join("kernels.png"), (300, 80));
    let maps = plots.join("features-test-0");
    assert_picture(&maps.join("input.png"), (128, 128));
    // LeNet-5: 6 maps of 28x28 after conv1, 16 of 10x10 after conv2.
    assert_picture(&maps.join("maps-01-conv1.png"), (500, 100));
    assert_picture(&maps.join("maps-02-conv2.png"), (500, 150));
    let svg = fs::read_to_string(maps.join("maps-02-conv2.svg")).unwrap();
    assert!(svg.contains("16 feature maps of 10x10"), "conv2's title");
    assert_loss_curves_draw_the_metrics(&run);

    // predict: a known image of each of two classes gets its class; bad files get errors that
    // name them, and do not stop the others.
    let files = tmp.path().join("files");
    fs::create_dir_all(&files).unwrap();
    write_class_image(&files.join("three.png"), 3, 28);
    write_class_image(&files.join("seven.png"), 7, 28);
    write_class_image(&files.join("big.png"), 3, 32);
    fs::write(files.join("notes.png"), "not an image").unwrap();
    let inputs: Vec<PathBuf> = [
        "three.png",
        "notes.png",
        "big.png",
        "missing.png",
        "seven.png",
    ]
    .iter()
    .map(|f| files.join(f))
    .collect();
    let folder = RunFolder::open(&run).unwrap();
    let results = predict_files::<B>(&folder, &inputs, 3, &Default::default()).unwrap();
    let top = |i: usize| results[i].1.as_ref().unwrap().clone();
    println!("three.png: {:?}\nseven.png: {:?}", top(0), top(4));
    assert_eq!(top(0).len(), 3);
    assert_eq!(top(0)[0].0, "Dress", "class 3 of Fashion-MNIST");
    assert_eq!(top(4)[0].0, "Sneaker", "class 7 of Fashion-MNIST");
    assert!(top(0)[0].1 > 0.5 && top(0)[0].1 >= top(0)[1].1);
    let error = |i: usize| results[i].1.as_ref().unwrap_err().to_string();
    assert!(
        error(1).contains("notes.png: cannot decode the image"),
        "{}",
        error(1)
    );
    assert!(
        error(2).contains("big.png: expected a 28x28 image (width x height), found 32x32"),
        "{}",
        error(2)
    );
    assert!(error(3).contains("missing.png"), "{}", error(3));
    // Through the command line: the readable files are printed, the exit is an error.
    let err = kiln_cli::main_with_args([
        "kiln",
        "predict",
        &arg(&run),
        &arg(&inputs[0]),
        &arg(&inputs[1]),
    ])
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "1 of 2 files could not be predicted (see above)"
    );

    // features of a file go to their own folder.
    kiln_cli::main_with_args(["kiln", "features", &arg(&run), "--image", &arg(&inputs[4])])
        .unwrap();
    assert_picture(&plots.join("features-seven/maps-01-conv1.png"), (500, 100));
}

#[test]
fn the_report_opens_in_a_browser_with_every_picture_loaded() {
    let (tmp, run) = tiny();
    let out = tmp.path().join("comparison");
    // The same run twice makes a comparison page too.
    kiln_cli::main_with_args([
        "kiln",
        "report",
        &arg(&run),
        &arg(&run),
        "--out",
        &arg(&out),
    ])
    .unwrap();
    for page in [run.join("index.html"), out.join("index.html")] {
        let html = fs::read_to_string(&page).unwrap();
        let images = html.matches("<img ").count();
        assert!(images >= 2, "{}: {images} images", page.display());
        // The page's own check, run by the browser after loading: every <img> decoded.
        let dom = headless(&["--virtual-time-budget=5000", "--dump-dom"], &page);
        let dom = String::from_utf8_lossy(&dom.stdout);
        let expected = format!("data-loaded=\"{images}/{images}\"");
        assert!(
            dom.contains(&expected),
            "{}: expected {expected} in <body>, got {:?}",
            page.display(),
            dom.lines().find(|l| l.contains("<body"))
        );
        assert!(dom.contains(&format!("all {images} pictures loaded")));
    }
    // The run's page lists what the run holds: the layer table and all nine pictures.
    let html = fs::read_to_string(run.join("index.html")).unwrap();
    assert!(html.contains("total parameters: 61,706"));
    assert_eq!(html.matches("<img ").count(), 9);

    // A screenshot shows the page: a large, far from blank image.
    let shot = tmp.path().join("shot.png");
    headless(
        &[
            "--window-size=1280,2000",
            &format!("--screenshot={}", shot.display()),
        ],
        &run.join("index.html"),
    );
    let img = image::open(&shot).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1280, 2000));
    let non_white = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    assert!(
        non_white > 1280 * 2000 / 20,
        "{non_white} non-white pixels: the page looks empty"
    );

    // A broken picture is reported by the page itself.
    fs::remove_file(run.join("plots/loss.png")).unwrap();
    let dom = headless(
        &["--virtual-time-budget=5000", "--dump-dom"],
        &run.join("index.html"),
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("data-loaded=\"8/9\"")
            && dom.contains("pictures that did not load: plots/loss.png")
    );
}
