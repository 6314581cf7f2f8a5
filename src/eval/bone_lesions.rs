//! Models judged on real bone lesions in CT volumes: hugboom/BLDS' test patches (NIfTI,
//! 1 mm isotropic) and their lesion boxes, given in DICOM patient coordinates (LPS, mm) by
//! `image_bone_lesions.csv`. Two measures, each with its n: every lesion found again from
//! its own axial key slice under the perturbations the DeepLesion and DICOM measures use,
//! and lesion against normal bone of the same volumes (ROC AUC), each patch scored by its
//! likeness to the nearest lesion of another patient's volume.

use std::path::Path;

use serde::Serialize;

use super::perturb::{
    auc, perturbed_patch, rank_of, reidentification_ranks, Perturbation, RankCounts, PERTURBATIONS,
};
use crate::embed::Embedder;
use crate::error::{Error, FieldProblem, Result};
use crate::imaging::{
    extract_patch, load_nifti, slice_offset, CtImage, FieldOfView, NiftiVolume, Patch,
    PatchGeometry, PatchSpec, PixelBox, SliceStack,
};
use crate::util::Rng;

/// The table of lesion boxes in a BLDS folder.
pub const BONE_LESION_TABLE: &str = "image_bone_lesions.csv";

/// The columns the table must have.
const COLUMNS: [&str; 8] = [
    "image_path",
    "class",
    "x",
    "y",
    "z",
    "width",
    "height",
    "depth",
];

/// One row of the table: a box in DICOM patient coordinates (LPS, mm).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoneLesionRow {
    /// The table's line (1 is the header).
    pub line: u64,
    /// The volume's file name, beside the table.
    pub image: String,
    pub class: String,
    /// Centre (x, y, z), LPS.
    pub centre_lps_mm: [f64; 3],
    /// Width, height, depth along x, y, z.
    pub size_mm: [f64; 3],
}

/// A box in one volume's voxels: its centre and half sides along i, j, k.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VoxelBox {
    /// Index into [`BoneLesionSet::volumes`].
    pub volume: usize,
    pub centre: [f64; 3],
    pub half: [f64; 3],
}

impl VoxelBox {
    /// The plane through the centre.
    pub fn key_slice(&self, depth: usize) -> usize {
        (self.centre[2].round().max(0.0) as usize).min(depth.saturating_sub(1))
    }

    /// The box's in-plane rectangle, kept on a `width` x `height` slice.
    pub fn pixel_box(&self, width: usize, height: usize) -> PixelBox {
        let (w, h) = (width as f32 - 1.0, height as f32 - 1.0);
        let [ci, cj, _] = self.centre.map(|v| v as f32);
        let [hi, hj, _] = self.half.map(|v| v as f32);
        PixelBox::new(
            (ci - hi).clamp(0.0, w),
            (cj - hj).clamp(0.0, h),
            (ci + hi).clamp(0.0, w),
            (cj + hj).clamp(0.0, h),
        )
    }

    /// Whether the two boxes are at least `gap` voxels apart along some axis.
    fn clear_of(&self, other: &VoxelBox, gap: [f64; 3]) -> bool {
        (0..3).any(|a| {
            (self.centre[a] - other.centre[a]).abs() >= self.half[a] + other.half[a] + gap[a]
        })
    }
}

/// The volumes, the lesions placed in them and the normal-bone boxes chosen beside them.
#[derive(Debug, Clone)]
pub struct BoneLesionSet {
    /// (file name, volume), in the order the table first names them.
    pub volumes: Vec<(String, NiftiVolume)>,
    pub rows: Vec<BoneLesionRow>,
    /// One per row.
    pub lesions: Vec<VoxelBox>,
    /// (the lesion whose size it has, box), up to [`NORMAL_BOXES_PER_LESION`] per lesion.
    pub normal_bone: Vec<(usize, VoxelBox)>,
}

/// Normal-bone boxes sought per lesion.
pub const NORMAL_BOXES_PER_LESION: usize = 4;

/// A normal-bone box's central 3 x 3 x 3 voxels have their median in this range: trabecular
/// to cortical bone, below metal.
pub const BONE_HU: std::ops::RangeInclusive<f32> = 150.0..=2000.0;

/// The least gap between a normal-bone box and any lesion box of its volume, in mm.
pub const CLEAR_OF_LESIONS_MM: f64 = 5.0;

