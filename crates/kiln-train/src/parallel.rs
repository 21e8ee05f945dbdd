//! Data-parallel training: one fit over several processes ("ranks"), each on its own device,
//! that together take the steps one process would take with the whole batch.
//!
//! The loop needs only a few collective operations, the [`Collective`] trait; Kiln's command
//! line implements it over MPI (the `mpi` feature of `kiln-cli`), and [`ThreadGroup`] over
//! threads of one process (tests, and trying the semantics without MPI). What a fit given one
//! (through [`FitOptions::parallel`](crate::FitOptions::parallel)) does:
//!
//! - every rank starts from rank 0's weights (broadcast before the first step);
//! - `recipe.batch_size` is the global batch: rank `r` of `n` takes items `r*len/n ..
//!   (r+1)*len/n` of each batch of the single-process shuffle order (a last, short batch is
//!   split the same way, so a rank may get none of it);
//! - each step sums every rank's gradient, weighted by its share of the batch, with one
//!   all-reduce of one flat buffer in the module's parameter order (the batch's loss, correct
//!   predictions, image count and whether any rank was asked to stop ride in the same
//!   buffer), so every rank takes the same optimiser step and a stop or a diverged loss ends
//!   every rank at the same step;
//! - the weights are compared by checksum whenever a step is logged and at every epoch's end,
//!   and a fit whose ranks' weights have parted stops with an error;
//! - augmentation and dropout draw from seeds of (seed, position, rank): rank 0 draws what a
//!   single process would;
//! - batch norm normalises each rank's part with that part's own statistics (as PyTorch's
//!   `DistributedDataParallel` without `SyncBatchNorm`), and before every evaluation each rank
//!   takes rank 0's running statistics (as DDP's `broadcast_buffers`);
//! - evaluation splits the set the same way and sums the ranks' tallies.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// A collective operation failed: a peer is gone or did not answer in time. Every rank that
/// sees one stops its fit with [`FitError::Parallel`](crate::FitError::Parallel).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CollectiveError(pub String);

/// The collective operations data-parallel training needs, between `size()` ranks that call
/// them in the same order. Every operation blocks until every rank has called it.
pub trait Collective {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;

    /// How many ranks train together.
    fn size(&self) -> usize;

    /// Element-wise sums over the ranks, in place; every rank gets the same sums.
    fn sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError>;

    /// [`Collective::sum_f32`] in double precision (tallies).
    fn sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError>;

    /// `bytes` become rank `root`'s on every rank, whatever their length.
    fn broadcast(&self, bytes: &mut Vec<u8>, root: usize) -> Result<(), CollectiveError>;

    /// Every rank's `value`, in rank order.
    fn gather(&self, value: u64) -> Result<Vec<u64>, CollectiveError>;

    /// What carries the collectives, for the run's records (e.g. `Open MPI v4.1.4`).
    fn library(&self) -> String;
}

impl std::fmt::Debug for dyn Collective + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rank {} of {} ({})",
            self.rank(),
            self.size(),
            self.library()
        )
    }
}

/// The items of a batch that are rank `rank`'s of `size`: a contiguous share, the first ranks
/// taking one item fewer where the batch does not divide.
pub fn share<T>(items: &[T], rank: usize, size: usize) -> &[T] {
    let (len, size) = (items.len(), size.max(1));
    &items[rank * len / size..(rank + 1) * len / size]
}

/// The seed of rank `rank`'s draws where a single process would draw from `seed`: rank 0
/// keeps it, so one process and rank 0 of many draw alike.
pub(crate) fn rank_seed(seed: u64, rank: usize) -> u64 {
    if rank == 0 {
        return seed;
    }
    // Mixed: nearby ranks get unrelated seeds.
    crate::checkpoint::mix(seed ^ (rank as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// `grads`, this rank's gradients of the mean loss over its `own[2]` images, become every
/// rank's together: each weighted by its rank's share of the batch, in one all-reduce of one
/// flat buffer (the trainable parameters in `model`'s order, then `own`, which is summed too).
/// A parameter without a gradient here (an empty share) counts as zeros.
pub(crate) fn average_gradients<B, M, const N: usize>(
    group: &dyn Collective,
    model: &M,
    mut grads: GradientsParams,
    own: [f32; N],
    device: &B::Device,
) -> Result<(GradientsParams, [f32; N]), CollectiveError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let images = own[2];
    let mut flat = Flatten {
        grads: &mut grads,
        scale: images,
        buffer: Vec::new(),
    };
    model.visit(&mut flat);
    let mut buffer = flat.buffer;
    let params = buffer.len();
    buffer.extend(own);
    group.sum_f32(&mut buffer)?;
    let total = buffer[params + 2];
    let mut summed = [0.0; N];
    summed.copy_from_slice(&buffer[params..]);
    let mut unflat = Unflatten {
        grads: &mut grads,
        scale: 1.0 / total,
        buffer: &buffer[..params],
        device,
    };
    model.visit(&mut unflat);
    Ok((grads, summed))
}

/// A trainable parameter, as opposed to the running statistics that visit as float
/// parameters too.
fn trainable<B: AutodiffBackend, const D: usize>(param: &Param<Tensor<B, D>>) -> bool {
    param.val().is_require_grad()
}

struct Flatten<'a> {
    grads: &'a mut GradientsParams,
    scale: f32,
    buffer: Vec<f32>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !trainable(param) {
            return;
        }
        let len = param.val().shape().num_elements();
        match self.grads.remove::<B::InnerBackend, D>(param.id) {
            Some(grad) => {
                let values: Vec<f32> = grad.into_data().convert::<f32>().into_vec().unwrap();
                assert_eq!(values.len(), len, "a gradient has its parameter's shape");
                self.buffer.extend(values.iter().map(|v| v * self.scale));
            }
            None => self.buffer.resize(self.buffer.len() + len, 0.0),
        }
    }
}

