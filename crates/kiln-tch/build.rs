//! Compiles the C++ shim that calls libtorch's `at::convolution_backward` and
//! `at::native_batch_norm_backward`, against the libtorch
//! that torch-sys found (its `DEP_TCH_LIBTORCH_LIB`), with the C++ ABI that libtorch was built
//! with (asked of Python's torch the way torch-sys does, or `LIBTORCH_CXX11_ABI`).

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/aten.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    let lib = PathBuf::from(
        env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not say where libtorch is (DEP_TCH_LIBTORCH_LIB)"),
    );
    let include = lib
        .parent()
        .expect("libtorch's lib folder has a parent")
        .join("include");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi().as_str())
        .file("src/aten.cpp")
        .compile("kiln_tch");
}

/// "1" or "0": whether libtorch uses the C++11 `std::string` ABI.
fn cxx11_abi() -> String {
    if let Ok(abi) = env::var("LIBTORCH_CXX11_ABI") {
        return abi;
    }
    if env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        let python = env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python".into());
        let out = Command::new(&python)
            .args([
                "-c",
                "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))",
            ])
            .output()
            .unwrap_or_else(|e| panic!("running {python} to ask torch for its C++ ABI: {e}"));
        let abi = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            abi == "0" || abi == "1",
            "{python} gave no C++ ABI for torch (stdout {abi:?}, stderr {})",
            String::from_utf8_lossy(&out.stderr)
        );
        return abi;
    }
    // torch-sys's default for a downloaded or unpacked libtorch.
    "1".into()
}