/// The stream the normal-bone boxes are drawn from, so that every run and every model sees
/// the same boxes.
pub const NORMAL_BONE_SEED: u64 = 0xB0_4E;

/// The widest field of view among the candidate models (`lesion-cnn`'s: three times the
/// lesion, 48 to 192 mm). A normal-bone box sits no nearer the volume's in-plane edge than
/// half of it (or than its lesion does, if that is nearer), so no model's patch of it reads
/// more outside the volume than the lesion's own: an edge of air must not tell them apart.
const WIDEST_FIELD_OF_VIEW: FieldOfView = FieldOfView::Context {
    margin: 1.0,
    min_mm: 48.0,
    max_mm: 192.0,
};

/// Reads the table, the volumes it names and places every lesion in its volume; then draws
/// the normal-bone boxes.
pub fn load_bone_lesions(dir: &Path) -> Result<BoneLesionSet> {
    let table = dir.join(BONE_LESION_TABLE);
    let rows = read_bone_lesion_table(&table)?;
    if rows.is_empty() {
        return Err(Error::Table {
            path: table,
            line: 1,
            message: "the table holds no lesion".into(),
        });
    }
    let mut names: Vec<String> = Vec::new();
    for row in &rows {
        if !names.contains(&row.image) {
            names.push(row.image.clone());
        }
    }
    let mut volumes = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let volume = load_nifti(&path)?;
        if !volume.planes_are_axial() {
            return Err(Error::Image {
                path,
                message: "the volume's k axis is not head-foot: its planes are not axial".into(),
            });
        }
        volumes.push((name, volume));
    }
    let lesions = rows
        .iter()
        .map(|row| place_lesion(row, &volumes, &table))
        .collect::<Result<Vec<_>>>()?;
    let normal_bone = choose_normal_bone(&volumes, &lesions);
    Ok(BoneLesionSet {
        volumes,
        rows,
        lesions,
        normal_bone,
    })
}

/// Reads `image_bone_lesions.csv`: a header naming its eight columns (any order), then one box a
/// line; every bad field of a row is listed.
pub fn read_bone_lesion_table(path: &Path) -> Result<Vec<BoneLesionRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .collect();
    let mut at = [0usize; 8];
    for (slot, column) in at.iter_mut().zip(COLUMNS) {
        *slot = header
            .iter()
            .position(|h| *h == column)
            .ok_or_else(|| Error::MissingColumn {
                path: path.to_path_buf(),
                column: column.to_string(),
                hint: String::new(),
            })?;
    }
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        rows.push(parse_row(line, n as u64 + 2, &at, path)?);
    }
    Ok(rows)
}

fn parse_row(text: &str, line: u64, at: &[usize; 8], path: &Path) -> Result<BoneLesionRow> {
    let fields: Vec<&str> = text.split(',').map(str::trim).collect();
    let mut problems = Vec::new();
    let mut problem = |column: &str, message: String| {
        problems.push(FieldProblem {
            column: column.to_string(),
            message,
        })
    };
    let field = |c: usize| fields.get(at[c]).copied().unwrap_or("");
    let image = field(0).to_string();
    // The name is joined to the table's folder: a bare file name only.
    if image.is_empty() || image.contains(['/', '\\']) || image.starts_with('.') {
        problem(
            COLUMNS[0],
            format!("`{image}` is not a file name beside the table"),
        );
    }
    let mut numbers = [0.0f64; 6];
    for (k, slot) in numbers.iter_mut().enumerate() {
        let column = COLUMNS[2 + k];
        match field(2 + k).parse::<f64>() {
            Ok(v) if v.is_finite() && (k < 3 || v > 0.0) => *slot = v,
            Ok(v) if v.is_finite() => problem(column, format!("{v} mm is not a positive size")),
            _ => problem(column, format!("`{}` is not a number", field(2 + k))),
        }
    }
    if !problems.is_empty() {
        return Err(Error::MalformedRow {
            path: path.to_path_buf(),
            line,
            problems,
        });
    }
    Ok(BoneLesionRow {
        line,
        image,
        class: field(1).to_string(),
        centre_lps_mm: [numbers[0], numbers[1], numbers[2]],
        size_mm: [numbers[3], numbers[4], numbers[5]],
    })
}

/// DICOM's LPS to NIfTI's RAS: x and y change sign.
fn lps_to_ras([x, y, z]: [f64; 3]) -> [f64; 3] {
    [-x, -y, z]
}

