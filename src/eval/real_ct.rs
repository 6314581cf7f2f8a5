//! Models judged on real CT: DeepLesion's real key slices (and their neighbours where the
//! series is there) with the table's boxes, DLT's real same-lesion pairs among them, real
//! DICOM CT slices, and masked real chest CT volumes. Only DeepLesion's validation and test
//! patients are judged (its own patient-level split), so a model distilled on the training
//! split is never judged on a patient it learnt from. Every figure carries its count,
//! because real data here is small.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::bone_lesions::{bone_lesion_markdown, BoneLesionFigures};
use super::perturb::{auc, perturbed, perturbed_patch, rank_of, reidentification_ranks};
pub use super::perturb::{Perturbation, RankCounts, PERTURBATIONS};
use crate::dataset::{geometry_of, Dataset, DlInfoReader, LesionRecord, PixelBox};
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::eval::FollowUpPair;
use crate::followup::table::{resolve_pairs, LesionTable};
use crate::imaging::{extract_patch, CtImage, Patch, PatchGeometry, PatchSpec, SliceStack};

/// What one model scored on the real slices.
#[derive(Debug, Clone, Serialize)]
pub struct RealCtFigures {
    pub model: String,
    /// Real lesions whose key slice is present (the database of every query).
    pub lesions: usize,
    /// Each lesion found again from its own slice under each perturbation.
    pub reidentification: RankCounts,
    pub reidentification_by_perturbation: Vec<(Perturbation, RankCounts)>,
    /// DLT pairs whose two slices are present: the target's rank among all the lesions
    /// except the source.
    pub same_lesion_across_studies: RankCounts,
    /// Patches per second on this machine, batch of 1 and of 32 (real patches).
    pub patches_per_second_batch_1: f32,
    pub patches_per_second_batch_32: f32,
}

/// Where the real data is.
#[derive(Debug, Clone)]
pub struct RealCtInputs {
    /// A folder with `Images_png/` and `DL_info.csv` or `DL_info_partial.csv`.
    pub deeplesion: PathBuf,
    /// DLT-format pairs (`valid.json`).
    pub pairs: Vec<FollowUpPair>,
}

/// The table of a real DeepLesion folder: `DL_info.csv`, or the partial copy.
pub fn real_table(dir: &Path) -> Result<PathBuf> {
    ["DL_info.csv", "DL_info_partial.csv"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Index {
            path: dir.to_path_buf(),
            message: "holds neither DL_info.csv nor DL_info_partial.csv".into(),
        })
}

/// The table's validation and test lesions whose key slice is present under the folder.
pub fn present_lesions(dir: &Path) -> Result<Vec<LesionRecord>> {
    let mut records = Vec::new();
    for row in DlInfoReader::open(&real_table(dir)?)? {
        let record = row?.record;
        if record.split != crate::dataset::Split::Train && record.key_slice_path(dir).is_file() {
            records.push(record);
        }
    }
    Ok(records)
}

/// Scores one model on the real slices.
pub fn evaluate_real_ct(
    name: &str,
    embedder: &dyn Embedder,
    inputs: &RealCtInputs,
) -> Result<RealCtFigures> {
    let records = judged_real_lesions(&inputs.deeplesion)?;
    let patches = real_patches(
        &Dataset::new(&inputs.deeplesion),
        &records,
        &embedder.card().patch,
    )?;
    let vectors = embedder.embed(&patches.stored)?;
    let query_patches: Vec<Patch> = patches.queries.iter().map(|(_, _, p)| p.clone()).collect();
    let query_vectors = embedder.embed(&query_patches)?;
    let (reidentification, by_perturbation) =
        reidentification_ranks(&vectors, &patches.queries, &query_vectors);
    Ok(RealCtFigures {
        model: name.to_string(),
        lesions: records.len(),
        reidentification,
        reidentification_by_perturbation: by_perturbation,
        same_lesion_across_studies: same_lesion_ranks(&records, &inputs.pairs, &vectors),
        patches_per_second_batch_1: patches_per_second(embedder, &patches.stored, 1)?,
        patches_per_second_batch_32: patches_per_second(embedder, &patches.stored, 32)?,
    })
}

