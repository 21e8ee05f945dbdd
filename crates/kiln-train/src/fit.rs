//! The training loop, top to bottom: [`fit`] sets up, `Run::fit` goes epoch by epoch,
//! `Run::train_epoch` batch by batch, `Run::step` is one optimiser step and
//! `Run::end_epoch` evaluates and reports. The optimiser (`optimizer.rs`), the schedule
//! (`schedule.rs`), evaluation (`eval.rs`) and checkpoints (`checkpoint.rs`) live apart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_data::{Draws, HostBatch, ImageBatch, ImageBatcher, ImageItem};
use kiln_models::{ImageClassifier, TestTimeAugmentation, Tta};
use rand::rngs::{SmallRng, StdRng};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{batch_seed, Checkpoint, CheckpointSink, CheckpointState, ResumeError};
use crate::eval::{batch_loss, item, tally, training_loss, ClassificationLoss, Metrics, Tally};
use crate::optimizer::RecipeOptimizer;
use crate::parallel::{self, rank_seed, share, Collective};
use crate::schedule::Schedule;
use crate::{EpochMetrics, Event, Recipe, StepMetrics};

/// How the loop shows itself, where its checkpoints go and when it stops early; none of it
/// changes results.
#[derive(Clone, Copy, Default)]
pub struct FitOptions<'a> {
    /// Draw a progress bar per epoch on stderr.
    pub progress: bool,
    /// Where checkpoints go (see [`crate::checkpoint`]): once before the first step, at the end
    /// of every epoch, every `recipe.checkpoint_every` steps and when stopped. An error from it
    /// stops the fit with [`FitError::Checkpoint`]; the previous checkpoint is the sink's to keep.
    pub save_checkpoint: Option<&'a CheckpointSink<'a>>,
    /// Go on from this checkpoint of the same fit (same recipe and training set) instead of
    /// starting afresh; the model and optimizer state given to the fit are replaced by its.
    pub resume_from: Option<&'a Checkpoint>,
    /// Checked after every step: once set, the fit saves a checkpoint and stops with
    /// [`FitError::Interrupted`] (how Kiln's command handles Ctrl-C).
    pub stop: Option<&'a AtomicBool>,
    /// Train data-parallel with the other ranks of this group (see [`crate::parallel`]):
    /// every rank calls [`fit`] with the same recipe and data, and its own member of the
    /// group. `None` (the default), or a group of one, trains in this process alone.
    pub parallel: Option<&'a dyn Collective>,
}

impl std::fmt::Debug for FitOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FitOptions")
            .field("progress", &self.progress)
            .field("save_checkpoint", &self.save_checkpoint.is_some())
            .field("resume_from", &self.resume_from.map(|c| &c.state))
            .field("stop", &self.stop)
            .field("parallel", &self.parallel.map(|g| (g.rank(), g.size())))
            .finish()
    }
}

/// Why a fit stopped before its last epoch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// The training loss became NaN or infinite: the weights are lost to it, so the loop stops
    /// rather than train on (every later loss and accuracy would be meaningless).
    #[error(
        "training diverged: the loss became {loss} at step {step} (epoch {epoch}) with learning \
         rate {lr:e}; {}. Try a smaller learning rate (a tenth, say), a warm-up \
         (`[recipe.scheduler] name = \"warmup-cosine\"`), or check that the inputs are normalised",
        .last_finite.map_or("no step before it had a finite loss".to_string(), |l| format!("the last finite loss was {l:.4}"))
    )]
    Diverged {
        /// 1-based epoch of the step.
        epoch: usize,
        /// 1-based step whose loss was not finite.
        step: usize,
        /// That loss (NaN or an infinity).
        loss: f64,
        /// The loss of the step before, if any step had a finite one.
        last_finite: Option<f64>,
        /// The learning rate of that step.
        lr: f64,
    },
    /// [`FitOptions::stop`] was set: the fit stopped after `step`, having saved a checkpoint
    /// where it has a sink.
    #[error("stopped on request after step {step} (epoch {epoch})")]
    Interrupted {
        /// The epoch in progress (1-based).
        epoch: usize,
        /// Steps trained.
        step: usize,
    },
    /// The checkpoint sink failed; training stopped rather than go on unprotected.
    #[error("saving the checkpoint at step {step} failed: {message}")]
    Checkpoint {
        /// The step of the checkpoint.
        step: usize,
        /// The sink's error.
        message: String,
    },
    /// A data-parallel fit cannot go on: a collective operation failed (a rank died or did not
    /// answer in time), the ranks' weights parted, or the batch does not split over the ranks.
    /// Every rank that can still run stops with it.
    #[error("data-parallel training, rank {rank}: {message}")]
    Parallel {
        /// The rank that reports it.
        rank: usize,
        /// What went wrong.
        message: String,
    },
    /// [`FitOptions::resume_from`] cannot be taken back.
    #[error(transparent)]
    Resume(#[from] ResumeError),
    /// The recipe does not fit the model: a parameter group matches none of its parameters.
    #[error("{0}")]
    Recipe(String),
}

/// Every epoch's metrics and the wall time of the whole fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitSummary {
    /// In order, one per epoch run.
    pub epochs: Vec<EpochMetrics>,
    /// Wall time of the whole fit.
    pub seconds: f64,
    /// Each test image's class probabilities under the returned model, averaged over the
    /// recipe's test-time augmentation, in order: what the last evaluation computed, kept so
    /// that nobody computes them again (a run's pictures). `None` where this process did not
    /// make that evaluation (it resumed after it), a data-parallel fit (each rank scored a
    /// share) or a fit without a test split.
    #[serde(skip)]
    pub test_probabilities: Option<Vec<Vec<f32>>>,
}

impl FitSummary {
    /// The last epoch's metrics.
    pub fn last(&self) -> Option<&EpochMetrics> {
        self.epochs.last()
    }

    /// The epoch with the highest test accuracy, or validation accuracy where the fit had no
    /// test split (the earliest on ties); `None` without either.
    pub fn best(&self) -> Option<&EpochMetrics> {
        let score = |e: &EpochMetrics| e.test_accuracy.or(e.valid_accuracy);
        self.epochs
            .iter()
            .filter(|e| score(e).is_some())
            .reduce(|best, e| if score(e) > score(best) { e } else { best })
    }

    /// Training images per second over all epochs (training time only).
    pub fn train_images_per_sec(&self) -> f64 {
        mean(self.epochs.iter().map(|e| e.train_images_per_sec))
    }

