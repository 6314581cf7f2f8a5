//! Metric learning for `lesion-cnn`, in the spirit of Deep Lesion Graphs.
//!
//! Positives share the coarse type where it is known, lie close in body location and have
//! similar size; two augmented views of one lesion (shift, scale, window jitter, flips) are
//! always positives. The loss is the multi-positive contrastive loss of supervised
//! contrastive learning over a batch of two views per lesion. Evaluation is P@5 by coarse
//! type on held-out patients (validation and test splits), hits from the query's own patient
//! excluded. Everything random draws from the seed, so a run is reproducible.
//!
//! Two encoders: `lesion-cnn` end to end, and a projection head on frozen `ct-resnet`
//! features (the trunk runs once per view, its features are cached for every epoch).
//! Label-free distillation of `ct-resnet` into `lesion-cnn` lives in `distill`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, VarBuilder, VarMap};
use rayon::prelude::*;
use serde::Serialize;

use super::params::{publish_weights, rebuild, seed_parameters};
use super::schedule::{run_epochs, EpochEnd, LoopEvent, Objective, Schedule};
use super::views::{bytes_to_floats, bytes_to_patch, to_bytes, Augmentation};
use super::{embed_in_batches, lesion_cnn_patch_spec, load_records, write_report_files};
use crate::dataset::{CoarseType, Dataset, LesionRecord, Split};
use crate::embed::card::{Architecture, ModelCard, ResnetStage, TrunkWeights};
use crate::embed::import::write_card;
use crate::embed::lesion_cnn::{LesionCnn, LesionCnnConfig};
use crate::embed::weights::candle_error;
use crate::embed::{ct_resnet_patch_spec, CtResnetEmbedder, Embedder, LesionCnnEmbedder};
use crate::error::{Error, Result};
use crate::imaging::{Patch, PatchSpec};
use crate::util::Rng;

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoder {
    /// `lesion-cnn`, end to end.
    LesionCnn,
    /// A linear projection on frozen `ct-resnet` features cut after `stage`.
    CtResnetHead(ResnetStage),
}

impl Encoder {
    pub fn parse(text: &str) -> Option<Self> {
        let stage = |t: &str| ResnetStage::parse(t.trim_start_matches('l'));
        match text.trim() {
            "lesion-cnn" => Some(Encoder::LesionCnn),
            t if t.starts_with("ct-resnet-head-") => {
                stage(&t["ct-resnet-head-".len()..]).map(Encoder::CtResnetHead)
            }
            _ => None,
        }
    }

    fn teacher(self) -> Option<ResnetStage> {
        match self {
            Encoder::LesionCnn => None,
            Encoder::CtResnetHead(s) => Some(s),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub dataset: PathBuf,
    pub out: PathBuf,
    pub encoder: Encoder,
    /// Where imported `ct-resnet` weights live (head and distillation).
    pub cache: PathBuf,
    pub config: LesionCnnConfig,
    pub epochs: usize,
    /// Lesions per batch (two views each).
    pub batch_lesions: usize,
    /// Augmented views prepared per training lesion.
    pub views: usize,
    pub learning_rate: f64,
    pub temperature: f64,
    pub seed: u64,
    /// Use at most this many training lesions (quick runs, tests).
    pub max_lesions: Option<usize>,
}

impl TrainOptions {
    pub fn new(dataset: PathBuf, out: PathBuf) -> Self {
        TrainOptions {
            dataset,
            out,
            encoder: Encoder::LesionCnn,
            cache: crate::embed::default_cache_dir(),
            config: LesionCnnConfig::default(),
            epochs: 20,
            batch_lesions: 64,
            views: 6,
            learning_rate: 2e-3,
            temperature: 0.1,
            seed: 1,
            max_lesions: None,
        }
    }
}

/// What happens during training, for a progress display.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    Preparing {
        done: usize,
        total: usize,
    },
    Teacher {
        done: usize,
        total: usize,
    },
    Step {
        epoch: usize,
        step: usize,
        steps: usize,
        loss: f32,
    },
    Epoch(EpochStats),
}

#[derive(Debug, Clone, Serialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub mean_loss: f32,
    pub p_at_5: f32,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub model: String,
    pub encoder: String,
    pub seed: u64,
    pub training_lesions: usize,
    pub evaluation_lesions: usize,
    pub epochs: Vec<EpochStats>,
    pub p_at_5: f32,
    pub p_at_5_by_type: BTreeMap<String, f32>,
    pub weights_sha256: String,
    pub seconds: f64,
}