/// The present validation and test lesions, refused where there are none.
fn judged_real_lesions(dir: &Path) -> Result<Vec<LesionRecord>> {
    let records = present_lesions(dir)?;
    if records.is_empty() {
        return Err(Error::Index {
            path: dir.to_path_buf(),
            message:
                "no validation or test lesion of the table has its key slice under Images_png/"
                    .into(),
        });
    }
    Ok(records)
}

/// Each lesion's own patch, and its queries: (lesion, perturbation, patch), in the order of
/// [`PERTURBATIONS`].
struct RealPatches {
    stored: Vec<Patch>,
    queries: Vec<(usize, Perturbation, Patch)>,
}

fn real_patches(
    dataset: &Dataset,
    records: &[LesionRecord],
    spec: &PatchSpec,
) -> Result<RealPatches> {
    let mut stored: Vec<Patch> = Vec::with_capacity(records.len());
    let mut queries: Vec<(usize, Perturbation, Patch)> = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let slices = dataset.load_slices(record, spec)?;
        let geometry = geometry_of(record);
        stored.push(extract_patch(&slices.stack(), &geometry, spec)?);
        for p in PERTURBATIONS {
            queries.push((
                i,
                p,
                perturbed_patch(&slices.key, &slices.neighbours, &geometry, p, spec)?,
            ));
        }
    }
    Ok(RealPatches { stored, queries })
}

/// The pairs' targets ranked from their sources, the source itself left out.
fn same_lesion_ranks(
    records: &[LesionRecord],
    pairs: &[FollowUpPair],
    vectors: &[Vec<f32>],
) -> RankCounts {
    let table = LesionTable::new(records.to_vec());
    let (pairs, _) = resolve_pairs(&table, pairs);
    let mut across = RankCounts::default();
    for pair in pairs {
        across.add(rank_of(
            vectors,
            &vectors[pair.source],
            pair.target,
            Some(pair.source),
        ));
    }
    across
}

/// Real patches embedded per second in batches of `batch` (at least 64 patches timed).
fn patches_per_second(embedder: &dyn Embedder, stored: &[Patch], batch: usize) -> Result<f32> {
    let batch: Vec<Patch> = stored.iter().cycle().take(batch).cloned().collect();
    let rounds = (64 / batch.len()).max(1);
    let started = Instant::now();
    for _ in 0..rounds {
        embedder.embed(&batch)?;
    }
    Ok((rounds * batch.len()) as f32 / started.elapsed().as_secs_f32().max(1e-9))
}

/// The figures of several models as a Markdown table, each with its n.
pub fn real_ct_markdown(figures: &[RealCtFigures]) -> String {
    let mut out = String::from(
        "| model | lesions | re-identified at rank 1 (jitter, scale, HU shift) | same lesion across studies: rank 1 / top 5 | patches/s (batch 1 / 32) |\n|---|---:|---:|---:|---:|\n",
    );
    for f in figures {
        let r = &f.reidentification;
        let a = &f.same_lesion_across_studies;
        out.push_str(&format!(
            "| `{}` | {} | {}/{} | {}/{}, {}/{} | {:.0} / {:.0} |\n",
            f.model,
            f.lesions,
            r.rank_1,
            r.queries,
            a.rank_1,
            a.queries,
            a.top_5,
            a.queries,
            f.patches_per_second_batch_1,
            f.patches_per_second_batch_32
        ));
    }
    out
}

/// A CT volume with a tumour mask (pyradiomics' `lung1`, `lung2`).
pub struct MaskedVolume {
    pub name: String,
    pub image: crate::imaging::Volume,
    pub mask: crate::imaging::Volume,
}

