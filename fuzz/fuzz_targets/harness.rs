//! What each fuzz target does with its input, shared with `tests/fuzz_regressions.rs`, which
//! replays every kept input through the same functions. Each reads the bytes the way Kiln
//! reads a user's file (through a real file: the readers take paths) and must return, with an
//! error or a value, never panic, abort or run out of memory. Results are checked where a
//! success promises something (counts that agree, labels in range).

// Each fuzz target uses one of these functions.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A folder of this process's own (in memory where /dev/shm exists), made once.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("kiln-fuzz-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// A fresh empty folder under the scratch folder.
fn fresh(name: &str) -> PathBuf {
    let dir = scratch().join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Splits `data` into `n` parts at the first `n - 1` occurrences of the separator `0xFE 0xFE`
/// (missing parts are empty), so one input can describe several files.
fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    while out.len() + 1 < n {
        match rest.windows(2).position(|w| w == [0xFE, 0xFE]) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + 2..];
            }
            None => {
                out.push(rest);
                rest = &[];
            }
        }
    }
    out.push(rest);
    out
}

/// An IDX images file and an IDX labels file (either may be gzipped), read as a pair.
pub fn idx(data: &[u8]) {
    let dir = fresh("idx");
    let [images, labels] = parts(data, 2)[..] else {
        unreachable!()
    };
    let (images_path, labels_path) = (dir.join("images"), dir.join("labels"));
    fs::write(&images_path, images).unwrap();
    fs::write(&labels_path, labels).unwrap();
    if let Ok(read) = kiln_data::idx::read_images(&images_path) {
        assert_eq!(read.pixels.len(), read.len() * read.rows * read.cols);
    }
    if let Ok((read, labels)) = kiln_data::idx::read_pair(&images_path, &labels_path, 10) {
        assert_eq!(read.len(), labels.len());
        assert!(labels.iter().all(|&l| l < 10));
    }
}

/// A CIFAR-10 binary batch file.
pub fn cifar_binary(data: &[u8]) {
    let dir = fresh("cifar-binary");
    let path = dir.join("data_batch_1.bin");
    fs::write(&path, data).unwrap();
    if let Ok((pixels, labels)) = kiln_data::cifar::read_binary_batch(&path) {
        assert_eq!(pixels.len(), labels.len() * 3072);
        assert!(labels.iter().all(|&l| l < 10));
    }
}

/// A CIFAR-10 python batch (a pickle), read by Kiln's pickle reader.
pub fn pickle(data: &[u8]) {
    let dir = fresh("pickle");
    let path = dir.join("data_batch_1");
    fs::write(&path, data).unwrap();
    if let Ok((pixels, labels)) = kiln_data::cifar::read_python_batch(&path) {
        assert_eq!(pixels.len(), labels.len() * 3072);
        assert!(labels.iter().all(|&l| l < 10));
    }
}

