//! Backend parity: every built-in experiment's network and ResNet-18 (test-only), from identical weights and inputs, on
//! ndarray (the reference), cpu (Kiln's own backend), flex, wgpu and tch (libtorch on the CPU).
//!
//! For each backend: the forward logits of one batch, the gradient of every parameter for that
//! batch's loss, and the loss curve of 20 optimiser steps of the experiment's own recipe (its
//! optimiser, learning rate and batch pipeline; a smaller batch to keep the test short), all
//! compared with ndarray's. Dropout is off (each backend draws its own masks). Every figure is
//! printed, so the margins are visible with `--nocapture`. The ResNets run at a quarter of
//! their widths and have their loss curves checked over two steps: see `RESNET_CHECKED_STEPS`.
//!
//! Built only with the `parity` feature (`cargo xtask test` turns it on after installing Mesa's
//! software Vulkan and PyTorch); a backend that cannot run fails the test.

use std::marker::PhantomData;
use std::path::Path;

mod common;

use burn::module::{AutodiffModule, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{FloatDType, IntDType};
use kiln_cli::{dispatch, BackendTask};
use kiln_data::{ImageBatch, ImageBatcher, ImageSet};
use kiln_experiments::{ExperimentSpec, ModelSpec};
use kiln_models::params::{visit_params, ParamVisitor};
use kiln_models::{Classifier, ImageClassifier};
use kiln_train::{Event, FitData, FitOptions};

const REFERENCE: &str = "ndarray";
/// The reference backend's type, as `dispatch` binds it for [`REFERENCE`].
type Reference = burn_autodiff::Autodiff<burn_ndarray::NdArray<f32>>;

/// Runs a task that only the reference runs. Through `dispatch` it would be compiled for every
/// backend, and this test binary is already the workspace's longest to build.
fn on_reference<T: BackendTask>(task: T) -> T::Output {
    task.run::<Reference>(&burn_ndarray::NdArrayDevice::Cpu)
}
const OTHERS: [&str; 4] = ["cpu", "flex", "wgpu", "tch"];
const STEPS: usize = 20;

/// max |logit difference| / max |logit|.
const LOGITS_TOLERANCE: f64 = 1e-4;
/// |g - g_ref| / |g_ref| (Euclidean norms), for every parameter.
const GRADIENT_TOLERANCE: f64 = 1e-3;
/// |loss - loss_ref| / |loss_ref| at every step.
const LOSS_TOLERANCE: f64 = 1e-3;

/// Whether `value` is within `tolerance`: a NaN never is, so a broken backend cannot pass.
fn within(value: f64, tolerance: f64) -> bool {
    value <= tolerance
}

/// A parameter whose reference gradient norm is at most this fraction of the model's largest
/// is taken as having a zero gradient (see `Diff::zero_grads`).
const ZERO_GRADIENT: f64 = 1e-6;
/// ... and on the other backend its gradient norm must stay below this fraction.
const ZERO_GRADIENT_TOLERANCE: f64 = 1e-5;

/// What one backend computed.
#[derive(Debug, Clone)]
struct Measured {
    logits: Vec<f32>,
    /// (parameter path, gradient), in the module's visiting order.
    grads: Vec<(String, Vec<f32>)>,
    losses: Vec<f64>,
    /// The logits' float type, as Burn names it (`F32`, `F64`).
    float_dtype: String,
}

/// The tests that draw weights take turns. A backend's seeded generator is one per process
/// (ndarray's, flex's), and every case seeds it (`fit` does, at its start): a test seeding it
/// while another draws its weights gave that one other weights, and with them other ReLU ties
/// (seen on 2026-11-30: the tutorial ResNet's first loss was 2.8811 alone and 3.4990 beside the
/// other tests, its tch gradients 2.3e-4 and 1.2e-3 off ndarray's).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks `experiment`'s network at `batch_size`; the loss-curve tolerance applies to the
/// first `checked_steps` of the `STEPS` (all of them but for the ResNets, see below).
fn parity(experiment: &str, batch_size: usize, checked_steps: usize) {
    if let Some(dir) = std::env::var_os(F64_CHILD) {
        return f64_child(experiment, batch_size, Path::new(&dir));
    }
    let _turn = one_at_a_time();
    let inputs = Inputs::new(experiment, batch_size);
    let weights = on_reference(SaveWeights { spec: &inputs.spec });
    let case = inputs.case(&weights);
    let reference = dispatch(REFERENCE, None, case.clone()).unwrap();

    let mut failures = Vec::new();
    println!("{experiment}: batch {batch_size}, {STEPS} steps, against {REFERENCE}");
    let mut measured = vec![(REFERENCE, reference)];
    for backend in OTHERS {
        let m = dispatch(backend, None, case.clone())
            .unwrap_or_else(|e| panic!("{experiment}: backend {backend} cannot run: {e:#}"));
        let d = Diff::between(&measured[0].1, &m, checked_steps);
        println!("  {backend:<8} {d}");
        // Every parameter past tolerance, not only the worst: where they sit in the network
        // points at the operation that went wrong.
        for p in d
            .by_param
            .iter()
            .filter(|p| !within(p.relative, GRADIENT_TOLERANCE))
        {
            println!(
                "  {backend:<8} gradient past tolerance: {} {:.1e}",
                p.name, p.relative
            );
        }
        failures.extend(d.past_tolerance().map(|f| format!("{backend} {f}")));
        measured.push((backend, m));
    }
    // Diagnosis: every backend, the reference included, against ndarray in f64.
    if std::env::var_os("KILN_PARITY_F64").is_some() {
        let truth = f64_truth(experiment, &weights);
        for (backend, m) in &measured {
            println!("  {backend:<8} vs f64: {}", Diff::between(&truth, m, STEPS));
        }
    }
    assert!(
        failures.is_empty(),
        "{experiment}: backends disagree with {REFERENCE}: {failures:?}"
    );
}

/// What a parity test feeds every backend but the weights, built the same way in the
/// f64 child process.
struct Inputs {
    spec: ExperimentSpec,
    train: ImageSet,
    test: ImageSet,
    batcher: ImageBatcher,
}

impl Inputs {
    fn new(experiment: &str, batch_size: usize) -> Inputs {
        let spec = parity_spec(experiment, batch_size);
        let (train, test) = synthetic_sets(&spec, batch_size);
        let batcher = spec.data.batcher(&train);
        Inputs {
            spec,
            train,
            test,
            batcher,
        }
    }

    fn case<'a>(&'a self, weights: &'a [u8]) -> Case<'a> {
        Case {
            spec: &self.spec,
            train: &self.train,
            test: &self.test,
            batcher: &self.batcher,
            weights,
        }
    }
}

/// The experiment's spec as the parity tests run it: dropout off, `batch_size`, `STEPS` steps
/// each logged.
fn parity_spec(experiment: &str, batch_size: usize) -> ExperimentSpec {
    let mut spec = kiln_experiments::load(&common::experiment_arg(experiment)).unwrap();
    spec.model = spec.model.without_dropout();
    // The ResNets at a quarter of their widths: the same blocks, strides, shortcuts, batch
    // norms and head as the experiment's network, at a cost CI can carry (at full width and
    // batch 2, ndarray and lavapipe take about ten minutes per network). Batch norm over two
    // images made 20 steps chaotic: logits and gradients agreed to 2e-6 and 8e-6, yet the loss
    // curves parted by over 50% within 20 steps, on every backend alike. Batch 8 keeps the
    // statistics tame.
    if let ModelSpec::Resnet { widths, .. } = &mut spec.model {
        widths.iter_mut().for_each(|w| *w /= 4);
    }
    // At seed 42 one ReLU input of resnet18 (layers.1.blocks.0, after bn1) is exactly 0 in
    // ndarray's f32 arithmetic and 2.8e-7 in wgpu's: ReLU's derivative (0 at 0) lets that
    // element's gradient through on one backend only, and gradients part by 2.9e-2 where
    // both backends computed correctly rounded values (`resnet18_replica` shows it). Gradient
    // agreement is only defined away from such ties, so the ResNets are checked at weights
    // drawn from seeds without one.
    //
    // The tutorial's resnet-cifar10 has such a tie at seed 42 too: the block `layers.3.blocks.0`
    // ends in a ReLU whose input for image 1, channel 94, pixel 5 is 2.4e-7 on flex, -8.9e-7 on
    // cpu and 4.8e-6 on ndarray, all within f32 rounding of sums of terms near 1, and cpu's
    // gradients part from the others' by 2.5e-2 from that block upstream. Such ties are common
    // in this network (a ReLU before and after each addition, half a million ReLU inputs in the
    // first batch): a functional replica run on ndarray, flex and cpu for seeds 0 to 39 found a
    // sign that differs between them for 18 of the 40 (measured on 2026-11-30). Which seeds
    // are tie-free depends on the inputs and on every backend's rounding: when the resize
    // became Pillow's (2026-12-05), seed 17, until then the widest margin, put wgpu and tch on
    // one side of a tie and the CPU backends on the other (gradients 9.5e-3 apart); of seeds
    // 0, 2, 3 and 17 run through this test with `KILN_PARITY_SEED` (gemm's AVX-512 kernels
    // in cpu and flex, AVX-512 Xeon), only seed 0 had every backend within tolerance, with
    // gradients 5.5e-6 from ndarray's at worst. A kernel that changes a backend's rounding can
    // move a tie onto these weights again: rerun the search the same way.
    match experiment {
        "resnet18-cifar10-fast" => spec.recipe.seed = RESNET18_SEED,
        "resnet-cifar10" => spec.recipe.seed = RESNET_TUTORIAL_SEED,
        _ => {}
    }
    // Diagnosis: the search for a tie-free seed runs the test itself at each candidate.
    if let Some(seed) = std::env::var("KILN_PARITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        spec.recipe.seed = seed;
    }
    spec.recipe.batch_size = batch_size;
    spec.recipe.max_steps = Some(STEPS);
    spec.recipe.log_every = 1;
    spec.recipe.validate_every = None;
    spec
}

/// resnet18-cifar10-fast's weights: a seed whose first batches put no ReLU input within
/// rounding of 0 on one backend and not on another, as seed 42 does (see `parity_spec`).
const RESNET18_SEED: u64 = 7;
/// resnet-cifar10's: a seed whose first batches put no ReLU input on a tie between backends
/// (see `parity_spec`).
const RESNET_TUTORIAL_SEED: u64 = 0;

/// Set in the child process that computes the f64 reference: the folder holding the weights
/// and receiving the result.
const F64_CHILD: &str = "KILN_PARITY_F64_CHILD";
type F64 = burn_autodiff::Autodiff<burn_ndarray::NdArray<f64>>;

/// The test's measurements on ndarray in f64, from `weights`. Burn keeps one default float
/// type per device, set before its first tensor, and ndarray's f32 and f64 backends share
/// their device; in this process it is f32 by now (an f64 run here would quietly compute in
/// f32), so the f64 run is a child process: this test binary, running just this test.
fn f64_truth(experiment: &str, weights: &[u8]) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("weights.bin"), weights).unwrap();
    let test_name = experiment.replace('-', "_");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([&test_name, "--exact", "--include-ignored", "--nocapture"])
        .env(F64_CHILD, dir.path())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{experiment}: the f64 run failed: {status}"
    );
    let path = dir.path().join("truth.json");
    let json = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (did the child run test {test_name}?)",
            path.display()
        )
    });
    let truth = Measured::from_json(&serde_json::from_str(&json).unwrap());
    assert_eq!(
        truth.float_dtype, "F64",
        "the f64 reference computed in another type"
    );
    truth
}

