//! The one training loop: every epoch the examples are shuffled from the seed and cut into
//! batches, each batch is one AdamW step under a cosine-decayed learning rate, and the
//! epoch ends with the objective's held-out measures. Metric learning and distillation
//! differ only in their [`Objective`].

use std::time::Instant;

use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};

use crate::embed::weights::candle_error;
use crate::error::Result;
use crate::util::Rng;

/// How long and how fast to train.
pub(super) struct Schedule {
    pub epochs: usize,
    /// Examples per batch; a last batch of fewer than two is skipped.
    pub batch: usize,
    /// The learning rate of the first step, decayed along half a cosine to the last.
    pub learning_rate: f64,
    pub seed: u64,
    /// The stream, derived from the seed, that the shuffles and the objective's picks draw
    /// from: each trainer has its own, so their runs stay what they were.
    pub stream: u64,
}

/// What is learnt: one step on a batch, and the report of an epoch.
pub(super) trait Objective {
    /// What one epoch reports.
    type Epoch: Clone;

    /// One optimizer step on the examples of `batch` (indices); any random choice of views
    /// draws from `rng`, after the epoch's shuffle. Returns the batch's loss.
    fn step(&self, optimizer: &mut AdamW, batch: &[usize], rng: &mut Rng) -> Result<f32>;

    /// The epoch's report, held-out measures included.
    fn end_epoch(&self, end: EpochEnd) -> Result<Self::Epoch>;
}

/// An epoch just trained.
pub(super) struct EpochEnd {
    pub epoch: usize,
    pub mean_loss: f32,
    started: Instant,
}

impl EpochEnd {
    /// Seconds since the epoch began: read after measuring, so they include it.
    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// Progress of the loop, for the trainer's own progress events.
pub(super) enum LoopEvent<'a, E> {
    Step {
        epoch: usize,
        step: usize,
        steps: usize,
        loss: f32,
    },
    Epoch(&'a E),
}

/// Trains the variables of `varmap` on `examples` examples for `schedule.epochs` epochs and
/// returns every epoch's report.
pub(super) fn run_epochs<O: Objective>(
    objective: &O,
    varmap: &VarMap,
    examples: usize,
    schedule: &Schedule,
    progress: &dyn Fn(LoopEvent<'_, O::Epoch>),
) -> Result<Vec<O::Epoch>> {
    let mut optimizer = optimizer_for(varmap, schedule.learning_rate)?;
    let mut rng = Rng::derive(schedule.seed, &[schedule.stream]);
    let steps = examples.div_ceil(schedule.batch);
    let total_steps = (steps * schedule.epochs).max(1);
    let mut epochs = Vec::with_capacity(schedule.epochs);
    let mut step_index = 0;
    for epoch in 1..=schedule.epochs {
        let started = Instant::now();
        let order = shuffled((0..examples).collect(), &mut rng);
        let mut losses = Vec::new();
        for (s, batch) in order.chunks(schedule.batch).enumerate() {
            if batch.len() < 2 {
                continue;
            }
            optimizer.set_learning_rate(cosine_decay(
                schedule.learning_rate,
                step_index,
                total_steps,
            ));
            let loss = objective.step(&mut optimizer, batch, &mut rng)?;
            progress(LoopEvent::Step {
                epoch,
                step: s + 1,
                steps,
                loss,
            });
            losses.push(loss);
            step_index += 1;
        }
        let stats = objective.end_epoch(EpochEnd {
            epoch,
            mean_loss: losses.iter().sum::<f32>() / losses.len().max(1) as f32,
            started,
        })?;
        progress(LoopEvent::Epoch(&stats));
        epochs.push(stats);
    }
    Ok(epochs)
}

/// The learning rate at `step` of `total`: `base` decayed along half a cosine.
fn cosine_decay(base: f64, step: usize, total: usize) -> f64 {
    let t = step as f64 / total as f64;
    base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// AdamW (weight decay 1e-4) over every trainable variable (batch-norm running statistics
/// left out), in name order so that a seed gives the same run.
fn optimizer_for(varmap: &VarMap, learning_rate: f64) -> Result<AdamW> {
    let trainable: Vec<candle_core::Var> = {
        let data = varmap.data().lock().expect("var map lock");
        let mut named: Vec<(&String, &candle_core::Var)> = data
            .iter()
            .filter(|(name, _)| !name.contains("running_"))
            .collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        named.into_iter().map(|(_, v)| v.clone()).collect()
    };
    let params = ParamsAdamW {
        lr: learning_rate,
        weight_decay: 1e-4,
        ..Default::default()
    };
    AdamW::new(trainable, params).map_err(|e| candle_error("optimizer", e))
}

/// Fisher-Yates from the stream.
pub(super) fn shuffled<T>(mut items: Vec<T>, rng: &mut Rng) -> Vec<T> {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.int(0, i as u32) as usize);
    }
    items
}
