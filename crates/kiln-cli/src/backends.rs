//! The one place a `--backend` name becomes a Burn backend type.
//!
//! Every command goes through `with_backend!`: it matches the name once, binds the backend
//! type and its device, and runs the command's generic code with them. Adding a backend is a
//! row in [`backend_table::BACKENDS`](crate::backend_table::BACKENDS), a cargo feature and
//! an arm here.

use anyhow::{bail, Result};
use burn::tensor::backend::AutodiffBackend;

use crate::backend_table::{self, Devices, Runtime, BACKENDS};

/// Runs `$body` with `$B` bound to the `Autodiff` backend called `$name` and `$device` to a
/// reference to its device number `$number` (`None`: the backend's default). A panic inside
/// (Burn's way of failing at run time: no adapter, out of memory, an op it lacks) becomes an
/// error naming the backend. Evaluates to `anyhow::Result` of the body's value.
///
/// A macro, because the backend is a type chosen at run time and a closure cannot be generic.
/// It stays inside this crate: the `cfg`s are this crate's features.
macro_rules! with_backend {
    ($name:expr, $number:expr, |$B:ident, $device:ident| $body:expr) => {{
        let name: &str = $name;
        let number: Option<usize> = $number;
        $crate::backends::check_device(name, number).and_then(|()| match name {
            #[cfg(feature = "cpu")]
            "cpu" => {
                type $B = burn_autodiff::Autodiff<kiln_cpu::KilnCpu>;
                let $device = &kiln_cpu::KilnCpuDevice;
                kiln_cpu::register_kernels();
                $crate::backends::catch(name, || $body)
            }
            #[cfg(feature = "ndarray")]
            "ndarray" => {
                type $B = burn_autodiff::Autodiff<burn_ndarray::NdArray<f32>>;
                let $device = &burn_ndarray::NdArrayDevice::Cpu;
                $crate::backends::catch(name, || $body)
            }
            #[cfg(feature = "flex")]
            "flex" => {
                type $B = burn_autodiff::Autodiff<burn_flex::Flex<f32>>;
                let $device = &burn_flex::FlexDevice;
                $crate::backends::catch(name, || $body)
            }
            #[cfg(feature = "wgpu")]
            "wgpu" => {
                type $B = burn_autodiff::Autodiff<burn_wgpu::Wgpu<f32>>;
                let $device = &match number {
                    None => burn_wgpu::WgpuDevice::DefaultDevice,
                    Some(n) => burn_wgpu::WgpuDevice::DiscreteGpu(n),
                };
                $crate::backends::catch(name, || $body)
            }
            #[cfg(feature = "tch")]
            "tch" => {
                type $B = burn_autodiff::Autodiff<kiln_tch::KilnTch>;
                let $device = &kiln_tch::KilnTchDevice::Cpu;
                kiln_tch::register_kernels();
                $crate::backends::catch(name, || $body)
            }
            #[cfg(feature = "tch-cuda")]
            "tch-cuda" => {
                type $B = burn_autodiff::Autodiff<kiln_tch::KilnTch>;
                let $device = &kiln_tch::KilnTchDevice::Cuda(number.unwrap_or(0));
                kiln_tch::register_kernels();
                $crate::backends::catch(name, || $body)
            }
            #[cfg(feature = "cuda")]
            "cuda" => {
                type $B = burn_autodiff::Autodiff<burn_cuda::Cuda<f32>>;
                let $device = &burn_cuda::CudaDevice::new(number.unwrap_or(0));
                $crate::backends::catch(name, || $body)
            }
            other => Err(anyhow::Error::new($crate::backends::Unavailable(
                other.to_string(),
            ))),
        })
    }};
}
pub(crate) use with_backend;

/// Work to do on a backend chosen at run time, for code outside this crate (tests, tools that
/// embed the CLI): the commands themselves use `with_backend!`.
pub trait BackendTask {
    /// What the task gives back.
    type Output;
    /// Does the task on backend `B`'s `device`.
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output;
}

/// Runs `task` on the backend called `name`, on its device number `device` where it has
/// several (`None`: the backend's default device). A backend that panics becomes an error that
/// names it.
pub fn dispatch<T: BackendTask>(name: &str, device: Option<usize>, task: T) -> Result<T::Output> {
    with_backend!(name, device, |B, device| task.run::<B>(device))
}

