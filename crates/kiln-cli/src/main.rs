use std::process::ExitCode;

fn main() -> ExitCode {
    keep_freed_memory();
    ExitCode::from(kiln_cli::exit_status(kiln_cli::main_with_args(
        std::env::args_os(),
    )))
}

/// Keeps memory the process frees for its next allocation instead of handing it back to the
/// kernel. glibc serves every block above 32 MiB with a fresh `mmap` and unmaps it on free; a
/// training step of a large batch (airbench94's 1,024 images make 250 MB activations) then
/// page-faults every 4 KiB of every activation, every step, and each unmap flushes the other
/// cores' TLBs: over a quarter of airbench94's CPU time was the kernel's. Served from the heap
/// instead, and the heap never trimmed, a step reuses the last step's pages (airbench94 on
/// `cpu`: 134 to 193 training images/s on an AMD EPYC, peak memory 1,768 to 1,841 MiB; see
/// docs/speed.md). The process keeps its peak heap until it exits, which a training run
/// reaches again at its next step anyway. The library leaves the allocator alone: a program
/// that embeds Kiln's crates decides this for itself.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}