/// The child's half of `f64_truth`: f64 before the first tensor, then the same case.
fn f64_child(experiment: &str, batch_size: usize, dir: &Path) {
    let device = Default::default();
    burn::tensor::set_default_dtypes::<F64>(&device, FloatDType::F64, IntDType::I64)
        .expect("ndarray's default float type was set before the f64 run");
    let inputs = Inputs::new(experiment, batch_size);
    let weights = std::fs::read(dir.join("weights.bin")).unwrap();
    let truth = inputs.case(&weights).run::<F64>(&device);
    std::fs::write(dir.join("truth.json"), truth.to_json().to_string()).unwrap();
}

impl Measured {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "logits": self.logits,
            "grads": self.grads,
            "losses": self.losses,
            "float_dtype": self.float_dtype,
        })
    }

    fn from_json(v: &serde_json::Value) -> Measured {
        serde_json::from_value::<(Vec<f32>, Vec<(String, Vec<f32>)>, Vec<f64>, String)>(
            serde_json::json!([v["logits"], v["grads"], v["losses"], v["float_dtype"]]),
        )
        .map(|(logits, grads, losses, float_dtype)| Measured {
            logits,
            grads,
            losses,
            float_dtype,
        })
        .unwrap()
    }
}

/// How far one backend's numbers are from the reference's.
struct Diff {
    /// max |logit difference| / max |logit|.
    logits: f64,
    scale: f64,
    /// Every parameter with a real gradient, in the model's order.
    by_param: Vec<ParamDiff>,
    /// Parameters whose gradient is zero up to rounding in the reference: biases of
    /// convolutions that feed batch norm, whose output does not depend on them. A relative
    /// difference means nothing there; their largest gradient norm on the other backend,
    /// relative to the largest gradient norm of the model, is checked instead.
    zero_grads: f64,
    zero_count: usize,
    /// max |loss - loss_ref| / |loss_ref| over the checked steps, over all of them, and the
    /// first step past tolerance.
    losses: f64,
    all_losses: f64,
    parts_at: Option<usize>,
    first_loss: f64,
    last_loss: f64,
    last_loss_ref: f64,
}

