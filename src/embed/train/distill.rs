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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, VarBuilder, VarMap};
use rayon::prelude::*;
use serde::Serialize;

use super::params::{publish_weights, rebuild, seed_parameters};
use super::schedule::{run_epochs, shuffled, EpochEnd, LoopEvent, Objective, Schedule};
use super::views::{bytes_to_floats, to_bytes, Augmentation};
use super::{embed_in_batches, lesion_cnn_patch_spec, load_records, write_report_files};
use crate::dataset::{Dataset, LesionRecord, PixelBox, Split};
use crate::embed::card::{Architecture, ModelCard, ResnetStage};
use crate::embed::import::write_card;
use crate::embed::lesion_cnn::{LesionCnn, LesionCnnConfig};
use crate::embed::weights::candle_error;
use crate::embed::{
    ct_resnet_model_name, ct_resnet_patch_spec, CtResnetEmbedder, Embedder, LesionCnnEmbedder,
    TensorFile,
};
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
            cache: crate::embed::default_cache_dir(),
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
    /// The teacher's unit vector of each view, then its target.
    teacher: Vec<Vec<f32>>,
}

/// The patch specs of a run: the student's, the teacher's, and the slices both read.
struct Specs {
    student: PatchSpec,
    teacher: PatchSpec,
    slices: PatchSpec,
}

impl Specs {
    fn new() -> Self {
        let student = lesion_cnn_patch_spec();
        let teacher = ct_resnet_patch_spec(64);
        let mut slices = student.clone();
        slices.channels.extend(teacher.channels.iter().cloned());
        Specs {
            student,
            teacher,
            slices,
        }
    }
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
    let teacher = super::load_ct_resnet(&options.cache, options.teacher, "teacher")?;
    let specs = Specs::new();
    let datasets: Vec<Dataset> = options.datasets.iter().map(Dataset::new).collect();
    let (sites, held_out, sources) = training_sites(&datasets, options)?;
    let mut prepared = prepare_views(&datasets, &sites, &specs, &teacher, options, progress)?;
    let held_out_patches: Vec<Patch> = held_out
        .par_iter()
        .map(|(d, r)| datasets[*d].lesion_patch(r, &specs.student))
        .collect::<Result<_>>()?;
    let held_out_teacher: Vec<Patch> = held_out
        .par_iter()
        .map(|(d, r)| datasets[*d].lesion_patch(r, &specs.teacher))
        .collect::<Result<_>>()?;
    let held_out_teacher = embed_in_batches(&teacher, &held_out_teacher, 32)?;
    let preparing_seconds = started.elapsed().as_secs_f64();

    let dim = options.config.dim.min(teacher.trunk_dim());
    let (held_out_targets, target_energy) =
        to_targets(&mut prepared, &held_out_teacher, dim, options.seed)?;
    let student = Student::new(
        options,
        start.as_ref(),
        prepared,
        held_out_patches,
        held_out_targets,
    )?;
    let training_started = Instant::now();
    let epochs = student.run_epochs(progress)?;
    let training_seconds = training_started.elapsed().as_secs_f64();