/// An image folder `train/{a,b}/` and `test/a/`, its files cut from the input (the first byte
/// of each part chooses its extension), scanned and decoded as a data set (as found, and resized
/// to one size as a folder set's `image_size` asks); and the first part
/// read alone as `kiln predict` reads an image.
pub fn image_folder(data: &[u8]) {
    let root = fresh("folder");
    let files = [
        "train/a/0",
        "train/a/1",
        "train/b/0",
        "test/a/0",
        "test/b/0",
    ];
    let contents = parts(data, files.len());
    for (file, bytes) in files.iter().zip(&contents) {
        let ext = match bytes.first() {
            Some(b) if b % 3 == 0 => "png",
            Some(b) if b % 3 == 1 => "jpg",
            _ => "jpeg",
        };
        let path = root.join(format!("{file}.{ext}"));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
    }
    for split in ["train", "test"] {
        if let Ok(set) = kiln_data::folder::load_image_folder(&root, split, None) {
            assert_eq!(set.labels().len(), set.len());
            assert!(set.channels == 1 || set.channels == 3);
        }
        // A folder set's `image_size`: every image resized as it loads.
        let sized = kiln_data::folder::load_image_folder_sized(&root, split, None, Some([5, 7]));
        if let Ok(set) = sized {
            assert_eq!((set.height, set.width), (5, 7));
            assert_eq!(set.image(0).len(), set.channels * 35);
        }
    }
    let first = fs::read_dir(root.join("train/a"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for shape in [[1, 8, 8], [3, 32, 32]] {
        if let Ok(pixels) = kiln_data::folder::read_image(&first, shape) {
            assert_eq!(pixels.len(), shape.iter().product::<usize>());
        }
        if let Ok(pixels) = kiln_data::folder::read_image_resized(&first, shape) {
            assert_eq!(pixels.len(), shape.iter().product::<usize>());
        }
    }
}

/// An experiment file, parsed and validated; a spec that passes must print back to TOML that
/// parses to the same spec.
pub fn experiment_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = kiln_experiments::ValidSpec::from_toml(text, "fuzz.toml") {
        let again = kiln_experiments::ValidSpec::from_toml(&spec.to_toml(), "again.toml")
            .expect("a valid spec's TOML parses and validates again");
        assert_eq!(again.to_toml(), spec.to_toml());
    }
}

/// A run folder's checkpoint (`state.json`, `model.mpk`, `optimizer.mpk` cut from the input),
/// found and read as `kiln run --resume` does. Its model record is loaded into LeNet-5 and into
/// [`small_network`], whose whole record fits in a fuzz input (LeNet-5's takes 240 KB), and its
/// optimizer record into Adam's for that network. Weights that load must run, and an optimizer
/// state that loads must take a step.
pub fn checkpoint(data: &[u8]) {
    type B = burn_autodiff::Autodiff<burn_ndarray::NdArray<f32>>;
    let Some(checkpoint) = found_checkpoint(data) else {
        return;
    };
    let device = Default::default();
    let lenet = kiln_models::LeNet5Config::new().init::<B>(&device);
    if let Ok(lenet) = checkpoint.load_model::<B, _>(lenet, &device) {
        let images = burn::tensor::Tensor::<B, 4>::zeros([1, 1, 28, 28], &device);
        let _ = kiln_models::ImageClassifier::logits(&lenet, images);
    }
    let Ok(small) = checkpoint.load_model::<B, _>(small_network(&device), &device) else {
        return;
    };
    if let Ok(mut adam) = checkpoint.load_optimizer(small_adam(), &small, &device) {
        adam_step(small, &mut adam);
    }
}

/// Adam for [`small_network`].
pub fn small_adam<B: burn::tensor::backend::AutodiffBackend>(
) -> burn::optim::adaptor::OptimizerAdaptor<burn::optim::Adam, burn::nn::conv::Conv2d<B>, B> {
    burn::optim::AdamConfig::new().init()
}

/// One step of `adam` on [`small_network`] over an image of ones.
fn adam_step<B: burn::tensor::backend::AutodiffBackend>(
    network: burn::nn::conv::Conv2d<B>,
    adam: &mut impl burn::optim::Optimizer<burn::nn::conv::Conv2d<B>, B>,
) -> burn::nn::conv::Conv2d<B> {
    let images = burn::tensor::Tensor::ones([1, 1, 2, 2], &network.weight.device());
    let loss = network.forward(images).sum();
    let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &network);
    adam.step(1e-3, network, grads)
}

/// The checkpoint the `checkpoint` target's input makes, as `kiln run --resume` finds it in a
/// run folder, if its `state.json` reads.
pub fn found_checkpoint(data: &[u8]) -> Option<kiln_train::Checkpoint> {
    let run = fresh("run");
    let dir = run.join("checkpoints/epoch-0001-batch-000003");
    fs::create_dir_all(&dir).unwrap();
    let [state, model, optimizer] = parts(data, 3)[..] else {
        unreachable!()
    };
    fs::write(dir.join("state.json"), state).unwrap();
    fs::write(dir.join("model.mpk"), model).unwrap();
    fs::write(dir.join("optimizer.mpk"), optimizer).unwrap();
    let found = kiln_experiments::run_dir::latest_checkpoint(&run).ok()??;
    Some(found.1)
}

/// A `checkpoint` input holding a whole checkpoint of [`small_network`] after one Adam step,
/// with `state` as its `state.json`: the seed from which the fuzzer reaches records that load.
pub fn whole_small_checkpoint(state: &[u8]) -> Vec<u8> {
    use burn::module::Module;
    use burn::optim::Optimizer;
    type B = burn_autodiff::Autodiff<burn_ndarray::NdArray<f32>>;
    let device = Default::default();
    let mut adam = small_adam::<B>();
    let network = adam_step(small_network::<B>(&device), &mut adam);
    let mut input = state.to_vec();
    for record in [
        kiln_models::record::encode::<B, _>(network.into_record()),
        kiln_models::record::encode::<B, _>(adam.to_record()),
    ] {
        assert!(
            !record.windows(2).any(|w| w == [0xFE, 0xFE]),
            "a record holds the parts' separator: draw the weights again"
        );
        input.extend_from_slice(&[0xFE, 0xFE]);
        input.extend_from_slice(&record);
    }
    input
}

/// A convolution of one input channel into two, 1x1: a network whose record (a 4-D weight, a
/// bias and the layer's settings) is a few hundred bytes.
pub fn small_network<B: burn::tensor::backend::Backend>(
    device: &B::Device,
) -> burn::nn::conv::Conv2d<B> {
    burn::nn::conv::Conv2dConfig::new([1, 2], [1, 1]).init(device)
}
