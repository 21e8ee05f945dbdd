//! The learning rate of every step: the recipe's schedule, from Burn's schedulers, per epoch
//! or per batch as the recipe says, and replayed to where a checkpoint left it.

use burn::lr_scheduler::cosine::{CosineAnnealingLrScheduler, CosineAnnealingLrSchedulerConfig};
use burn::lr_scheduler::linear::{LinearLrScheduler, LinearLrSchedulerConfig};
use burn::lr_scheduler::step::{StepLrScheduler, StepLrSchedulerConfig};
use burn::lr_scheduler::LrScheduler;

use crate::{Recipe, SchedulerSpec};

/// The learning rate, from Burn's schedulers: per epoch or per batch as the recipe says.
pub(crate) enum Schedule {
    Constant(f64),
    Step(StepLrScheduler),
    WarmupCosine {
        warmup: Option<LinearLrScheduler>,
        cosine: CosineAnnealingLrScheduler,
        warmup_steps: usize,
        taken: usize,
    },
    Triangle {
        lr: f64,
        points: [(f64, f64); 3],
        taken: usize,
    },
}

impl Schedule {
    pub(crate) fn new(recipe: &Recipe, steps_per_epoch: usize) -> Self {
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
                let total = recipe.total_steps(steps_per_epoch);
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
            SchedulerSpec::Triangle { start, peak, end } => {
                let total = recipe.total_steps(steps_per_epoch) as f64;
                // airbench94's `int(peak * steps)`: the peak on a whole step.
                let top = (peak * total).floor();
                Schedule::Triangle {
                    lr,
                    points: [(0.0, *start), (top, 1.0), (total, *end)],
                    taken: 0,
                }
            }
        }
    }

    /// Steps the schedule to where a fit stood after `batch` batches of `epoch` (1-based), and
    /// returns the rate of the last of those batches (NaN before the first).
    pub(crate) fn replay(&mut self, epoch: usize, batch: usize, steps_per_epoch: usize) -> f64 {
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
    pub(crate) fn per_batch(&self) -> bool {
        matches!(
            self,
            Schedule::WarmupCosine { .. } | Schedule::Triangle { .. }
        )
    }

    pub(crate) fn next(&mut self) -> f64 {
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
            Schedule::Triangle { lr, points, taken } => {
                let x = *taken as f64;
                *taken += 1;
                let [(x0, y0), (x1, y1), (x2, y2)] = *points;
                let factor = if x < x1 {
                    y0 + (y1 - y0) * (x - x0) / (x1 - x0)
                } else if x2 > x1 {
                    y1 + (y2 - y1) * (x - x1) / (x2 - x1)
                } else {
                    y1
                };
                *lr * factor
            }
        }
    }
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
            recipe.total_steps(steps_per_epoch)
        } else {
            recipe.epochs.started()
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
            "name = \"triangle\"\nstart = 0.2\npeak = 0.25\nend = 0.07",
        ] {
            let r = recipe(scheduler, 4);
            let steps = 3;
            // The rate of every batch of an uninterrupted fit, as the loop draws them.
            let mut fresh = Schedule::new(&r, steps);
            let mut per_batch = Vec::new();
            for _ in 0..r.epochs.started() {
                let mut lr = fresh.next();
                for b in 0..steps {
                    if fresh.per_batch() && b > 0 {
                        lr = fresh.next();
                    }
                    per_batch.push(lr);
                }
            }
            for epoch in 1..=r.epochs.started() {
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

    #[test]
    fn triangle_rises_to_its_peak_then_falls_per_batch_like_airbench() {
        // 4 epochs of 2 batches: 8 steps, the peak at int(0.25 * 8) = 2. airbench94's
        // triangle(8, start=0.2, end=0.07, peak=0.25) is [0.2, 0.6, 1, 0.845, 0.69, 0.535,
        // 0.38, 0.225, 0.07]; its steps take the first eight.
        let r = recipe(
            "name = \"triangle\"\nstart = 0.2\npeak = 0.25\nend = 0.07",
            4,
        );
        let want: Vec<f64> = [0.2, 0.6, 1.0, 0.845, 0.69, 0.535, 0.38, 0.225]
            .iter()
            .map(|f| 0.1 * f)
            .collect();
        assert_close(&rates(&r, 2), &want);
        let bad = Recipe {
            scheduler: SchedulerSpec::Triangle {
                start: 0.2,
                peak: 1.5,
                end: 0.07,
            },
            ..r
        };
        assert_eq!(
            bad.validate().unwrap_err(),
            "recipe.scheduler.peak: expected a value in [0, 1], found 1.5"
        );
    }
}