    let card = student.save()?;
    let report = DistillReport {
        model: card.name.clone(),
        teacher: ct_resnet_model_name(options.teacher).to_string(),
        seed: options.seed,
        sources,
        patches: student.prepared.len(),
        views_per_patch: options.views,
        target_energy,
        epochs,
        weights_sha256: card.weights_sha256,
        preparing_seconds,
        training_seconds,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_report(&options.out, &report)?;
    Ok(report)
}

/// Held-out lesions to measure on, as (archive, record).
type HeldOut = Vec<(usize, LesionRecord)>;

/// Every archive's training sites (its lesions, then body boxes on its slices), the
/// held-out lesions and what each archive gave.
fn training_sites(
    datasets: &[Dataset],
    options: &DistillOptions,
) -> Result<(Vec<Site>, HeldOut, Vec<SourceCounts>)> {
    let mut sites = Vec::new();
    let mut body = Vec::new();
    let mut held_out = Vec::new();
    let mut sources = Vec::new();
    for (index, dataset) in datasets.iter().enumerate() {
        let archive = ArchiveSources::read(index, dataset, options)?;
        sites.extend(archive.lesions.into_iter().map(|record| Site {
            dataset: index,
            record,
        }));
        body.extend(archive.slices.into_iter().map(|template| BodySlice {
            dataset: index,
            template,
        }));
        held_out.extend(archive.measured.into_iter().map(|r| (index, r)));
        sources.push(archive.counts);
    }
    let drawn = body_sites(datasets, &body, options)?;
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
    Ok((sites, held_out, sources))
}

/// What one archive gives: training-split lesions, their series' slices, and held-out
/// lesions for measuring, each shuffled from the archive's own stream and capped.
struct ArchiveSources {
    lesions: Vec<LesionRecord>,
    slices: Vec<LesionRecord>,
    measured: Vec<LesionRecord>,
    counts: SourceCounts,
}

impl ArchiveSources {
    fn read(index: usize, dataset: &Dataset, options: &DistillOptions) -> Result<Self> {
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
        let mut slices = shuffled(series_slices(dataset, &training)?, &mut rng);
        slices.truncate(options.max_slices.unwrap_or(usize::MAX));
        let measured: Vec<&LesionRecord> = records
            .iter()
            .filter(|r| r.split != Split::Train)
            .filter(present)
            .collect();
        let mut measured = shuffled(measured, &mut rng);
        measured.truncate(200);
        let counts = SourceCounts {
            dataset: dataset.root().display().to_string(),
            training_patients: training
                .iter()
                .map(|r| r.patient)
                .collect::<BTreeSet<_>>()
                .len(),
            lesion_patches: lesions.len(),
            body_slices: slices.len(),
            body_patches: 0,
            held_out_lesions: measured.len(),
        };
        Ok(ArchiveSources {
            lesions: lesions.into_iter().cloned().collect(),
            slices,
            measured: measured.into_iter().cloned().collect(),
            counts,
        })
    }
}

/// Every slice on disk of the lesions' series, each as its series' first lesion row moved
/// to that slice, series in name order.
fn series_slices(dataset: &Dataset, lesions: &[&LesionRecord]) -> Result<Vec<LesionRecord>> {
    let mut series = BTreeMap::new();
    for r in lesions {
        series.entry(r.series_folder().to_string()).or_insert(*r);
    }
    let mut slices = Vec::new();
    for template in series.values() {
        for s in slices_on_disk(dataset, template)? {
            slices.push(on_slice(template, s));
        }
    }
    Ok(slices)
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

/// Body boxes of each slice, drawn per slice from its own stream.
fn body_sites(
    datasets: &[Dataset],
    body: &[BodySlice],
    options: &DistillOptions,
) -> Result<Vec<Vec<Site>>> {
    body.par_iter()
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
        .collect()
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

/// Views and the teacher's vectors of every site, in chunks so that teacher patches never
/// pile up.
fn prepare_views(
    datasets: &[Dataset],
    sites: &[Site],
    specs: &Specs,
    teacher: &CtResnetEmbedder,
    options: &DistillOptions,
    progress: &(dyn Fn(DistillEvent) + Sync),
) -> Result<Vec<Prepared>> {
    let mut prepared: Vec<Prepared> = Vec::with_capacity(sites.len());
    for (chunk_index, chunk) in sites.chunks(256).enumerate() {
        let views: Vec<(Vec<Vec<u8>>, Vec<Patch>)> = chunk
            .par_iter()
            .enumerate()
            .map(|(i, site)| {
                let mut rng = Rng::derive(options.seed, &[0xA06, (chunk_index * 256 + i) as u64]);
                site_views(
                    &datasets[site.dataset],
                    site,
                    specs,
                    options.views,
                    &mut rng,
                )
            })
            .collect::<Result<_>>()?;
        for (student, teacher_views) in views {
            prepared.push(Prepared {
                views: student,
                teacher: embed_in_batches(teacher, &teacher_views, 32)?,
            });
        }
        progress(DistillEvent::Preparing {
            done: prepared.len(),
            total: sites.len(),
        });
    }
    Ok(prepared)
}

/// `count` augmented views of a site: the student's as bytes, the teacher's as patches.
fn site_views(
    dataset: &Dataset,
    site: &Site,
    specs: &Specs,
    count: usize,
    rng: &mut Rng,
) -> Result<(Vec<Vec<u8>>, Vec<Patch>)> {
    let slices = dataset.load_slices(&site.record, &specs.slices)?;
    let mut student = Vec::with_capacity(count);
    let mut teacher = Vec::with_capacity(count);
    for _ in 0..count {
        let augmentation = Augmentation::draw(rng);
        student.push(to_bytes(&augmentation.apply(
            &slices,
            &site.record,
            &specs.student,
        )?));
        // The teacher reads the view's geometry in its own fixed window, so the target does
        // not move with the student's window jitter: the student learns to ignore it (a
        // scanner's calibration, a reader's window).
        teacher.push(
            augmentation
                .geometric_only()
                .apply(&slices, &site.record, &specs.teacher)?,
        );
    }
    Ok((student, teacher))
}

/// Replaces every view's teacher vector by its target (the teacher's vectors in their
/// principal subspace of `dim` directions) and returns the held-out lesions' targets and
/// the share of the variance the subspace keeps.
fn to_targets(
    prepared: &mut [Prepared],
    held_out_teacher: &[Vec<f32>],
    dim: usize,
    seed: u64,
) -> Result<(Vec<Vec<f32>>, f32)> {
    let all_teacher: Vec<Vec<f32>> = prepared
        .iter()
        .flat_map(|p| p.teacher.iter().cloned())
        .collect();
    let (mean, basis, target_energy) = principal_subspace(&all_teacher, dim, seed)?;
    drop(all_teacher);
    let targets_of = |v: &[f32]| project(&mean, &basis, v);
    for p in prepared.iter_mut() {
        p.teacher = p.teacher.iter().map(|v| targets_of(v)).collect();
    }
    let held_out = held_out_teacher.iter().map(|v| targets_of(v)).collect();
    Ok((held_out, target_energy))
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
    crate::embed::l2_normalised(projected)
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

/// The weights the student starts from (`None`: random), checked against its shape before
/// any work is done.
fn starting_weights(options: &DistillOptions) -> Result<Option<TensorFile>> {
    if options.from_scratch {
        return Ok(None);
    }
    let start: Box<dyn Embedder> = match &options.init {
        Some(dir) => crate::embed::load_model_dir(dir)?,
        None => Box::new(crate::embed::bundled_lesion_cnn()?),
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
        Some(dir) => TensorFile::open(&dir.join(&start.card().weights_file))?,
        None => crate::embed::bundled_lesion_cnn_weights()?,
    }))
}

/// Sets the student's variables from the starting weights, or draws them from the seed.
fn initialise(varmap: &VarMap, start: Option<&TensorFile>, seed: u64) -> Result<()> {
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

/// The network being taught, its prepared views with their targets, and the held-out
/// lesions it is measured on.
struct Student<'a> {
    options: &'a DistillOptions,
    spec: PatchSpec,
    varmap: VarMap,
    model: LesionCnn,
    card: ModelCard,
    prepared: Vec<Prepared>,
    held_out_patches: Vec<Patch>,
    held_out_targets: Vec<Vec<f32>>,
}

impl<'a> Student<'a> {
    fn new(
        options: &'a DistillOptions,
        start: Option<&TensorFile>,
        prepared: Vec<Prepared>,
        held_out_patches: Vec<Patch>,
        held_out_targets: Vec<Vec<f32>>,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model =
            LesionCnn::new(&options.config, vb).map_err(|e| candle_error("lesion-cnn", e))?;
        initialise(&varmap, start, options.seed)?;
        let spec = lesion_cnn_patch_spec();
        let card = card_template(options, &spec);
        Ok(Student {
            options,
            spec,
            varmap,
            model,
            card,
            prepared,
            held_out_patches,
            held_out_targets,
        })
    }

    /// The shared loop over the prepared patches, with the held-out measures after every
    /// epoch.
    fn run_epochs(&self, progress: &(dyn Fn(DistillEvent) + Sync)) -> Result<Vec<DistillEpoch>> {
        let options = self.options;
        let schedule = Schedule {
            epochs: options.epochs,
            batch: options.batch,
            learning_rate: options.learning_rate,
            seed: options.seed,
            stream: 0x7A2,
        };
        run_epochs(
            self,
            &self.varmap,
            self.prepared.len(),
            &schedule,
            &|event| {
                progress(match event {
                    LoopEvent::Step {
                        epoch,
                        step,
                        steps,
                        loss,
                    } => DistillEvent::Step {
                        epoch,
                        step,
                        steps,
                        loss,
                    },
                    LoopEvent::Epoch(stats) => DistillEvent::Epoch(stats.clone()),
                })
            },
        )
    }

    /// Mean cosine to the held-out targets and nearest-neighbour agreement with them.
    fn measure(&self) -> Result<(f32, f32)> {
        let embedder = LesionCnnEmbedder::new(
            rebuild(&self.varmap, &self.options.config)?,
            self.card.clone(),
        );
        let vectors = embed_in_batches(&embedder, &self.held_out_patches, 64)?;
        Ok(agreement(&vectors, &self.held_out_targets))
    }

    /// Writes the weights and their card; returns the card.
    fn save(&self) -> Result<ModelCard> {
        let out = &self.options.out;
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let sha = publish_weights(&self.varmap, &out.join("model.safetensors"), |_| true)?;
        let card = ModelCard {
            weights_sha256: sha,
            ..self.card.clone()
        };
        write_card(out, &card)?;
        Ok(card)
    }

    /// The cosine distance of each picked view to its target plus the squared difference of
    /// the batch's similarity matrices.
    fn loss(&self, picks: &[(usize, usize)]) -> candle_core::Result<Tensor> {
        let (n, c, m) = (self.spec.size_px, self.spec.channels.len(), picks.len());
        let prepared = &self.prepared;
        let mut data = Vec::with_capacity(m * c * n * n);
        let mut target = Vec::with_capacity(m * prepared[0].teacher[0].len());
        for &(i, v) in picks {
            data.extend(bytes_to_floats(&prepared[i].views[v]));
            target.extend_from_slice(&prepared[i].teacher[v]);
        }
        let dev = Device::Cpu;
        let x = Tensor::from_vec(data, (m, c, n, n), &dev)?;
        let out = self.model.forward_t(&x, true)?;
        let norm = out.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-6, f64::MAX)?;
        let student = out.broadcast_div(&norm)?;
        let target = Tensor::from_vec(target, (m, out.dim(1)?), &dev)?;
        let cosine = (&student * &target)?.sum(1)?;
        let direct = (1.0 - cosine)?.mean_all()?;
        let relations = (student.matmul(&student.t()?)? - target.matmul(&target.t()?)?)?
            .sqr()?
            .mean_all()?;
        direct + relations
    }
}

impl Objective for Student<'_> {
    type Epoch = DistillEpoch;

