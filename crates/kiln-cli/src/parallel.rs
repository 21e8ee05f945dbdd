//! Data-parallel `kiln run`: finding out whether an MPI launcher (`mpirun`, `srun --mpi=pmix`)
//! started this process as one of several ranks, the MPI implementation of
//! [`kiln_train::Collective`] (cargo feature `mpi`), and `kiln launch`.

#[cfg(feature = "mpi")]
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kiln_train::Collective;

use crate::args::LaunchArgs;

/// The number in environment variable `name`, if it holds one.
fn number_in(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.parse().ok()
}

/// The rank and number of ranks an MPI launcher gave this process, from the variables each
/// launcher sets (Open MPI's mpirun, PMIx as `srun --mpi=pmix` and Open MPI 5 set it, and
/// PMI-1/2 as MPICH's hydra and `srun --mpi=pmi2` set it); `None` where none did.
pub fn launched_rank() -> Option<(usize, usize)> {
    let pairs = [
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("PMIX_RANK", "PMIX_SIZE"),
        ("PMI_RANK", "PMI_SIZE"),
    ];
    for (rank, size) in pairs {
        if let (Some(rank), Some(size)) = (number_in(rank), number_in(size)) {
            return Some((rank, size));
        }
    }
    // srun's PMIx plugin sets PMIX_RANK but not the size: Slurm's own variables give it.
    let rank = number_in("PMIX_RANK")?;
    Some((
        rank,
        number_in("SLURM_NTASKS").or_else(|| number_in("SLURM_NPROCS"))?,
    ))
}

#[cfg(feature = "mpi")]
/// How long a rank waits in one collective operation before it decides a peer is gone:
/// `KILN_COLLECTIVE_TIMEOUT` seconds, by default 300 (rank 0 writes checkpoints and an
/// evaluation can be long while the others wait).
pub fn collective_timeout() -> Result<Duration> {
    match std::env::var("KILN_COLLECTIVE_TIMEOUT") {
        Err(_) => Ok(Duration::from_secs(300)),
        Ok(text) => match text.trim().parse::<f64>() {
            Ok(s) if s > 0.0 && s.is_finite() => Ok(Duration::from_secs_f64(s)),
            _ => bail!(
                "KILN_COLLECTIVE_TIMEOUT: expected a number of seconds above 0, found {text:?}"
            ),
        },
    }
}

/// Runs `f` alone, or as one rank of the MPI job that started this process, with its
/// member of the group. A rank whose `f` fails prints the error and ends the whole job
/// (`MPI_Abort`): the others may be waiting for it in a collective operation.
pub fn with_ranks<T>(f: impl FnOnce(Option<&'static dyn Collective>) -> Result<T>) -> Result<T> {
    let Some((rank, size)) = launched_rank().filter(|&(_, size)| size > 1) else {
        return f(None);
    };
    #[cfg(not(feature = "mpi"))]
    {
        let _ = f;
        bail!(
            "kiln was started as rank {rank} of {size} by an MPI launcher, but this build has no \
             MPI support: build it with the `mpi` feature (cargo build --release -p kiln-cli \
             --features mpi), which needs an MPI library (Debian: libopenmpi-dev libclang-dev)"
        )
    }
    #[cfg(feature = "mpi")]
    {
        let (universe, group) = Mpi::init(collective_timeout()?)?;
        if (group.rank(), group.size()) != (rank, size) {
            tracing::warn!(
                "the launcher's variables say rank {rank} of {size}, MPI says rank {} of {}; \
                 going by MPI",
                group.rank(),
                group.size()
            );
        }
        let group: &'static Mpi = Box::leak(Box::new(group));
        let outcome = f(Some(group));
        match &outcome {
            // Every rank stopped at the same step (the stop is agreed): MPI ends normally.
            Err(e) if crate::stopped_on_request(e) => {}
            Err(e) => {
                eprintln!("error: rank {}: {e:#}", group.rank());
                group.abort(1);
            }
            Ok(_) => {}
        }
        drop(universe); // MPI_Finalize
        outcome
    }
}

/// The device a rank of a data-parallel job trains on where `asked` (`--device`) is `None`
/// and the backend has several: its rank among the job's ranks on its machine (the
/// launchers' local rank), so N ranks on a machine with N GPUs take one each. Alone, or on a
/// backend of one device, `asked`.
pub fn rank_device(backend: &str, asked: Option<usize>) -> Option<usize> {
    let several = crate::backend_table::find(backend)
        .is_some_and(|b| b.devices != crate::backend_table::Devices::One);
    if asked.is_some() || !several || launched_rank().is_none_or(|(_, size)| size < 2) {
        return asked;
    }
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "SLURM_LOCALID",
        "MPI_LOCALRANKID",
        "PMI_LOCAL_RANK",
    ]
    .into_iter()
    .find_map(number_in)
}

