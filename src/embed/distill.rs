//! Label-free distillation: the fast `lesion-cnn` learns to reproduce a `ct-resnet` trunk's
//! embedding on patches cut from an archive's own slices, so a hospital can adapt the fast
//! model to its scanners without a single label.
//!
//! Patches come from every archive given (real or generated, DeepLesion layout): each
//! training-split lesion's box, and boxes sampled over the body on every training-split slice
//! on disk (tissue, organs, edges; 8 to 64 mm). Only the training split is read, so the
//! validation and test patients (those every evaluation uses) never reach the student. Each
//! patch is drawn in several augmented views (shift, scale, window, flips, as in metric
//! training); the teacher sees the same geometry through its own patch spec and fixed window.
//!
//! The target of a view is the teacher's unit vector, centred on the mean of the teacher's
//! vectors over all training views and projected onto their principal subspace of the
//! student's size, then normalised. Centring matters: the teacher's vectors share one large
//! common direction, and matching it would leave little of the loss for what tells patches
//! apart. The loss is the cosine distance to that target plus the
//! squared difference between the student's and the targets' similarity matrices within the
//! batch, because retrieval depends on the relations, not the coordinates. Progress is
//! measured on held-out patients' lesions: mean cosine to the target and how often the
//! student's nearest neighbour is the teacher's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, VarBuilder, VarMap};
use rayon::prelude::*;
use serde::Serialize;

use super::card::{Architecture, ModelCard, ResnetStage};
use super::import::write_card;
use super::lesion_cnn::{LesionCnn, LesionCnnConfig};
use super::train::{
    cosine_decay, lesion_cnn_patch_spec, load_records, optimizer_for, publish_weights, rebuild,
    seed_parameters, shuffled, to_bytes, Augmentation,
};
use super::weights::candle_error;
use super::{ct_resnet_patch_spec, CtResnetEmbedder, Embedder, LesionCnnEmbedder};
use crate::dataset::{Dataset, LesionRecord, PixelBox, Split};
use crate::error::{Error, Result};
use crate::imaging::{CtImage, Patch, PatchSpec};
use crate::util::Rng;

#[derive(Debug, Clone)]
pub struct DistillOptions {
    /// DeepLesion-layout archives, real or generated; only their training split is read.
    pub datasets: Vec<PathBuf>,
    pub out: PathBuf,
    pub teacher: ResnetStage,
    /// Where imported `ct-resnet` weights live.
    pub cache: PathBuf,
    /// Start from these `lesion-cnn` weights (a model folder); `None` starts from the
    /// bundled `lesion-cnn`, unless `from_scratch`.
    pub init: Option<PathBuf>,
    pub from_scratch: bool,
    pub config: LesionCnnConfig,
    pub epochs: usize,
    pub batch: usize,
    /// Augmented views per patch.
    pub views: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// Boxes sampled over the body on each slice.
    pub body_patches_per_slice: usize,
    /// Per archive: at most this many lesions and this many slices for body patches.
    pub max_lesions: Option<usize>,
    pub max_slices: Option<usize>,
}

