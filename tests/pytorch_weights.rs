//! PyTorch weights in and out, for every built-in experiment's network.
//!
//! `pytorch/tutorial_weights.py` builds each network as its PyTorch code defines it (the
//! tutorials' own module names), with batch-norm statistics away from their defaults, and
//! saves `torch.save(net.state_dict())` and its eval-mode logits for fixed inputs. Then:
//! - `kiln import` loads the `.pt` into Kiln's network, whose logits must equal PyTorch's within
//!   1e-4 of their scale;
//! - Kiln exports those weights as safetensors, PyTorch loads them (`strict=True`) into a blanked
//!   network, and its logits must equal Kiln's within the same tolerance.
//!
//! Needs Python with PyTorch: `cargo xtask test` installs it and puts it first on `PATH`
//! (or set `KILN_TORCH_PYTHON`). Built with the `parity` feature, like the other tests that need
//! PyTorch.

use std::path::Path;
use std::process::Command;

use burn::prelude::*;
use kiln_experiments::ValidSpec;
use kiln_models::ImageClassifier;

mod common;
use common::{experiment_arg, python};

type Inner = burn_ndarray::NdArray;

const IMAGES: usize = 2;
/// max |logit difference| / max |logit|.
const TOLERANCE: f64 = 1e-4;

fn script(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pytorch/tutorial_weights.py");
    let output = Command::new(python())
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{}`: {e}; this test needs Python with PyTorch (`cargo xtask test` \
                 puts its virtualenv first on PATH, or set KILN_TORCH_PYTHON)",
                python()
            )
        });
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// max |a - b| / max |b|.
fn relative_difference(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let diff = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs() as f64));
    diff / scale.max(f64::MIN_POSITIVE)
}

fn builtin(name: &str) -> ValidSpec {
    kiln_experiments::load(&experiment_arg(name))
        .unwrap()
        .validate()
        .unwrap()
}

fn round_trip(experiment: &str) {
    let spec = builtin(experiment);
    let dir = tempfile::tempdir().unwrap();
    let at = |file: &str| dir.path().join(file);
    let arg = |file: &str| at(file).to_string_lossy().into_owned();
    let [c, h, w] = spec.data.input_shape().unwrap();
    // Inputs in [-1, 1) from a fixed sequence: the same on every machine.
    let n = IMAGES * c * h * w;
    let inputs: Vec<f32> = (0..n)
        .map(|i| ((i as u64).wrapping_mul(2_654_435_761) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    let bytes: Vec<u8> = inputs.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(at("inputs.f32"), bytes).unwrap();
    let images = IMAGES.to_string();
    let folder = dir.path().to_string_lossy().into_owned();
    script(&["save", experiment, &folder, &images]);

    // In: the tutorial's state dict through the real command.
    kiln_cli::main_with_args([
        "kiln",
        "import",
        &experiment_arg(experiment),
        &arg("weights.pt"),
        "--out",
        &arg("model.mpk"),
        "--backend",
        "ndarray",
    ])
    .unwrap_or_else(|e| panic!("{experiment}: kiln import failed: {e:#}"));
    let device = Default::default();
    let tensor = Tensor::<Inner, 4>::from_data(TensorData::new(inputs, [IMAGES, c, h, w]), &device);
    // Eval mode: a backend without autodiff runs batch norm on its running statistics.
    let logits = |weights: &Path| -> Vec<f32> {
        let model = spec.model.build::<Inner>([c, h, w], 10, &device);
        kiln_experiments::load_weights(model, weights, &device)
            .expect("the imported weights load")
            .logits(tensor.clone())
            .into_data()
            .to_vec()
            .unwrap()
    };
    let kiln = logits(&at("model.mpk"));
    let torch = read_f32(&at("torch-logits.f32"));
    let import = relative_difference(&kiln, &torch);
    println!("{experiment}: import: Kiln's logits vs PyTorch's: {import:.2e} of their scale");
    assert!(
        import <= TOLERANCE,
        "{experiment}: imported weights give logits {import:.2e} (relative) from PyTorch's\n\
         Kiln: {kiln:?}\nPyTorch: {torch:?}"
    );

    // Out: Kiln's weights as safetensors, loaded by PyTorch.
    kiln_experiments::export_safetensors::<Inner>(
        &spec,
        ([c, h, w], 10),
        &at("model.mpk"),
        &at("kiln.safetensors"),
        &device,
    )
    .unwrap();
    script(&["check", experiment, &folder, &images]);
    let back = read_f32(&at("roundtrip-logits.f32"));
    let export = relative_difference(&back, &kiln);
    println!("{experiment}: export: PyTorch's logits vs Kiln's: {export:.2e} of their scale");
    assert!(
        export <= TOLERANCE,
        "{experiment}: exported weights give PyTorch logits {export:.2e} (relative) from Kiln's"
    );
}

#[test]
fn simple_cnn_cifar10() {
    round_trip("simple-cnn-cifar10");
}

#[test]
fn resnet_cifar10() {
    round_trip("resnet-cifar10");
}

#[test]
fn convnet_mnist() {
    round_trip("convnet-mnist");
}

#[test]
fn cnn_dropout_cifar10() {
    round_trip("cnn-dropout-cifar10");
}

#[test]
fn lenet5_fashion_mnist() {
    round_trip("lenet5-fashion-mnist");
}

#[test]
fn lenet5_classic_fashion_mnist() {
    round_trip("lenet5-classic-fashion-mnist");
}

#[test]
fn resnet18_cifar10_fast() {
    round_trip("resnet18-cifar10-fast");
}

#[test]
fn airbench94_cifar10() {
    round_trip("airbench94-cifar10");
}

#[test]
fn every_builtin_experiment_is_covered() {
    let covered = [
        "simple-cnn-cifar10",
        "resnet-cifar10",
        "convnet-mnist",
        "cnn-dropout-cifar10",
        "lenet5-fashion-mnist",
        "lenet5-classic-fashion-mnist",
        // Test-only (tests/experiments/) since airbench94 replaced its recipe.
        "resnet18-cifar10-fast",
        "airbench94-cifar10",
    ];
    for spec in kiln_experiments::builtin() {
        assert!(
            covered.contains(&spec.name.as_str()),
            "{}: add it to this test and to pytorch/tutorial_weights.py",
            spec.name
        );
    }
}

/// A file whose tensors do not fit: the error names each key and both shapes, and nothing is
/// written.
#[test]
fn a_mismatched_state_dict_is_refused_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_string_lossy().into_owned();
    // LeNet-5's inputs, but the ConvNet's weights.
    let [c, h, w] = builtin("convnet-mnist").data.input_shape().unwrap();
    let zeros = vec![0u8; 4 * IMAGES * c * h * w];
    std::fs::write(dir.path().join("inputs.f32"), zeros).unwrap();
    script(&["save", "convnet-mnist", &folder, &IMAGES.to_string()]);
    let out = dir.path().join("model.mpk");
    let err = kiln_experiments::import_pytorch::<Inner>(
        &builtin("lenet5-fashion-mnist"),
        &dir.path().join("weights.pt"),
        &out,
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "weights.pt: the weights do not fit the model",
        // conv1 is [4, 1, 5, 5] in the ConvNet, [6, 1, 5, 5] in LeNet-5.
        "shape mismatch: `conv1.weight`: Kiln expects [6, 1, 5, 5], the file has [4, 1, 5, 5]",
        "missing: `fc3.weight` is not in the file",
    ] {
        assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    }
    assert!(
        !out.exists(),
        "nothing is written when the weights do not fit"
    );
}

/// `examples/pytorch-classify`: LeNet-5 weights saved by the tutorial's PyTorch code classify
/// image files as PyTorch does.
#[test]
fn the_classify_example_agrees_with_pytorch() {
    use kiln_example_pytorch_classify::{classify, MEAN, STD};
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_string_lossy().into_owned();
    let images: Vec<Vec<u8>> = (0..IMAGES)
        .map(|k| {
            (0..28 * 28)
                .map(|i| ((i * 7 + k * 91) % 256) as u8)
                .collect()
        })
        .collect();
    let files: Vec<std::path::PathBuf> = (0..IMAGES)
        .map(|k| dir.path().join(format!("image-{k}.png")))
        .collect();
    for (pixels, file) in images.iter().zip(&files) {
        image::GrayImage::from_raw(28, 28, pixels.clone())
            .unwrap()
            .save(file)
            .unwrap();
    }
    // The same images, normalised as the example does, for PyTorch.
    let inputs: Vec<u8> = images
        .iter()
        .flatten()
        .flat_map(|&p| ((p as f32 / 255.0 - MEAN) / STD).to_le_bytes())
        .collect();
    std::fs::write(dir.path().join("inputs.f32"), inputs).unwrap();
    script(&["save", "lenet5-fashion-mnist", &folder, &IMAGES.to_string()]);

    let paths: Vec<&Path> = files.iter().map(|f| f.as_path()).collect();
    let kiln: Vec<f32> = classify(&dir.path().join("weights.pt"), &paths)
        .unwrap()
        .concat();
    let torch: Vec<f32> = read_f32(&dir.path().join("torch-logits.f32"))
        .chunks(10)
        .flat_map(|row| {
            let max = row.iter().fold(f32::MIN, |m, &v| m.max(v));
            let exp: Vec<f64> = row.iter().map(|&v| ((v - max) as f64).exp()).collect();
            let sum: f64 = exp.iter().sum();
            exp.into_iter().map(move |e| (e / sum) as f32)
        })
        .collect();
    let difference = relative_difference(&kiln, &torch);
    println!("classify example: probabilities vs PyTorch's: {difference:.2e} of their scale");
    assert!(
        difference <= TOLERANCE,
        "probabilities {kiln:?}\nPyTorch's {torch:?}"
    );
}