/// How a model fares on one masked volume.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeFigures {
    pub volume: String,
    /// Slices where the mask holds at least 10 voxels: one tumour patch each.
    pub tumour_slices: usize,
    /// Patches of the same size over other tissue of the same slices (4 per tumour slice).
    pub normal_patches: usize,
    /// Each tumour patch asked among every other patch of the volume: its nearest is the
    /// tumour on an adjacent slice (within 2).
    pub neighbouring_slice_found: RankCounts,
    /// Tumour against normal tissue, scored by the nearest tumour patch of the other volume.
    pub tumour_vs_normal_auc: Option<f32>,
}

struct VolumePatches {
    /// (slice, is tumour)
    labels: Vec<(usize, bool)>,
    vectors: Vec<Vec<f32>>,
}

fn volume_patches(v: &MaskedVolume, embedder: &dyn Embedder) -> Result<VolumePatches> {
    check_mask_fits(v)?;
    let [w, h, d] = v.image.sizes;
    let spec = &embedder.card().patch;
    let mut boxes_stream = XorShift::new(0x9e37_79b9_7f4a_7c15u64 ^ (w * h * d) as u64);
    let mut patches = Vec::new();
    let mut labels = Vec::new();
    for z in 0..d {
        let Some(tumour) = tumour_box(v.mask.slice(z), w, h) else {
            continue;
        };
        let key = volume_slice(v, z);
        let neighbours = neighbour_slices(v, z);
        let stack = SliceStack {
            key: &key,
            neighbours: neighbours.iter().map(|(o, s)| (*o, s)).collect(),
        };
        patches.push(extract_patch(&stack, &volume_geometry(v, tumour), spec)?);
        labels.push((z, true));
        for normal in normal_tissue_boxes(&key, tumour, &mut boxes_stream) {
            patches.push(extract_patch(&stack, &volume_geometry(v, normal), spec)?);
            labels.push((z, false));
        }
    }
    let vectors = embedder.embed(&patches)?;
    Ok(VolumePatches { labels, vectors })
}

fn check_mask_fits(v: &MaskedVolume) -> Result<()> {
    if v.mask.sizes != v.image.sizes {
        return Err(Error::Index {
            path: PathBuf::from(&v.name),
            message: format!(
                "the mask is {:?} voxels, the image {:?}",
                v.mask.sizes, v.image.sizes
            ),
        });
    }
    Ok(())
}

/// A fixed xorshift stream, so that the normal-tissue boxes are the same on every run.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The box around a slice's mask, where it holds at least 10 voxels.
fn tumour_box(mask: &[f32], w: usize, h: usize) -> Option<PixelBox> {
    let (mut x1, mut y1, mut x2, mut y2, mut n) = (w, h, 0, 0, 0usize);
    for (i, m) in mask.iter().enumerate() {
        if *m > 0.0 {
            let (x, y) = (i % w, i / w);
            (x1, y1, x2, y2) = (x1.min(x), y1.min(y), x2.max(x), y2.max(y));
            n += 1;
        }
    }
    (n >= 10).then(|| PixelBox::new(x1 as f32, y1 as f32, x2 as f32, y2 as f32))
}

/// Slice `z` of the volume as a CT image with the volume's pixel spacing.
fn volume_slice(v: &MaskedVolume, z: usize) -> CtImage {
    let [w, h, _] = v.image.sizes;
    let mut image = CtImage::new_hounsfield(w, h, v.image.slice(z).to_vec());
    image.spacing_mm = Some((v.image.spacing_mm[0], v.image.spacing_mm[1]));
    image
}

/// The slices up to 3 on either side of `z` that the volume holds, by offset.
fn neighbour_slices(v: &MaskedVolume, z: usize) -> Vec<(i32, CtImage)> {
    let d = v.image.sizes[2];
    (-3i32..=3)
        .filter(|o| *o != 0)
        .filter_map(|o| {
            let zz = z as i32 + o;
            (0..d as i32)
                .contains(&zz)
                .then(|| (o, volume_slice(v, zz as usize)))
        })
        .collect()
}