/// The row's box in its volume's voxels (the voxel box around the world box's corners);
/// refused when its centre falls outside the volume.
fn place_lesion(
    row: &BoneLesionRow,
    volumes: &[(String, NiftiVolume)],
    table: &Path,
) -> Result<VoxelBox> {
    let index = volumes
        .iter()
        .position(|(name, _)| *name == row.image)
        .expect("every row's volume was read");
    let volume = &volumes[index].1;
    let centre = volume.world_to_voxel(lps_to_ras(row.centre_lps_mm));
    let mut half = [0.0f64; 3];
    for corner in 0..8 {
        let lps: [f64; 3] = std::array::from_fn(|a| {
            let sign = if (corner >> a) & 1 == 1 { 0.5 } else { -0.5 };
            row.centre_lps_mm[a] + sign * row.size_mm[a]
        });
        let voxel = volume.world_to_voxel(lps_to_ras(lps));
        for a in 0..3 {
            half[a] = half[a].max((voxel[a] - centre[a]).abs());
        }
    }
    let sizes = volume.sizes();
    let inside = (0..3).all(|a| centre[a] >= -0.5 && centre[a] < sizes[a] as f64 - 0.5);
    if !inside {
        return Err(Error::MalformedRow {
            path: table.to_path_buf(),
            line: row.line,
            problems: vec![FieldProblem {
                column: "x,y,z".into(),
                message: format!(
                    "the centre falls at voxel ({:.1}, {:.1}, {:.1}), outside {}'s {sizes:?} voxels",
                    centre[0], centre[1], centre[2], row.image
                ),
            }],
        });
    }
    Ok(VoxelBox {
        volume: index,
        centre,
        half,
    })
}

/// Up to [`NORMAL_BOXES_PER_LESION`] boxes of each lesion's size in its own volume, from 4000
/// draws of a fixed stream per lesion. Centres are drawn (whole voxels, uniformly) where the
/// whole box is inside the volume and the centre as far from the in-plane edges as the
/// field-of-view rule asks ([`WIDEST_FIELD_OF_VIEW`]); a draw is kept when the box is at
/// least [`CLEAR_OF_LESIONS_MM`] from every lesion box of the volume and apart from the boxes
/// already kept, and the median of its central 27 voxels is bone ([`BONE_HU`]).
fn choose_normal_bone(
    volumes: &[(String, NiftiVolume)],
    lesions: &[VoxelBox],
) -> Vec<(usize, VoxelBox)> {
    let mut chosen: Vec<(usize, VoxelBox)> = Vec::new();
    for (index, lesion) in lesions.iter().enumerate() {
        let volume = &volumes[lesion.volume].1;
        let sizes = volume.sizes();
        let gap = volume
            .spacing_mm()
            .map(|s| CLEAR_OF_LESIONS_MM / f64::from(s));
        // Centres that keep the whole box inside the volume and, in-plane, `reach` from the
        // slice's edges.
        let reach = edge_reach(lesion, volume);
        let bounds: [(f64, f64); 3] = std::array::from_fn(|a| {
            let margin = if a < 2 {
                lesion.half[a].max(reach)
            } else {
                lesion.half[a]
            };
            (margin.ceil(), (sizes[a] as f64 - 1.0 - margin).floor())
        });
        if bounds.iter().any(|(lo, hi)| lo > hi) {
            continue;
        }
        let mut rng = Rng::derive(NORMAL_BONE_SEED, &[index as u64]);
        let mut kept = 0;
        for _ in 0..4000 {
            if kept == NORMAL_BOXES_PER_LESION {
                break;
            }
            let centre = bounds.map(|(lo, hi)| rng.int(lo as u32, hi as u32) as f64);
            let candidate = VoxelBox {
                volume: lesion.volume,
                centre,
                half: lesion.half,
            };
            let clear = lesions
                .iter()
                .filter(|l| l.volume == lesion.volume)
                .all(|l| candidate.clear_of(l, gap));
            let apart = chosen
                .iter()
                .filter(|(_, b)| b.volume == lesion.volume)
                .all(|(_, b)| far_apart(&candidate, b));
            if clear && apart && BONE_HU.contains(&central_median(volume, centre)) {
                chosen.push((index, candidate));
                kept += 1;
            }
        }
    }
    chosen
}