struct Example {
    record: LesionRecord,
    /// Student views as bytes (0..255), channel-major.
    views: Vec<Vec<u8>>,
    /// Teacher features of the same views (head only).
    teacher: Vec<Vec<f32>>,
}

/// Whether two lesions count as positives.
fn similar(a: &LesionRecord, b: &LesionRecord) -> bool {
    let size_ratio = (a.long_diameter_mm() / b.long_diameter_mm()).ln().abs();
    let (la, lb) = (a.location, b.location);
    let distance = ((la.x - lb.x).powi(2) + (la.y - lb.y).powi(2) + (la.z - lb.z).powi(2)).sqrt();
    match (a.coarse_type.is_known(), b.coarse_type.is_known()) {
        (true, true) => {
            a.coarse_type == b.coarse_type && (la.z - lb.z).abs() < 0.15 && size_ratio < 1.1
        }
        _ => distance < 0.05 && size_ratio < 0.4,
    }
}

/// The trainable part of each encoder.
enum Network {
    Cnn { model: LesionCnn },
    Head { projection: candle_nn::Linear },
}

/// Trains the chosen encoder and writes its weights, `card.json` and the training report
/// into `options.out`.
pub fn train(
    options: &TrainOptions,
    progress: &(dyn Fn(TrainEvent) + Sync),
) -> Result<TrainReport> {
    let started = Instant::now();
    let dataset = Dataset::new(&options.dataset);
    let spec = match options.encoder {
        Encoder::CtResnetHead(_) => ct_resnet_patch_spec(64),
        _ => lesion_cnn_patch_spec(),
    };
    let (training, evaluation) = split_lesions(&dataset, options)?;
    let teacher = load_teacher(options)?;
    let (prepared, eval_patches) =
        prepare_views(&dataset, &training, &evaluation, &spec, options, progress)?;
    let (examples, eval_features) = with_teacher_features(
        teacher.as_ref(),
        prepared,
        &eval_patches,
        options.encoder,
        &spec,
        progress,
    )?;
    let held_out = HeldOut {
        records: evaluation,
        patches: eval_patches,
        features: eval_features,
    };
    let feature_dim = teacher.as_ref().map(CtResnetEmbedder::trunk_dim);
    let trainer = Trainer::new(options, spec, feature_dim, examples, held_out)?;
    let epochs = trainer.run_epochs(progress)?;
    let (card, sha) = trainer.save(teacher.as_ref())?;
    let (p_at_5, by_type) = trainer.evaluate()?;
    let report = TrainReport {
        model: card.name.clone(),
        encoder: format!("{:?}", options.encoder),
        seed: options.seed,
        training_lesions: training.len(),
        evaluation_lesions: trainer.held_out.records.len(),
        epochs,
        p_at_5,
        p_at_5_by_type: by_type,
        weights_sha256: sha,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_report(&options.out, &report)?;
    Ok(report)
}

/// Training lesions (the train split, up to `max_lesions`) and evaluation lesions (the
/// other splits' typed ones: held-out patients).
fn split_lesions(
    dataset: &Dataset,
    options: &TrainOptions,
) -> Result<(Vec<LesionRecord>, Vec<LesionRecord>)> {
    let records = load_records(dataset)?;
    let mut training: Vec<LesionRecord> = records
        .iter()
        .filter(|r| r.split == Split::Train)
        .cloned()
        .collect();
    if let Some(max) = options.max_lesions {
        training.truncate(max);
    }
    if training.len() < 2 {
        return Err(Error::invalid_argument(
            "dataset",
            format!(
                "{} has {} training lesions; need at least 2",
                dataset.root().display(),
                training.len()
            ),
        ));
    }
    let evaluation = records
        .into_iter()
        .filter(|r| r.split != Split::Train && r.coarse_type.is_known())
        .collect();
    Ok((training, evaluation))
}

/// The frozen `ct-resnet` trunk the encoder learns from, when it has one.
fn load_teacher(options: &TrainOptions) -> Result<Option<CtResnetEmbedder>> {
    match options.encoder.teacher() {
        None => Ok(None),
        Some(stage) => super::load_ct_resnet(&options.cache, stage, "encoder").map(Some),
    }
}

/// Augmented views of each training lesion (slices decoded once per lesion, each lesion with
/// its own random stream) and the plain patches of the evaluation lesions.
type Prepared = (Vec<(LesionRecord, Vec<Vec<u8>>)>, Vec<Patch>);

fn prepare_views(
    dataset: &Dataset,
    training: &[LesionRecord],
    evaluation: &[LesionRecord],
    spec: &PatchSpec,
    options: &TrainOptions,
    progress: &(dyn Fn(TrainEvent) + Sync),
) -> Result<Prepared> {
    let total = training.len() + evaluation.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let tick = || {
        progress(TrainEvent::Preparing {
            done: done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
            total,
        })
    };
    let prepared = training
        .par_iter()
        .enumerate()
        .map(|(i, record)| {
            let slices = dataset.load_slices(record, spec)?;
            let mut rng = Rng::derive(options.seed, &[i as u64, 0xA06]);
            let mut views = Vec::with_capacity(options.views);
            for _ in 0..options.views {
                let augmentation = Augmentation::draw(&mut rng);
                views.push(to_bytes(&augmentation.apply(&slices, record, spec)?));
            }
            tick();
            Ok((record.clone(), views))
        })
        .collect::<Result<_>>()?;
    let eval_patches = evaluation
        .par_iter()
        .map(|r| {
            let p = dataset.lesion_patch(r, spec);
            tick();
            p
        })
        .collect::<Result<_>>()?;
    Ok((prepared, eval_patches))
}

/// Teacher features, one row per patch.
type Features = Vec<Vec<f32>>;

/// The training examples with the teacher's features of each view, and the teacher's
/// features of the evaluation patches when a head is trained: computed once, read every
/// epoch.
fn with_teacher_features(
    teacher: Option<&CtResnetEmbedder>,
    prepared: Vec<(LesionRecord, Vec<Vec<u8>>)>,
    eval_patches: &[Patch],
    encoder: Encoder,
    spec: &PatchSpec,
    progress: &(dyn Fn(TrainEvent) + Sync),
) -> Result<(Vec<Example>, Option<Features>)> {
    let mut examples = Vec::with_capacity(prepared.len());
    let total: usize = prepared.iter().map(|p| p.1.len()).sum::<usize>() + eval_patches.len();
    let mut done = 0;
    for (record, views) in prepared {
        let features = match teacher {
            None => Vec::new(),
            Some(t) => {
                // The head reads the student views themselves (the same spec as the teacher).
                let inputs: Vec<Patch> = views.iter().map(|v| bytes_to_patch(v, spec)).collect();
                let rows = teacher_features(t, &inputs)?;
                done += rows.len();
                progress(TrainEvent::Teacher { done, total });
                rows
            }
        };
        examples.push(Example {
            record,
            views,
            teacher: features,
        });
    }
    let eval_features = match (teacher, encoder) {
        (Some(t), Encoder::CtResnetHead(_)) => {
            let mut rows = Vec::new();
            for chunk in eval_patches.chunks(32) {
                rows.extend(teacher_features(t, chunk)?);
                progress(TrainEvent::Teacher {
                    done: done + rows.len(),
                    total,
                });
            }
            Some(rows)
        }
        _ => None,
    };
    Ok((examples, eval_features))
}

fn teacher_features(teacher: &CtResnetEmbedder, patches: &[Patch]) -> Result<Features> {
    teacher
        .features(patches)?
        .to_vec2::<f32>()
        .map_err(|e| candle_error("teacher", e))
}

/// The held-out lesions P@5 is measured on, their patches and, for a head, their teacher
/// features.
struct HeldOut {
    records: Vec<LesionRecord>,
    patches: Vec<Patch>,
    features: Option<Features>,
}

/// The network being trained, its parameters, its examples and what it is evaluated on.
struct Trainer<'a> {
    options: &'a TrainOptions,
    spec: PatchSpec,
    varmap: VarMap,
    network: Network,
    examples: Vec<Example>,
    held_out: HeldOut,
}