/// One parameter's gradient on a backend against the reference's.
struct ParamDiff {
    /// The parameter's path in the module tree.
    name: String,
    /// |g - g_ref| / |g_ref|.
    relative: f64,
    /// |g_ref| over the model's largest parameter gradient norm.
    share: f64,
}

impl Diff {
    fn between(reference: &Measured, m: &Measured, checked_steps: usize) -> Diff {
        let scale = max_abs(&reference.logits);
        assert_eq!(reference.grads.len(), m.grads.len(), "parameter count");
        assert_eq!(
            reference.losses.len(),
            STEPS,
            "steps logged by the reference"
        );
        assert_eq!(m.losses.len(), STEPS, "steps logged");
        let largest = reference
            .grads
            .iter()
            .map(|(_, g)| norm(g))
            .fold(0.0f64, worse);
        let (mut zero_grads, mut zero_count) = (0.0f64, 0);
        let mut by_param = Vec::new();
        for ((name, g_ref), (other, g)) in reference.grads.iter().zip(&m.grads) {
            assert_eq!(name, other, "parameters visited in another order");
            if norm(g_ref) <= ZERO_GRADIENT * largest {
                zero_count += 1;
                zero_grads = worse(zero_grads, norm(g) / largest);
                continue;
            }
            by_param.push(ParamDiff {
                name: name.clone(),
                relative: relative_norm_diff(g_ref, g),
                share: norm(g_ref) / largest,
            });
        }
        let curve = |steps: usize| {
            reference.losses[..steps]
                .iter()
                .zip(&m.losses)
                .map(|(a, b)| (a - b).abs() / a.abs())
                .fold(0.0f64, worse)
        };
        let (losses, all_losses) = (curve(checked_steps), curve(STEPS));
        let parts_at = reference
            .losses
            .iter()
            .zip(&m.losses)
            .position(|(a, b)| !within((a - b).abs() / a.abs(), LOSS_TOLERANCE))
            .map(|i| i + 1);
        Diff {
            parts_at,
            all_losses,
            logits: max_abs_diff(&reference.logits, &m.logits) / scale,
            scale,
            by_param,
            zero_grads,
            zero_count,
            losses,
            first_loss: m.losses[0],
            last_loss: m.losses[STEPS - 1],
            last_loss_ref: reference.losses[STEPS - 1],
        }
    }
}

impl Diff {
    /// The parameter whose gradient differs most (a NaN counts as the most).
    fn worst(&self) -> Option<&ParamDiff> {
        self.by_param.iter().reduce(|w, p| {
            if w.relative.is_nan() || p.relative <= w.relative {
                w
            } else {
                p
            }
        })
    }

    /// The largest relative gradient difference; 0 where no parameter has a real gradient.
    fn grads(&self) -> f64 {
        self.worst().map_or(0.0, |p| p.relative)
    }

    /// Each figure past its tolerance, as "what: value > tolerance".
    fn past_tolerance(&self) -> impl Iterator<Item = String> {
        [
            ("logits", self.logits, LOGITS_TOLERANCE),
            ("gradients", self.grads(), GRADIENT_TOLERANCE),
            ("zero gradients", self.zero_grads, ZERO_GRADIENT_TOLERANCE),
            ("loss curve", self.losses, LOSS_TOLERANCE),
        ]
        .into_iter()
        .filter(|&(_, value, tolerance)| !within(value, tolerance))
        .map(|(what, value, tolerance)| format!("{what}: {value:.2e} > {tolerance:.0e}"))
    }
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "logits {:.1e} (scale {:.2})  gradients {:.1e}",
            self.logits,
            self.scale,
            self.grads()
        )?;
        if let Some(w) = self.worst() {
            write!(
                f,
                " (worst: {}, norm {:.1e} of the largest)",
                w.name, w.share
            )?;
        }
        if self.zero_count > 0 {
            write!(
                f,
                "  zero gradients ({}) {:.1e}",
                self.zero_count, self.zero_grads
            )?;
        }
        write!(
            f,
            "  loss curve {:.1e}, all {STEPS} steps {:.1e} (first {:.4}, last {:.4} vs {:.4})",
            self.losses, self.all_losses, self.first_loss, self.last_loss, self.last_loss_ref
        )?;
        match self.parts_at {
            Some(step) => write!(f, ", past tolerance from step {step}"),
            None => Ok(()),
        }
    }
}