    /// One view of each patch of the batch, drawn from the stream.
    fn step(&self, optimizer: &mut AdamW, batch: &[usize], rng: &mut Rng) -> Result<f32> {
        let picks: Vec<(usize, usize)> = batch
            .iter()
            .map(|&i| {
                let views = self.prepared[i].views.len() as u64;
                (i, (rng.next_u64() % views) as usize)
            })
            .collect();
        let to_err = |e| candle_error("distillation step", e);
        let loss = self.loss(&picks).map_err(to_err)?;
        let value = loss.to_scalar::<f32>().map_err(to_err)?;
        optimizer.backward_step(&loss).map_err(to_err)?;
        Ok(value)
    }

    fn end_epoch(&self, end: EpochEnd) -> Result<DistillEpoch> {
        let (held_out_cosine, held_out_neighbour_agreement) = self.measure()?;
        Ok(DistillEpoch {
            epoch: end.epoch,
            mean_loss: end.mean_loss,
            held_out_cosine,
            held_out_neighbour_agreement,
            seconds: end.seconds(),
        })
    }
}

/// The student's card before its weights exist.
fn card_template(options: &DistillOptions, spec: &PatchSpec) -> ModelCard {
    ModelCard {
        name: format!(
            "lesion-cnn-distilled-{}",
            ct_resnet_model_name(options.teacher).trim_start_matches("ct-resnet-")
        ),
        architecture: Architecture::LesionCnn {
            widths: options.config.widths.clone(),
            dim: options.config.dim,
        },
        patch: spec.clone(),
        output_dim: options.config.dim,
        weights_file: "model.safetensors".into(),
        weights_sha256: String::new(),
        provenance: provenance(options),
        trunk: None,
    }
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
        ct_resnet_model_name(options.teacher),
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

fn write_report(dir: &Path, report: &DistillReport) -> Result<()> {
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
    write_report_files(dir, "distill_report", report, &md)
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