impl<'a> Trainer<'a> {
    /// A seeded network: a projection on `feature_dim` teacher features, or `lesion-cnn`.
    fn new(
        options: &'a TrainOptions,
        spec: PatchSpec,
        feature_dim: Option<usize>,
        examples: Vec<Example>,
        held_out: HeldOut,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let network = match options.encoder {
            Encoder::CtResnetHead(_) => Network::Head {
                projection: candle_nn::linear(
                    feature_dim.unwrap_or(512),
                    options.config.dim,
                    vb.pp("projection"),
                )
                .map_err(|e| candle_error("projection", e))?,
            },
            Encoder::LesionCnn => Network::Cnn {
                model: LesionCnn::new(&options.config, vb.clone())
                    .map_err(|e| candle_error("lesion-cnn", e))?,
            },
        };
        seed_parameters(&varmap, options.seed)?;
        Ok(Trainer {
            options,
            spec,
            varmap,
            network,
            examples,
            held_out,
        })
    }

    /// P@5 by coarse type on the evaluation lesions, overall and per type.
    fn evaluate(&self) -> Result<(f32, BTreeMap<String, f32>)> {
        match (&self.network, &self.held_out.features) {
            (Network::Head { .. }, Some(features)) => {
                let (w, b) = head_tensors(&self.varmap)?;
                let vectors = features
                    .iter()
                    .map(|f| {
                        let v: Vec<f32> = (0..w.len())
                            .map(|o| w[o].iter().zip(f).map(|(a, x)| a * x).sum::<f32>() + b[o])
                            .collect();
                        crate::embed::l2_normalised(v)
                    })
                    .collect::<Vec<_>>();
                Ok(precision_at_5(&self.held_out.records, &vectors))
            }
            _ => {
                let embedder = LesionCnnEmbedder::new(
                    rebuild(&self.varmap, &self.options.config)?,
                    card_template(self.options, &self.spec, String::new(), None),
                );
                evaluate(&embedder, &self.held_out.records, &self.held_out.patches)
            }
        }
    }