/// Centres more than one half side apart along some axis: two boxes, not one twice.
fn far_apart(a: &VoxelBox, b: &VoxelBox) -> bool {
    (0..3).any(|k| (a.centre[k] - b.centre[k]).abs() > a.half[k].max(b.half[k]))
}

/// The in-plane distance, in voxels, from the box's centre to the slice's nearest edge.
fn edge_distance(b: &VoxelBox, width: usize, height: usize) -> f64 {
    let [i, j, _] = b.centre;
    i.min(width as f64 - 1.0 - i)
        .min(j)
        .min(height as f64 - 1.0 - j)
}

/// How far from the in-plane edges a normal box of this lesion's size must be centred: half
/// the widest field of view, or the lesion's own distance when that is nearer.
fn edge_reach(lesion: &VoxelBox, volume: &NiftiVolume) -> f64 {
    let [w, h, _] = volume.sizes();
    let [sx, sy, _] = volume.spacing_mm().map(f64::from);
    let side_mm = WIDEST_FIELD_OF_VIEW.side_mm(
        (2.0 * lesion.half[0] * sx) as f32,
        (2.0 * lesion.half[1] * sy) as f32,
    ) as f64;
    let half_fov = (side_mm / 2.0 / sx).max(side_mm / 2.0 / sy);
    half_fov.min(edge_distance(lesion, w, h))
}

/// The median of the 3 x 3 x 3 voxels around `centre` (those inside the volume).
fn central_median(volume: &NiftiVolume, centre: [f64; 3]) -> f32 {
    let [w, h, d] = volume.sizes();
    let [ci, cj, ck] = centre.map(|v| v as i64);
    let mut values = Vec::with_capacity(27);
    for k in ck - 1..=ck + 1 {
        for j in cj - 1..=cj + 1 {
            for i in ci - 1..=ci + 1 {
                if (0..w as i64).contains(&i)
                    && (0..h as i64).contains(&j)
                    && (0..d as i64).contains(&k)
                {
                    values
                        .push(volume.volume.voxels[(k as usize * h + j as usize) * w + i as usize]);
                }
            }
        }
    }
    values.sort_by(f32::total_cmp);
    values
        .get(values.len() / 2)
        .copied()
        .unwrap_or(f32::NEG_INFINITY)
}

/// How a model fares on the bone lesions.
#[derive(Debug, Clone, Serialize)]
pub struct BoneLesionFigures {
    pub model: String,
    pub volumes: usize,
    pub lesions: usize,
    pub normal_bone_boxes: usize,
    /// Each lesion queried from its key slice under each perturbation, ranked among every
    /// lesion's own view (n = lesions x perturbations).
    pub reidentification: RankCounts,
    pub reidentification_by_perturbation: Vec<(Perturbation, RankCounts)>,
    /// The same queries ranked among the lesions' and the normal-bone boxes' views.
    pub reidentification_among_normal_bone: RankCounts,
    /// Lesion against normal bone, every view scored by its nearest lesion view of another
    /// volume (patient); `None` when there are no two volumes with lesions.
    pub lesion_vs_normal_bone_auc: Option<f32>,
    /// The positives and negatives that AUC ranks.
    pub auc_lesions: usize,
    pub auc_normal_bone: usize,
}

/// A box's key slice and the neighbours `spec` reads, as patch geometry.
struct BoxSlices {
    key: CtImage,
    neighbours: Vec<(i32, CtImage)>,
    geometry: PatchGeometry,
}

fn box_slices(set: &BoneLesionSet, b: &VoxelBox, spec: &PatchSpec) -> Result<BoxSlices> {
    let volume = &set.volumes[b.volume].1;
    let [w, h, d] = volume.sizes();
    let spacing = volume.spacing_mm();
    let interval = volume.slice_interval_mm();
    let k = b.key_slice(d);
    let reach = spec
        .channels
        .iter()
        .map(|c| slice_offset(c.slice_offset_mm, interval).unsigned_abs() as usize)
        .max()
        .unwrap_or(0);
    Ok(BoxSlices {
        key: volume.axial_slice(k)?.image,
        neighbours: volume.axial_neighbours(k, reach)?,
        geometry: PatchGeometry {
            bbox: b.pixel_box(w, h),
            // The volume's true spacing: BLDS is resampled to 1 mm.
            spacing_mm: (spacing[0], spacing[1]),
            slice_interval_mm: interval,
            own_window: None,
        },
    })
}