/// Whether this process is a rank other than 0 of a data-parallel job: it logs warnings and
/// errors only, and prints no results (rank 0 does).
pub fn is_follower() -> bool {
    launched_rank().is_some_and(|(rank, size)| size > 1 && rank > 0)
}

/// `kiln launch`: `mpirun` with this binary's `kiln run`, N processes, each with its share
/// of the cores. Returns mpirun's exit status.
pub fn launch(args: &LaunchArgs, global: &[String]) -> Result<std::process::ExitStatus> {
    if !cfg!(feature = "mpi") {
        bail!(
            "kiln launch needs a kiln built with the `mpi` feature (cargo build --release -p \
             kiln-cli --features mpi; Debian: apt install libopenmpi-dev openmpi-bin \
             libclang-dev)"
        );
    }
    if args.procs == 0 {
        bail!("--procs: expected at least 1 process, found 0");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = match args.threads {
        Some(0) => bail!("--threads: expected at least 1 thread per process, found 0"),
        Some(t) => t,
        None => (cores / args.procs).max(1),
    };
    let kiln = std::env::current_exe().context("finding this kiln executable")?;
    let mut mpirun = std::process::Command::new("mpirun");
    if running_as_root() {
        // Open MPI refuses root unless told; containers and CI machines run as root.
        mpirun.arg("--allow-run-as-root");
    }
    mpirun.args(["-np", &args.procs.to_string()]);
    match &args.hostfile {
        Some(file) => {
            mpirun.arg("--hostfile").arg(file);
        }
        // More ranks than cores on one machine: Open MPI refuses unless told.
        None if args.procs > cores => {
            mpirun.arg("--oversubscribe");
        }
        None => {}
    }
    // Each rank runs `threads` threads of its own: binding a rank to one core would stack
    // them there.
    mpirun.args(["--bind-to", "none"]);
    for var in ["RAYON_NUM_THREADS", "OMP_NUM_THREADS"] {
        mpirun.args(["-x", &format!("{var}={threads}")]);
    }
    // Kiln's own settings and where libtorch is, to ranks on other hosts too.
    let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
    for var in names.filter(|v| v.starts_with("KILN_") || v == "LD_LIBRARY_PATH" || v == "LIBTORCH")
    {
        mpirun.args(["-x", &var]);
    }
    mpirun
        .arg(&kiln)
        .args(global)
        .arg("run")
        .args(&args.run_args);
    tracing::info!(
        procs = args.procs,
        threads,
        "starting {}",
        format!("{mpirun:?}").replace('"', "")
    );
    mpirun.status().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "kiln launch runs Open MPI's mpirun, which is not on PATH (Debian: apt install \
             openmpi-bin)"
        ),
        _ => anyhow::Error::new(e).context("starting mpirun"),
    })
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

#[cfg(feature = "mpi")]
pub use with_mpi::Mpi;

#[cfg(feature = "mpi")]
mod with_mpi {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use kiln_train::{Collective, CollectiveError};
    use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
    use mpi::datatype::Equivalence;
    use mpi::environment::{Threading, Universe};
    use mpi::topology::{Communicator, SimpleCommunicator};

