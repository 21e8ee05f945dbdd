//! Flush-to-zero for denormal floats.
//!
//! Late in a training run some weights and Adam moments decay into the denormal range, where
//! x86 and ARM CPUs compute up to a hundred times slower; PyTorch's recipes avoid it with
//! `torch.set_flush_denormal(True)`. Treating denormals as zero changes results only below
//! 1.2e-38, far under anything a float32 network can resolve.
//!
//! The setting is per thread. POSIX threads inherit the floating-point environment of the
//! thread that creates them, so calling [`flush_denormals`] first thing in `main`, before any
//! thread pool (rayon's, libtorch's OpenMP) starts, covers every worker. Library users decide
//! for themselves (off unless they call it); the `kiln` command turns it on unless given
//! `--keep-denormals`, and records the choice in each run's `summary.json`.

/// Makes the calling thread (and threads it creates from now on) treat denormal inputs as zero
/// and flush denormal results to zero. Returns `false` on a CPU where Kiln does not know how.
pub fn flush_denormals() -> bool {
    set(true)
}

/// Whether the calling thread flushes denormals to zero.
pub fn flushes_denormals() -> bool {
    imp::get()
}

/// Turns flush-to-zero on or off for the calling thread; `false` where unsupported.
pub fn set(on: bool) -> bool {
    imp::set(on)
}

#[cfg(target_arch = "x86_64")]
mod imp {
    /// MXCSR bits: FTZ (flush results) and DAZ (inputs are zero).
    const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

    fn read() -> u32 {
        let mut csr = 0u32;
        // SAFETY: stmxcsr stores the SSE control register (always present on x86_64) to memory.
        unsafe { core::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack)) };
        csr
    }

    pub fn set(on: bool) -> bool {
        let csr = if on {
            read() | FTZ_DAZ
        } else {
            read() & !FTZ_DAZ
        };
        // SAFETY: only the FTZ and DAZ mode bits change; exception masks and rounding stay.
        unsafe { core::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack)) };
        true
    }

    pub fn get() -> bool {
        read() & FTZ_DAZ == FTZ_DAZ
    }
}

#[cfg(target_arch = "aarch64")]
mod imp {
    /// FPCR.FZ: flush denormal inputs and results to zero.
    const FZ: u64 = 1 << 24;

    fn read() -> u64 {
        let fpcr: u64;
        // SAFETY: reading FPCR has no side effects.
        unsafe { core::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack)) };
        fpcr
    }

    pub fn set(on: bool) -> bool {
        let fpcr = if on { read() | FZ } else { read() & !FZ };
        // SAFETY: only the FZ mode bit changes.
        unsafe { core::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack)) };
        true
    }

    pub fn get() -> bool {
        read() & FZ == FZ
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod imp {
    pub fn set(_on: bool) -> bool {
        false
    }

    pub fn get() -> bool {
        false
    }
}

#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use super::*;

    /// Half the smallest normal float: a denormal, unless flushed.
    fn halve_smallest_normal() -> f32 {
        std::hint::black_box(f32::MIN_POSITIVE) / std::hint::black_box(2.0)
    }

    #[test]
    fn flushing_zeroes_denormals_here_and_in_threads_started_later() {
        std::thread::spawn(|| {
            assert!(
                halve_smallest_normal() > 0.0,
                "denormals exist before flushing"
            );
            assert!(flush_denormals());
            assert!(flushes_denormals());
            assert_eq!(halve_smallest_normal(), 0.0);
            let child = std::thread::spawn(|| (flushes_denormals(), halve_smallest_normal()));
            assert_eq!(
                child.join().unwrap(),
                (true, 0.0),
                "a new thread inherits the mode"
            );
            assert!(set(false));
            assert!(
                halve_smallest_normal() > 0.0,
                "turning it off restores denormals"
            );
        })
        .join()
        .unwrap();
    }
}
