//! What the real-CT measures share: the perturbations a lesion is queried under, the rank
//! of the wanted item among a gallery, counts of ranks, and ROC AUC.

use serde::Serialize;

use crate::error::Result;
use crate::imaging::{
    extract_patch, CtImage, Patch, PatchGeometry, PatchSpec, PixelBox, SliceStack,
};

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
    pub(crate) fn add(&mut self, rank: usize) {
        self.mean_rank =
            (self.mean_rank * self.queries as f32 + rank as f32) / (self.queries + 1) as f32;
        self.queries += 1;
        self.rank_1 += usize::from(rank == 1);
        self.top_5 += usize::from(rank <= 5);
    }
}

/// The box as a perturbation moves or scales it, kept on the image.
pub(crate) fn perturbed(bbox: PixelBox, p: Perturbation, width: usize, height: usize) -> PixelBox {
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

/// The rank (1 is best) of `vectors[wanted]` for `query` among `vectors`, `skip` left out;
/// ties count in the wanted item's favour.
pub(crate) fn rank_of(
    vectors: &[Vec<f32>],
    query: &[f32],
    wanted: usize,
    skip: Option<usize>,
) -> usize {
    let score = crate::index::dot(query, &vectors[wanted]);
    1 + vectors
        .iter()
        .enumerate()
        .filter(|(i, v)| *i != wanted && Some(*i) != skip && crate::index::dot(query, v) > score)
        .count()
}

/// The lesion's patch as one perturbation asks: its box moved or scaled, or every slice
/// (neighbours too) offset in HU.
pub(crate) fn perturbed_patch(
    key: &CtImage,
    neighbours: &[(i32, CtImage)],
    geometry: &PatchGeometry,
    p: Perturbation,
    spec: &PatchSpec,
) -> Result<Patch> {
    match p {
        Perturbation::Hounsfield { offset } => {
            let shift = |image: &CtImage| {
                let mut image = image.clone();
                image.pixels.iter_mut().for_each(|v| *v += offset);
                image
            };
            let key = shift(key);
            let neighbours: Vec<(i32, CtImage)> =
                neighbours.iter().map(|(o, s)| (*o, shift(s))).collect();
            let stack = SliceStack {
                key: &key,
                neighbours: neighbours.iter().map(|(o, s)| (*o, s)).collect(),
            };
            extract_patch(&stack, geometry, spec)
        }
        _ => {
            let mut g = *geometry;
            g.bbox = perturbed(g.bbox, p, key.width, key.height);
            let stack = SliceStack {
                key,
                neighbours: neighbours.iter().map(|(o, s)| (*o, s)).collect(),
            };
            extract_patch(&stack, &g, spec)
        }
    }
}

/// Each query's lesion ranked among every stored vector (`vectors[lesion]` is the wanted
/// one): over all queries, and by perturbation.
pub(crate) fn reidentification_ranks(
    vectors: &[Vec<f32>],
    queries: &[(usize, Perturbation, Patch)],
    query_vectors: &[Vec<f32>],
) -> (RankCounts, Vec<(Perturbation, RankCounts)>) {
    let mut all = RankCounts::default();
    let mut by: Vec<(Perturbation, RankCounts)> = PERTURBATIONS
        .iter()
        .map(|p| (*p, RankCounts::default()))
        .collect();
    for ((lesion, p, _), v) in queries.iter().zip(query_vectors) {
        let rank = rank_of(vectors, v, *lesion, None);
        all.add(rank);
        if let Some(slot) = by.iter_mut().find(|(q, _)| q == p) {
            slot.1.add(rank);
        }
    }
    (all, by)
}

/// Area under the ROC curve of `scores` for positives against negatives (ties count half).
pub(crate) fn auc(positives: &[f32], negatives: &[f32]) -> Option<f32> {
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    let mut wins = 0.0f64;
    for p in positives {
        for n in negatives {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    Some((wins / (positives.len() * negatives.len()) as f64) as f32)
}