/// Images of the data set's size that a network can learn, so the 20 steps descend rather
/// than thrash: class `k` is a bright square at one of ten places on pseudo-random noise
/// (random-label noise made batch-norm gradients cancel to 4e-3 on every backend alike).
/// `STEPS` batches to train on and two to evaluate.
fn synthetic_sets(spec: &ExperimentSpec, batch: usize) -> (ImageSet, ImageSet) {
    let dataset = spec.data.dataset;
    let side = dataset.image_size().expect("a built-in data set");
    let channels = dataset.channels();
    let classes = spec.data.classes().unwrap();
    let square = side / 4;
    let make = |n: usize, salt: u64| {
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ salt;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u32
        };
        let mut pixels = Vec::with_capacity(n * channels * side * side);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let label = next() as usize % classes.len();
            let (top, left) = (label / 5 * side / 2 + 1, label % 5 * (side - square) / 4);
            for _ in 0..channels {
                for r in 0..side {
                    for c in 0..side {
                        let inside =
                            (top..top + square).contains(&r) && (left..left + square).contains(&c);
                        let noise = (next() % 96) as u8;
                        pixels.push(if inside { 150 + noise } else { noise });
                    }
                }
            }
            // A third of the labels are drawn at random, so the loss stays well above zero:
            // the curves are compared relatively, and a loss near zero (LeNet-5 reached 0.002
            // in 20 steps on clean labels) turns rounding into large relative differences.
            let label = if next() % 3 == 0 {
                next() as usize % classes.len()
            } else {
                label
            };
            labels.push(label as u8);
        }
        ImageSet::new(channels, side, side, pixels, labels, classes.clone())
    };
    (make(STEPS * batch, 1), make(2 * batch, 2))
}

/// The reference's seeded initial weights, as bytes any backend can load.
struct SaveWeights<'a> {
    spec: &'a ExperimentSpec,
}

impl BackendTask for SaveWeights<'_> {
    type Output = Vec<u8>;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Vec<u8> {
        B::seed(device, self.spec.recipe.seed);
        let input = self.spec.data.input_shape().unwrap();
        let classes = self.spec.data.classes().unwrap().len();
        let model = self.spec.model.build::<B>(input, classes, device);
        BinBytesRecorder::<FullPrecisionSettings>::new()
            .record(model.into_record(), ())
            .unwrap()
    }
}

#[derive(Clone)]
struct Case<'a> {
    spec: &'a ExperimentSpec,
    train: &'a ImageSet,
    test: &'a ImageSet,
    batcher: &'a ImageBatcher,
    weights: &'a [u8],
}

impl Case<'_> {
    /// `model` with the case's weights.
    fn load<B: AutodiffBackend>(&self, model: Classifier<B>, device: &B::Device) -> Classifier<B> {
        let record = BinBytesRecorder::<FullPrecisionSettings, Vec<u8>>::new()
            .load(self.weights.to_vec(), device)
            .unwrap();
        model.load_record(record)
    }

    /// The batch whose logits and gradients are compared: the first of the training set.
    fn first_batch<B: AutodiffBackend>(&self, device: &B::Device) -> ImageBatch<B> {
        burn::data::dataloader::batcher::Batcher::batch(
            self.batcher,
            (0..self.spec.recipe.batch_size)
                .map(|i| self.train.item(i))
                .collect(),
            device,
        )
    }
}

impl BackendTask for Case<'_> {
    type Output = Measured;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Measured {
        let input = self.spec.data.input_shape().unwrap();
        let classes = self.train.classes.len();
        B::seed(device, self.spec.recipe.seed);
        let model = self.spec.model.build::<B>(input, classes, device);
        measure(self, model, device)
    }
}

/// The case's logits, gradients and training losses on backend `B`, from its weights.
fn measure<B: AutodiffBackend>(
    case: Case<'_>,
    model: Classifier<B>,
    device: &B::Device,
) -> Measured {
    let model = case.load(model, device);

    // One batch: logits, then the loss's gradient for every parameter.
    let batch = case.first_batch::<B>(device);
    let logits = model.logits(batch.images);
    let float_dtype = format!("{:?}", logits.dtype());
    let loss = CrossEntropyLossConfig::new()
        .init(device)
        .forward(logits.clone(), batch.targets);
    let grads = param_grads(loss, &model);
    let logits = to_vec(logits);

    // The recipe's optimiser through the real training loop, every step's loss logged.
    let mut losses = Vec::new();
    let data = FitData {
        train: case.train,
        valid: None,
        test: Some(case.test),
        batcher: case.batcher,
    };
    kiln_train::fit(
        model,
        data,
        &case.spec.recipe,
        device,
        &FitOptions::default(),
        &mut |event| {
            if let Event::Step(step) = event {
                losses.push(step.loss);
            }
        },
    )
    .expect("the loss stays finite");
    Measured {
        logits,
        grads,
        losses,
        float_dtype,
    }
}

/// The gradient of `loss` for every trainable parameter of `model`, by path.
fn param_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    loss: Tensor<B, 1>,
    model: &M,
) -> Vec<(String, Vec<f32>)> {
    let gradients = GradientsParams::from_grads(loss.backward(), model);
    let mut grads = Grads::<B> {
        gradients: &gradients,
        found: Vec::new(),
        backend: PhantomData,
    };
    // Paths are the network's own (no `Classifier` variant), as PyTorch's state dicts and
    // the replica below name them.
    visit_params(model, &mut grads);
    grads.found
}

/// Collects each trainable parameter's gradient (batch norm's running statistics have none).
struct Grads<'a, B: AutodiffBackend> {
    gradients: &'a GradientsParams,
    found: Vec<(String, Vec<f32>)>,
    backend: PhantomData<B>,
}