fn volume_geometry(v: &MaskedVolume, bbox: PixelBox) -> PatchGeometry {
    PatchGeometry {
        bbox,
        spacing_mm: (v.image.spacing_mm[0], v.image.spacing_mm[1]),
        slice_interval_mm: v.image.spacing_mm[2],
        own_window: None,
    }
}

/// Up to 4 boxes of the tumour's size (at least 8 px) from 400 draws of the stream.
fn normal_tissue_boxes(key: &CtImage, tumour: PixelBox, stream: &mut XorShift) -> Vec<PixelBox> {
    let (w, h) = (key.width, key.height);
    // Normal tissue: same-size boxes centred on soft tissue or organ (-200..300 HU),
    // clear of the tumour's box.
    let (bw, bh) = (tumour.width().max(8.0), tumour.height().max(8.0));
    let mut boxes = Vec::new();
    for _ in 0..400 {
        if boxes.len() == 4 {
            break;
        }
        let cx = (stream.next() % w as u64) as f32;
        let cy = (stream.next() % h as u64) as f32;
        let b = PixelBox::new(cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0);
        let inside = b.x1 >= 0.0 && b.y1 >= 0.0 && b.x2 < w as f32 && b.y2 < h as f32;
        let clear = b.x2 < tumour.x1 - 4.0
            || b.x1 > tumour.x2 + 4.0
            || b.y2 < tumour.y1 - 4.0
            || b.y1 > tumour.y2 + 4.0;
        let hu = key.pixels[cy as usize * w + cx as usize];
        if inside && clear && (-200.0..=300.0).contains(&hu) {
            boxes.push(b);
        }
    }
    boxes
}

/// Scores one model on masked volumes: neighbouring-slice retrieval within each, tumour
/// against normal tissue across them.
pub fn evaluate_volumes(
    embedder: &dyn Embedder,
    volumes: &[MaskedVolume],
) -> Result<Vec<VolumeFigures>> {
    let all: Vec<VolumePatches> = volumes
        .iter()
        .map(|v| volume_patches(v, embedder))
        .collect::<Result<_>>()?;
    let mut figures = Vec::new();
    for (i, (v, p)) in volumes.iter().zip(&all).enumerate() {
        let mut found = RankCounts::default();
        for (q, (z, tumour)) in p.labels.iter().enumerate() {
            if !tumour {
                continue;
            }
            let nearest = p
                .vectors
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != q)
                .max_by(|a, b| {
                    crate::index::dot(&p.vectors[q], a.1)
                        .total_cmp(&crate::index::dot(&p.vectors[q], b.1))
                })
                .map(|(j, _)| p.labels[j]);
            let right = nearest.is_some_and(|(zz, t)| t && zz.abs_diff(*z) <= 2);
            found.add(if right { 1 } else { 2 });
        }
        let references: Vec<&Vec<f32>> = all
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, o)| {
                o.labels
                    .iter()
                    .zip(&o.vectors)
                    .filter(|(l, _)| l.1)
                    .map(|(_, v)| v)
            })
            .collect();
        let score = |v: &Vec<f32>| {
            references
                .iter()
                .map(|r| crate::index::dot(v, r))
                .fold(f32::NEG_INFINITY, f32::max)
        };
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        if !references.is_empty() {
            for (l, v) in p.labels.iter().zip(&p.vectors) {
                if l.1 {
                    pos.push(score(v));
                } else {
                    neg.push(score(v));
                }
            }
        }
        figures.push(VolumeFigures {
            volume: v.name.clone(),
            tumour_slices: p.labels.iter().filter(|l| l.1).count(),
            normal_patches: p.labels.iter().filter(|l| !l.1).count(),
            neighbouring_slice_found: found,
            tumour_vs_normal_auc: auc(&pos, &neg),
        });
    }
    Ok(figures)
}

