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
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rayon::prelude::*;
use serde::Serialize;

use super::card::{Architecture, ModelCard, ResnetStage, TrunkWeights};
use super::import::write_card;
use super::lesion_cnn::{LesionCnn, LesionCnnConfig};
use super::weights::candle_error;
use super::{ct_resnet_patch_spec, sha256_file, CtResnetEmbedder, Embedder, LesionCnnEmbedder};
use crate::dataset::{geometry_of, CoarseType, Dataset, DlInfoReader, LesionRecord, Split};
use crate::error::{Error, Result};
use crate::imaging::{extract_patch, ChannelSpec, FieldOfView, Patch, PatchSpec, WindowChoice};
use crate::util::Rng;

/// The patch `lesion-cnn` reads: the key slice under soft-tissue, lung and bone windows, a
/// field of view three times the lesion (48 to 192 mm), 64x64 px.
pub fn lesion_cnn_patch_spec() -> PatchSpec {
    PatchSpec::three_windows(
        64,
        FieldOfView::Context {
            margin: 1.0,
            min_mm: 48.0,
            max_mm: 192.0,
        },
    )
}

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
            cache: super::default_cache_dir(),
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
    /// Teacher features of the same views (head and distillation).
    teacher: Vec<Vec<f32>>,
}

pub(super) fn to_bytes(p: &Patch) -> Vec<u8> {
    p.data.iter().map(|v| (v * 255.0).round() as u8).collect()
}

/// One draw of the augmentations, applied alike to every spec that reads the view.
#[derive(Debug, Clone, Copy)]
pub(super) struct Augmentation {
    scale: f32,
    shift: (f32, f32),
    /// Per channel: (width factor, level shift as a fraction of the width).
    windows: [(f32, f32); 8],
    flips: (bool, bool),
}

impl Augmentation {
    /// Shift up to 4 px, scale 0.87..1.15, window level +-5% of the width and width +-10%,
    /// flips at random.
    pub(super) fn draw(rng: &mut Rng) -> Self {
        let mut windows = [(1.0, 0.0); 8];
        for w in &mut windows {
            *w = (rng.range(0.9, 1.1), rng.range(-0.05, 0.05));
        }
        Augmentation {
            scale: rng.range(0.87, 1.15),
            shift: (rng.range(-4.0, 4.0), rng.range(-4.0, 4.0)),
            windows,
            flips: (rng.chance(0.5), rng.chance(0.5)),
        }
    }

    /// The same geometry with the windows as specified: what an intensity-invariant target
    /// is computed from.
    pub(super) fn geometric_only(self) -> Self {
        Augmentation {
            windows: [(1.0, 0.0); 8],
            ..self
        }
    }

    pub(super) fn apply(
        &self,
        slices: &crate::dataset::LesionSlices,
        record: &LesionRecord,
        spec: &PatchSpec,
    ) -> Result<Patch> {
        let mut geometry = geometry_of(record);
        let c = geometry.bbox.center();
        let (hw, hh) = (
            geometry.bbox.width() / 2.0 * self.scale,
            geometry.bbox.height() / 2.0 * self.scale,
        );
        let (dx, dy) = self.shift;
        geometry.bbox = crate::dataset::PixelBox::new(
            c.x + dx - hw,
            c.y + dy - hh,
            c.x + dx + hw,
            c.y + dy + hh,
        );
        let channels = spec
            .channels
            .iter()
            .enumerate()
            .map(|(i, ch)| {
                let w = ch.window.resolve(Some(record.window));
                let (width_factor, level_shift) = self.windows[i % self.windows.len()];
                ChannelSpec {
                    slice_offset_mm: ch.slice_offset_mm,
                    window: WindowChoice::Custom(crate::imaging::Window::from_width_level(
                        w.width() * width_factor,
                        w.level() + w.width() * level_shift,
                    )),
                }
            })
            .collect();
        let jittered = PatchSpec {
            channels,
            ..spec.clone()
        };
        let mut patch = extract_patch(&slices.stack(), &geometry, &jittered)?;
        flip(&mut patch, self.flips.0, self.flips.1);
        Ok(patch)
    }
}

