//! Every backend `kiln --backend` knows, in one table: its name, the cargo feature of
//! `kiln-cli` that builds it in, its devices, what it needs at run time and its one-line help.
//!
//! This file depends on nothing, so `xtask` (which builds before Burn and must not depend on
//! it) compiles the same table with `#[path]` instead of keeping a list of its own. `dispatch`
//! in `backends.rs` holds the one arm per backend that names its Burn type; a test there checks
//! that the arms and this table agree.

/// How `--device N` picks among a backend's devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // xtask reads only some of the table
pub enum Devices {
    /// One device: `--device` is refused.
    One,
    /// `--device N` is the Nth discrete GPU (default: the system's default adapter).
    DiscreteGpu,
    /// `--device N` is CUDA device N (default 0).
    Cuda,
}

/// What a backend needs on the machine at run time, beyond the `kiln` binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// Nothing beyond the binary.
    Nothing,
    /// A Vulkan loader and driver (on Linux; Metal and DX12 elsewhere need nothing).
    Vulkan,
    /// libtorch 2.9 (PyTorch's shared libraries), at build time too.
    Torch,
    /// An NVIDIA GPU and its driver.
    Cuda,
}

/// One row of [`BACKENDS`].
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // xtask reads only some of the table
pub struct Backend {
    /// The `--backend` name.
    pub name: &'static str,
    /// The cargo feature of `kiln-cli` that builds it in.
    pub feature: &'static str,
    /// How `--device` picks among its devices.
    pub devices: Devices,
    /// What it needs on the machine.
    pub runtime: Runtime,
    /// What it is, for `kiln backends` and the `--backend` help.
    pub help: &'static str,
    /// What a run on it should tell the user once, before it starts.
    pub note: Option<&'static str>,
}

/// CubeCL (wgpu, cuda) times several kernels for each new shape and keeps the fastest in a
/// cache of its own; its log lines about it are hidden (warn level), so Kiln says it once.
const TUNING: &str = "kernels are tuned for this device the first time each shape runs (and \
    cached for later runs), so the first epoch is slower than the rest";

/// The backends, in order of preference: a command without `--backend` uses the first one the
/// binary was built with.
pub const BACKENDS: &[Backend] = &[
    Backend {
        name: "cpu",
        feature: "cpu",
        devices: Devices::One,
        runtime: Runtime::Nothing,
        help: "Kiln's own CPU backend (burn-flex with Kiln's kernels); the default",
        note: None,
    },
    Backend {
        name: "ndarray",
        feature: "ndarray",
        devices: Devices::One,
        runtime: Runtime::Nothing,
        help: "Burn's ndarray CPU backend",
        note: None,
    },
    Backend {
        name: "flex",
        feature: "flex",
        devices: Devices::One,
        runtime: Runtime::Nothing,
        help: "Burn's burn-flex CPU backend",
        note: None,
    },
    Backend {
        name: "wgpu",
        feature: "wgpu",
        devices: Devices::DiscreteGpu,
        runtime: Runtime::Vulkan,
        help: "Burn's wgpu GPU backend: Vulkan, Metal or DX12",
        note: Some(TUNING),
    },
    Backend {
        name: "tch",
        feature: "tch",
        devices: Devices::One,
        runtime: Runtime::Torch,
        help: "libtorch on the CPU (burn-tch with libtorch's convolution gradients)",
        note: None,
    },
    Backend {
        name: "tch-cuda",
        feature: "tch-cuda",
        devices: Devices::Cuda,
        runtime: Runtime::Torch,
        help: "libtorch on an NVIDIA GPU",
        note: None,
    },
    Backend {
        name: "cuda",
        feature: "cuda",
        devices: Devices::Cuda,
        runtime: Runtime::Cuda,
        help: "Burn's CubeCL CUDA backend",
        note: Some(TUNING),
    },
];

/// The row of the backend called `name`.
#[allow(dead_code)] // each user of this file needs only some of it
pub fn find(name: &str) -> Option<&'static Backend> {
    BACKENDS.iter().find(|b| b.name == name)
}

/// Every backend's name, in the table's order.
#[allow(dead_code)]
pub fn names() -> Vec<&'static str> {
    BACKENDS.iter().map(|b| b.name).collect()
}

/// Whether `name` runs on a GPU (its jobs go to a GPU partition). Unknown names do not.
#[allow(dead_code)] // xtask does not ask
pub fn is_gpu(name: &str) -> bool {
    BACKENDS
        .iter()
        .any(|b| b.name == name && b.devices != Devices::One)
}