    /// Test images per second over all epochs; `None` without a test split.
    pub fn eval_images_per_sec(&self) -> Option<f64> {
        let rates: Vec<f64> = self
            .epochs
            .iter()
            .filter_map(|e| e.eval_images_per_sec)
            .collect();
        (!rates.is_empty()).then(|| mean(rates.into_iter()))
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// The data a fit sees: it trains on `train`, reports `valid` (if any) every
/// `recipe.validate_every` steps and after each epoch, and `test` (if any) after each epoch.
///
/// Any Burn [`Dataset`] works, with a batcher that turns its items into [`ImageBatch`]es;
/// Kiln's own are [`kiln_data::ImageSet`] and [`ImageBatcher`].
pub struct FitData<'a, I, Bt> {
    /// What the model trains on, shuffled every epoch.
    pub train: &'a dyn Dataset<I>,
    /// Evaluated every `recipe.validate_every` steps and after each epoch.
    pub valid: Option<&'a dyn Dataset<I>>,
    /// Evaluated after each epoch.
    pub test: Option<&'a dyn Dataset<I>>,
    /// Turns items into batches, for training and evaluation.
    pub batcher: &'a Bt,
}

impl<I, Bt> Clone for FitData<'_, I, Bt> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I, Bt> Copy for FitData<'_, I, Bt> {}

/// A Burn [`Batcher`] of [`ImageBatch`]es that the training loop can also ask for augmented
/// training batches, prepared in host memory on the loop's worker thread while the device
/// trains. Augmentation draws only from the generator it is given, which the loop seeds from
/// the recipe, so a seed fixes the augmented images too; the draws also say where the batch's
/// images sit in the fit (their indices, the epoch), for augmentations that follow an image
/// from epoch to epoch.
///
/// A batcher without augmentation needs only the empty impl:
/// `impl<B: AutodiffBackend> TrainBatcher<B, MyItem> for MyBatcher {}`; its batches are then built by
/// [`Batcher::batch`] on the training thread.
pub trait TrainBatcher<B: AutodiffBackend, I>:
    Batcher<B, I, ImageBatch<B>> + Batcher<B::InnerBackend, I, ImageBatch<B::InnerBackend>> + Sync
{
    /// Runs on the worker thread: the training batch's host-side work, augmented with
    /// `draws`. By default nothing: the items go to [`Batcher::batch`] on the training
    /// thread. (Device tensors are made on the training thread only: wgpu's gave different
    /// losses when a second thread created them.)
    fn prepare_train(&self, items: Vec<I>, draws: Draws<'_>) -> Prepared<I> {
        let _ = draws;
        Prepared::Items(items)
    }
}

/// A training batch as the worker thread hands it to the training thread.
#[derive(Debug)]
pub enum Prepared<I> {
    /// Items still to batch with [`Batcher::batch`].
    Items(Vec<I>),
    /// A batch ready in host memory, only to move to the device.
    Host(HostBatch),
}

impl<B: AutodiffBackend> TrainBatcher<B, ImageItem> for ImageBatcher {
    fn prepare_train(&self, items: Vec<ImageItem>, draws: Draws<'_>) -> Prepared<ImageItem> {
        Prepared::Host(self.prepare(&items, Some(draws)))
    }
}

/// A network [`fit`] can train: an autodiff module whose inner module (the one evaluation
/// runs, without autodiff) classifies too. Every Kiln network is one, and so is any other
/// that meets the bounds.
pub trait Trainable<B: AutodiffBackend>:
    AutodiffModule<B, InnerModule: ImageClassifier<B::InnerBackend>> + ImageClassifier<B>
{
}

impl<B, M> Trainable<B> for M
where
    B: AutodiffBackend,
    M: AutodiffModule<B, InnerModule: ImageClassifier<B::InnerBackend>> + ImageClassifier<B>,
{
}

/// Trains `model` by `recipe` on `data`, minimising cross-entropy (with the recipe's label
/// smoothing).
///
/// The caller seeds the backend (`B::seed`) before building the model; this function seeds
/// the shuffling and the augmentation from `recipe.seed`, so a seed fixes the whole run on a
/// deterministic backend. The training set must be non-empty. Stops with
/// [`FitError::Diverged`] at the first step whose loss is not finite.
pub fn fit<B, M, I, Bt>(
    model: M,
    data: FitData<'_, I, Bt>,
    recipe: &Recipe,
    device: &B::Device,
    options: &FitOptions<'_>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(M, FitSummary), FitError>
where
    B: AutodiffBackend,
    M: Trainable<B>,
    I: Send,
    Bt: TrainBatcher<B, I>,
{
    let loss = training_loss(recipe, device);
    fit_with_loss(model, data, &loss, recipe, device, options, on_event)
}

/// [`fit`] with a loss of the caller's choosing. Evaluation still reports cross-entropy, so
/// the metrics of runs with different losses compare.
pub fn fit_with_loss<B, M, I, Bt, L>(
    model: M,
    data: FitData<'_, I, Bt>,
    loss: &L,
    recipe: &Recipe,
    device: &B::Device,
    options: &FitOptions<'_>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(M, FitSummary), FitError>
where
    B: AutodiffBackend,
    M: Trainable<B>,
    I: Send,
    Bt: TrainBatcher<B, I>,
    L: ClassificationLoss<B>,
{
    assert!(!data.train.is_empty(), "fit needs a non-empty training set");
    let images = data.train.len();
    let steps_per_epoch = match recipe.drop_last {
        true => images / recipe.batch_size,
        false => images.div_ceil(recipe.batch_size),
    };
    if steps_per_epoch == 0 {
        return Err(FitError::Recipe(format!(
            "recipe.drop_last: the {images} training images make no whole batch of \
             recipe.batch_size = {}",
            recipe.batch_size
        )));
    }
    let run = Run {
        data,
        loss,
        recipe,
        device,
        options,
        steps_per_epoch,
    };
    run.fit(model, on_event)
}

/// What a fit is given: fixed from its first step to its last.
struct Run<'a, B: AutodiffBackend, I, Bt, L> {
    data: FitData<'a, I, Bt>,
    loss: &'a L,
    recipe: &'a Recipe,
    device: &'a B::Device,
    options: &'a FitOptions<'a>,
    steps_per_epoch: usize,
}

/// Where a fit stands: its position as a checkpoint keeps it, the learning rate and the time.
struct Progress {
    at: CheckpointState,
    schedule: Schedule,
    lr: f64,
    /// The whole fit's wall time, over all its processes.
    clock: Clock,
    /// The epoch in progress's.
    epoch_clock: Clock,
    /// The last evaluation's, for [`FitSummary::test_probabilities`].
    test_probabilities: Option<Vec<Vec<f32>>>,
}

impl Progress {
    /// A new epoch: its sums and times start from zero.
    fn start_epoch(&mut self) {
        // The rate at the epoch's start (per-batch schedules move on within the epoch).
        self.lr = self.schedule.next();
        self.at.epoch_tally = Tally::default();
        self.at.interval = Tally::default();
        self.at.epoch_seconds = 0.0;
        // Mid-epoch validation is not training time: kept apart for images/s.
        self.at.validation_seconds = 0.0;
    }
}

/// Seconds since it was started, plus the `before` that earlier processes counted.
#[derive(Debug, Clone, Copy)]
struct Clock {
    started: Instant,
    before: f64,
}

impl Clock {
    fn starting_at(before: f64) -> Self {
        Clock {
            started: Instant::now(),
            before,
        }
    }

    fn seconds(&self) -> f64 {
        self.before + self.started.elapsed().as_secs_f64()
    }
}

impl<B, I, Bt, L> Run<'_, B, I, Bt, L>
where
    B: AutodiffBackend,
    I: Send,
    Bt: TrainBatcher<B, I>,
    L: ClassificationLoss<B>,
{
    /// The whole fit, from the start or from a checkpoint, one epoch after another.
    fn fit<M: Trainable<B>>(
        &self,
        mut model: M,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<(M, FitSummary), FitError> {
        let recipe = self.recipe;
        let train_images = self.data.train.len();
        // Burn initialises a parameter lazily, at its first use, from the backend's generator
        // as it is then; the loop reseeds that generator every batch, so every parameter is
        // made now, from the state the caller seeded.
        model.visit(&mut Materialise);
        // Where the fit starts: afresh, or where a checkpoint left it.
        let at = match self.options.resume_from {
            Some(c) => {
                c.state.check_matches(recipe, train_images)?;
                model = c.load_model(model, self.device)?;
                c.state.clone()
            }
            None => CheckpointState::start(recipe, train_images),
        };
        if let Some(group) = self.group() {
            if recipe.batch_size % group.size() != 0 {
                return Err(self.parallel_error(format!(
                    "recipe.batch_size = {} is the global batch, split over the ranks, and does \
                     not divide over {} ranks; choose a batch size that is a multiple of the \
                     number of processes",
                    recipe.batch_size,
                    group.size()
                )));
            }
            // Every rank starts from rank 0's weights (and, starting afresh, its parameter
            // ids, by which the optimiser keeps its state).
            model = self.rank0_state(model)?;
        }
        // Made for the weights the fit starts from: the optimiser's state, its parameter
        // groups' rules and lookahead's average all go by parameter id, and a checkpoint's
        // weights (or rank 0's) bring their own ids.
        let total_steps = recipe.total_steps(self.steps_per_epoch);
        let mut optim =
            RecipeOptimizer::new(recipe, &model, total_steps).map_err(FitError::Recipe)?;
        if let Some(c) = self.options.resume_from {
            optim = optim.load(c, &model, self.device)?;
        }
        // What the seed decides up to there: the finished epochs' shuffles, the schedule's steps.
        let mut rng = StdRng::seed_from_u64(recipe.seed);
        let mut order: Vec<usize> = (0..train_images).collect();
        for _ in 1..at.epoch {
            order.shuffle(&mut rng);
        }
        let mut schedule = Schedule::new(recipe, self.steps_per_epoch);
        let lr = schedule.replay(at.epoch, at.batch, self.steps_per_epoch);
        let mut p = Progress {
            clock: Clock::starting_at(at.seconds),
            epoch_clock: Clock::starting_at(at.epoch_seconds),
            at,
            schedule,
            lr,
            test_probabilities: None,
        };
        if self.options.resume_from.is_none() {
            // Before any work: a disk that cannot take a checkpoint fails here, not hours in.
            self.save(&model, &optim, &p.at, p.clock.seconds())?;
        }

        while p.at.epoch <= recipe.epochs.started() && !self.ends_at(p.at.step) {
            if p.at.batch == 0 {
                p.start_epoch();
            }
            order.shuffle(&mut rng);
            p.epoch_clock = Clock::starting_at(p.at.epoch_seconds);
            model = self.train_epoch(model, &mut optim, &order, &mut p, on_event)?;
            model = self.end_epoch(model, &optim, &mut p, on_event)?;
        }
        let summary = FitSummary {
            seconds: p.clock.seconds(),
            epochs: p.at.epochs,
            test_probabilities: p.test_probabilities,
        };
        Ok((model, summary))
    }

    /// The epoch's batches from `p.at.batch` on, in `order` (this rank's share of each). A
    /// worker thread decodes, augments and normalises the next batches while the device trains
    /// on this one.
    fn train_epoch<M: Trainable<B>>(
        &self,
        model: M,
        optim: &mut RecipeOptimizer<M, B>,
        order: &[usize],
        p: &mut Progress,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<M, FitError> {
        let recipe = self.recipe;
        let (epoch, skip) = (p.at.epoch, p.at.batch);
        let (train, batcher) = (self.data.train, self.data.batcher);
        let (rank, ranks) = self.rank_and_size();
        let steps_per_epoch = self.steps_per_epoch;
        let bar = self.progress_bar(epoch, self.steps_per_epoch);
        bar.set_position(skip as u64);
        let trained = std::thread::scope(|scope| {
            let (sender, batches) = std::sync::mpsc::sync_channel(2);
            scope.spawn(move || {
                let batches = order.chunks(recipe.batch_size).take(steps_per_epoch);
                for (b, chunk) in batches.enumerate().skip(skip) {
                    let part = share(chunk, rank, ranks);
                    let seed = rank_seed(batch_seed(recipe.seed, epoch, b), rank);
                    let mut rng = SmallRng::seed_from_u64(seed);
                    let items: Vec<I> = part.iter().map(|&i| item(train, i)).collect();
                    // A rank's share of a last, short batch may be empty.
                    let draws = Draws {
                        rng: &mut rng,
                        seed: recipe.seed,
                        epoch,
                        indices: part,
                    };
                    let prepared = (!items.is_empty()).then(|| batcher.prepare_train(items, draws));
                    if sender.send((prepared, part.len())).is_err() {
                        break; // the training side stopped
                    }
                }
            });
            let mut model = model;
            for (b, (prepared, n)) in (skip..).zip(batches) {
                if p.schedule.per_batch() && b > 0 {
                    p.lr = p.schedule.next();
                }
                // Dropout draws from the backend's generator: seeded per batch, so a resumed
                // fit draws the same masks.
                B::seed(
                    self.device,
                    rank_seed(batch_seed(!recipe.seed, epoch, b), rank),
                );
                let batch = prepared.map(|prepared| self.on_device(prepared));
                // An error drops `batches` on the way out, which stops the worker.
                let (next, done) = self.step(model, optim, batch, n, p)?;
                model = next;
                p.at.step += 1;
                p.at.batch = b + 1;
                p.at.epoch_tally.add(done.loss, done.correct, done.images);
                p.at.interval.add(done.loss, done.correct, done.images);
                bar.inc(1);
                bar.set_message(format!("loss {:.4}", done.loss));
                model = self.report_step(model, p, on_event)?;

                let step = p.at.step;
                let last = self.ends_at(step);
                let ends_epoch = last || b + 1 == self.steps_per_epoch;
                // Ranks must stop at the same step: theirs is agreed in the step's all-reduce.
                let stop = match self.group() {
                    Some(_) => done.stop,
                    None => self.stop_requested(),
                };
                // (The epoch's end has its own checkpoint, after evaluation.)
                let periodic =
                    !ends_epoch && recipe.checkpoint_every.is_some_and(|k| step % k == 0);
                if stop || periodic {
                    p.at.epoch_seconds = p.epoch_clock.seconds();
                    self.save(&model, optim, &p.at, p.clock.seconds())?;
                }
                if stop {
                    return Err(FitError::Interrupted { epoch, step });
                }
                if last {
                    break;
                }
            }
            Ok(model)
        });
        bar.finish_and_clear();
        trained
    }

    /// One optimiser step on `batch` (this rank's share of it, `images` images, none where
    /// the share is empty): forward, loss, backward, the ranks' gradients averaged, update.
    /// Gives back the model and the whole batch's figures; a loss that is not finite ends the
    /// fit.
    fn step<M: Trainable<B>>(
        &self,
        model: M,
        optim: &mut RecipeOptimizer<M, B>,
        batch: Option<ImageBatch<B>>,
        images: usize,
        p: &mut Progress,
    ) -> Result<(M, Stepped), FitError> {
        let mut done = Stepped {
            loss: 0.0,
            correct: 0,
            images,
            stop: false,
        };
        let loss = batch.map(|batch| {
            let (loss, correct) = batch_loss(&model, self.loss, batch);
            done.loss = loss.clone().into_scalar().elem();
            done.correct = correct;
            loss
        });
        let grads = match self.group() {
            None => {
                let loss = loss.expect("one process trains on whole batches, never empty");
                self.check_finite(done.loss, p)?;
                GradientsParams::from_grads(loss.backward(), &model)
            }
            Some(group) => {
                let grads = loss.map_or_else(GradientsParams::new, |loss| {
                    GradientsParams::from_grads(loss.backward(), &model)
                });
                let own = [
                    (done.loss * images as f64) as f32,
                    done.correct as f32,
                    images as f32,
                    f32::from(u8::from(self.stop_requested())),
                ];
                let (grads, [loss_sum, correct, total, stops]) =
                    parallel::average_gradients(group, &model, grads, own, self.device)
                        .map_err(|e| self.parallel_error(e.0))?;
                done = Stepped {
                    loss: f64::from(loss_sum) / f64::from(total),
                    correct: correct as u64,
                    images: total as usize,
                    stop: stops > 0.0,
                };
                // A loss that is not finite on any rank is not finite in the sum: every rank
                // stops here, at the same step.
                self.check_finite(done.loss, p)?;
                grads
            }
        };
        p.at.last_finite = Some(done.loss);
        let model = optim.step(p.lr, model, grads, p.at.epoch, p.at.step + 1);
        Ok((model, done))
    }

    fn check_finite(&self, loss: f64, p: &Progress) -> Result<(), FitError> {
        if loss.is_finite() {
            return Ok(());
        }
        Err(FitError::Diverged {
            epoch: p.at.epoch,
            step: p.at.step + 1,
            loss,
            last_finite: p.at.last_finite,
            lr: p.lr,
        })
    }

    /// After a step: validation where it is due, and a step event every `log_every` steps and
    /// with every validation (where a data-parallel fit also compares its ranks' weights).
    fn report_step<M: Trainable<B>>(
        &self,
        mut model: M,
        p: &mut Progress,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<M, FitError> {
        let step = p.at.step;
        let due = self.recipe.validate_every.is_some_and(|k| step % k == 0);
        let valid = match self.data.valid.filter(|_| due) {
            Some(set) => {
                let started = Instant::now();
                model = self.rank0_state(model)?;
                let m = self.evaluate(&model, set, TestTimeAugmentation::None, None)?;
                p.at.validation_seconds += started.elapsed().as_secs_f64();
                Some(m)
            }
            None => None,
        };
        if step % self.recipe.log_every == 0 || valid.is_some() {
            self.check_weights(&model)?;
            let m = p.at.interval.metrics();
            let event = Event::Step(StepMetrics {
                epoch: p.at.epoch,
                step,
                lr: p.lr,
                loss: m.loss,
                accuracy: m.accuracy,
                valid_loss: valid.map(|v| v.loss),
                valid_accuracy: valid.map(|v| v.accuracy),
            });
            emit(&mut p.at, on_event, event);
            p.at.interval = Tally::default();
        }
        Ok(model)
    }

    /// The end of an epoch: evaluation, the epoch's event and its checkpoint.
    fn end_epoch<M: Trainable<B>>(
        &self,
        model: M,
        optim: &RecipeOptimizer<M, B>,
        p: &mut Progress,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<M, FitError> {
        let epoch = p.at.epoch;
        let train_seconds = p.epoch_clock.seconds() - p.at.validation_seconds;
        let last = epoch == self.recipe.epochs.started() || self.ends_at(p.at.step);
        let model = match last {
            true => optim.end_fit(model),
            false => model,
        };
        if let Some(batches) = self.recipe.recompute_bn_batches {
            self.recompute_bn(&model, batches, epoch);
        }
        self.check_weights(&model)?;
        let model = self.rank0_state(model)?;
        let tta = match last {
            true => self.recipe.test_time_augmentation,
            false => TestTimeAugmentation::None,
        };
        let valid_m = (self.data.valid)
            .map(|set| self.evaluate(&model, set, tta, None))
            .transpose()?;
        let eval_start = Instant::now();
        let mut kept = (last && self.group().is_none()).then(Vec::new);
        let test_m = (self.data.test)
            .map(|set| self.evaluate(&model, set, tta, kept.as_mut()))
            .transpose()?;
        if test_m.is_some() {
            p.test_probabilities = kept;
        }
        let eval_seconds = eval_start.elapsed().as_secs_f64();
        let train_m = p.at.epoch_tally.metrics();
        let metrics = EpochMetrics {
            epoch,
            lr: p.lr,
            train_loss: train_m.loss,
            train_accuracy: train_m.accuracy,
            valid_loss: valid_m.map(|v| v.loss),
            valid_accuracy: valid_m.map(|v| v.accuracy),
            test_loss: test_m.map(|m| m.loss),
            test_accuracy: test_m.map(|m| m.accuracy),
            seconds: p.epoch_clock.seconds(),
            train_images_per_sec: p.at.epoch_tally.images as f64 / train_seconds,
            eval_images_per_sec: self.data.test.map(|set| set.len() as f64 / eval_seconds),
        };
        tracing::info!(
            epoch,
            // Scheduled rates print as 0.006999999999999999 in full.
            lr = format_args!("{:.3e}", p.lr),
            train_loss = format_args!("{:.4}", metrics.train_loss),
            train_acc = format_args!("{:.2}%", 100.0 * metrics.train_accuracy),
            test_loss = format_args!("{}", optional(metrics.test_loss, |v| format!("{v:.4}"))),
            test_acc = format_args!(
                "{}",
                optional(metrics.test_accuracy, |v| format!("{:.2}%", 100.0 * v))
            ),
            seconds = format_args!("{:.1}", metrics.seconds),
            images_per_sec = format_args!("{:.0}", metrics.train_images_per_sec),
            "epoch {epoch}/{} done",
            self.recipe.epochs.started()
        );
        emit(&mut p.at, on_event, Event::Epoch(metrics.clone()));
        p.at.epochs.push(metrics);
        p.at.epoch += 1;
        p.at.batch = 0;
        self.save(&model, optim, &p.at, p.clock.seconds())?;
        if self.stop_agreed()? {
            return Err(FitError::Interrupted {
                epoch,
                step: p.at.step,
            });
        }
        Ok(model)
    }

    /// The running statistics of `model`'s batch norms, recomputed as the plain average over
    /// `batches` training batches (augmented, with dropout, as in training) under its current
    /// weights. The batches are drawn without replacement from the whole training set by a
    /// generator of their own, seeded by the recipe's seed and the epoch, so a resumed fit
    /// recomputes what the uninterrupted one did and the training order is untouched.
    fn recompute_bn<M: Trainable<B>>(&self, model: &M, batches: usize, epoch: usize) {
        let recipe = self.recipe;
        let seed = recipe.seed.rotate_left(32);
        let train = self.data.train;
        let mut rng = SmallRng::seed_from_u64(batch_seed(seed, epoch, usize::MAX));
        let amount = (batches * recipe.batch_size).min(train.len());
        let chosen = rand::seq::index::sample(&mut rng, train.len(), amount).into_vec();
        for (k, chunk) in chosen.chunks(recipe.batch_size).enumerate() {
            let mut rng = SmallRng::seed_from_u64(batch_seed(seed, epoch, k));
            let items = chunk.iter().map(|&i| item(train, i)).collect();
            let draws = Draws {
                rng: &mut rng,
                seed: recipe.seed,
                epoch,
                indices: chunk,
            };
            let batch = self.on_device(self.data.batcher.prepare_train(items, draws));
            B::seed(self.device, batch_seed(!seed, epoch, k));
            kiln_models::batch_norm::with_momentum(1.0 / (k + 1) as f64, || {
                drop(model.logits(batch.images))
            });
        }
    }

    /// A prepared training batch on the device.
    fn on_device(&self, prepared: Prepared<I>) -> ImageBatch<B> {
        match prepared {
            Prepared::Items(items) => {
                Batcher::<B, I, ImageBatch<B>>::batch(self.data.batcher, items, self.device)
            }
            Prepared::Host(host) => host.to_device(self.device),
        }
    }

    /// Whether the fit ends after `steps` steps: its last epoch's fraction, or `max_steps`.
    fn ends_at(&self, steps: usize) -> bool {
        steps >= self.recipe.total_steps(self.steps_per_epoch)
            || self.recipe.max_steps.is_some_and(|max| steps >= max)
    }

    fn stop_requested(&self) -> bool {
        self.options.stop.is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// Whether any rank was asked to stop: ranks must stop together, or the others wait for
    /// the one that left.
    fn stop_agreed(&self) -> Result<bool, FitError> {
        let Some(group) = self.group() else {
            return Ok(self.stop_requested());
        };
        let mut stops = [f64::from(u8::from(self.stop_requested()))];
        group
            .sum_f64(&mut stops)
            .map_err(|e| self.parallel_error(e.0))?;
        Ok(stops[0] > 0.0)
    }

    /// Hands the sink (if any) a checkpoint of `model`, `optim` and `at`.
    fn save<M: Trainable<B>>(
        &self,
        model: &M,
        optim: &RecipeOptimizer<M, B>,
        at: &CheckpointState,
        seconds: f64,
    ) -> Result<(), FitError> {
        let Some(sink) = self.options.save_checkpoint else {
            return Ok(());
        };
        let checkpoint = Checkpoint {
            state: CheckpointState {
                seconds,
                ..at.clone()
            },
            model: kiln_models::record::encode::<B, _>(model.clone().into_record()),
            optimizer: optim.encode(),
            lookahead: optim.encode_lookahead(model),
        };
        sink(&checkpoint).map_err(|e| FitError::Checkpoint {
            step: at.step,
            message: e.to_string(),
        })
    }

    /// Metrics of `model` over `set`; data-parallel, each rank evaluates its share of the
    /// set and the ranks' sums are added up.
    fn evaluate<M: Trainable<B>>(
        &self,
        model: &M,
        set: &dyn Dataset<I>,
        tta: TestTimeAugmentation,
        keep: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<Metrics, FitError> {
        let (rank, ranks) = self.rank_and_size();
        let indices: Vec<usize> = (0..set.len()).collect();
        let batcher = self.data.batcher;
        let batch_size = self.recipe.eval_batch_size;
        let mine = share(&indices, rank, ranks);
        let valid = model.valid();
        let model = Tta::new(&valid, tta);
        let tally = tally(&model, set, mine, batcher, batch_size, self.device, keep);
        let Some(group) = self.group() else {
            return Ok(tally.metrics());
        };
        let mut sums = [tally.loss, tally.correct as f64, tally.images as f64];
        group
            .sum_f64(&mut sums)
            .map_err(|e| self.parallel_error(e.0))?;
        let [loss, correct, images] = sums;
        let total = Tally {
            loss,
            correct: correct as u64,
            images: images as u64,
        };
        Ok(total.metrics())
    }

    /// The data-parallel group, if this fit has one of more than one rank.
    fn group(&self) -> Option<&dyn Collective> {
        self.options.parallel.filter(|g| g.size() > 1)
    }

    /// This process's rank and the number of ranks: `(0, 1)` alone.
    fn rank_and_size(&self) -> (usize, usize) {
        self.group().map_or((0, 1), |g| (g.rank(), g.size()))
    }

    fn parallel_error(&self, message: String) -> FitError {
        FitError::Parallel {
            rank: self.rank_and_size().0,
            message,
        }
    }

    /// Fails unless every rank holds the same trainable weights, bit for bit.
    fn check_weights<M: Trainable<B>>(&self, model: &M) -> Result<(), FitError> {
        let Some(group) = self.group() else {
            return Ok(());
        };
        let sums = group
            .gather(parallel::weights_checksum(model))
            .map_err(|e| self.parallel_error(e.0))?;
        let parted: Vec<String> = (1..sums.len())
            .filter(|&r| sums[r] != sums[0])
            .map(|r| r.to_string())
            .collect();
        if parted.is_empty() {
            return Ok(());
        }
        Err(self.parallel_error(format!(
            "the weights of rank {} differ from rank 0's (checksums {sums:x?}); the ranks \
             should take identical steps: do all of them run the same build, backend and \
             recipe?",
            parted.join(", ")
        )))
    }

    /// `model` as rank 0 holds it, weights and batch-norm running statistics (which each
    /// rank otherwise keeps from its own batches).
    fn rank0_state<M: Trainable<B>>(&self, model: M) -> Result<M, FitError> {
        let Some(group) = self.group() else {
            return Ok(model);
        };
        let mut bytes = match group.rank() {
            0 => kiln_models::record::encode::<B, _>(model.clone().into_record()),
            _ => Vec::new(),
        };
        group
            .broadcast(&mut bytes, 0)
            .map_err(|e| self.parallel_error(e.0))?;
        if group.rank() == 0 {
            return Ok(model);
        }
        kiln_models::record::load_module(model, bytes, self.device)
            .map_err(|e| self.parallel_error(format!("rank 0's weights did not load: {e}")))
    }

    fn progress_bar(&self, epoch: usize, steps: usize) -> ProgressBar {
        if !self.options.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(steps as u64);
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} batches, {msg} ({elapsed} < {eta})",
        )
        .expect("the template is valid")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("epoch {epoch}/{}", self.recipe.epochs.started()));
        bar
    }
}

fn optional(value: Option<f64>, show: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "-".to_string(), show)
}

/// What a step gives back: the whole batch's mean loss, correct predictions and images (all
/// ranks' in a data-parallel fit), and whether any rank was asked to stop.
struct Stepped {
    loss: f64,
    correct: u64,
    images: usize,
    stop: bool,
}

/// Visits every parameter, which initialises the lazy ones.
struct Materialise;

impl<B: Backend> ModuleVisitor<B> for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        let _ = param.val();
    }

    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
        let _ = param.val();
    }
}

/// Counts the event (checkpoints record how many there were) and hands it on.
fn emit(at: &mut CheckpointState, on_event: &mut dyn FnMut(&Event), event: Event) {
    at.events += 1;
    on_event(&event);
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use kiln_data::{ImageSet, Normalize};
    use kiln_models::{BatchNorm, BatchNormConfig, Probe};

    use crate::Epochs;

    type B = burn_autodiff::Autodiff<burn_ndarray::NdArray>;

    /// Batch norm straight on the images, so its statistics are the data's whatever the
    /// weights, then a linear layer.
    #[derive(Module, Debug)]
    struct NormFirst<B: Backend> {
        bn: BatchNorm<B>,
        fc: Linear<B>,
    }

    impl<B: Backend> ImageClassifier<B> for NormFirst<B> {
        fn forward_probed<P: Probe<B> + ?Sized>(
            &self,
            images: Tensor<B, 4>,
            _probe: &mut P,
        ) -> Tensor<B, 2> {
            self.fc.forward(self.bn.forward(images).flatten(1, 3))
        }
    }

    fn trained(set: &ImageSet, recompute_bn_batches: Option<usize>) -> NormFirst<B> {
        let device = Default::default();
        B::seed(&device, 7);
        let model = NormFirst {
            bn: BatchNormConfig::new(2).init(&device),
            fc: LinearConfig::new(2 * 2 * 2, 3).init(&device),
        };
        let recipe = Recipe {
            recompute_bn_batches,
            ..Recipe::default()
                .with_epochs(2)
                .with_batch_size(4)
                .with_optimizer(crate::OptimizerSpec::sgd(0.1, 0.0))
        };
        // One rank: a fit of this process alone.
        let (model, _) = fit_ranks(vec![model], set, &recipe, None)
            .pop()
            .unwrap()
            .unwrap();
        model
    }

    /// The pixels of [`tiny_set`]: 8 a image, varied.
    fn tiny_pixels(images: usize) -> Vec<u8> {
        (0..images * 8)
            .map(|i| ((i * 37 + i * i) % 251) as u8)
            .collect()
    }

    /// `images` images of 2 channels, 2x2, in 3 classes.
    fn tiny_set(images: usize) -> ImageSet {
        let labels: Vec<u8> = (0..images).map(|i| (i % 3) as u8).collect();
        let classes = ["a", "b", "c"].map(String::from).to_vec();
        ImageSet::new(2, 2, 2, tiny_pixels(images), labels, classes)
    }

    /// Two linear layers: no batch norm, so data-parallel training is the single process's.
    #[derive(Module, Debug)]
    struct Mlp<B: Backend> {
        fc1: Linear<B>,
        fc2: Linear<B>,
    }

    impl<B: Backend> ImageClassifier<B> for Mlp<B> {
        fn forward_probed<P: Probe<B> + ?Sized>(
            &self,
            images: Tensor<B, 4>,
            _probe: &mut P,
        ) -> Tensor<B, 2> {
            let hidden = burn::tensor::activation::relu(self.fc1.forward(images.flatten(1, 3)));
            self.fc2.forward(hidden)
        }
    }

    /// [`NormFirst`] that normalises each half of its batch with that half's statistics:
    /// what two ranks, each with one half, compute together.
    #[derive(Module, Debug)]
    struct NormHalves<B: Backend> {
        bn: BatchNorm<B>,
        fc: Linear<B>,
    }

    impl<B: Backend> ImageClassifier<B> for NormHalves<B> {
        fn forward_probed<P: Probe<B> + ?Sized>(
            &self,
            images: Tensor<B, 4>,
            _probe: &mut P,
        ) -> Tensor<B, 2> {
            let halves = images.chunk(2, 0).into_iter().map(|h| self.bn.forward(h));
            let normed = Tensor::cat(halves.collect(), 0);
            self.fc.forward(normed.flatten(1, 3))
        }
    }

    /// Burn draws a parameter's initial values at its first use: made now, on this thread,
    /// they are what the generator gives here, not whatever another rank's thread left it at.
    fn materialised<M: Module<B>>(model: M) -> M {
        model.visit(&mut Materialise);
        model
    }

    fn mlp(device: &Device<B>) -> Mlp<B> {
        materialised(Mlp {
            fc1: LinearConfig::new(8, 6).init(device),
            fc2: LinearConfig::new(6, 3).init(device),
        })
    }

    fn sgd_recipe(batch_size: usize) -> Recipe {
        Recipe::default()
            .with_epochs(3)
            .with_batch_size(batch_size)
            .with_log_every(2)
            .with_optimizer(crate::OptimizerSpec::sgd(0.1, 0.9))
    }

    /// `models` (one per rank, built before any thread starts: the backend's generator is one
    /// for the process) trained data-parallel, each rank on a thread of its own.
    fn fit_ranks<M: Trainable<B> + Send>(
        models: Vec<M>,
        set: &ImageSet,
        recipe: &Recipe,
        stop_rank_when: Option<(usize, fn(&Event) -> bool)>,
    ) -> Vec<Result<(M, FitSummary), FitError>> {
        let group = crate::ThreadGroup::new(models.len(), std::time::Duration::from_secs(20));
        let batcher = ImageBatcher::for_set(set, Normalize::unit());
        let data = FitData {
            train: set,
            valid: None,
            test: Some(set),
            batcher: &batcher,
        };
        std::thread::scope(|s| {
            let handles: Vec<_> = models
                .into_iter()
                .zip(group)
                .map(|(model, member)| {
                    s.spawn(move || {
                        let rank = member.rank();
                        let stop = AtomicBool::new(false);
                        let options = FitOptions {
                            parallel: Some(&member),
                            stop: Some(&stop),
                            ..FitOptions::default()
                        };
                        let device = Default::default();
                        fit(model, data, recipe, &device, &options, &mut |event| {
                            if let Some((r, when)) = stop_rank_when {
                                if r == rank && when(event) {
                                    stop.store(true, Ordering::Relaxed);
                                }
                            }
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    fn weights<M: Module<B>>(model: &M) -> Vec<f32> {
        struct All(Vec<f32>);
        impl ModuleVisitor<B> for All {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                if param.val().is_require_grad() {
                    self.0
                        .extend(param.val().into_data().to_vec::<f32>().unwrap());
                }
            }
        }
        let mut all = All(Vec::new());
        model.visit(&mut all);
        all.0
    }

    fn assert_close(a: &[f32], b: &[f32], tolerance: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tolerance, "weight {i}: {x} against {y}");
        }
    }

    /// PyTorch's DDP correctness test, adapted: ranks with a share of the batch each end
    /// where one process with the whole batch does.
    #[test]
    fn ranks_sharing_each_batch_train_as_one_process_with_the_whole_batch() {
        let device = Default::default();
        // (ranks, global batch, images): even shares; shares of 3, 3, 2 and a short last batch;
        // a last batch of one image, which three of four ranks get none of.
        for (ranks, batch, images) in [(2, 8, 24), (3, 9, 26), (4, 12, 25)] {
            let set = tiny_set(images);
            let recipe = sgd_recipe(batch);
            B::seed(&device, 7);
            let models: Vec<Mlp<B>> = (0..ranks).map(|_| mlp(&device)).collect();
            B::seed(&device, 7);
            let alone = fit_ranks(vec![mlp(&device)], &set, &recipe, None);
            let (alone, alone_summary) = alone.into_iter().next().unwrap().unwrap();
            let together = fit_ranks(models, &set, &recipe, None);
            let mut first = None;
            for outcome in together {
                let (model, summary) = outcome.unwrap();
                // Every rank holds the same weights, bit for bit, and reports the same.
                let w = weights(&model);
                let first = first.get_or_insert_with(|| (w.clone(), summary.epochs.clone()));
                assert_eq!(w, first.0, "{ranks} ranks");
                for (e, (a, b)) in summary.epochs.iter().zip(&first.1).enumerate() {
                    assert_eq!(
                        (a.train_loss, a.test_loss),
                        (b.train_loss, b.test_loss),
                        "{e}"
                    );
                }
                // Against one process: the same steps up to the rounding of the sums.
                assert_close(&w, &weights(&alone), 2e-5);
                for (a, b) in summary.epochs.iter().zip(&alone_summary.epochs) {
                    assert!((a.train_loss - b.train_loss).abs() < 1e-5, "{a:?} {b:?}");
                    assert!((a.test_loss.unwrap() - b.test_loss.unwrap()).abs() < 1e-5);
                    assert_eq!(a.train_accuracy, b.train_accuracy);
                    assert_eq!(a.test_accuracy, b.test_accuracy);
                }
            }
        }
    }

    /// A fit alone keeps the last evaluation's probabilities, and they are the returned
    /// model's with the recipe's test-time augmentation; a data-parallel one, whose ranks
    /// each score a share, keeps none.
    #[test]
    fn the_last_evaluations_probabilities_are_the_returned_models_and_kept_only_alone() {
        let device = Default::default();
        let set = tiny_set(10);
        let recipe = Recipe {
            test_time_augmentation: TestTimeAugmentation::Mirror,
            ..sgd_recipe(4)
        };
        B::seed(&device, 5);
        let (model, summary) = fit_ranks(vec![mlp(&device)], &set, &recipe, None)
            .pop()
            .unwrap()
            .unwrap();
        let kept = summary.test_probabilities.expect("a fit alone keeps them");
        let batcher = ImageBatcher::for_set(&set, Normalize::unit());
        let valid = model.valid();
        let averaged = Tta::new(&valid, recipe.test_time_augmentation);
        let again = crate::predict(&averaged, &set, &batcher, 3, &device);
        assert_eq!(kept.len(), set.len());
        for (a, b) in kept.iter().zip(&again) {
            assert_close(a, b, 1e-6);
        }
        let plain = Tta::new(&valid, TestTimeAugmentation::None);
        let unaveraged = crate::predict(&plain, &set, &batcher, 3, &device);
        assert!(kept
            .iter()
            .zip(&unaveraged)
            .any(|(a, b)| a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-4)));

        let models: Vec<Mlp<B>> = (0..2).map(|_| mlp(&device)).collect();
        for outcome in fit_ranks(models, &set, &recipe, None) {
            assert_eq!(outcome.unwrap().1.test_probabilities, None);
        }
    }

    /// With batch norm each rank normalises its share with the share's own statistics (as
    /// DDP without SyncBatchNorm): two ranks train as one process that normalises each half
    /// of the batch apart. (The running statistics differ: the reference updates them twice a
    /// step, each rank once; they train nothing.)
    #[test]
    fn with_batch_norm_each_rank_normalises_its_own_share() {
        let device = Default::default();
        let set = tiny_set(24);
        let recipe = sgd_recipe(8);
        let norm_first = |device| {
            materialised(NormFirst {
                bn: BatchNormConfig::new(2).init(device),
                fc: LinearConfig::new(8, 3).init(device),
            })
        };
        B::seed(&device, 3);
        let models: Vec<NormFirst<B>> = (0..2).map(|_| norm_first(&device)).collect();
        B::seed(&device, 3);
        let reference = materialised(NormHalves {
            bn: BatchNormConfig::new(2).init(&device),
            fc: LinearConfig::new(8, 3).init(&device),
        });
        let (reference, _) = fit_ranks(vec![reference], &set, &recipe, None)
            .pop()
            .unwrap()
            .unwrap();
        let whole_batch = fit_ranks(vec![norm_first(&device)], &set, &recipe, None)
            .pop()
            .unwrap()
            .unwrap()
            .0;
        for outcome in fit_ranks(models, &set, &recipe, None) {
            let w = weights(&outcome.unwrap().0);
            assert_close(&w, &weights(&reference), 2e-5);
            // ... and not as one process normalising the whole batch.
            let apart = w
                .iter()
                .zip(weights(&whole_batch))
                .any(|(a, b)| (a - b).abs() > 1e-3);
            assert!(apart, "per-rank statistics should train differently");
        }
    }

    #[test]
    fn a_stop_on_one_rank_stops_every_rank_at_the_same_step() {
        let device = Default::default();
        let set = tiny_set(24);
        B::seed(&device, 7);
        let models: Vec<Mlp<B>> = (0..2).map(|_| mlp(&device)).collect();
        let at_step_2: fn(&Event) -> bool = |e| matches!(e, Event::Step(m) if m.step == 2);
        let outcomes = fit_ranks(models, &set, &sgd_recipe(8), Some((1, at_step_2)));
        for outcome in outcomes {
            // Asked during step 2's report; agreed in step 3's all-reduce.
            assert_eq!(
                outcome.unwrap_err(),
                FitError::Interrupted { epoch: 1, step: 3 }
            );
        }
        // Asked at the end of epoch 1 (3 steps), after the epoch's last all-reduce.
        B::seed(&device, 7);
        let models: Vec<Mlp<B>> = (0..2).map(|_| mlp(&device)).collect();
        let at_epoch_1: fn(&Event) -> bool = |e| matches!(e, Event::Epoch(m) if m.epoch == 1);
        for outcome in fit_ranks(models, &set, &sgd_recipe(8), Some((1, at_epoch_1))) {
            assert_eq!(
                outcome.unwrap_err(),
                FitError::Interrupted { epoch: 1, step: 3 }
            );
        }
    }

    #[test]
    fn a_rank_that_dies_ends_the_others_with_its_number_and_an_indivisible_batch_is_named() {
        let device = Default::default();
        let set = tiny_set(24);
        let batcher = ImageBatcher::for_set(&set, Normalize::unit());
        let data = FitData {
            train: &set,
            valid: None,
            test: None,
            batcher: &batcher,
        };
        let mut group = crate::ThreadGroup::new(2, std::time::Duration::from_millis(300));
        drop(group.pop()); // rank 1 never comes
        let options = FitOptions {
            parallel: Some(&group[0]),
            ..FitOptions::default()
        };
        B::seed(&device, 7);
        let error = fit(
            mlp(&device),
            data,
            &sgd_recipe(8),
            &device,
            &options,
            &mut |_| {},
        )
        .unwrap_err();
        let FitError::Parallel { rank: 0, message } = &error else {
            panic!("{error}");
        };
        assert!(message.starts_with("rank 1 did not reach"), "{message}");

        let error = fit(
            mlp(&device),
            data,
            &sgd_recipe(9),
            &device,
            &options,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("recipe.batch_size = 9 is the global batch")
                && error.to_string().contains("does not divide over 2 ranks"),
            "{error}"
        );
    }

    #[test]
    fn recomputed_statistics_average_the_training_batches_and_leave_training_alone() {
        // 12 images of 2 channels, 2x2, in 3 batches of 4.
        let set = tiny_set(12);
        let pixels = tiny_pixels(12);

        let recomputed = trained(&set, Some(3));
        let plain = trained(&set, None);
        // Every image once in 3 batches of 4: the running mean is the data's channel mean.
        let expected: Vec<f32> = (0..2)
            .map(|c| {
                let values = pixels.chunks(8).flat_map(|img| &img[c * 4..(c + 1) * 4]);
                values.map(|&v| v as f32 / 255.0).sum::<f32>() / 48.0
            })
            .collect();
        let tolerance = burn::tensor::Tolerance::<f32>::absolute(1e-6);
        recomputed
            .bn
            .running_mean
            .value_sync()
            .into_data()
            .assert_approx_eq::<f32>(&TensorData::new(expected.clone(), [2]), tolerance);
        // Without it the running mean is an exponential average started from zero: far off.
        let ema: Vec<f32> = plain
            .bn
            .running_mean
            .value_sync()
            .into_data()
            .to_vec()
            .unwrap();
        assert!(
            ema.iter().zip(&expected).all(|(a, b)| (a - b).abs() > 0.1),
            "{ema:?}"
        );
        // The recomputation draws from its own generator: the weights train the same.
        assert_eq!(
            recomputed.fc.weight.val().into_data(),
            plain.fc.weight.val().into_data()
        );
    }

    #[test]
    fn a_fraction_of_an_epoch_ends_the_fit_early_and_drop_last_leaves_the_short_batch_out() {
        // 10 images in batches of 4: two whole batches an epoch with drop_last (three without),
        // and 1.5 epochs of two make ceil(3) = 3 steps: epoch 1 whole, epoch 2 one batch.
        let set = tiny_set(10);
        let batcher = ImageBatcher::for_set(&set, Normalize::unit());
        let device = Default::default();
        let run = |recipe: &Recipe| {
            let data = FitData {
                train: &set,
                valid: None,
                test: None,
                batcher: &batcher,
            };
            let mut steps = Vec::new();
            let mut epochs = Vec::new();
            let model = mlp(&device);
            fit(
                model,
                data,
                recipe,
                &device,
                &FitOptions::default(),
                &mut |event| match event {
                    Event::Step(m) => steps.push((m.epoch, m.step)),
                    Event::Epoch(m) => epochs.push(m.epoch),
                },
            )
            .unwrap();
            (steps, epochs)
        };
        let recipe = Recipe {
            drop_last: true,
            ..sgd_recipe(4)
                .with_epochs(Epochs::from(1.5))
                .with_log_every(1)
        };
        let (steps, epochs) = run(&recipe);
        assert_eq!(steps, [(1, 1), (1, 2), (2, 3)]);
        assert_eq!(epochs, [1, 2]);
        // Without drop_last: 3 batches an epoch, ceil(1.5 * 3) = 5 steps.
        let (steps, _) = run(&Recipe {
            drop_last: false,
            ..recipe.clone()
        });
        assert_eq!(steps.len(), 5);
        // Fewer images than a batch make no whole batch.
        let err = fit(
            mlp(&device),
            FitData {
                train: &tiny_set(3),
                valid: None,
                test: None,
                batcher: &batcher,
            },
            &recipe,
            &device,
            &FitOptions::default(),
            &mut |_| {},
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "recipe.drop_last: the 3 training images make no whole batch of recipe.batch_size = 4"
        );
    }
}