/// pyradiomics' chest CT volumes with their tumour masks in `dir` (`lung1_image.nrrd`,
/// `lung1_label.nrrd`, ...): those present.
pub fn load_masked_volumes(dir: &Path) -> Result<Vec<MaskedVolume>> {
    let mut out = Vec::new();
    for name in ["lung1", "lung2"] {
        let (image, mask) = (
            dir.join(format!("{name}_image.nrrd")),
            dir.join(format!("{name}_label.nrrd")),
        );
        if image.is_file() && mask.is_file() {
            out.push(MaskedVolume {
                name: name.to_string(),
                image: crate::imaging::load_nrrd(&image)?,
                mask: crate::imaging::load_nrrd(&mask)?,
            });
        }
    }
    Ok(out)
}

/// How a model fares on real DICOM CT slices without annotations: boxes over the body of
/// each slice, each found again under the perturbations among the boxes of every slice.
#[derive(Debug, Clone, Serialize)]
pub struct DicomFigures {
    pub model: String,
    /// CT files read (other modalities and repeated pixel data skipped).
    pub files: Vec<String>,
    pub boxes: usize,
    pub reidentification: RankCounts,
}

/// Boxes per DICOM slice.
const DICOM_BOXES_PER_SLICE: usize = 8;

/// The real CT slices among the DICOM files of `dir` (sorted by name), each once.
pub fn load_dicom_slices(dir: &Path) -> Result<Vec<(String, CtImage)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("dcm")))
        .collect();
    paths.sort();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for path in paths {
        let image = crate::imaging::load_image(&path)?;
        if image.modality.as_deref().is_some_and(|m| m != "CT") || image.require_ct(&path).is_err()
        {
            continue;
        }
        let digest = crate::util::hex_digest(
            &image
                .pixels
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        if seen.insert(digest) {
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into());
            out.push((name, image));
        }
    }
    Ok(out)
}

/// Boxes of about 24 mm centred on body pixels (denser than -500 HU), from a fixed stream.
fn dicom_boxes(image: &CtImage, mm_per_px: f32, seed: u64) -> Vec<PixelBox> {
    let mut rng = crate::util::Rng::derive(seed, &[0xD1C]);
    let half = (12.0 / mm_per_px).clamp(4.0, image.width.min(image.height) as f32 / 6.0);
    let (w, h) = (image.width as f32, image.height as f32);
    let mut boxes: Vec<PixelBox> = Vec::new();
    for _ in 0..2000 {
        if boxes.len() == DICOM_BOXES_PER_SLICE {
            break;
        }
        let (cx, cy) = (rng.range(half, w - half), rng.range(half, h - half));
        // Apart from the others, so that each box is its own place.
        let apart = boxes.iter().all(|b| {
            let c = b.center();
            (c.x - cx).abs() > half || (c.y - cy).abs() > half
        });
        if apart && image.get(cx as usize, cy as usize) > -500.0 {
            boxes.push(PixelBox::new(cx - half, cy - half, cx + half, cy + half));
        }
    }
    boxes
}

fn stack(key: &CtImage) -> SliceStack<'_> {
    SliceStack {
        key,
        neighbours: Vec::new(),
    }
}