impl<B: AutodiffBackend> ParamVisitor<B> for Grads<'_, B> {
    fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.gradients.get::<B::InnerBackend, D>(param.id) {
            self.found.push((path.to_string(), to_vec(g)));
        }
    }
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

/// The larger of two differences, NaN counting as larger than any number: `f64::max` returns
/// the number beside a NaN, which would let a NaN logit or gradient pass every tolerance.
fn worse(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn max_abs(a: &[f32]) -> f64 {
    a.iter().fold(0.0f64, |m, &x| worse(m, f64::from(x).abs()))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0f64, |m, (&x, &y)| {
        worse(m, (f64::from(x) - f64::from(y)).abs())
    })
}

fn norm(a: &[f32]) -> f64 {
    a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt()
}

fn norm_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// |b - reference| / |reference|.
fn relative_norm_diff(reference: &[f32], b: &[f32]) -> f64 {
    norm_diff(reference, b) / norm(reference)
}

/// A NaN anywhere on the checked backend (a logit, a gradient that is not the last, a loss)
/// must fail its check: `f64::max` and `!(x <= worst)` folds both used to let one pass.
#[test]
fn a_nan_fails_every_check_it_reaches() {
    let reference = Measured {
        logits: vec![1.0, -2.0, 0.5],
        grads: vec![
            ("a".into(), vec![1.0, 2.0]),
            ("b".into(), vec![3.0, -1.0]),
            ("c".into(), vec![0.5, 0.5]),
        ],
        losses: (0..STEPS).map(|i| 2.0 - 0.05 * i as f64).collect(),
        float_dtype: "F32".into(),
    };
    let failed = |edit: &dyn Fn(&mut Measured)| {
        let mut m = reference.clone();
        edit(&mut m);
        Diff::between(&reference, &m, STEPS)
            .past_tolerance()
            .collect::<Vec<_>>()
    };
    assert_eq!(failed(&|_| ()), Vec::<String>::new());
    assert_eq!(failed(&|m| m.logits[1] = f32::NAN), ["logits: NaN > 1e-4"]);
    assert_eq!(
        failed(&|m| m.grads[1].1[0] = f32::NAN),
        ["gradients: NaN > 1e-3"]
    );
    assert_eq!(
        failed(&|m| m.losses[3] = f64::NAN),
        ["loss curve: NaN > 1e-3"]
    );
}

#[test]
fn lenet5_fashion_mnist() {
    parity("lenet5-fashion-mnist", 16, STEPS);
}

#[test]
fn lenet5_classic_fashion_mnist() {
    parity("lenet5-classic-fashion-mnist", 16, STEPS);
}

#[test]
fn convnet_mnist() {
    parity("convnet-mnist", 16, STEPS);
}

#[test]
fn simple_cnn_cifar10() {
    parity("simple-cnn-cifar10", 16, STEPS);
}

#[test]
fn cnn_dropout_cifar10() {
    parity("cnn-dropout-cifar10", 8, STEPS);
}

/// Loss curves of the ResNets are checked over their first two steps only: over 20 steps of
/// these batch-norm networks at their recipes' learning rates, f32 rounding grows until the
/// curves part, on every backend, ndarray included. Measured on 2026-11-23 with
/// `KILN_PARITY_F64=1` (batch 8, quarter widths): logits agree with an f64 run of the same
/// weights within 1.1e-6 on every backend, yet the loss of ndarray in f32 parts from the f64
/// run's by more than 1e-3 from step 3 (resnet-cifar10) and step 8 (resnet18-cifar10-fast),
/// as early as the other backends part from ndarray (steps 3 to 10); after 20 steps all of
/// them lie within 12% of the f64 loss.
const RESNET_CHECKED_STEPS: usize = 2;

/// At weights from seed 0 rather than the experiment's 42: see `parity_spec`.
#[test]
fn resnet_cifar10() {
    parity("resnet-cifar10", 8, RESNET_CHECKED_STEPS);
}

/// At weights from seed 7 rather than the experiment's 42: see `parity_spec` and
/// `resnet18_replica`.
#[test]
fn resnet18_cifar10_fast() {
    parity("resnet18-cifar10-fast", 8, RESNET_CHECKED_STEPS);
}

/// The residual block where wgpu's resnet18 gradients part at seed 42 (`layers.1.blocks.0`
/// of the parity test's quarter-width ResNet-18: 16 to 32 channels, 32x32 to 16x16, batch 8), built
/// from Burn's operations with random inputs and weights: every gradient compared with
/// ndarray's. Once as laid out in memory by hand (NCHW, unit-scale upstream gradient) and once
/// with the layouts and magnitudes the network hands it (the input a strided NHWC view, as
/// CubeCL's convolutions leave their outputs, after a ReLU; upstream gradients of 1e-3).
#[test]
fn resnet_block_ops() {
    let mut failures = Vec::new();
    for strided in [false, true] {
        let task = BlockOps { strided };
        let reference = dispatch(REFERENCE, None, task).unwrap();
        for backend in OTHERS {
            let m = dispatch(backend, None, task)
                .unwrap_or_else(|e| panic!("block ops: backend {backend} cannot run: {e:#}"));
            let figures: Vec<String> = reference
                .iter()
                .zip(&m)
                .map(|((name, r), (_, g))| {
                    let relative = relative_norm_diff(r, g);
                    if !within(relative, GRADIENT_TOLERANCE) {
                        failures.push(format!(
                            "{backend} {name} (strided {strided}): {relative:.2e}"
                        ));
                    }
                    format!("{name} {relative:.1e}")
                })
                .collect();
            println!(
                "block ops, strided {strided:<5} {backend:<5} {}",
                figures.join(", ")
            );
        }
    }
    assert!(
        failures.is_empty(),
        "block gradients disagree with {REFERENCE}: {failures:?}"
    );
}

#[derive(Clone, Copy)]
struct BlockOps {
    strided: bool,
}