impl DistillOptions {
    pub fn new(datasets: Vec<PathBuf>, out: PathBuf) -> Self {
        DistillOptions {
            datasets,
            out,
            teacher: ResnetStage::Layer2,
            cache: super::default_cache_dir(),
            init: None,
            from_scratch: false,
            config: LesionCnnConfig::default(),
            epochs: 10,
            batch: 64,
            views: 2,
            learning_rate: 1e-3,
            seed: 1,
            body_patches_per_slice: 8,
            max_lesions: None,
            max_slices: None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum DistillEvent {
    Preparing {
        done: usize,
        total: usize,
    },
    Step {
        epoch: usize,
        step: usize,
        steps: usize,
        loss: f32,
    },
    Epoch(DistillEpoch),
}

#[derive(Debug, Clone, Serialize)]
pub struct DistillEpoch {
    pub epoch: usize,
    pub mean_loss: f32,
    /// Held-out lesions: mean cosine between the student's vector and the target.
    pub held_out_cosine: f32,
    /// Held-out lesions: share whose nearest other held-out lesion is the teacher's.
    pub held_out_neighbour_agreement: f32,
    pub seconds: f64,
}

/// What one archive gave.
#[derive(Debug, Clone, Serialize)]
pub struct SourceCounts {
    pub dataset: String,
    pub training_patients: usize,
    pub lesion_patches: usize,
    pub body_slices: usize,
    pub body_patches: usize,
    /// Validation and test lesions measured, never trained on.
    pub held_out_lesions: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DistillReport {
    pub model: String,
    pub teacher: String,
    pub seed: u64,
    pub sources: Vec<SourceCounts>,
    pub patches: usize,
    pub views_per_patch: usize,
    /// Share of the teacher's variance the target subspace keeps.
    pub target_energy: f32,
    pub epochs: Vec<DistillEpoch>,
    pub weights_sha256: String,
    pub preparing_seconds: f64,
    pub training_seconds: f64,
    pub seconds: f64,
}

/// A box to cut from one slice of one archive.
#[derive(Clone)]
struct Site {
    dataset: usize,
    /// The lesion row, or a row of the same series moved to another slice with a sampled box.
    record: LesionRecord,
}

/// One slice to sample body boxes on.
struct BodySlice {
    dataset: usize,
    template: LesionRecord,
}

struct Prepared {
    /// Student views as bytes, channel-major.
    views: Vec<Vec<u8>>,
    /// The teacher's unit vector of each view.
    teacher: Vec<Vec<f32>>,
}

/// The record moved to another slice of its series.
fn on_slice(template: &LesionRecord, slice: u32) -> LesionRecord {
    let mut record = template.clone();
    record.key_slice = slice;
    record.file_name =
        LesionRecord::canonical_file_name(template.patient, template.study, template.series, slice);
    record
}

/// Slice numbers present on disk in a series folder.
fn slices_on_disk(dataset: &Dataset, template: &LesionRecord) -> Result<Vec<u32>> {
    let dir = template
        .key_slice_path(dataset.root())
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut slices = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let name = entry.map_err(|e| Error::io(&dir, e))?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_suffix(".png")
            .and_then(|s| s.parse::<u32>().ok())
        {
            slices.push(n);
        }
    }
    slices.sort_unstable();
    Ok(slices)
}

/// Boxes over the body: centres on anything denser than air outside the body (lung
/// included), sizes log-uniform from 8 to 64 mm, aspect 0.6 to 1.
fn body_boxes(image: &CtImage, mm_per_px: f32, count: usize, rng: &mut Rng) -> Vec<PixelBox> {
    let (w, h) = (image.width as f32, image.height as f32);
    let mut boxes = Vec::with_capacity(count);
    for _ in 0..count * 40 {
        if boxes.len() == count {
            break;
        }
        let side_mm = (8f32.ln() + rng.range(0.0, 1.0) * (64f32 / 8.0).ln()).exp();
        let long = side_mm / mm_per_px.max(1e-3);
        let short = long * rng.range(0.6, 1.0);
        let (bw, bh) = if rng.chance(0.5) {
            (long, short)
        } else {
            (short, long)
        };
        let cx = rng.range(bw / 2.0 + 1.0, (w - bw / 2.0 - 1.0).max(bw / 2.0 + 2.0));
        let cy = rng.range(bh / 2.0 + 1.0, (h - bh / 2.0 - 1.0).max(bh / 2.0 + 2.0));
        if cx >= w || cy >= h || image.get(cx as usize, cy as usize) < -950.0 {
            continue;
        }
        boxes.push(PixelBox::new(
            cx - bw / 2.0,
            cy - bh / 2.0,
            cx + bw / 2.0,
            cy + bh / 2.0,
        ));
    }
    boxes
}

/// Unit vectors of the teacher for a set of patches, 32 at a time.
fn teacher_vectors(teacher: &CtResnetEmbedder, patches: &[Patch]) -> Result<Vec<Vec<f32>>> {
    let mut rows = Vec::with_capacity(patches.len());
    for chunk in patches.chunks(32) {
        rows.extend(teacher.embed(chunk)?);
    }
    Ok(rows)
}

/// The rows' mean, the `dim` leading directions of their covariance (subspace iteration),
/// and the share of the variance those hold.
fn principal_subspace(
    rows: &[Vec<f32>],
    dim: usize,
    seed: u64,
) -> Result<(Vec<f32>, Vec<Vec<f32>>, f32)> {
    let d = rows.first().map_or(0, Vec::len);
    let mut mean = vec![0f32; d];
    for row in rows {
        mean.iter_mut().zip(row).for_each(|(m, x)| *m += x);
    }
    mean.iter_mut().for_each(|m| *m /= rows.len().max(1) as f32);
    let flat: Vec<f32> = rows
        .iter()
        .flat_map(|row| row.iter().zip(&mean).map(|(x, m)| x - m))
        .collect();
    let to_err = |e| candle_error("principal subspace", e);
    let t = Tensor::from_vec(flat, (rows.len(), d), &Device::Cpu).map_err(to_err)?;
    let moment =
        (t.t().map_err(to_err)?.matmul(&t).map_err(to_err)? / rows.len() as f64).map_err(to_err)?;
    let moment: Vec<Vec<f32>> = moment.to_vec2().map_err(to_err)?;
    let trace: f32 = (0..d).map(|i| moment[i][i]).sum();
    let mut rng = Rng::derive(seed, &[0x9CA]);
    let mut basis: Vec<Vec<f32>> = (0..dim)
        .map(|_| (0..d).map(|_| rng.normal()).collect())
        .collect();
    let apply = |v: &[f32]| -> Vec<f32> {
        moment
            .iter()
            .map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
            .collect()
    };
    for _ in 0..60 {
        basis = basis.iter().map(|v| apply(v)).collect();
        orthonormalise(&mut basis);
    }
    let captured: f32 = basis
        .iter()
        .map(|v| v.iter().zip(apply(v)).map(|(a, b)| a * b).sum::<f32>())
        .sum();
    Ok((mean, basis, captured / trace.max(1e-12)))
}

/// Modified Gram-Schmidt, in place.
fn orthonormalise(vectors: &mut [Vec<f32>]) {
    for i in 0..vectors.len() {
        let (done, rest) = vectors.split_at_mut(i);
        let v = &mut rest[0];
        for u in done.iter() {
            let dot: f32 = u.iter().zip(v.iter()).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(x, y)| *x -= dot * y);
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

fn project(mean: &[f32], basis: &[Vec<f32>], v: &[f32]) -> Vec<f32> {
    let centred: Vec<f32> = v.iter().zip(mean).map(|(x, m)| x - m).collect();
    let projected = basis
        .iter()
        .map(|b| b.iter().zip(&centred).map(|(a, x)| a * x).sum())
        .collect();
    super::l2_normalised(projected)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Mean cosine to the targets and nearest-neighbour agreement with them.
fn agreement(student: &[Vec<f32>], targets: &[Vec<f32>]) -> (f32, f32) {
    let n = student.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let cosine = student
        .iter()
        .zip(targets)
        .map(|(s, t)| dot(s, t))
        .sum::<f32>()
        / n as f32;
    let nearest = |vectors: &[Vec<f32>], i: usize| {
        (0..n).filter(|&j| j != i).max_by(|&a, &b| {
            dot(&vectors[i], &vectors[a]).total_cmp(&dot(&vectors[i], &vectors[b]))
        })
    };
    let agree = (0..n)
        .filter(|&i| nearest(student, i) == nearest(targets, i))
        .count();
    (cosine, agree as f32 / n as f32)
}

fn load_teacher(options: &DistillOptions) -> Result<CtResnetEmbedder> {
    let name = super::ct_resnet_model_name(options.teacher);
    let dir = options.cache.join(name);
    let card = super::read_card(&dir).map_err(|_| {
        Error::invalid_argument(
            "teacher",
            format!(
                "{name} is not in {}; run `lesion-indexer weights import` first",
                options.cache.display()
            ),
        )
    })?;
    CtResnetEmbedder::load(&dir, card)
}

/// The weights the student starts from (`None`: random), checked against its shape before
/// any work is done.
fn starting_weights(options: &DistillOptions) -> Result<Option<super::TensorFile>> {
    if options.from_scratch {
        return Ok(None);
    }
    let start: Box<dyn Embedder> = match &options.init {
        Some(dir) => super::load_model_dir(dir)?,
        None => Box::new(super::bundled_lesion_cnn()?),
    };
    let Architecture::LesionCnn { widths, dim } = &start.card().architecture else {
        return Err(Error::invalid_argument(
            "init",
            format!("{} is not a lesion-cnn", start.card().name),
        ));
    };
    if *widths != options.config.widths || *dim != options.config.dim {
        return Err(Error::invalid_argument(
            "init",
            format!(
                "{} has widths {widths:?} and dim {dim}; the student has {:?} and {}",
                start.card().name,
                options.config.widths,
                options.config.dim
            ),
        ));
    }
    Ok(Some(match &options.init {
        Some(dir) => super::TensorFile::open(&dir.join(&start.card().weights_file))?,
        None => super::bundled_lesion_cnn_weights()?,
    }))
}

/// Sets the student's variables from the starting weights, or draws them from the seed.
fn initialise(varmap: &VarMap, start: Option<&super::TensorFile>, seed: u64) -> Result<()> {
    let Some(file) = start else {
        return seed_parameters(varmap, seed);
    };
    let data = varmap.data().lock().expect("var map lock");
    for (name, var) in data.iter() {
        var.set(&file.get(name, var.dims())?)
            .map_err(|e| candle_error(name, e))?;
    }
    Ok(())
}

/// Distils the teacher into `lesion-cnn` and writes its weights, `card.json` and the
/// report (`distill_report.json`, `.md`) into `options.out`.
pub fn distill(
    options: &DistillOptions,
    progress: &(dyn Fn(DistillEvent) + Sync),
) -> Result<DistillReport> {
    let started = Instant::now();
    if options.datasets.is_empty() {
        return Err(Error::invalid_argument(
            "dataset",
            "give at least one archive",
        ));
    }
    let start = starting_weights(options)?;
    let teacher = load_teacher(options)?;
    let student_spec = lesion_cnn_patch_spec();
    let teacher_spec = ct_resnet_patch_spec(64);
    let mut slice_spec = student_spec.clone();
    slice_spec
        .channels
        .extend(teacher_spec.channels.iter().cloned());
    let datasets: Vec<Dataset> = options.datasets.iter().map(Dataset::new).collect();

    // What each archive gives: training-split lesions, their series' slices, and held-out
    // lesions for measuring.
    let mut sites = Vec::new();
    let mut body = Vec::new();
    let mut held_out = Vec::new();
    let mut sources = Vec::new();
    for (index, dataset) in datasets.iter().enumerate() {
        let mut rng = Rng::derive(options.seed, &[0xD15, index as u64]);
        let records = load_records(dataset)?;
        let present = |r: &&LesionRecord| r.key_slice_path(dataset.root()).is_file();
        let training: Vec<&LesionRecord> = records
            .iter()
            .filter(|r| r.split == Split::Train)
            .filter(present)
            .collect();
        let mut lesions = shuffled(training.clone(), &mut rng);
        lesions.truncate(options.max_lesions.unwrap_or(usize::MAX));
        let mut series = std::collections::BTreeMap::new();
        for r in &training {
            series.entry(r.series_folder().to_string()).or_insert(*r);
        }
        let mut slices = Vec::new();
        for template in series.values() {
            for s in slices_on_disk(dataset, template)? {
                slices.push(on_slice(template, s));
            }
        }
        let mut slices = shuffled(slices, &mut rng);
        slices.truncate(options.max_slices.unwrap_or(usize::MAX));
        let mut measured: Vec<&LesionRecord> = records
            .iter()
            .filter(|r| r.split != Split::Train)
            .filter(present)
            .collect();
        measured = shuffled(measured, &mut rng);
        measured.truncate(200);
        sources.push(SourceCounts {
            dataset: dataset.root().display().to_string(),
            training_patients: training
                .iter()
                .map(|r| r.patient)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            lesion_patches: lesions.len(),
            body_slices: slices.len(),
            body_patches: 0,
            held_out_lesions: measured.len(),
        });
        sites.extend(lesions.into_iter().map(|r| Site {
            dataset: index,
            record: r.clone(),
        }));
        body.extend(slices.into_iter().map(|template| BodySlice {
            dataset: index,
            template,
        }));
        held_out.extend(measured.into_iter().map(|r| (index, r.clone())));
    }

    // Body boxes, drawn per slice from its own stream.
    let drawn: Vec<Vec<Site>> = body
        .par_iter()
        .enumerate()
        .map(|(i, slice)| {
            let image = datasets[slice.dataset].load_key_slice(&slice.template)?;
            let mut rng = Rng::derive(options.seed, &[0xB0D, i as u64]);
            let boxes = body_boxes(
                &image,
                slice.template.spacing.x_mm,
                options.body_patches_per_slice,
                &mut rng,
            );
            Ok(boxes
                .into_iter()
                .map(|bbox| {
                    let mut record = slice.template.clone();
                    record.bbox = bbox;
                    Site {
                        dataset: slice.dataset,
                        record,
                    }
                })
                .collect())
        })
        .collect::<Result<_>>()?;
    for (slice, boxes) in body.iter().zip(&drawn) {
        sources[slice.dataset].body_patches += boxes.len();
    }
    sites.extend(drawn.into_iter().flatten());
    if sites.len() < 2 {
        return Err(Error::invalid_argument(
            "dataset",
            format!(
                "the archives give {} training patches; need at least 2 (only the training split is read)",
                sites.len()
            ),
        ));
    }

    // Views and the teacher's vectors, in chunks so that teacher patches never pile up.
    let mut prepared: Vec<Prepared> = Vec::with_capacity(sites.len());
    for (chunk_index, chunk) in sites.chunks(256).enumerate() {
        let views: Vec<(Vec<Vec<u8>>, Vec<Patch>)> = chunk
            .par_iter()
            .enumerate()
            .map(|(i, site)| {
                let slices = datasets[site.dataset].load_slices(&site.record, &slice_spec)?;
                let mut rng = Rng::derive(options.seed, &[0xA06, (chunk_index * 256 + i) as u64]);
                let mut student = Vec::with_capacity(options.views);
                let mut teacher_views = Vec::with_capacity(options.views);
                for _ in 0..options.views {
                    let augmentation = Augmentation::draw(&mut rng);
                    student.push(to_bytes(&augmentation.apply(
                        &slices,
                        &site.record,
                        &student_spec,
                    )?));
                    // The teacher reads the view's geometry in its own fixed window, so the
                    // target does not move with the student's window jitter: the student
                    // learns to ignore it (a scanner's calibration, a reader's window).
                    teacher_views.push(augmentation.geometric_only().apply(
                        &slices,
                        &site.record,
                        &teacher_spec,
                    )?);
                }
                Ok((student, teacher_views))
            })
            .collect::<Result<_>>()?;
        for (student, teacher_views) in views {
            prepared.push(Prepared {
                views: student,
                teacher: teacher_vectors(&teacher, &teacher_views)?,
            });
        }
        progress(DistillEvent::Preparing {
            done: prepared.len(),
            total: sites.len(),
        });
    }
    let held_out_patches: Vec<Patch> = held_out
        .par_iter()
        .map(|(d, r)| datasets[*d].lesion_patch(r, &student_spec))
        .collect::<Result<_>>()?;
    let held_out_teacher: Vec<Patch> = held_out
        .par_iter()
        .map(|(d, r)| datasets[*d].lesion_patch(r, &teacher_spec))
        .collect::<Result<_>>()?;
    let held_out_teacher = teacher_vectors(&teacher, &held_out_teacher)?;
    let preparing_seconds = started.elapsed().as_secs_f64();

    // Targets: the teacher's vectors in their principal subspace of the student's size.
    let all_teacher: Vec<Vec<f32>> = prepared
        .iter()
        .flat_map(|p| p.teacher.iter().cloned())
        .collect();
    let dim = options.config.dim;
    let (mean, basis, target_energy) =
        principal_subspace(&all_teacher, dim.min(teacher.trunk_dim()), options.seed)?;
    let targets_of = |v: &[f32]| project(&mean, &basis, v);
    drop(all_teacher);
    for p in &mut prepared {
        p.teacher = p.teacher.iter().map(|v| targets_of(v)).collect();
    }
    let held_out_targets: Vec<Vec<f32>> = held_out_teacher.iter().map(|v| targets_of(v)).collect();

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = LesionCnn::new(&options.config, vb).map_err(|e| candle_error("lesion-cnn", e))?;
    initialise(&varmap, start.as_ref(), options.seed)?;
    let mut optimizer = optimizer_for(&varmap, options.learning_rate)?;
    let card = ModelCard {
        name: format!(
            "lesion-cnn-distilled-{}",
            super::ct_resnet_model_name(options.teacher).trim_start_matches("ct-resnet-")
        ),
        architecture: Architecture::LesionCnn {
            widths: options.config.widths.clone(),
            dim,
        },
        patch: student_spec.clone(),
        output_dim: dim,
        weights_file: "model.safetensors".into(),
        weights_sha256: String::new(),
        provenance: provenance(options),
        trunk: None,
    };
    let measure = |varmap: &VarMap| -> Result<(f32, f32)> {
        let embedder = LesionCnnEmbedder::new(rebuild(varmap, &options.config)?, card.clone());
        let mut vectors = Vec::with_capacity(held_out_patches.len());
        for chunk in held_out_patches.chunks(64) {
            vectors.extend(embedder.embed(chunk)?);
        }
        Ok(agreement(&vectors, &held_out_targets))
    };

    let training_started = Instant::now();
    let mut rng = Rng::derive(options.seed, &[0x7A2]);
    let steps = prepared.len().div_ceil(options.batch);
    let total_steps = (steps * options.epochs).max(1);
    let mut epochs = Vec::new();
    let mut step_index = 0;
    for epoch in 1..=options.epochs {
        let epoch_started = Instant::now();
        let order = shuffled((0..prepared.len()).collect::<Vec<_>>(), &mut rng);
        let mut losses = Vec::new();
        for (s, chunk) in order.chunks(options.batch).enumerate() {
            if chunk.len() < 2 {
                continue;
            }
            optimizer.set_learning_rate(cosine_decay(
                options.learning_rate,
                step_index,
                total_steps,
            ));
            let picks: Vec<(usize, usize)> = chunk
                .iter()
                .map(|&i| {
                    (
                        i,
                        (rng.next_u64() % prepared[i].views.len() as u64) as usize,
                    )
                })
                .collect();
            let loss = distill_step(&model, &mut optimizer, &prepared, &picks, &student_spec)?;
            progress(DistillEvent::Step {
                epoch,
                step: s + 1,
                steps,
                loss,
            });
            losses.push(loss);
            step_index += 1;
        }
        let (held_out_cosine, held_out_neighbour_agreement) = measure(&varmap)?;
        let stats = DistillEpoch {
            epoch,
            mean_loss: losses.iter().sum::<f32>() / losses.len().max(1) as f32,
            held_out_cosine,
            held_out_neighbour_agreement,
            seconds: epoch_started.elapsed().as_secs_f64(),
        };
        progress(DistillEvent::Epoch(stats.clone()));
        epochs.push(stats);
    }
    let training_seconds = training_started.elapsed().as_secs_f64();

    std::fs::create_dir_all(&options.out).map_err(|e| Error::io(&options.out, e))?;
    let sha = publish_weights(&varmap, &options.out.join("model.safetensors"), |_| true)?;
    let card = ModelCard {
        weights_sha256: sha.clone(),
        ..card
    };
    write_card(&options.out, &card)?;
    let report = DistillReport {
        model: card.name.clone(),
        teacher: super::ct_resnet_model_name(options.teacher).to_string(),
        seed: options.seed,
        sources,
        patches: prepared.len(),
        views_per_patch: options.views,
        target_energy,
        epochs,
        weights_sha256: sha,
        preparing_seconds,
        training_seconds,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_report(&options.out, &report)?;
    Ok(report)
}

fn provenance(options: &DistillOptions) -> String {
    let datasets: Vec<String> = options
        .datasets
        .iter()
        .map(|d| format!("--dataset {}", d.display()))
        .collect();
    let limits: String = [
        options.max_lesions.map(|n| format!(" --max-lesions {n}")),
        options.max_slices.map(|n| format!(" --max-slices {n}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    format!(
        "distilled without labels by `lesion-indexer train --encoder distilled --teacher {} {}{limits} --body-patches-per-slice {} --epochs {} --seed {}` on 2 threads, from {}; training split only",
        super::ct_resnet_model_name(options.teacher),
        datasets.join(" "),
        options.body_patches_per_slice,
        options.epochs,
        options.seed,
        match (&options.init, options.from_scratch) {
            (_, true) => "random weights".to_string(),
            (Some(dir), _) => dir.display().to_string(),
            (None, _) => "the bundled lesion-cnn".to_string(),
        }
    )
}

fn distill_step(
    model: &LesionCnn,
    optimizer: &mut AdamW,
    prepared: &[Prepared],
    picks: &[(usize, usize)],
    spec: &PatchSpec,
) -> Result<f32> {
    let (n, c, m) = (spec.size_px, spec.channels.len(), picks.len());
    let mut data = Vec::with_capacity(m * c * n * n);
    let mut target = Vec::with_capacity(m * prepared[0].teacher[0].len());
    for &(i, v) in picks {
        data.extend(prepared[i].views[v].iter().map(|&b| f32::from(b) / 255.0));
        target.extend_from_slice(&prepared[i].teacher[v]);
    }
    let dev = Device::Cpu;
    let run = || -> candle_core::Result<(Tensor, f32)> {
        let x = Tensor::from_vec(data, (m, c, n, n), &dev)?;
        let out = model.forward_t(&x, true)?;
        let norm = out.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-6, f64::MAX)?;
        let student = out.broadcast_div(&norm)?;
        let target = Tensor::from_vec(target, (m, out.dim(1)?), &dev)?;
        let cosine = (&student * &target)?.sum(1)?;
        let direct = (1.0 - cosine)?.mean_all()?;
        let relations = (student.matmul(&student.t()?)? - target.matmul(&target.t()?)?)?
            .sqr()?
            .mean_all()?;
        let loss = (direct + relations)?;
        let value = loss.to_scalar::<f32>()?;
        Ok((loss, value))
    };
    let (loss, value) = run().map_err(|e| candle_error("distillation step", e))?;
    optimizer
        .backward_step(&loss)
        .map_err(|e| candle_error("distillation step", e))?;
    Ok(value)
}

fn write_report(dir: &Path, report: &DistillReport) -> Result<()> {
    let json = dir.join("distill_report.json");
    crate::fsutil::write_atomically(&json, |w| {
        w.write_all(
            serde_json::to_string_pretty(report)
                .unwrap_or_default()
                .as_bytes(),
        )
    })?;
    let mut md = format!(
        "# Distillation report: {}\n\nTeacher `{}`, seed {}, {} patches x {} views, {:.0} s preparing (teacher included), {:.0} s training, {:.0} s in all. Target subspace keeps {:.1}% of the teacher's variance.\n\n| archive | training patients | lesion patches | body slices | body patches | held-out lesions |\n|---|---:|---:|---:|---:|---:|\n",
        report.model,
        report.teacher,
        report.seed,
        report.patches,
        report.views_per_patch,
        report.preparing_seconds,
        report.training_seconds,
        report.seconds,
        100.0 * report.target_energy
    );
    for s in &report.sources {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            s.dataset,
            s.training_patients,
            s.lesion_patches,
            s.body_slices,
            s.body_patches,
            s.held_out_lesions
        ));
    }
    md.push_str("\nOnly training-split patients give patches; held-out lesions are the validation and test splits.\n\n| epoch | mean loss | held-out cosine to teacher | nearest neighbour as teacher's | seconds |\n|---:|---:|---:|---:|---:|\n");
    for e in &report.epochs {
        md.push_str(&format!(
            "| {} | {:.4} | {:.3} | {:.3} | {:.0} |\n",
            e.epoch, e.mean_loss, e.held_out_cosine, e.held_out_neighbour_agreement, e.seconds
        ));
    }
    let path = dir.join("distill_report.md");
    crate::fsutil::write_atomically(&path, |w| w.write_all(md.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_subspace_finds_the_dominant_directions() {
        // Rows spread along e0 (large) and e1 (smaller), barely along e2.
        let mut rng = Rng::new(3);
        let rows: Vec<Vec<f32>> = (0..500)
            .map(|_| vec![3.0 * rng.normal(), 1.5 * rng.normal(), 0.05 * rng.normal()])
            .collect();
        let (mean, basis, energy) = principal_subspace(&rows, 2, 1).unwrap();
        assert!(mean.iter().all(|m| m.abs() < 0.3), "{mean:?}");
        assert!(basis[0][0].abs() > 0.99, "{basis:?}");
        assert!(basis[1][1].abs() > 0.99, "{basis:?}");
        assert!(energy > 0.99 && energy <= 1.0001, "{energy}");
    }

    #[test]
    fn body_boxes_avoid_the_air_around_the_body() {
        // Air everywhere but a soft-tissue square in the middle.
        let mut pixels = vec![-1000.0; 128 * 128];
        for y in 40..88 {
            for x in 40..88 {
                pixels[y * 128 + x] = 40.0;
            }
        }
        let image = CtImage::new_hounsfield(128, 128, pixels);
        let boxes = body_boxes(&image, 1.0, 20, &mut Rng::new(5));
        assert_eq!(boxes.len(), 20);
        for b in boxes {
            let c = b.center();
            assert!(
                (40.0..88.0).contains(&c.x) && (40.0..88.0).contains(&c.y),
                "{b:?}"
            );
            assert!((7.9..=64.1).contains(&b.width().max(b.height())), "{b:?}");
        }
    }

    #[test]
    fn agreement_is_full_for_identical_vectors_and_drops_for_swapped_ones() {
        let v = vec![
            vec![1.0, 0.0],
            vec![0.9, (1.0f32 - 0.81).sqrt()],
            vec![0.0, 1.0],
        ];
        assert_eq!(agreement(&v, &v), (1.0, 1.0));
        let swapped = vec![v[2].clone(), v[1].clone(), v[0].clone()];
        assert!(agreement(&swapped, &v).0 < 0.5);
    }
}