fn box_patch(slices: &BoxSlices, spec: &PatchSpec) -> Result<Patch> {
    let stack = SliceStack {
        key: &slices.key,
        neighbours: slices.neighbours.iter().map(|(o, s)| (*o, s)).collect(),
    };
    extract_patch(&stack, &slices.geometry, spec)
}

/// Scores one model on the bone lesions.
pub fn evaluate_bone_lesions(
    name: &str,
    embedder: &dyn Embedder,
    set: &BoneLesionSet,
) -> Result<BoneLesionFigures> {
    let spec = &embedder.card().patch;
    let mut stored = Vec::new();
    let mut queries: Vec<(usize, Perturbation, Patch)> = Vec::new();
    for (i, lesion) in set.lesions.iter().enumerate() {
        let slices = box_slices(set, lesion, spec)?;
        stored.push(box_patch(&slices, spec)?);
        for p in PERTURBATIONS {
            let patch =
                perturbed_patch(&slices.key, &slices.neighbours, &slices.geometry, p, spec)?;
            queries.push((i, p, patch));
        }
    }
    for (_, b) in &set.normal_bone {
        stored.push(box_patch(&box_slices(set, b, spec)?, spec)?);
    }
    let vectors = embedder.embed(&stored)?;
    let query_patches: Vec<Patch> = queries.iter().map(|(_, _, p)| p.clone()).collect();
    let query_vectors = embedder.embed(&query_patches)?;
    let lesions = set.lesions.len();
    let (reidentification, by_perturbation) =
        reidentification_ranks(&vectors[..lesions], &queries, &query_vectors);
    let mut among_normal = RankCounts::default();
    for ((lesion, _, _), v) in queries.iter().zip(&query_vectors) {
        among_normal.add(rank_of(&vectors, v, *lesion, None));
    }
    let volume_of: Vec<usize> = set
        .lesions
        .iter()
        .chain(set.normal_bone.iter().map(|(_, b)| b))
        .map(|b| b.volume)
        .collect();
    let (positives, negatives) = lesion_vs_normal_scores(&vectors, &volume_of, lesions);
    Ok(BoneLesionFigures {
        model: name.to_string(),
        volumes: set.volumes.len(),
        lesions,
        normal_bone_boxes: set.normal_bone.len(),
        reidentification,
        reidentification_by_perturbation: by_perturbation,
        reidentification_among_normal_bone: among_normal,
        lesion_vs_normal_bone_auc: auc(&positives, &negatives),
        auc_lesions: positives.len(),
        auc_normal_bone: negatives.len(),
    })
}

/// Every view's likeness to the nearest lesion view of another volume: (lesions, normal
/// bone), views without such a lesion left out. The first `lesions` vectors are lesions.
fn lesion_vs_normal_scores(
    vectors: &[Vec<f32>],
    volume_of: &[usize],
    lesions: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (mut positives, mut negatives) = (Vec::new(), Vec::new());
    for (i, v) in vectors.iter().enumerate() {
        let nearest = (0..lesions)
            .filter(|&j| volume_of[j] != volume_of[i])
            .map(|j| crate::index::dot(v, &vectors[j]))
            .reduce(f32::max);
        match (nearest, i < lesions) {
            (Some(score), true) => positives.push(score),
            (Some(score), false) => negatives.push(score),
            (None, _) => {}
        }
    }
    (positives, negatives)
}

/// The figures of several models as a Markdown table, each with its n.
pub fn bone_lesion_markdown(figures: &[BoneLesionFigures]) -> String {
    let mut out = String::from(
        "| model | volumes | lesions | normal-bone boxes | re-identified at rank 1 among the lesions (jitter, scale, HU shift) | ... among lesions and normal bone | lesion vs normal bone ROC AUC (lesions, normal boxes) |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for f in figures {
        let (r, a) = (&f.reidentification, &f.reidentification_among_normal_bone);
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {}/{} | {}/{} | {} ({}, {}) |\n",
            f.model,
            f.volumes,
            f.lesions,
            f.normal_bone_boxes,
            r.rank_1,
            r.queries,
            a.rank_1,
            a.queries,
            f.lesion_vs_normal_bone_auc
                .map_or("-".into(), |v| format!("{v:.3}")),
            f.auc_lesions,
            f.auc_normal_bone
        ));
    }
    out
}
