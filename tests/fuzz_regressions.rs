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