impl BackendTask for BlockOps {
    type Output = Vec<(String, Vec<f32>)>;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output {
        use burn::tensor::activation::relu;
        use burn::tensor::module::conv2d;
        use burn::tensor::ops::ConvOptions;
        use kiln_models::BatchNormConfig;

        // Leaf tensors of uniform values in [-scale, scale); activations are NCHW views of an
        // NHWC leaf when `strided`.
        let leaf = |shape: [usize; 4], seed: u64, scale: f32| {
            let values: Vec<f32> = uniform(shape.iter().product(), seed)
                .map(|x| x * scale)
                .collect();
            Tensor::<B, 4>::from_data(TensorData::new(values, shape), device).require_grad()
        };
        let activation = |[n, c, h, w]: [usize; 4], seed: u64, scale: f32| {
            if self.strided {
                let l = leaf([n, h, w, c], seed, scale);
                (l.clone(), l.permute([0, 3, 1, 2]))
            } else {
                let l = leaf([n, c, h, w], seed, scale);
                (l.clone(), l)
            }
        };
        let (input, x) = activation([8, 16, 32, 32], 1, 1.0);
        let x = if self.strided { relu(x) } else { x };
        let w1 = leaf([32, 16, 3, 3], 2, 0.08);
        let w2 = leaf([32, 32, 3, 3], 4, 0.06);
        let ws = leaf([32, 16, 1, 1], 5, 0.25);
        let upstream = activation([8, 32, 16, 16], 3, if self.strided { 1e-3 } else { 1.0 }).1;
        let bn = || BatchNormConfig::new(32).init::<B>(device);
        let (bn1, bn2, bns) = (bn(), bn(), bn());
        let conv = |x, w: &Tensor<B, 4>, stride, padding| {
            conv2d(
                x,
                w.clone(),
                None,
                ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1),
            )
        };

        let h = relu(bn1.forward(conv(x.clone(), &w1, 2, 1)));
        let h = bn2.forward(conv(h, &w2, 1, 1));
        let shortcut = bns.forward(conv(x, &ws, 2, 0));
        let y = relu(h + shortcut);
        let grads = (y * upstream.detach()).sum().backward();

        let grad4 = |t: &Tensor<B, 4>| to_vec(t.grad(&grads).unwrap());
        let grad1 = |t: Tensor<B, 1>| to_vec(t.grad(&grads).unwrap());
        vec![
            ("input".into(), grad4(&input)),
            ("conv1".into(), grad4(&w1)),
            ("bn1.gamma".into(), grad1(bn1.gamma.val())),
            ("bn1.beta".into(), grad1(bn1.beta.val())),
            ("conv2".into(), grad4(&w2)),
            ("bn2.gamma".into(), grad1(bn2.gamma.val())),
            ("bn2.beta".into(), grad1(bn2.beta.val())),
            ("shortcut".into(), grad4(&ws)),
        ]
    }
}

/// `n` values uniform in [-1, 1), the same on every platform (splitmix64).
fn uniform(n: usize, seed: u64) -> impl Iterator<Item = f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..n).map(move |_| {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    })
}