fn flip(patch: &mut Patch, horizontal: bool, vertical: bool) {
    let n = patch.size_px;
    for c in 0..patch.channels {
        let plane = &mut patch.data[c * n * n..(c + 1) * n * n];
        if horizontal {
            for row in plane.chunks_exact_mut(n) {
                row.reverse();
            }
        }
        if vertical {
            for y in 0..n / 2 {
                for x in 0..n {
                    plane.swap(y * n + x, (n - 1 - y) * n + x);
                }
            }
        }
    }
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

pub(super) fn load_records(dataset: &Dataset) -> Result<Vec<LesionRecord>> {
    DlInfoReader::open(&dataset.table_path())?
        .map(|r| r.map(|row| row.record))
        .collect()
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
    let trainer = Trainer::new(
        options,
        spec,
        teacher.as_ref().map(CtResnetEmbedder::trunk_dim),
        evaluation,
        eval_patches,
        eval_features,
    )?;
    let epochs = trainer.run_epochs(&examples, training.len(), progress)?;
    let (card, sha) = trainer.save(teacher.as_ref())?;
    let (p_at_5, by_type) = trainer.evaluate()?;
    let report = TrainReport {
        model: card.name.clone(),
        encoder: format!("{:?}", options.encoder),
        seed: options.seed,
        training_lesions: training.len(),
        evaluation_lesions: trainer.evaluation.len(),
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
    let Some(stage) = options.encoder.teacher() else {
        return Ok(None);
    };
    let name = super::ct_resnet_model_name(stage);
    let dir = options.cache.join(name);
    let card = super::read_card(&dir).map_err(|_| {
        Error::invalid_argument(
            "encoder",
            format!(
                "{name} is not in {}; run `lesion-indexer weights import` first",
                options.cache.display()
            ),
        )
    })?;
    Ok(Some(CtResnetEmbedder::load(&dir, card)?))
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
                let rows = t
                    .features(&inputs)?
                    .to_vec2::<f32>()
                    .map_err(|e| candle_error("teacher", e))?;
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
                rows.extend(
                    t.features(chunk)?
                        .to_vec2::<f32>()
                        .map_err(|e| candle_error("teacher", e))?,
                );
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

/// The network being trained, its parameters and what it is evaluated on.
struct Trainer<'a> {
    options: &'a TrainOptions,
    spec: PatchSpec,
    varmap: VarMap,
    network: Network,
    evaluation: Vec<LesionRecord>,
    eval_patches: Vec<Patch>,
    eval_features: Option<Features>,
}

impl<'a> Trainer<'a> {
    /// A seeded network: a projection on `feature_dim` teacher features, or `lesion-cnn`.
    fn new(
        options: &'a TrainOptions,
        spec: PatchSpec,
        feature_dim: Option<usize>,
        evaluation: Vec<LesionRecord>,
        eval_patches: Vec<Patch>,
        eval_features: Option<Features>,
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
            evaluation,
            eval_patches,
            eval_features,
        })
    }

    /// P@5 by coarse type on the evaluation lesions, overall and per type.
    fn evaluate(&self) -> Result<(f32, BTreeMap<String, f32>)> {
        match (&self.network, &self.eval_features) {
            (Network::Head { .. }, Some(features)) => {
                let (w, b) = head_tensors(&self.varmap)?;
                let vectors = features
                    .iter()
                    .map(|f| {
                        let v: Vec<f32> = (0..w.len())
                            .map(|o| w[o].iter().zip(f).map(|(a, x)| a * x).sum::<f32>() + b[o])
                            .collect();
                        super::l2_normalised(v)
                    })
                    .collect::<Vec<_>>();
                Ok(precision_at_5(&self.evaluation, &vectors))
            }
            _ => {
                let embedder = LesionCnnEmbedder::new(
                    rebuild(&self.varmap, &self.options.config)?,
                    card_template(self.options, &self.spec, String::new(), None),
                );
                evaluate(&embedder, &self.evaluation, &self.eval_patches)
            }
        }
    }

    /// Every epoch: shuffled batches under a cosine-decayed learning rate, then P@5.
    fn run_epochs(
        &self,
        examples: &[Example],
        training_lesions: usize,
        progress: &(dyn Fn(TrainEvent) + Sync),
    ) -> Result<Vec<EpochStats>> {
        let options = self.options;
        let mut optimizer = optimizer_for(&self.varmap, options.learning_rate)?;
        let mut rng = Rng::derive(options.seed, &[0x7A1]);
        let steps = training_lesions.div_ceil(options.batch_lesions);
        let total_steps = (steps * options.epochs).max(1);
        let mut epochs = Vec::new();
        let mut step_index = 0;
        for epoch in 1..=options.epochs {
            let epoch_started = Instant::now();
            let order = shuffled((0..examples.len()).collect(), &mut rng);
            let mut losses = Vec::new();
            for (s, chunk) in order.chunks(options.batch_lesions).enumerate() {
                if chunk.len() < 2 {
                    continue;
                }
                optimizer.set_learning_rate(cosine_decay(
                    options.learning_rate,
                    step_index,
                    total_steps,
                ));
                let loss = train_step(
                    &self.network,
                    &mut optimizer,
                    examples,
                    chunk,
                    &self.spec,
                    options,
                    &mut rng,
                )?;
                progress(TrainEvent::Step {
                    epoch,
                    step: s + 1,
                    steps,
                    loss,
                });
                losses.push(loss);
                step_index += 1;
            }
            let (p_at_5, _) = self.evaluate()?;
            let stats = EpochStats {
                epoch,
                mean_loss: losses.iter().sum::<f32>() / losses.len().max(1) as f32,
                p_at_5,
                seconds: epoch_started.elapsed().as_secs_f64(),
            };
            progress(TrainEvent::Epoch(stats.clone()));
            epochs.push(stats);
        }
        Ok(epochs)
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
}

/// The learning rate at `step` of `total`: `base` decayed along half a cosine.
pub(super) fn cosine_decay(base: f64, step: usize, total: usize) -> f64 {
    let t = step as f64 / total as f64;
    base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

fn bytes_to_patch(bytes: &[u8], spec: &PatchSpec) -> Patch {
    Patch {
        size_px: spec.size_px,
        channels: spec.channels.len(),
        data: bytes.iter().map(|&v| f32::from(v) / 255.0).collect(),
        mm_per_px: 0.0,
        substituted_channels: 0,
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
            format!("{}-head", super::ct_resnet_model_name(stage)),
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
            super::ct_resnet_model_name(s).trim_start_matches("ct-resnet-")
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

fn train_step(
    network: &Network,
    optimizer: &mut AdamW,
    examples: &[Example],
    chunk: &[usize],
    spec: &PatchSpec,
    options: &TrainOptions,
    rng: &mut Rng,
) -> Result<f32> {
    let n = spec.size_px;
    let c = spec.channels.len();
    let b = chunk.len();
    let mut data = Vec::with_capacity(2 * b * c * n * n);
    let mut teacher = Vec::new();
    let mut picks = Vec::with_capacity(2 * b);
    for round in 0..2 {
        for &i in chunk {
            let views = &examples[i].views;
            let first = (rng.next_u64() % views.len() as u64) as usize;
            let pick = if round == 0 {
                first
            } else {
                (first + 1 + (rng.next_u64() % (views.len() as u64 - 1).max(1)) as usize)
                    % views.len()
            };
            picks.push((i, pick));
        }
    }
    for &(i, pick) in &picks {
        match network {
            Network::Head { .. } => teacher.extend_from_slice(&examples[i].teacher[pick]),
            Network::Cnn { .. } => {
                data.extend(
                    examples[i].views[pick]
                        .iter()
                        .map(|&v| f32::from(v) / 255.0),
                );
            }
        }
    }
    // Positives: the other view of the same lesion, and similar lesions.
    let m = 2 * b;
    let mut positives = vec![0f32; m * m];
    let mut self_mask = vec![0f32; m * m];
    for i in 0..m {
        self_mask[i * m + i] = -1e9;
        for j in 0..m {
            if i == j {
                continue;
            }
            let (a, bb) = (picks[i].0, picks[j].0);
            if a == bb || similar(&examples[a].record, &examples[bb].record) {
                positives[i * m + j] = 1.0;
            }
        }
    }
    let dev = Device::Cpu;
    let unit = |t: &Tensor| -> candle_core::Result<Tensor> {
        let norm = t.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-6, f64::MAX)?;
        t.broadcast_div(&norm)
    };
    let run = || -> candle_core::Result<(Tensor, f32)> {
        let out = match network {
            Network::Head { projection } => {
                let features = Tensor::from_vec(teacher.clone(), (m, teacher.len() / m), &dev)?;
                candle_nn::Module::forward(projection, &features)?
            }
            Network::Cnn { model } => {
                let x = Tensor::from_vec(data.clone(), (m, c, n, n), &dev)?;
                model.forward_t(&x, true)?
            }
        };
        let e = unit(&out)?;
        let logits = (e.matmul(&e.t()?)? / options.temperature)?;
        let logits = (logits + Tensor::from_vec(self_mask.clone(), (m, m), &dev)?)?;
        let log_prob = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let pos = Tensor::from_vec(positives.clone(), (m, m), &dev)?;
        let per_row = ((log_prob * &pos)?.sum(1)? / pos.sum(1)?.clamp(1.0, f64::MAX)?)?;
        let loss = per_row.mean_all()?.neg()?;
        let value = loss.to_scalar::<f32>()?;
        Ok((loss, value))
    };
    let (loss, value) = run().map_err(|e| candle_error("training step", e))?;
    optimizer
        .backward_step(&loss)
        .map_err(|e| candle_error("training step", e))?;
    Ok(value)
}

/// Overwrites every parameter with values drawn from the seed (candle's own initialisation
/// is not seedable): He-normal weights, zero biases, unit batch-norm scales.
pub(super) fn seed_parameters(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("var map lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = Rng::derive(seed, &[0x1417]);
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let count: usize = dims.iter().product();
        let values: Vec<f32> = if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            let sd = (2.0 / fan_in as f32).sqrt();
            (0..count).map(|_| rng.normal() * sd).collect()
        } else if name.ends_with("running_var") || (name.contains("bn") && name.ends_with("weight"))
        {
            vec![1.0; count]
        } else {
            vec![0.0; count]
        };
        let tensor =
            Tensor::from_vec(values, dims, &Device::Cpu).map_err(|e| candle_error(name, e))?;
        var.set(&tensor).map_err(|e| candle_error(name, e))?;
    }
    Ok(())
}

/// An inference copy of the network with the current parameters.
pub(super) fn rebuild(varmap: &VarMap, config: &LesionCnnConfig) -> Result<LesionCnn> {
    let tensors = varmap
        .data()
        .lock()
        .expect("var map lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().copy().expect("copy")))
        .collect();
    LesionCnn::new(
        config,
        VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
    )
    .map_err(|e| candle_error("lesion-cnn", e))
}

/// AdamW (weight decay 1e-4) over every trainable variable (batch-norm running statistics
/// left out), in name order so that a seed gives the same run.
pub(super) fn optimizer_for(varmap: &VarMap, learning_rate: f64) -> Result<AdamW> {
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

/// Writes the kept variables to `path` by rename (a reader never sees half a file) and
/// returns the file's sha256.
pub(super) fn publish_weights(
    varmap: &VarMap,
    path: &Path,
    keep: fn(&str) -> bool,
) -> Result<String> {
    let tmp = path.with_extension("safetensors.tmp");
    save_sorted(varmap, &tmp, keep)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sha256_file(path)
}

fn save_sorted(varmap: &VarMap, path: &Path, keep: fn(&str) -> bool) -> Result<()> {
    let tensors: std::collections::HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .expect("var map lock")
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, path)
        .map_err(|e| candle_error(&path.display().to_string(), e))
}

/// P@5 by coarse type: each typed held-out lesion against all others of other patients.
pub fn evaluate(
    embedder: &dyn Embedder,
    records: &[LesionRecord],
    patches: &[Patch],
) -> Result<(f32, BTreeMap<String, f32>)> {
    let mut vectors = Vec::with_capacity(patches.len());
    for chunk in patches.chunks(64) {
        vectors.extend(embedder.embed(chunk)?);
    }
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
    let json = dir.join("training_report.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(report).unwrap_or_default(),
    )
    .map_err(|e| Error::io(&json, e))?;
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
    let path = dir.join("training_report.md");
    std::fs::write(&path, md).map_err(|e| Error::io(&path, e))
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