    /// The shared loop over this trainer's examples, with P@5 after every epoch.
    fn run_epochs(&self, progress: &(dyn Fn(TrainEvent) + Sync)) -> Result<Vec<EpochStats>> {
        let options = self.options;
        let schedule = Schedule {
            epochs: options.epochs,
            batch: options.batch_lesions,
            learning_rate: options.learning_rate,
            seed: options.seed,
            stream: 0x7A1,
        };
        run_epochs(
            self,
            &self.varmap,
            self.examples.len(),
            &schedule,
            &|event| {
                progress(match event {
                    LoopEvent::Step {
                        epoch,
                        step,
                        steps,
                        loss,
                    } => TrainEvent::Step {
                        epoch,
                        step,
                        steps,
                        loss,
                    },
                    LoopEvent::Epoch(stats) => TrainEvent::Epoch(stats.clone()),
                })
            },
        )
    }

    /// Writes the trained weights (only the head's, for a head) and their card.
    fn save(&self, teacher: Option<&CtResnetEmbedder>) -> Result<(ModelCard, String)> {
        let options = self.options;
        std::fs::create_dir_all(&options.out).map_err(|e| Error::io(&options.out, e))?;
        let (file_name, keep): (&str, fn(&str) -> bool) = match self.network {
            Network::Head { .. } => ("head.safetensors", |n| n.starts_with("projection")),
            Network::Cnn { .. } => ("model.safetensors", |_| true),
        };
        let sha = publish_weights(&self.varmap, &options.out.join(file_name), keep)?;
        let trunk = match (teacher, options.encoder) {
            (Some(t), Encoder::CtResnetHead(_)) => {
                let dir = options.cache.join(&t.card().name);
                let file = std::fs::canonicalize(dir.join(&t.card().weights_file))
                    .map_err(|e| Error::io(&dir, e))?;
                Some(TrunkWeights {
                    file: file.display().to_string(),
                    sha256: t.card().weights_sha256.clone(),
                })
            }
            _ => None,
        };
        let card = card_template(options, &self.spec, sha.clone(), trunk);
        write_card(&options.out, &card)?;
        Ok((card, sha))
    }

    /// Two different views of each lesion of the batch, as (example, view): the batch's
    /// lesions once with their first view, then again with their second.
    fn pick_views(&self, batch: &[usize], rng: &mut Rng) -> Vec<(usize, usize)> {
        let mut picks = Vec::with_capacity(2 * batch.len());
        for round in 0..2 {
            for &i in batch {
                let views = self.examples[i].views.len() as u64;
                let first = (rng.next_u64() % views) as usize;
                let pick = if round == 0 {
                    first
                } else {
                    (first + 1 + (rng.next_u64() % (views - 1).max(1)) as usize) % views as usize
                };
                picks.push((i, pick));
            }
        }
        picks
    }