/// Why `resnet18_cifar10_fast` runs at another seed than the experiment's (see `parity_spec`):
/// at seed 42 its gradients part on wgpu by 2.9e-2, and this test shows the cause. The
/// network is rebuilt from Burn's tensor operations (the replica) so it can be cut between
/// blocks: the replica reproduces the model's gradients on ndarray and wgpu's error whole;
/// `layers.1.blocks.0` alone computes right on every backend from ndarray's input, yet from
/// the input wgpu's own first blocks computed (7e-7 from ndarray's) one of its first ReLU's
/// inputs is exactly 0 on ndarray and positive on wgpu. ReLU's derivative at 0 is 0, so that
/// one element's gradient passes on wgpu only: both backends rounded correctly, the test's
/// point sits on a kink. It fails if a block disagrees with no such tie to explain it.
/// Measured on 2026-11-23: image 5, channel 2, pixel 88, ndarray 0, wgpu 2.8e-7.
#[test]
#[ignore = "diagnosis of the seed-42 resnet18 gradients (issue 3): run with --ignored --nocapture"]
fn resnet18_replica() {
    let _turn = one_at_a_time();
    let mut inputs = Inputs::new("resnet18-cifar10-fast", 8);
    inputs.spec.recipe.seed = 42;
    let weights = on_reference(SaveWeights { spec: &inputs.spec });
    let net = on_reference(Export(inputs.case(&weights)));
    let run = |backend, mode| {
        dispatch(backend, None, Replica { net: &net, mode })
            .unwrap_or_else(|e| panic!("replica: backend {backend} cannot run: {e:#}"))
    };
    // By name: the replica lists its parameters in another order than the model. Returns
    // the worst relative difference.
    let compare = |what: &str, reference: &[(String, Vec<f32>)], m: &[(String, Vec<f32>)]| {
        let diffs: Vec<(&String, f64)> = reference
            .iter()
            .map(|(name, r)| {
                let (_, g) = m
                    .iter()
                    .find(|(other, _)| other == name)
                    .unwrap_or_else(|| panic!("{what}: no gradient for {name}"));
                (name, relative_norm_diff(r, g))
            })
            .collect();
        let worst = diffs
            .iter()
            .fold(0.0f64, |w, &(_, d)| if within(d, w) { w } else { d });
        let past: Vec<String> = diffs
            .iter()
            .filter(|(_, d)| !within(*d, GRADIENT_TOLERANCE))
            .map(|(name, d)| format!("{name} {d:.1e}"))
            .collect();
        println!("{what}: worst {worst:.1e}; past tolerance: {past:?}");
        worst
    };

    let whole = run(REFERENCE, Mode::Whole);
    let faithful = compare("replica vs model, ndarray", &net.model_grads, &whole.grads);
    assert!(
        faithful <= 1e-6,
        "the replica is not the model: {faithful:.1e}"
    );
    for backend in OTHERS {
        let m = run(backend, Mode::Whole);
        compare(&format!("replica, {backend}"), &whole.grads, &m.grads);
    }

    // Block `CUT`'s input as ndarray and as each backend computes it, and the gradient at its
    // output (ndarray's).
    let bounds = run(REFERENCE, Mode::Boundaries).boundaries;
    let upstream = bounds[CUT + 1].1.clone();
    let mut unexplained = Vec::new();
    for backend in OTHERS {
        let own = run(backend, Mode::Boundaries).boundaries[CUT].0.clone();
        println!(
            "{CUT_NAME} input, {backend} vs ndarray: {:.1e}",
            relative_norm_diff(&values(&bounds[CUT].0), &values(&own))
        );
        for (whose, input) in [("ndarray's", &bounds[CUT].0), ("its own", &own)] {
            let mode = || Mode::Span {
                from: CUT,
                to: CUT + 1,
                input: input.clone(),
                upstream: upstream.clone(),
            };
            let worst = compare(
                &format!("{CUT_NAME} from {whose} input, {backend} vs ndarray"),
                &run(REFERENCE, mode()).grads,
                &run(backend, mode()).grads,
            );
            // Where the block's first ReLU decides differently on the two backends.
            let z = |b| values(&run(b, Mode::Preact(input.clone())).preact.unwrap());
            let (zn, zb) = (z(REFERENCE), z(backend));
            let [_, c, h, w] = bounds[CUT + 1].0.shape.dims::<4>();
            let ties: Vec<String> = zn
                .iter()
                .zip(&zb)
                .enumerate()
                .filter(|(_, (a, b))| (**a > 0.0) != (**b > 0.0))
                .map(|(i, (a, b))| {
                    format!(
                        "image {} channel {} pixel {}: ndarray {a:e}, {backend} {b:e}",
                        i / (c * h * w),
                        i / (h * w) % c,
                        i % (h * w)
                    )
                })
                .collect();
            println!("  first ReLU decides differently at {ties:?}");
            if !within(worst, GRADIENT_TOLERANCE) && ties.is_empty() {
                unexplained.push(format!("{backend} from {whose} input: {worst:.1e}"));
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "{CUT_NAME}: gradients disagree with no ReLU tie to explain it: {unexplained:?}"
    );
}

/// The block the diagnosis cuts out, by index among all blocks and by path.
const CUT: usize = 2;
const CUT_NAME: &str = "layers.1.blocks.0";

fn values(t: &TensorData) -> Vec<f32> {
    t.clone().convert::<f32>().into_vec().unwrap()
}

/// A network's parameters by path, one batch, and the model's own gradients for it.
struct Net {
    params: std::collections::BTreeMap<String, TensorData>,
    images: TensorData,
    targets: TensorData,
    model_grads: Vec<(String, Vec<f32>)>,
}

struct Export<'a>(Case<'a>);

impl BackendTask for Export<'_> {
    type Output = Net;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Net {
        let case = self.0;
        let input = case.spec.data.input_shape().unwrap();
        let classes = case.train.classes.len();
        let model = case.spec.model.build::<B>(input, classes, device);
        let model = case.load(model, device);
        let batch = case.first_batch::<B>(device);
        let mut params = Values(Default::default());
        visit_params(&model, &mut params);
        let images = batch.images.to_data();
        let targets = batch.targets.to_data();
        let loss = CrossEntropyLossConfig::new()
            .init(device)
            .forward(model.logits(batch.images), batch.targets);
        Net {
            params: params.0,
            images,
            targets,
            model_grads: param_grads(loss, &model),
        }
    }
}

/// Every float parameter's value by path.
struct Values(std::collections::BTreeMap<String, TensorData>);

impl<B: Backend> ParamVisitor<B> for Values {
    fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>) {
        self.0.insert(path.to_string(), param.val().to_data());
    }
}

enum Mode {
    /// The whole network, the loss's gradient for every parameter.
    Whole,
    /// Every block's input (the last: the last block's output) and the loss's gradient
    /// there, each computed from a leaf by the part of the network after it.
    Boundaries,
    /// Blocks `from..to` alone, fed block `from`'s input and the gradient at their output.
    Span {
        from: usize,
        to: usize,
        input: TensorData,
        upstream: TensorData,
    },
    /// Block `CUT`'s first batch norm's output (its first ReLU's input) for this input.
    Preact(TensorData),
}

struct Replica<'a> {
    net: &'a Net,
    mode: Mode,
}

#[derive(Default)]
struct Replayed {
    /// (parameter path, gradient); in `Span` mode the blocks' and their input's (`input`).
    grads: Vec<(String, Vec<f32>)>,
    preact: Option<TensorData>,
    /// (input, gradient there) of every block and, last, the last block's output.
    boundaries: Vec<(TensorData, TensorData)>,
}

