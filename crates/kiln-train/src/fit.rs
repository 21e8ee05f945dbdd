//! The training loop proper.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::lr_scheduler::cosine::{CosineAnnealingLrScheduler, CosineAnnealingLrSchedulerConfig};
use burn::lr_scheduler::linear::{LinearLrScheduler, LinearLrSchedulerConfig};
use burn::lr_scheduler::step::{StepLrScheduler, StepLrSchedulerConfig};
use burn::lr_scheduler::LrScheduler;
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_data::{HostBatch, ImageBatch, ImageBatcher, ImageItem};
use kiln_models::ImageClassifier;
use rand::rngs::{SmallRng, StdRng};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{batch_seed, Checkpoint, CheckpointSink, CheckpointState, ResumeError};
use crate::{EpochMetrics, Event, OptimizerSpec, Recipe, SchedulerSpec, StepMetrics};

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
}

impl std::fmt::Debug for FitOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FitOptions")
            .field("progress", &self.progress)
            .field("save_checkpoint", &self.save_checkpoint.is_some())
            .field("resume_from", &self.resume_from.map(|c| &c.state))
            .field("stop", &self.stop)
            .finish()
    }
}

/// Mean loss and accuracy over a set of images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Mean cross-entropy per image.
    pub loss: f64,
    /// Fraction of images whose top-1 prediction is their label.
    pub accuracy: f64,
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
    /// [`FitOptions::resume_from`] cannot be taken back.
    #[error(transparent)]
    Resume(#[from] ResumeError),
}