/// Whether this binary was built with the backend called `name`.
pub fn is_built(name: &str) -> bool {
    // Binding a backend type and its device does no work: no adapter is opened.
    with_backend!(name, None, |B, device| {
        let _ = (device, std::marker::PhantomData::<B>);
    })
    .is_ok()
}

/// The backend a command uses: `chosen` (`--backend`), else `preferred` (a run folder's own
/// backend) where this binary has it, else the first backend this binary has.
pub fn backend_name(chosen: Option<&str>, preferred: Option<&str>) -> String {
    chosen
        .or_else(|| preferred.filter(|p| is_built(p)))
        .or_else(|| BACKENDS.iter().map(|b| b.name).find(|n| is_built(n)))
        .unwrap_or("cpu")
        .to_string()
}

/// The `--backend` help: every backend of the table.
pub(crate) fn help() -> String {
    let rows: Vec<String> = BACKENDS
        .iter()
        .map(|b| format!("{} ({})", b.name, b.help))
        .collect();
    format!(
        "{}. Each needs its cargo feature (see `kiln backends`). Default: for a command on a \
         run folder, the run's own backend if this binary has it; otherwise the first one this \
         binary has (cpu in a default build)",
        rows.join("; ")
    )
}

/// `kiln backends`: every backend and whether this binary has it.
pub(crate) fn list() {
    for b in BACKENDS {
        let state = if is_built(b.name) {
            "built in".to_string()
        } else {
            format!("not built (cargo feature {:?})", b.feature)
        };
        println!("{:<10} {state:<36} {}", b.name, b.help);
    }
}

/// Tells the user what to expect of a run on `name` (the table's note), once, before it starts.
pub(crate) fn announce(name: &str) {
    let Some(backend) = backend_table::find(name) else {
        return;
    };
    if let Some(note) = backend.note {
        tracing::info!("{name}: {note}");
    }
    // Mesa's Vulkan loader prints this on a machine without a desktop session; Vulkan works.
    if backend.runtime == Runtime::Vulkan && std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        tracing::info!(
            "{name}: \"XDG_RUNTIME_DIR is invalid or not set\" below comes from the Vulkan \
             driver on a machine without a desktop session and does no harm"
        );
    }
}

/// Refuses `--device N` for a backend with one device.
pub(crate) fn check_device(name: &str, number: Option<usize>) -> Result<()> {
    match (backend_table::find(name), number) {
        (Some(b), Some(n)) if b.devices == Devices::One => {
            bail!("backend {name:?} has one device; found --device {n}")
        }
        _ => Ok(()),
    }
}

/// Runs `f`, turning a panic into an error that names the backend and, where we know one, the
/// remedy.
#[allow(dead_code)] // unused only when no backend feature is on
pub(crate) fn catch<R>(backend: &str, f: impl FnOnce() -> R) -> Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        let cause = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("a panic without a message");
        backend_failure(backend, cause)
    })
}

/// The error for a backend that panicked with `cause`: it names the backend and, where Kiln
/// knows one, the remedy.
pub fn backend_failure(backend: &str, cause: &str) -> anyhow::Error {
    let hint = match backend {
        "wgpu" if cause.to_lowercase().contains("adapter") => {
            "\nno GPU adapter was found: install your GPU's Vulkan driver, or Mesa's software \
             Vulkan device (Debian/Ubuntu: apt-get install mesa-vulkan-drivers)"
        }
        "tch-cuda" | "cuda" if cause.to_lowercase().contains("cuda") => {
            "\nthis backend needs an NVIDIA GPU and its driver"
        }
        _ => "",
    };
    anyhow::anyhow!("backend {backend} failed: {cause}{hint}")
}

/// A backend name this binary cannot run: unknown, or not built in. The message is made only
/// when shown, since [`is_built`] asks for every backend.
#[derive(Debug)]
pub(crate) struct Unavailable(pub String);

impl std::error::Error for Unavailable {}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.0.as_str();
        let all = backend_table::names();
        if let Some(b) = backend_table::find(name) {
            let built: Vec<&str> = all.iter().copied().filter(|n| is_built(n)).collect();
            write!(
                f,
            "backend {name:?} is not built into this binary (built: {}); build with `--features {}` \
             or use `cargo xtask run-experiment <experiment> --backend {name}`",
                built.join(", "),
                b.feature
            )
        } else {
            write!(
                f,
                "unknown backend {name:?}{}; expected one of: {}",
                kiln_experiments::registry::did_you_mean(name, &all),
                all.join(", ")
            )
        }
    }
}