/// Re-identification on real DICOM slices.
pub fn evaluate_dicom(
    name: &str,
    embedder: &dyn Embedder,
    slices: &[(String, CtImage)],
) -> Result<DicomFigures> {
    let spec = &embedder.card().patch;
    let mut stored = Vec::new();
    let mut queries: Vec<(usize, Patch)> = Vec::new();
    for (file_index, (_, image)) in slices.iter().enumerate() {
        let spacing = image.spacing_mm.unwrap_or((0.7, 0.7));
        let mut shifted = image.clone();
        for bbox in dicom_boxes(image, spacing.0, file_index as u64) {
            let geometry = PatchGeometry {
                bbox,
                spacing_mm: spacing,
                slice_interval_mm: 5.0,
                own_window: image.window,
            };
            let index = stored.len();
            stored.push(extract_patch(&stack(image), &geometry, spec)?);
            for p in PERTURBATIONS {
                let patch = match p {
                    Perturbation::Hounsfield { offset } => {
                        shifted
                            .pixels
                            .iter_mut()
                            .zip(&image.pixels)
                            .for_each(|(s, v)| *s = v + offset);
                        extract_patch(&stack(&shifted), &geometry, spec)?
                    }
                    _ => {
                        let mut g = geometry;
                        g.bbox = perturbed(bbox, p, image.width, image.height);
                        extract_patch(&stack(image), &g, spec)?
                    }
                };
                queries.push((index, patch));
            }
        }
    }
    let vectors = embedder.embed(&stored)?;
    let query_patches: Vec<Patch> = queries.iter().map(|(_, p)| p.clone()).collect();
    let query_vectors = embedder.embed(&query_patches)?;
    let mut reidentification = RankCounts::default();
    for ((wanted, _), v) in queries.iter().zip(&query_vectors) {
        reidentification.add(rank_of(&vectors, v, *wanted, None));
    }
    Ok(DicomFigures {
        model: name.to_string(),
        files: slices.iter().map(|(n, _)| n.clone()).collect(),
        boxes: stored.len(),
        reidentification,
    })
}

/// Every real-CT figure of one run, for JSON and Markdown reports.
#[derive(Debug, Clone, Serialize)]
pub struct RealCtReport {
    pub deeplesion: Vec<RealCtFigures>,
    pub dicom: Vec<DicomFigures>,
    /// Per model, its figures on each masked volume.
    pub volumes: Vec<(String, Vec<VolumeFigures>)>,
    /// Per model, its figures on the BLDS bone lesions (empty when not asked for).
    pub bone_lesions: Vec<BoneLesionFigures>,
}

impl RealCtReport {
    /// The report as Markdown tables, each figure with its n.
    pub fn markdown(&self) -> String {
        let mut out = String::from("## Real DeepLesion slices (validation and test patients)\n\n");
        out.push_str(&real_ct_markdown(&self.deeplesion));
        if !self.dicom.is_empty() {
            out.push_str("\n## Real DICOM CT slices (boxes over the body, no annotations)\n\n| model | files | boxes | re-identified at rank 1 | mean rank |\n|---|---:|---:|---:|---:|\n");
            for d in &self.dicom {
                let r = &d.reidentification;
                out.push_str(&format!(
                    "| `{}` | {} | {} | {}/{} | {:.2} |\n",
                    d.model,
                    d.files.len(),
                    d.boxes,
                    r.rank_1,
                    r.queries,
                    r.mean_rank
                ));
            }
        }
        if !self.volumes.is_empty() {
            out.push_str("\n## Real chest CT volumes with tumour masks\n\n| model | volume | tumour slices | nearest is the tumour on an adjacent slice | normal patches | tumour vs normal ROC AUC |\n|---|---|---:|---:|---:|---:|\n");
            for (name, figures) in &self.volumes {
                for f in figures {
                    let n = &f.neighbouring_slice_found;
                    out.push_str(&format!(
                        "| `{name}` | {} | {} | {}/{} | {} | {} |\n",
                        f.volume,
                        f.tumour_slices,
                        n.rank_1,
                        n.queries,
                        f.normal_patches,
                        f.tumour_vs_normal_auc
                            .map_or("-".into(), |a| format!("{a:.3}"))
                    ));
                }
            }
        }
        if !self.bone_lesions.is_empty() {
            out.push_str("\n## Real bone lesions in CT volumes (BLDS, 1 mm)\n\n");
            out.push_str(&bone_lesion_markdown(&self.bone_lesions));
        }
        out
    }
}
