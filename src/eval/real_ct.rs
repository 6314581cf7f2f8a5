//! Models judged on real CT: DeepLesion's real key slices (and their neighbours where the
//! series is there) with the table's boxes, and DLT's real same-lesion pairs among them.
//! Every figure carries its count, because real data here is small.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::dataset::{geometry_of, Dataset, DlInfoReader, LesionRecord, PixelBox};
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::eval::FollowUpPair;
use crate::followup::table::{resolve_pairs, LesionTable};
use crate::imaging::{extract_patch, Patch};

/// One way a query differs from the stored lesion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Perturbation {
    /// The box moved by (dx, dy) pixels.
    Shift { dx: f32, dy: f32 },
    /// The box scaled about its centre.
    Scale { factor: f32 },
    /// Every pixel offset by this many HU (a scanner calibrated differently).
    Hounsfield { offset: f32 },
}

/// The perturbations every lesion is queried with: the box off by 3 px, 10% larger or
/// smaller, the image 25 HU brighter or darker.
pub const PERTURBATIONS: [Perturbation; 6] = [
    Perturbation::Shift { dx: 3.0, dy: -3.0 },
    Perturbation::Shift { dx: -3.0, dy: 3.0 },
    Perturbation::Scale { factor: 0.9 },
    Perturbation::Scale { factor: 1.1 },
    Perturbation::Hounsfield { offset: 25.0 },
    Perturbation::Hounsfield { offset: -25.0 },
];

/// Hits at rank 1 and in the top 5 out of `queries`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RankCounts {
    pub queries: usize,
    pub rank_1: usize,
    pub top_5: usize,
    /// Mean rank (1 is best).
    pub mean_rank: f32,
}

impl RankCounts {
    fn add(&mut self, rank: usize) {
        self.mean_rank =
            (self.mean_rank * self.queries as f32 + rank as f32) / (self.queries + 1) as f32;
        self.queries += 1;
        self.rank_1 += usize::from(rank == 1);
        self.top_5 += usize::from(rank <= 5);
    }
}

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

/// The table's lesions whose key slice is present under the folder.
pub fn present_lesions(dir: &Path) -> Result<Vec<LesionRecord>> {
    let mut records = Vec::new();
    for row in DlInfoReader::open(&real_table(dir)?)? {
        let record = row?.record;
        if record.key_slice_path(dir).is_file() {
            records.push(record);
        }
    }
    Ok(records)
}

fn perturbed(bbox: PixelBox, p: Perturbation, width: usize, height: usize) -> PixelBox {
    let (w, h) = (width as f32 - 1.0, height as f32 - 1.0);
    let clamp = |b: PixelBox| {
        PixelBox::new(
            b.x1.clamp(0.0, w),
            b.y1.clamp(0.0, h),
            b.x2.clamp(0.0, w),
            b.y2.clamp(0.0, h),
        )
    };
    match p {
        Perturbation::Shift { dx, dy } => clamp(PixelBox::new(
            bbox.x1 + dx,
            bbox.y1 + dy,
            bbox.x2 + dx,
            bbox.y2 + dy,
        )),
        Perturbation::Scale { factor } => {
            let c = bbox.center();
            let (hw, hh) = (bbox.width() * factor / 2.0, bbox.height() * factor / 2.0);
            clamp(PixelBox::new(c.x - hw, c.y - hh, c.x + hw, c.y + hh))
        }
        Perturbation::Hounsfield { .. } => bbox,
    }
}

fn rank_of(vectors: &[Vec<f32>], query: &[f32], wanted: usize, skip: Option<usize>) -> usize {
    let score = crate::index::dot(query, &vectors[wanted]);
    1 + vectors
        .iter()
        .enumerate()
        .filter(|(i, v)| *i != wanted && Some(*i) != skip && crate::index::dot(query, v) > score)
        .count()
}

/// Scores one model on the real slices.
pub fn evaluate_real_ct(
    name: &str,
    embedder: &dyn Embedder,
    inputs: &RealCtInputs,
) -> Result<RealCtFigures> {
    let dataset = Dataset::new(&inputs.deeplesion);
    let records = present_lesions(&inputs.deeplesion)?;
    if records.is_empty() {
        return Err(Error::Index {
            path: inputs.deeplesion.clone(),
            message: "no lesion of the table has its key slice under Images_png/".into(),
        });
    }
    let spec = &embedder.card().patch;
    let mut stored: Vec<Patch> = Vec::with_capacity(records.len());
    let mut queries: Vec<(usize, Perturbation, Patch)> = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let slices = dataset.load_slices(record, spec)?;
        let geometry = geometry_of(record);
        stored.push(extract_patch(&slices.stack(), &geometry, spec)?);
        for p in PERTURBATIONS {
            let patch = match p {
                Perturbation::Hounsfield { offset } => {
                    let shift = |image: &crate::imaging::CtImage| {
                        let mut image = image.clone();
                        image.pixels.iter_mut().for_each(|v| *v += offset);
                        image
                    };
                    let key = shift(&slices.key);
                    let neighbours: Vec<(i32, crate::imaging::CtImage)> = slices
                        .neighbours
                        .iter()
                        .map(|(o, s)| (*o, shift(s)))
                        .collect();
                    let stack = crate::imaging::SliceStack {
                        key: &key,
                        neighbours: neighbours.iter().map(|(o, s)| (*o, s)).collect(),
                    };
                    extract_patch(&stack, &geometry, spec)?
                }
                _ => {
                    let mut g = geometry;
                    g.bbox = perturbed(g.bbox, p, slices.key.width, slices.key.height);
                    extract_patch(&slices.stack(), &g, spec)?
                }
            };
            queries.push((i, p, patch));
        }
    }

    let vectors = embedder.embed(&stored)?;
    let query_patches: Vec<Patch> = queries.iter().map(|(_, _, p)| p.clone()).collect();
    let query_vectors = embedder.embed(&query_patches)?;
    let mut all = RankCounts::default();
    let mut by: Vec<(Perturbation, RankCounts)> = PERTURBATIONS
        .iter()
        .map(|p| (*p, RankCounts::default()))
        .collect();
    for ((lesion, p, _), v) in queries.iter().zip(&query_vectors) {
        let rank = rank_of(&vectors, v, *lesion, None);
        all.add(rank);
        if let Some(slot) = by.iter_mut().find(|(q, _)| q == p) {
            slot.1.add(rank);
        }
    }

    let table = LesionTable::new(records.clone());
    let (pairs, _) = resolve_pairs(&table, &inputs.pairs);
    let mut across = RankCounts::default();
    for pair in pairs {
        across.add(rank_of(
            &vectors,
            &vectors[pair.source],
            pair.target,
            Some(pair.source),
        ));
    }

    let speed = |batch: usize| -> Result<f32> {
        let batch: Vec<Patch> = stored.iter().cycle().take(batch).cloned().collect();
        let rounds = (64 / batch.len()).max(1);
        let started = Instant::now();
        for _ in 0..rounds {
            embedder.embed(&batch)?;
        }
        Ok((rounds * batch.len()) as f32 / started.elapsed().as_secs_f32().max(1e-9))
    };
    Ok(RealCtFigures {
        model: name.to_string(),
        lesions: records.len(),
        reidentification: all,
        reidentification_by_perturbation: by,
        same_lesion_across_studies: across,
        patches_per_second_batch_1: speed(1)?,
        patches_per_second_batch_32: speed(32)?,
    })
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
