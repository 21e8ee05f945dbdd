//! The `--backend` dispatch, through the library's public API. (Here rather than as unit tests:
//! a unit-test build would compile the whole crate, every backend's dispatch included, twice.)

use burn::tensor::backend::AutodiffBackend;
use kiln_cli::{backend_failure, backend_name, backend_table, dispatch, is_built, BackendTask};

/// Returns the backend's name: enough to see which arm ran.
struct Name;
impl BackendTask for Name {
    type Output = String;
    fn run<B: AutodiffBackend>(self, _: &B::Device) -> String {
        B::name(&Default::default())
    }
}

/// Fails the way a backend without a GPU adapter does: by panicking inside Burn.
struct Panics(&'static str);
impl BackendTask for Panics {
    type Output = ();
    fn run<B: AutodiffBackend>(self, _: &B::Device) {
        panic!("{}", self.0)
    }
}

fn error(name: &str, device: Option<usize>) -> String {
    format!("{:#}", dispatch(name, device, Name).unwrap_err())
}

#[test]
fn names_pick_backends_and_bad_names_list_the_choices() {
    assert!(dispatch("ndarray", None, Name).unwrap().contains("ndarray"));
    assert_eq!(
        error("tpu-v5", None),
        "unknown backend \"tpu-v5\"; expected one of: cpu, ndarray, flex, wgpu, tch, tch-cuda, cuda"
    );
    assert!(
        error("ndaray", None)
            .starts_with("unknown backend \"ndaray\" (did you mean \"ndarray\"?);"),
        "{}",
        error("ndaray", None)
    );
    // No build turns on `cuda` without a GPU to test it on.
    #[cfg(not(feature = "cuda"))]
    assert!(
        error("cuda", None).starts_with("backend \"cuda\" is not built into this binary"),
        "{}",
        error("cuda", None)
    );
}

#[test]
fn commands_on_a_run_default_to_its_backend_where_built_in() {
    assert_eq!(backend_name(None, Some("ndarray")), "ndarray");
    // A run made on a backend this binary lacks: the first one it has, Kiln's own.
    assert_eq!(backend_name(None, Some("no-such-backend")), "cpu");
    assert_eq!(backend_name(None, None), "cpu");
    assert_eq!(backend_name(Some("tch"), Some("ndarray")), "tch");
}

#[test]
fn a_device_number_is_refused_where_there_is_one_device() {
    assert_eq!(
        error("ndarray", Some(1)),
        "backend \"ndarray\" has one device; found --device 1"
    );
}

#[test]
fn a_panicking_backend_becomes_an_error_naming_it_and_the_remedy() {
    let err = dispatch("ndarray", None, Panics("out of memory")).unwrap_err();
    assert_eq!(err.to_string(), "backend ndarray failed: out of memory");
    let err = backend_failure("wgpu", "No possible adapter available").to_string();
    assert!(
        err.starts_with("backend wgpu failed: No possible adapter available")
            && err.contains("apt-get install mesa-vulkan-drivers"),
        "{err}"
    );
    assert_eq!(
        backend_failure("tch", "out of memory").to_string(),
        "backend tch failed: out of memory"
    );
}

/// The table (`backend_table.rs`), the cargo features and `dispatch`'s arms name the same
/// backends: a row without an arm, or an arm its feature does not turn on, fails here.
#[test]
fn every_backend_of_the_table_has_its_feature_and_its_arm() {
    let features = [
        ("cpu", cfg!(feature = "cpu")),
        ("ndarray", cfg!(feature = "ndarray")),
        ("flex", cfg!(feature = "flex")),
        ("wgpu", cfg!(feature = "wgpu")),
        ("tch", cfg!(feature = "tch")),
        ("tch-cuda", cfg!(feature = "tch-cuda")),
        ("cuda", cfg!(feature = "cuda")),
    ];
    assert_eq!(
        backend_table::names(),
        features.iter().map(|(n, _)| *n).collect::<Vec<_>>()
    );
    for (name, on) in features {
        assert_eq!(is_built(name), on, "{name}");
        assert_eq!(backend_table::find(name).unwrap().feature, name);
    }
    assert!(!is_built("tpu-v5"));
}