    /// The network's input for the picked views: their teacher features for a head, their
    /// pixels for `lesion-cnn`.
    fn batch_input(&self, picks: &[(usize, usize)]) -> candle_core::Result<Tensor> {
        let m = picks.len();
        match self.network {
            Network::Head { .. } => {
                let mut features = Vec::new();
                for &(i, pick) in picks {
                    features.extend_from_slice(&self.examples[i].teacher[pick]);
                }
                let width = features.len() / m;
                Tensor::from_vec(features, (m, width), &Device::Cpu)
            }
            Network::Cnn { .. } => {
                let (n, c) = (self.spec.size_px, self.spec.channels.len());
                let mut data = Vec::with_capacity(m * c * n * n);
                for &(i, pick) in picks {
                    data.extend(bytes_to_floats(&self.examples[i].views[pick]));
                }
                Tensor::from_vec(data, (m, c, n, n), &Device::Cpu)
            }
        }
    }

    /// Positives: the other view of the same lesion, and similar lesions. Returns the
    /// positives matrix and the mask that takes each view out of its own softmax.
    fn positives(&self, picks: &[(usize, usize)]) -> (Vec<f32>, Vec<f32>) {
        let m = picks.len();
        let mut positives = vec![0f32; m * m];
        let mut self_mask = vec![0f32; m * m];
        for i in 0..m {
            self_mask[i * m + i] = -1e9;
            for j in 0..m {
                if i == j {
                    continue;
                }
                let (a, b) = (picks[i].0, picks[j].0);
                if a == b || similar(&self.examples[a].record, &self.examples[b].record) {
                    positives[i * m + j] = 1.0;
                }
            }
        }
        (positives, self_mask)
    }

    /// The multi-positive contrastive loss of the picked views.
    fn contrastive_loss(&self, picks: &[(usize, usize)]) -> candle_core::Result<Tensor> {
        let m = picks.len();
        let (positives, self_mask) = self.positives(picks);
        let x = self.batch_input(picks)?;
        let out = match &self.network {
            Network::Head { projection } => candle_nn::Module::forward(projection, &x)?,
            Network::Cnn { model } => model.forward_t(&x, true)?,
        };
        let norm = out.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-6, f64::MAX)?;
        let e = out.broadcast_div(&norm)?;
        let logits = (e.matmul(&e.t()?)? / self.options.temperature)?;
        let logits = (logits + Tensor::from_vec(self_mask, (m, m), &Device::Cpu)?)?;
        let log_prob = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let pos = Tensor::from_vec(positives, (m, m), &Device::Cpu)?;
        let per_row = ((log_prob * &pos)?.sum(1)? / pos.sum(1)?.clamp(1.0, f64::MAX)?)?;
        per_row.mean_all()?.neg()
    }
}

impl Objective for Trainer<'_> {
    type Epoch = EpochStats;

    fn step(&self, optimizer: &mut AdamW, batch: &[usize], rng: &mut Rng) -> Result<f32> {
        let picks = self.pick_views(batch, rng);
        let to_err = |e| candle_error("training step", e);
        let loss = self.contrastive_loss(&picks).map_err(to_err)?;
        let value = loss.to_scalar::<f32>().map_err(to_err)?;
        optimizer.backward_step(&loss).map_err(to_err)?;
        Ok(value)
    }

    fn end_epoch(&self, end: EpochEnd) -> Result<EpochStats> {
        let (p_at_5, _) = self.evaluate()?;
        Ok(EpochStats {
            epoch: end.epoch,
            mean_loss: end.mean_loss,
            p_at_5,
            seconds: end.seconds(),
        })
    }
}

fn card_template(
    options: &TrainOptions,
    spec: &PatchSpec,
    sha: String,
    trunk: Option<TrunkWeights>,
) -> ModelCard {
    let (name, architecture) = match options.encoder {
        Encoder::CtResnetHead(stage) => (
            format!("{}-head", crate::embed::ct_resnet_model_name(stage)),
            Architecture::CtResnet {
                stage,
                projection: Some(options.config.dim),
            },
        ),
        _ => (
            "lesion-cnn".to_string(),
            Architecture::LesionCnn {
                widths: options.config.widths.clone(),
                dim: options.config.dim,
            },
        ),
    };
    let encoder = match options.encoder {
        Encoder::LesionCnn => "lesion-cnn".to_string(),
        Encoder::CtResnetHead(s) => format!(
            "ct-resnet-head-{}",
            crate::embed::ct_resnet_model_name(s).trim_start_matches("ct-resnet-")
        ),
    };
    ModelCard {
        name,
        architecture,
        patch: spec.clone(),
        output_dim: options.config.dim,
        weights_file: if trunk.is_some() { "head.safetensors".into() } else { "model.safetensors".into() },
        weights_sha256: sha,
        provenance: format!(
            "trained by `lesion-indexer train --dataset {} --encoder {encoder} --epochs {} --seed {}` on 2 threads",
            options.dataset.display(),
            options.epochs,
            options.seed
        ),
        trunk,
    }
}