struct Unflatten<'a, D: Clone> {
    grads: &'a mut GradientsParams,
    scale: f32,
    buffer: &'a [f32],
    device: &'a D,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B::Device> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !trainable(param) {
            return;
        }
        let shape = param.val().shape();
        let (mine, rest) = self.buffer.split_at(shape.num_elements());
        self.buffer = rest;
        let values: Vec<f32> = mine.iter().map(|v| v * self.scale).collect();
        let grad =
            Tensor::<B::InnerBackend, D>::from_data(TensorData::new(values, shape), self.device);
        register(self.grads, param.id, grad);
    }
}

fn register<B: Backend, const D: usize>(
    grads: &mut GradientsParams,
    id: ParamId,
    grad: Tensor<B, D>,
) {
    grads.register::<B, D>(id, grad);
}

/// A checksum of `model`'s trainable weights, bit for bit, in parameter order.
pub(crate) fn weights_checksum<B: AutodiffBackend, M: Module<B>>(model: &M) -> u64 {
    struct Checksum(u64);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Checksum {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if !trainable(param) {
                return;
            }
            let values: Vec<f32> = param.val().into_data().convert::<f32>().into_vec().unwrap();
            for v in values {
                // FNV-1a over 32-bit words: any changed bit changes the sum.
                self.0 = (self.0 ^ u64::from(v.to_bits())).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    let mut sum = Checksum(0xcbf2_9ce4_8422_2325);
    model.visit(&mut sum);
    sum.0
}

/// Ranks as threads of one process, exchanging through shared memory: for tests and for
/// trying data-parallel semantics on one machine without MPI. Sums are taken in rank order,
/// so they are the same on every rank and from one run to the next. An operation that some
/// rank does not reach within the group's timeout fails on every rank that did, naming the
/// ranks that did not.
#[derive(Clone)]
pub struct ThreadGroup {
    shared: Arc<Shared>,
    rank: usize,
}

struct Shared {
    size: usize,
    timeout: Duration,
    round: Mutex<Round>,
    done: Condvar,
}

#[derive(Default)]
struct Round {
    /// Completed exchanges so far.
    generation: u64,
    /// What each rank brought to the exchange in progress.
    slots: Vec<Option<Vec<u8>>>,
    /// What the last completed exchange gathered, in rank order.
    result: Arc<Vec<Vec<u8>>>,
    /// A rank gave up waiting: every later exchange fails.
    broken: Option<String>,
}

impl ThreadGroup {
    /// `size` members, ranks `0..size`, each to be moved to its own thread; an exchange waits
    /// at most `timeout` for the others.
    pub fn new(size: usize, timeout: Duration) -> Vec<ThreadGroup> {
        assert!(size > 0, "a group needs at least one rank");
        let shared = Arc::new(Shared {
            size,
            timeout,
            round: Mutex::new(Round {
                slots: vec![None; size],
                ..Round::default()
            }),
            done: Condvar::new(),
        });
        (0..size)
            .map(|rank| ThreadGroup {
                shared: shared.clone(),
                rank,
            })
            .collect()
    }

    /// Brings `payload` to the exchange and waits for every rank's.
    fn exchange(&self, payload: Vec<u8>) -> Result<Arc<Vec<Vec<u8>>>, CollectiveError> {
        let shared = &*self.shared;
        let mut round = shared.round.lock().expect("a rank panicked mid-exchange");
        if let Some(why) = &round.broken {
            return Err(CollectiveError(why.clone()));
        }
        let generation = round.generation;
        round.slots[self.rank] = Some(payload);
        if round.slots.iter().all(Option::is_some) {
            let gathered = round.slots.iter_mut().map(|s| s.take().unwrap()).collect();
            round.result = Arc::new(gathered);
            round.generation += 1;
            shared.done.notify_all();
            return Ok(round.result.clone());
        }
        let (mut round, wait) = shared
            .done
            .wait_timeout_while(round, shared.timeout, |r| {
                r.generation == generation && r.broken.is_none()
            })
            .expect("a rank panicked mid-exchange");
        if round.generation != generation {
            return Ok(round.result.clone());
        }
        if let Some(why) = &round.broken {
            return Err(CollectiveError(why.clone()));
        }
        debug_assert!(wait.timed_out());
        let missing: Vec<String> = (0..shared.size)
            .filter(|&r| round.slots[r].is_none())
            .map(|r| r.to_string())
            .collect();
        let why = format!(
            "rank {} did not reach the collective operation within {:.0?} (rank {} waited)",
            missing.join(", "),
            shared.timeout,
            self.rank
        );
        round.broken = Some(why.clone());
        shared.done.notify_all();
        Err(CollectiveError(why))
    }
}

impl ThreadGroup {
    /// `values` become their sums over the ranks, added in rank order.
    fn sum<T, const N: usize>(
        &self,
        values: &mut [T],
        to_bytes: fn(T) -> [u8; N],
        from_bytes: fn([u8; N]) -> T,
    ) -> Result<(), CollectiveError>
    where
        T: Copy + Default + std::ops::AddAssign,
    {
        let all = self.exchange(values.iter().flat_map(|&v| to_bytes(v)).collect())?;
        values.fill(T::default());
        for part in all.iter() {
            for (v, b) in values.iter_mut().zip(part.chunks_exact(N)) {
                *v += from_bytes(b.try_into().unwrap());
            }
        }
        Ok(())
    }
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError> {
        self.sum(values, f32::to_le_bytes, f32::from_le_bytes)
    }

    fn sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError> {
        self.sum(values, f64::to_le_bytes, f64::from_le_bytes)
    }

    fn broadcast(&self, bytes: &mut Vec<u8>, root: usize) -> Result<(), CollectiveError> {
        let mine = if self.rank == root {
            std::mem::take(bytes)
        } else {
            Vec::new()
        };
        let all = self.exchange(mine)?;
        bytes.clone_from(&all[root]);
        Ok(())
    }

    fn gather(&self, value: u64) -> Result<Vec<u64>, CollectiveError> {
        let all = self.exchange(value.to_le_bytes().to_vec())?;
        Ok(all
            .iter()
            .map(|b| u64::from_le_bytes(b[..8].try_into().unwrap()))
            .collect())
    }

    fn library(&self) -> String {
        format!("{} threads of one process", self.shared.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_batch_in_order_and_differ_by_at_most_one() {
        for len in 0..20 {
            for size in 1..6 {
                let items: Vec<usize> = (0..len).collect();
                let parts: Vec<&[usize]> = (0..size).map(|r| share(&items, r, size)).collect();
                assert_eq!(parts.concat(), items, "len {len}, size {size}");
                let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
                let (min, max) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
                assert!(max - min <= 1, "len {len}, size {size}: {lens:?}");
            }
        }
        assert_eq!(rank_seed(42, 0), 42);
        assert_ne!(rank_seed(42, 1), rank_seed(42, 2));
    }

    #[test]
    fn a_thread_group_sums_broadcasts_and_gathers_alike_on_every_rank() {
        let group = ThreadGroup::new(3, Duration::from_secs(10));
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .into_iter()
                .map(|g| {
                    s.spawn(move || {
                        let r = g.rank();
                        let mut outcomes = Vec::new();
                        // Several rounds, so a fast rank's next exchange meets a slow one's last.
                        for round in 0..50u64 {
                            let mut v = [r as f32 + 0.5, round as f32];
                            g.sum_f32(&mut v).unwrap();
                            let mut w = [r as f64 * 0.25];
                            g.sum_f64(&mut w).unwrap();
                            let mut bytes = vec![r as u8; r + 1];
                            g.broadcast(&mut bytes, (round % 3) as usize).unwrap();
                            let gathered = g.gather(round * 10 + r as u64).unwrap();
                            outcomes.push((v, w, bytes, gathered));
                        }
                        outcomes
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (round, outcome) in results[0].iter().enumerate() {
            let round = round as u64;
            let root = (round % 3) as usize;
            assert_eq!(outcome.0, [4.5, 3.0 * round as f32]);
            assert_eq!(outcome.1, [0.75]);
            assert_eq!(outcome.2, vec![root as u8; root + 1]);
            assert_eq!(outcome.3, vec![round * 10, round * 10 + 1, round * 10 + 2]);
        }
        assert_eq!(results[0], results[1]);
        assert_eq!(results[1], results[2]);
    }

    #[test]
    fn a_rank_that_never_comes_fails_the_others_and_is_named() {
        let mut group = ThreadGroup::new(3, Duration::from_millis(200));
        let _absent = group.pop(); // rank 2
        let errors: Vec<CollectiveError> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .into_iter()
                .map(|g| s.spawn(move || g.sum_f32(&mut [1.0]).unwrap_err()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for e in errors {
            assert!(e.0.starts_with("rank 2 did not reach"), "{e}");
        }
    }
}