/// Every epoch's metrics and the wall time of the whole fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitSummary {
    /// In order, one per epoch run.
    pub epochs: Vec<EpochMetrics>,
    /// Wall time of the whole fit.
    pub seconds: f64,
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
/// the recipe, so a seed fixes the augmented images too.
///
/// A batcher without augmentation needs only the empty impl:
/// `impl<B: Backend> TrainBatcher<B, MyItem> for MyBatcher {}`; its batches are then built by
/// [`Batcher::batch`] on the training thread.
pub trait TrainBatcher<B: Backend, I>: Batcher<B, I, ImageBatch<B>> + Sync {
    /// Runs on the worker thread: the training batch's host-side work, augmented with draws
    /// from `rng`. By default nothing: the items go to [`Batcher::batch`] on the training
    /// thread. (Device tensors are made on the training thread only: wgpu's gave different
    /// losses when a second thread created them.)
    fn prepare_train(&self, items: Vec<I>, rng: &mut SmallRng) -> Prepared<I> {
        let _ = rng;
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

impl<B: Backend> TrainBatcher<B, ImageItem> for ImageBatcher {
    fn prepare_train(&self, items: Vec<ImageItem>, rng: &mut SmallRng) -> Prepared<ImageItem> {
        Prepared::Host(self.prepare(&items, Some(rng)))
    }
}

/// What a fit minimises: the mean loss of a batch from its logits `[batch, classes]` and class
/// targets `[batch]`. [`fit`] uses cross-entropy with the recipe's label smoothing.
pub trait ClassificationLoss<B: Backend> {
    /// The mean loss of the batch, a one-element tensor.
    fn loss(&self, logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1>;
}

impl<B: Backend> ClassificationLoss<B> for CrossEntropyLoss<B> {
    fn loss(&self, logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
        self.forward(logits, targets)
    }
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
    M: AutodiffModule<B> + ImageClassifier<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
    I: Send,
    Bt: TrainBatcher<B, I> + Batcher<B::InnerBackend, I, ImageBatch<B::InnerBackend>>,
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
    M: AutodiffModule<B> + ImageClassifier<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
    I: Send,
    Bt: TrainBatcher<B, I> + Batcher<B::InnerBackend, I, ImageBatch<B::InnerBackend>>,
    L: ClassificationLoss<B>,
{
    assert!(!data.train.is_empty(), "fit needs a non-empty training set");
    let run = Run {
        data,
        loss,
        recipe,
        device,
        options,
    };
    with_optimizer(
        &recipe.optimizer,
        TrainEpochs {
            run,
            model,
            on_event,
        },
    )
}

/// Work that needs the recipe's optimiser: each optimiser is its own type, so the work is
/// monomorphised once per optimiser (a trait, because closures cannot be generic).
pub(crate) trait OptimizerTask<B: AutodiffBackend, M: AutodiffModule<B>> {
    type Output;
    fn run<O: Optimizer<M, B>>(self, optim: O) -> Self::Output;
}

/// The one place a recipe's optimiser becomes Burn's, with PyTorch's semantics
/// (`weight_decay` is the L2 term `torch.optim.Adam` and `SGD` add to the gradient).
pub(crate) fn with_optimizer<B, M, T>(spec: &OptimizerSpec, task: T) -> T::Output
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    T: OptimizerTask<B, M>,
{
    match spec {
        OptimizerSpec::Adam {
            weight_decay,
            betas,
            eps,
            ..
        } => {
            let config = AdamConfig::new()
                .with_beta_1(betas[0])
                .with_beta_2(betas[1])
                .with_epsilon(*eps)
                .with_weight_decay(weight_decay_config(*weight_decay));
            task.run(config.init())
        }
        OptimizerSpec::Sgd {
            momentum,
            weight_decay,
            nesterov,
            ..
        } => {
            let momentum = (*momentum > 0.0).then(|| {
                MomentumConfig::new()
                    .with_momentum(*momentum)
                    .with_dampening(0.0)
                    .with_nesterov(*nesterov)
            });
            let config = SgdConfig::new()
                .with_momentum(momentum)
                .with_weight_decay(weight_decay_config(*weight_decay));
            task.run(config.init())
        }
    }
}

struct TrainEpochs<'a, 'e, B: AutodiffBackend, M, I, Bt, L> {
    run: Run<'a, B, I, Bt, L>,
    model: M,
    on_event: &'e mut dyn FnMut(&Event),
}

impl<B, M, I, Bt, L> OptimizerTask<B, M> for TrainEpochs<'_, '_, B, M, I, Bt, L>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + ImageClassifier<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
    I: Send,
    Bt: TrainBatcher<B, I> + Batcher<B::InnerBackend, I, ImageBatch<B::InnerBackend>>,
    L: ClassificationLoss<B>,
{
    type Output = Result<(M, FitSummary), FitError>;

    fn run<O: Optimizer<M, B>>(self, optim: O) -> Self::Output {
        self.run.epochs(self.model, optim, self.on_event)
    }
}

fn weight_decay_config(penalty: f64) -> Option<WeightDecayConfig> {
    (penalty > 0.0).then(|| WeightDecayConfig::new(penalty as f32))
}

/// The learning rate, from Burn's schedulers: per epoch or per batch as the recipe says.
enum Schedule {
    Constant(f64),
    Step(StepLrScheduler),
    WarmupCosine {
        warmup: Option<LinearLrScheduler>,
        cosine: CosineAnnealingLrScheduler,
        warmup_steps: usize,
        taken: usize,
    },
}

impl Schedule {
    fn new(recipe: &Recipe, steps_per_epoch: usize) -> Self {
        let lr = recipe.optimizer.lr();
        let valid = "recipe.validate() checks the scheduler's values";
        match &recipe.scheduler {
            SchedulerSpec::Constant => Schedule::Constant(lr),
            SchedulerSpec::Step { step_size, gamma } => Schedule::Step(
                StepLrSchedulerConfig::new(lr, *step_size)
                    .with_gamma(*gamma)
                    .init()
                    .expect(valid),
            ),
            SchedulerSpec::WarmupCosine {
                warmup_epochs,
                min_lr,
            } => {
                let warmup_steps = warmup_epochs * steps_per_epoch;
                let total = recipe.epochs * steps_per_epoch;
                let warmup = (warmup_steps > 1).then(|| {
                    LinearLrSchedulerConfig::new(lr / warmup_steps as f64, lr, warmup_steps - 1)
                        .init()
                        .expect(valid)
                });
                // Its first step gives lr and its last (num_iters later) min_lr, on the last batch.
                let cosine = CosineAnnealingLrSchedulerConfig::new(
                    lr,
                    (total - warmup_steps).saturating_sub(1).max(1),
                )
                .with_min_lr(*min_lr)
                .init()
                .expect(valid);
                Schedule::WarmupCosine {
                    warmup,
                    cosine,
                    warmup_steps,
                    taken: 0,
                }
            }
        }
    }

    /// Steps the schedule to where a fit stood after `batch` batches of `epoch` (1-based), and
    /// returns the rate of the last of those batches (NaN before the first).
    fn replay(&mut self, epoch: usize, batch: usize, steps_per_epoch: usize) -> f64 {
        let per_epoch = if self.per_batch() { steps_per_epoch } else { 1 };
        let in_epoch = match batch {
            0 => 0,
            _ if self.per_batch() => batch,
            _ => 1,
        };
        let mut lr = f64::NAN;
        for _ in 0..(epoch - 1) * per_epoch + in_epoch {
            lr = self.next();
        }
        lr
    }

    /// Whether the rate changes every batch (else at the start of every epoch).
    fn per_batch(&self) -> bool {
        matches!(self, Schedule::WarmupCosine { .. })
    }

    fn next(&mut self) -> f64 {
        match self {
            Schedule::Constant(lr) => *lr,
            Schedule::Step(s) => s.step(),
            Schedule::WarmupCosine {
                warmup,
                cosine,
                warmup_steps,
                taken,
            } => {
                *taken += 1;
                match warmup {
                    Some(w) if *taken <= *warmup_steps => w.step(),
                    _ => cosine.step(),
                }
            }
        }
    }
}

struct Run<'a, B: AutodiffBackend, I, Bt, L> {
    data: FitData<'a, I, Bt>,
    loss: &'a L,
    recipe: &'a Recipe,
    device: &'a B::Device,
    options: &'a FitOptions<'a>,
}

/// Sums of loss (weighted by batch size), correct predictions and images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tally {
    loss: f64,
    correct: u64,
    images: u64,
}

impl Tally {
    fn add(&mut self, mean_loss: f64, correct: u64, images: usize) {
        self.loss += mean_loss * images as f64;
        self.correct += correct;
        self.images += images as u64;
    }

    fn metrics(&self) -> Metrics {
        let n = self.images.max(1) as f64;
        Metrics {
            loss: self.loss / n,
            accuracy: self.correct as f64 / n,
        }
    }
}

impl<B, I, Bt, L> Run<'_, B, I, Bt, L>
where
    B: AutodiffBackend,
    I: Send,
    Bt: TrainBatcher<B, I> + Batcher<B::InnerBackend, I, ImageBatch<B::InnerBackend>>,
    L: ClassificationLoss<B>,
{
    fn epochs<M, O>(
        &self,
        mut model: M,
        mut optim: O,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<(M, FitSummary), FitError>
    where
        M: AutodiffModule<B> + ImageClassifier<B>,
        M::InnerModule: ImageClassifier<B::InnerBackend>,
        O: Optimizer<M, B>,
    {
        let recipe = self.recipe;
        let FitData {
            train,
            valid,
            test,
            batcher,
        } = self.data;
        let steps_per_epoch = train.len().div_ceil(recipe.batch_size);
        let mut schedule = Schedule::new(recipe, steps_per_epoch);
        let mut rng = StdRng::seed_from_u64(recipe.seed);
        let mut order: Vec<usize> = (0..train.len()).collect();

        // Burn initialises a parameter lazily, at its first use, from the backend's generator
        // as it is then; the loop reseeds that generator every batch, so every parameter is
        // made now, from the state the caller seeded.
        model.visit(&mut Materialise);
        // Where the fit starts: afresh, or where a checkpoint left it.
        let mut at = match self.options.resume_from {
            Some(c) => {
                c.state.check_matches(recipe, train.len())?;
                model = c.load_model(model, self.device)?;
                optim = c.load_optimizer(optim, &model, self.device)?;
                c.state.clone()
            }
            None => CheckpointState::start(recipe, train.len()),
        };
        // What the seed decides up to there: the finished epochs' shuffles, the schedule's steps.
        for _ in 1..at.epoch {
            order.shuffle(&mut rng);
        }
        let mut lr = schedule.replay(at.epoch, at.batch, steps_per_epoch);
        let started = Instant::now();
        let seconds_before = at.seconds;
        let seconds = || seconds_before + started.elapsed().as_secs_f64();
        if self.options.resume_from.is_none() {
            // Before any work: a disk that cannot take a checkpoint fails here, not hours in.
            self.save(&model, &optim, &at, seconds())?;
        }

        while at.epoch <= recipe.epochs {
            let epoch = at.epoch;
            if recipe.max_steps.is_some_and(|max| at.step >= max) {
                break;
            }
            let skip = at.batch;
            if skip == 0 {
                // The rate at the epoch's start (per-batch schedules move on within the epoch).
                lr = schedule.next();
                at.epoch_tally = Tally::default();
                at.interval = Tally::default();
                at.epoch_seconds = 0.0;
                // Mid-epoch validation is not training time: kept apart for images/s.
                at.validation_seconds = 0.0;
            }
            order.shuffle(&mut rng);
            let bar = self.progress_bar(epoch, steps_per_epoch);
            bar.set_position(skip as u64);
            let epoch_start = Instant::now();
            let epoch_before = at.epoch_seconds;
            let epoch_seconds = || epoch_before + epoch_start.elapsed().as_secs_f64();

            // A worker thread decodes, augments and normalises the next batches while the
            // device trains on this one.
            model = std::thread::scope(|scope| {
                let (sender, batches) = std::sync::mpsc::sync_channel::<(Prepared<I>, usize)>(2);
                let order = &order;
                scope.spawn(move || {
                    for (b, chunk) in order.chunks(recipe.batch_size).enumerate().skip(skip) {
                        let mut rng = SmallRng::seed_from_u64(batch_seed(recipe.seed, epoch, b));
                        let items = chunk.iter().map(|&i| item(train, i)).collect();
                        let prepared = batcher.prepare_train(items, &mut rng);
                        if sender.send((prepared, chunk.len())).is_err() {
                            break; // the training side stopped
                        }
                    }
                });
                let mut model = model;
                for (b, (prepared, n)) in (skip..).zip(batches) {
                    if schedule.per_batch() && b > 0 {
                        lr = schedule.next();
                    }
                    // Dropout draws from the backend's generator: seeded per batch, so a
                    // resumed fit draws the same masks.
                    B::seed(self.device, batch_seed(!recipe.seed, epoch, b));
                    let batch: ImageBatch<B> = match prepared {
                        Prepared::Items(items) => {
                            Batcher::<B, I, ImageBatch<B>>::batch(batcher, items, self.device)
                        }
                        Prepared::Host(host) => host.to_device(self.device),
                    };
                    let (loss, correct) = batch_loss(&model, self.loss, batch);
                    let loss_value: f64 = loss.clone().into_scalar().elem();
                    if !loss_value.is_finite() {
                        // Dropping `batches` on the way out stops the worker.
                        return Err(FitError::Diverged {
                            epoch,
                            step: at.step + 1,
                            loss: loss_value,
                            last_finite: at.last_finite,
                            lr,
                        });
                    }
                    at.last_finite = Some(loss_value);
                    let grads = GradientsParams::from_grads(loss.backward(), &model);
                    model = optim.step(lr, model, grads);

                    at.step += 1;
                    at.batch = b + 1;
                    at.epoch_tally.add(loss_value, correct, n);
                    at.interval.add(loss_value, correct, n);
                    bar.inc(1);
                    bar.set_message(format!("loss {loss_value:.4}"));
                    let step = at.step;
                    let validate =
                        valid.filter(|_| recipe.validate_every.is_some_and(|k| step % k == 0));
                    let valid_m = validate.map(|set| {
                        let started = Instant::now();
                        let m = self.evaluate(&model, set);
                        at.validation_seconds += started.elapsed().as_secs_f64();
                        m
                    });
                    if step % recipe.log_every == 0 || valid_m.is_some() {
                        let m = at.interval.metrics();
                        emit(
                            &mut at,
                            on_event,
                            Event::Step(StepMetrics {
                                epoch,
                                step,
                                lr,
                                loss: m.loss,
                                accuracy: m.accuracy,
                                valid_loss: valid_m.map(|v| v.loss),
                                valid_accuracy: valid_m.map(|v| v.accuracy),
                            }),
                        );
                        at.interval = Tally::default();
                    }
                    let last = recipe.max_steps.is_some_and(|max| step >= max);
                    let ends_epoch = last || b + 1 == steps_per_epoch;
                    let stop = self.stop_requested();
                    // (The epoch's end has its own checkpoint, after evaluation.)
                    let periodic =
                        !ends_epoch && recipe.checkpoint_every.is_some_and(|k| step % k == 0);
                    if stop || periodic {
                        at.epoch_seconds = epoch_seconds();
                        self.save(&model, &optim, &at, seconds())?;
                    }
                    if stop {
                        return Err(FitError::Interrupted { epoch, step });
                    }
                    if last {
                        break; // dropping `batches` stops the worker
                    }
                }
                Ok(model)
            })?;
            let train_seconds = epoch_seconds() - at.validation_seconds;
            bar.finish_and_clear();

            let valid_m = valid.map(|set| self.evaluate(&model, set));
            let eval_start = Instant::now();
            let test_m = test.map(|set| self.evaluate(&model, set));
            let eval_seconds = eval_start.elapsed().as_secs_f64();
            let train_m = at.epoch_tally.metrics();
            let metrics = EpochMetrics {
                epoch,
                lr,
                train_loss: train_m.loss,
                train_accuracy: train_m.accuracy,
                valid_loss: valid_m.map(|v| v.loss),
                valid_accuracy: valid_m.map(|v| v.accuracy),
                test_loss: test_m.map(|m| m.loss),
                test_accuracy: test_m.map(|m| m.accuracy),
                seconds: epoch_seconds(),
                train_images_per_sec: at.epoch_tally.images as f64 / train_seconds,
                eval_images_per_sec: test.map(|set| set.len() as f64 / eval_seconds),
            };
            tracing::info!(
                epoch,
                // Scheduled rates print as 0.006999999999999999 in full.
                lr = format_args!("{lr:.3e}"),
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
                recipe.epochs
            );
            emit(&mut at, on_event, Event::Epoch(metrics.clone()));
            at.epochs.push(metrics);
            at.epoch += 1;
            at.batch = 0;
            self.save(&model, &optim, &at, seconds())?;
            if self.stop_requested() {
                return Err(FitError::Interrupted {
                    epoch,
                    step: at.step,
                });
            }
        }
        let summary = FitSummary {
            epochs: at.epochs,
            seconds: seconds(),
        };
        Ok((model, summary))
    }

    fn stop_requested(&self) -> bool {
        self.options.stop.is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// Hands the sink (if any) a checkpoint of `model`, `optim` and `at`.
    fn save<M, O>(
        &self,
        model: &M,
        optim: &O,
        at: &CheckpointState,
        seconds: f64,
    ) -> Result<(), FitError>
    where
        M: AutodiffModule<B>,
        O: Optimizer<M, B>,
    {
        let Some(sink) = self.options.save_checkpoint else {
            return Ok(());
        };
        let checkpoint = Checkpoint {
            state: CheckpointState {
                seconds,
                ..at.clone()
            },
            model: kiln_models::record::encode::<B, _>(model.clone().into_record()),
            optimizer: kiln_models::record::encode::<B, _>(optim.to_record()),
        };
        sink(&checkpoint).map_err(|e| FitError::Checkpoint {
            step: at.step,
            message: e.to_string(),
        })
    }

    fn evaluate<M>(&self, model: &M, set: &dyn Dataset<I>) -> Metrics
    where
        M: AutodiffModule<B>,
        M::InnerModule: ImageClassifier<B::InnerBackend>,
    {
        evaluate(
            &model.valid(),
            set,
            self.data.batcher,
            self.recipe.eval_batch_size,
            self.device,
        )
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
        bar.set_prefix(format!("epoch {epoch}/{}", self.recipe.epochs));
        bar
    }
}

/// The training loss of `recipe`: cross-entropy, with its label smoothing.
pub(crate) fn training_loss<B: Backend>(
    recipe: &Recipe,
    device: &B::Device,
) -> CrossEntropyLoss<B> {
    let smoothing = (recipe.label_smoothing > 0.0).then_some(recipe.label_smoothing);
    CrossEntropyLossConfig::new()
        .with_smoothing(smoothing)
        .init(device)
}

fn optional(value: Option<f64>, show: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "-".to_string(), show)
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

/// Item `index` of a set, which must have it (the loop asks only below `set.len()`).
fn item<I, D: Dataset<I> + ?Sized>(set: &D, index: usize) -> I {
    set.get(index).unwrap_or_else(|| {
        panic!(
            "the data set has {} items but returned none at index {index}",
            set.len()
        )
    })
}

/// The mean loss of a batch and the number of correct top-1 predictions.
pub(crate) fn batch_loss<B: Backend, M: ImageClassifier<B>>(
    model: &M,
    loss_fn: &impl ClassificationLoss<B>,
    batch: ImageBatch<B>,
) -> (Tensor<B, 1>, u64) {
    let n = batch.targets.dims()[0];
    let logits = model.logits(batch.images);
    let predicted = logits.clone().argmax(1).reshape([n]);
    let correct: i64 = predicted
        .equal(batch.targets.clone())
        .int()
        .sum()
        .into_scalar()
        .elem();
    (loss_fn.loss(logits, batch.targets), correct as u64)
}

/// Mean cross-entropy and accuracy of `model` over all of `set`.
pub fn evaluate<B, M, I>(
    model: &M,
    set: &(impl Dataset<I> + ?Sized),
    batcher: &impl Batcher<B, I, ImageBatch<B>>,
    batch_size: usize,
    device: &B::Device,
) -> Metrics
where
    B: Backend,
    M: ImageClassifier<B>,
{
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut tally = Tally::default();
    let indices: Vec<usize> = (0..set.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = batcher.batch(chunk.iter().map(|&i| item(set, i)).collect(), device);
        let (loss, correct) = batch_loss(model, &loss_fn, batch);
        tally.add(loss.into_scalar().elem(), correct, chunk.len());
    }
    tally.metrics()
}

/// Softmax probabilities of every class for each image of the batch, one row per image.
pub fn probabilities<B: Backend, M: ImageClassifier<B>>(
    model: &M,
    images: Tensor<B, 4>,
) -> Vec<Vec<f32>> {
    let logits = model.logits(images);
    let [_, classes] = logits.dims();
    let values: Vec<f32> = burn::tensor::activation::softmax(logits, 1)
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("converted to f32");
    values.chunks(classes).map(<[f32]>::to_vec).collect()
}

/// [`probabilities`] for every image of `set`, in order, in batches of `batch_size`.
pub fn predict<B, M, I>(
    model: &M,
    set: &(impl Dataset<I> + ?Sized),
    batcher: &impl Batcher<B, I, ImageBatch<B>>,
    batch_size: usize,
    device: &B::Device,
) -> Vec<Vec<f32>>
where
    B: Backend,
    M: ImageClassifier<B>,
{
    let indices: Vec<usize> = (0..set.len()).collect();
    let mut rows = Vec::with_capacity(set.len());
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = batcher.batch(chunk.iter().map(|&i| item(set, i)).collect(), device);
        rows.extend(probabilities(model, batch.images));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(scheduler: &str, epochs: usize) -> Recipe {
        let text = format!(
            "epochs = {epochs}\nbatch_size = 8\nseed = 0\n[optimizer]\nname = \"sgd\"\nlr = 0.1\n\
             [scheduler]\n{scheduler}"
        );
        let recipe: Recipe = toml::from_str(&text).unwrap();
        recipe.validate().unwrap();
        recipe
    }

    fn rates(recipe: &Recipe, steps_per_epoch: usize) -> Vec<f64> {
        let mut schedule = Schedule::new(recipe, steps_per_epoch);
        let n = if schedule.per_batch() {
            recipe.epochs * steps_per_epoch
        } else {
            recipe.epochs
        };
        (0..n).map(|_| schedule.next()).collect()
    }

    fn assert_close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }

    /// A resumed fit's schedule is where the uninterrupted one's was: after `batch` batches of
    /// `epoch`, replay gives the rate of the last batch trained and the next call the next one.
    #[test]
    fn replaying_a_schedule_lands_where_the_uninterrupted_one_was() {
        for scheduler in [
            "name = \"warmup-cosine\"\nwarmup_epochs = 1",
            "name = \"step\"\nstep_size = 2\ngamma = 0.5",
            "name = \"constant\"",
        ] {
            let r = recipe(scheduler, 4);
            let steps = 3;
            // The rate of every batch of an uninterrupted fit, as the loop draws them.
            let mut fresh = Schedule::new(&r, steps);
            let mut per_batch = Vec::new();
            for _ in 0..r.epochs {
                let mut lr = fresh.next();
                for b in 0..steps {
                    if fresh.per_batch() && b > 0 {
                        lr = fresh.next();
                    }
                    per_batch.push(lr);
                }
            }
            for epoch in 1..=r.epochs {
                for batch in 1..=steps {
                    let mut resumed = Schedule::new(&r, steps);
                    let lr = resumed.replay(epoch, batch, steps);
                    let done = (epoch - 1) * steps + batch;
                    assert_eq!(lr, per_batch[done - 1], "{scheduler}: at {epoch}/{batch}");
                    let next = match (batch == steps, resumed.per_batch()) {
                        (true, _) | (false, true) => resumed.next(),
                        (false, false) => lr,
                    };
                    if done < per_batch.len() {
                        assert_eq!(next, per_batch[done], "{scheduler}: after {epoch}/{batch}");
                    }
                }
            }
        }
    }

    #[test]
    fn step_lr_decays_once_per_epoch_like_pytorch() {
        let r = recipe("name = \"step\"\nstep_size = 2\ngamma = 0.5", 5);
        assert_close(&rates(&r, 10), &[0.1, 0.1, 0.05, 0.05, 0.025]);
    }

    #[test]
    fn warmup_cosine_ramps_up_then_anneals_per_batch() {
        // 3 epochs of 2 batches, 1 warm-up epoch: 0.05, 0.1 (linear), then cosine from 0.1 down
        // to 0 on the last of the remaining 4 batches.
        let r = recipe("name = \"warmup-cosine\"\nwarmup_epochs = 1", 3);
        let c = |k: f64| 0.05 * (1.0 + (k / 3.0 * std::f64::consts::PI).cos());
        assert_close(&rates(&r, 2), &[0.05, 0.1, c(0.0), c(1.0), c(2.0), c(3.0)]);
    }
}