fn head_tensors(varmap: &VarMap) -> Result<(Vec<Vec<f32>>, Vec<f32>)> {
    let data = varmap.data().lock().expect("var map lock");
    let w = data["projection.weight"]
        .as_tensor()
        .to_vec2::<f32>()
        .map_err(|e| candle_error("projection", e))?;
    let b = data["projection.bias"]
        .as_tensor()
        .to_vec1::<f32>()
        .map_err(|e| candle_error("projection", e))?;
    Ok((w, b))
}

/// P@5 by coarse type: each typed held-out lesion against all others of other patients.
pub fn evaluate(
    embedder: &dyn Embedder,
    records: &[LesionRecord],
    patches: &[Patch],
) -> Result<(f32, BTreeMap<String, f32>)> {
    let vectors = embed_in_batches(embedder, patches, 64)?;
    Ok(precision_at_5(records, &vectors))
}

pub fn precision_at_5(
    records: &[LesionRecord],
    vectors: &[Vec<f32>],
) -> (f32, BTreeMap<String, f32>) {
    let mut per_type: BTreeMap<CoarseType, (f32, usize)> = BTreeMap::new();
    for (i, q) in vectors.iter().enumerate() {
        let mut scored: Vec<(f32, usize)> = vectors
            .iter()
            .enumerate()
            .filter(|(j, _)| records[*j].patient != records[i].patient)
            .map(|(j, v)| (q.iter().zip(v).map(|(a, b)| a * b).sum::<f32>(), j))
            .collect();
        if scored.len() < 5 {
            continue;
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let hits = scored[..5]
            .iter()
            .filter(|(_, j)| records[*j].coarse_type == records[i].coarse_type)
            .count();
        let entry = per_type.entry(records[i].coarse_type).or_default();
        entry.0 += hits as f32 / 5.0;
        entry.1 += 1;
    }
    let total: (f32, usize) = per_type
        .values()
        .fold((0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let overall = if total.1 > 0 {
        total.0 / total.1 as f32
    } else {
        0.0
    };
    (
        overall,
        per_type
            .into_iter()
            .map(|(t, (s, n))| (t.name().to_string(), s / n as f32))
            .collect(),
    )
}

fn write_report(dir: &Path, report: &TrainReport) -> Result<()> {
    let mut md = format!(
        "# Training report: {}\n\nSeed {}, {} training lesions, {} held-out lesions, {:.0} s.\n\nP@5 by coarse type on held-out patients: **{:.3}**\n\n| type | P@5 |\n|---|---:|\n",
        report.model, report.seed, report.training_lesions, report.evaluation_lesions, report.seconds, report.p_at_5
    );
    for (t, p) in &report.p_at_5_by_type {
        md.push_str(&format!("| {t} | {p:.3} |\n"));
    }
    md.push_str(
        "\n## Loss curve\n\n| epoch | mean loss | P@5 | seconds |\n|---:|---:|---:|---:|\n",
    );
    for e in &report.epochs {
        md.push_str(&format!(
            "| {} | {:.4} | {:.3} | {:.0} |\n",
            e.epoch, e.mean_loss, e.p_at_5, e.seconds
        ));
    }
    write_report_files(dir, "training_report", report, &md)
}

/// Held-out P@5 by coarse type of any model on an archive's validation and test lesions.
pub fn evaluate_on_dataset(
    embedder: &dyn Embedder,
    dataset_dir: &Path,
) -> Result<(usize, f32, BTreeMap<String, f32>)> {
    let dataset = Dataset::new(dataset_dir);
    let records: Vec<LesionRecord> = load_records(&dataset)?
        .into_iter()
        .filter(|r| r.split != Split::Train && r.coarse_type.is_known())
        .collect();
    let spec = &embedder.card().patch;
    let patches: Vec<Patch> = records
        .par_iter()
        .map(|r| dataset.lesion_patch(r, spec))
        .collect::<Result<_>>()?;
    let (p, by_type) = evaluate(embedder, &records, &patches)?;
    Ok((records.len(), p, by_type))
}