impl BackendTask for Replica<'_> {
    type Output = Replayed;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Replayed {
        use burn::tensor::activation::relu;
        use burn::tensor::module::{adaptive_avg_pool2d, conv2d};
        use burn::tensor::ops::ConvOptions;
        use kiln_models::{BatchNorm, BatchNormConfig};

        let net = self.net;
        let data = |name: &str| {
            net.params.get(name).cloned().unwrap_or_else(|| {
                panic!(
                    "no parameter {name}; the network has {:?}",
                    net.params.keys()
                )
            })
        };
        let leaf4 = |name: &str| Tensor::<B, 4>::from_data(data(name), device).require_grad();
        let leaf1 = |name: &str| Tensor::<B, 1>::from_data(data(name), device).require_grad();
        let bn = |prefix: &str| {
            let gamma = leaf1(&format!("{prefix}.gamma"));
            let mut bn: BatchNorm<B> = BatchNormConfig::new(gamma.dims()[0]).init(device);
            bn.gamma = Param::from_tensor(gamma);
            bn.beta = Param::from_tensor(leaf1(&format!("{prefix}.beta")));
            bn
        };
        let conv = |x, w: &Tensor<B, 4>, stride, padding| {
            conv2d(
                x,
                w.clone(),
                None,
                ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1),
            )
        };

        // Leaves by name, kept to read their gradients after the backward pass.
        struct Block<B: Backend> {
            name: String,
            stride: usize,
            conv1: Tensor<B, 4>,
            bn1: BatchNorm<B>,
            conv2: Tensor<B, 4>,
            bn2: BatchNorm<B>,
            shortcut: Option<(Tensor<B, 4>, BatchNorm<B>)>,
        }
        let mut blocks = Vec::new();
        for s in 0.. {
            let mut b = 0;
            while net
                .params
                .contains_key(&format!("layers.{s}.blocks.{b}.conv1.weight"))
            {
                let name = format!("layers.{s}.blocks.{b}");
                let shortcut = net
                    .params
                    .contains_key(&format!("{name}.shortcut.conv.weight"))
                    .then(|| {
                        (
                            leaf4(&format!("{name}.shortcut.conv.weight")),
                            bn(&format!("{name}.shortcut.bn")),
                        )
                    });
                blocks.push(Block {
                    stride: if s > 0 && b == 0 { 2 } else { 1 },
                    conv1: leaf4(&format!("{name}.conv1.weight")),
                    bn1: bn(&format!("{name}.bn1")),
                    conv2: leaf4(&format!("{name}.conv2.weight")),
                    bn2: bn(&format!("{name}.bn2")),
                    shortcut,
                    name,
                });
                b += 1;
            }
            if b == 0 {
                break;
            }
        }
        let forward = |block: &Block<B>, x: Tensor<B, 4>| {
            let h = relu(
                block
                    .bn1
                    .forward(conv(x.clone(), &block.conv1, block.stride, 1)),
            );
            let h = block.bn2.forward(conv(h, &block.conv2, 1, 1));
            let identity = match &block.shortcut {
                Some((w, bn)) => bn.forward(conv(x, w, block.stride, 0)),
                None => x,
            };
            relu(h + identity)
        };
        let stem_w = leaf4("conv1.weight");
        let stem_bn = bn("bn1");
        let fc_w = Tensor::<B, 2>::from_data(data("fc.weight"), device).require_grad();
        let fc_b = leaf1("fc.bias");
        let prefix = |images| relu(stem_bn.forward(conv(images, &stem_w, 1, 1)));
        let suffix = |mut x: Tensor<B, 4>, from: usize| {
            for block in &blocks[from..] {
                x = forward(block, x);
            }
            let x = adaptive_avg_pool2d(x, [1, 1]).flatten::<2>(1, 3);
            let logits = x.matmul(fc_w.clone()) + fc_b.clone().unsqueeze();
            CrossEntropyLossConfig::new().init(device).forward(
                logits,
                Tensor::<B, 1, Int>::from_data(net.targets.clone(), device),
            )
        };
        let images = || Tensor::<B, 4>::from_data(net.images.clone(), device);

        let mut out = Replayed::default();
        let mut leaves4: Vec<(String, Tensor<B, 4>)> = Vec::new();
        let mut leaves1: Vec<(String, Tensor<B, 1>)> = Vec::new();
        let add_block = |block: &Block<B>, l4: &mut Vec<_>, l1: &mut Vec<_>| {
            l4.push((format!("{}.conv1.weight", block.name), block.conv1.clone()));
            for (bn_name, bn) in [("bn1", &block.bn1), ("bn2", &block.bn2)] {
                l1.push((format!("{}.{bn_name}.gamma", block.name), bn.gamma.val()));
                l1.push((format!("{}.{bn_name}.beta", block.name), bn.beta.val()));
            }
            l4.push((format!("{}.conv2.weight", block.name), block.conv2.clone()));
            if let Some((w, bn)) = &block.shortcut {
                l4.push((format!("{}.shortcut.conv.weight", block.name), w.clone()));
                l1.push((format!("{}.shortcut.bn.gamma", block.name), bn.gamma.val()));
                l1.push((format!("{}.shortcut.bn.beta", block.name), bn.beta.val()));
            }
        };
        let grads = match self.mode {
            Mode::Whole => {
                leaves4.push(("conv1.weight".into(), stem_w.clone()));
                leaves1.push(("bn1.gamma".into(), stem_bn.gamma.val()));
                leaves1.push(("bn1.beta".into(), stem_bn.beta.val()));
                for block in &blocks {
                    add_block(block, &mut leaves4, &mut leaves1);
                }
                leaves1.push(("fc.bias".into(), fc_b.clone()));
                let grads = suffix(prefix(images()), 0).backward();
                out.grads
                    .push(("fc.weight".into(), to_vec(fc_w.grad(&grads).unwrap())));
                grads
            }
            Mode::Preact(input) => {
                let block = &blocks[CUT];
                assert_eq!(block.name, CUT_NAME);
                let x = Tensor::<B, 4>::from_data(input, device);
                let z = block.bn1.forward(conv(x, &block.conv1, block.stride, 1));
                out.preact = Some(z.to_data());
                return out;
            }
            Mode::Boundaries => {
                let mut x = prefix(images());
                for i in 0..=blocks.len() {
                    let a = x.to_data();
                    let leaf = Tensor::<B, 4>::from_data(a.clone(), device).require_grad();
                    let grads = suffix(leaf.clone(), i).backward();
                    out.boundaries
                        .push((a, leaf.grad(&grads).unwrap().to_data()));
                    if i < blocks.len() {
                        x = forward(&blocks[i], x);
                    }
                }
                return out;
            }
            Mode::Span {
                from,
                to,
                input,
                upstream,
            } => {
                let x = Tensor::<B, 4>::from_data(input, device).require_grad();
                leaves4.push(("input".into(), x.clone()));
                for block in &blocks[from..to] {
                    add_block(block, &mut leaves4, &mut leaves1);
                }
                let mut y = x;
                for block in &blocks[from..to] {
                    y = forward(block, y);
                }
                (y * Tensor::<B, 4>::from_data(upstream, device))
                    .sum()
                    .backward()
            }
        };
        for (name, t) in leaves4 {
            out.grads.push((name, to_vec(t.grad(&grads).unwrap())));
        }
        for (name, t) in leaves1 {
            out.grads.push((name, to_vec(t.grad(&grads).unwrap())));
        }
        out
    }
}
