//! Every input the fuzz targets were seeded with (`fuzz/seeds/<target>/`), every input of
//! their minimised corpora (`fuzz/corpus/<target>/`: what the fuzzers found that reaches new
//! code, kept under git so a later change is tried against all of it) and every input that once
//! made one fail (`fuzz/regressions/<target>/`), replayed through the same harness the fuzzers
//! run (`fuzz/fuzz_targets/harness.rs`): each must give an error or a value, never a panic.

use std::path::Path;

#[path = "../fuzz/fuzz_targets/harness.rs"]
mod harness;

fn replay(target: &str, run: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for kind in ["seeds", "corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        paths.sort();
        for path in paths {
            println!("{}", path.display());
            run(&std::fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no inputs for fuzz target {target}");
}

#[test]
fn idx() {
    replay("idx", harness::idx);
}

#[test]
fn cifar_binary() {
    replay("cifar_binary", harness::cifar_binary);
}

#[test]
fn pickle() {
    replay("pickle", harness::pickle);
}

#[test]
fn image_folder() {
    replay("image_folder", harness::image_folder);
}

#[test]
fn experiment_toml() {
    replay("experiment_toml", harness::experiment_toml);
}

#[test]
fn checkpoint() {
    replay("checkpoint", harness::checkpoint);
}

/// `fuzz/seeds/checkpoint/whole-small-network` is a whole checkpoint of the harness's small
/// network, so the fuzzer starts from records that load all the way (LeNet-5's are too big for
/// a fuzz input); it must go on loading as Burn's format moves. `KILN_WRITE_FUZZ_SEEDS=1`
/// writes it afresh.
#[test]
fn the_whole_checkpoint_seed_loads() {
    type B = burn_autodiff::Autodiff<burn_ndarray::NdArray<f32>>;
    use burn::optim::Optimizer;
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/checkpoint");
    let path = seeds.join("whole-small-network");
    if std::env::var_os("KILN_WRITE_FUZZ_SEEDS").is_some() {
        let other = std::fs::read(seeds.join("state-and-map-records")).unwrap();
        let state = other.split(|&b| b == 0xFE).next().unwrap();
        std::fs::write(&path, harness::whole_small_checkpoint(state)).unwrap();
    }
    let input = std::fs::read(&path).unwrap();
    let checkpoint = harness::found_checkpoint(&input).expect("the seed's state.json reads");
    let device = Default::default();
    let network = checkpoint
        .load_model::<B, _>(harness::small_network(&device), &device)
        .unwrap();
    let adam = checkpoint
        .load_optimizer(harness::small_adam::<B>(), &network, &device)
        .unwrap();
    // Moments for the weight and the bias: the record is Adam's after a step, not an empty one.
    assert_eq!(adam.to_record().len(), 2);
}

/// Adam's state for the small network's weight with one moment of another shape (made by hand
/// from the whole seed): refused on loading, naming the parameter, not left to the first step.
#[test]
fn optimizer_state_of_another_shape_is_refused() {
    type B = burn_autodiff::Autodiff<burn_ndarray::NdArray<f32>>;
    let regressions = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/checkpoint");
    let device = Default::default();
    for (file, found) in [
        ("moment-of-another-shape", "[1, 1, 1, 2]"),
        ("moment-of-another-rank", "[2, 1]"),
    ] {
        let input = std::fs::read(regressions.join(file)).unwrap();
        let checkpoint = harness::found_checkpoint(&input).unwrap();
        let network = checkpoint
            .load_model::<B, _>(harness::small_network(&device), &device)
            .unwrap();
        let Err(err) = checkpoint.load_optimizer(harness::small_adam::<B>(), &network, &device)
        else {
            panic!("{file}: the optimizer record loaded");
        };
        assert_eq!(
            err.to_string(),
            format!(
                "the checkpoint's optimizer record does not load: the state kept for `weight` \
                 has shape {found}, the parameter [2, 1, 1, 1]"
            ),
            "{file}"
        );
    }
}