    /// `MPI_COMM_WORLD` as Kiln's ranks, with a watchdog: a collective operation that has not
    /// finished within the timeout ends the whole job (`MPI_Abort`) with an error that names
    /// this rank and the operation, since MPI's own operations wait forever on a peer that
    /// stopped answering. (A peer that dies is noticed by the launcher, which ends the job.)
    pub struct Mpi {
        world: SimpleCommunicator,
        rank: usize,
        size: usize,
        library: String,
        /// The operation in progress and when it began.
        waiting: Arc<Mutex<Option<(Instant, &'static str)>>>,
    }

    impl Mpi {
        /// Initialises MPI (which ends when `universe` is dropped: keep it until the run is
        /// over) and starts the watchdog.
        pub fn init(timeout: Duration) -> anyhow::Result<(Universe, Mpi)> {
            // Multiple: the watchdog thread may have to call MPI_Abort.
            let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Multiple)
            else {
                anyhow::bail!("MPI was initialised already");
            };
            let world = universe.world();
            let library = mpi::environment::library_version()
                // The C string's terminator comes along: "Open MPI v4.1.4, package: ...\0".
                .map(|v| {
                    let line = v.lines().next().unwrap_or_default();
                    line.trim_end_matches('\0').trim().to_string()
                })
                .unwrap_or_else(|_| "MPI".to_string());
            let group = Mpi {
                rank: world.rank() as usize,
                size: world.size() as usize,
                world,
                library,
                waiting: Arc::new(Mutex::new(None)),
            };
            let (rank, waiting) = (group.rank, group.waiting.clone());
            let can_abort = threading == Threading::Multiple;
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_millis(250));
                let Some((since, what)) = *waiting.lock().unwrap() else {
                    continue;
                };
                if since.elapsed() < timeout {
                    continue;
                }
                eprintln!(
                    "error: data-parallel training, rank {rank}: the other ranks did not join \
                     the {what} within {timeout:.0?} (KILN_COLLECTIVE_TIMEOUT): a rank died or \
                     stopped answering; ending every rank (the run folder keeps its last \
                     checkpoint: `kiln run --resume` goes on from it)"
                );
                if can_abort {
                    // SAFETY: MPI was initialised with MPI_THREAD_MULTIPLE, so any thread may
                    // call MPI; MPI_Abort does not return.
                    unsafe {
                        mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, 3);
                    }
                }
                std::process::exit(3);
            });
            Ok((universe, group))
        }

        /// Ends every rank of the job at once: after an error on one rank the others may be
        /// waiting in a collective that will never complete.
        pub fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }

        /// `values` become their sums over the ranks.
        fn sum<T: Equivalence + Copy + Default>(&self, values: &mut [T], what: &'static str) {
            let mut sums = vec![T::default(); values.len()];
            self.watched(what, || {
                self.world
                    .all_reduce_into(&*values, &mut sums[..], SystemOperation::sum())
            });
            values.copy_from_slice(&sums);
        }

        fn watched<T>(&self, what: &'static str, f: impl FnOnce() -> T) -> T {
            *self.waiting.lock().unwrap() = Some((Instant::now(), what));
            let out = f();
            *self.waiting.lock().unwrap() = None;
            out
        }
    }

    impl Collective for Mpi {
        fn rank(&self) -> usize {
            self.rank
        }

        fn size(&self) -> usize {
            self.size
        }

        fn sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError> {
            self.sum(values, "all-reduce of the gradients");
            Ok(())
        }

        fn sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError> {
            self.sum(values, "all-reduce of the evaluation's sums");
            Ok(())
        }

        fn broadcast(&self, bytes: &mut Vec<u8>, root: usize) -> Result<(), CollectiveError> {
            let root = self.world.process_at_rank(root as i32);
            self.watched("broadcast of rank 0's state", || {
                let mut len = bytes.len() as u64;
                root.broadcast_into(&mut len);
                bytes.resize(len as usize, 0);
                root.broadcast_into(&mut bytes[..]);
            });
            Ok(())
        }

        fn gather(&self, value: u64) -> Result<Vec<u64>, CollectiveError> {
            let mut all = vec![0u64; self.size];
            self.watched("comparison of the ranks' weights", || {
                self.world.all_gather_into(&value, &mut all[..])
            });
            Ok(all)
        }

        fn library(&self) -> String {
            self.library.clone()
        }
    }
}
