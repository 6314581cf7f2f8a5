//! What the matcher compares between a lesion and a candidate in another study: place per
//! axis, place in the slice, size, shape, type and (when slices exist) appearance. Slice
//! position enters through DeepLesion's normalized z, which comes from the key slice.

use crate::dataset::{CoarseType, LesionRecord};

/// Names of the features, in order; a model file must list exactly these.
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "location_dx",
    "location_dy",
    "location_dz",
    "location_dx_squared",
    "location_dy_squared",
    "location_dz_squared",
    "in_plane_dx_mm",
    "in_plane_dy_mm",
    "log_long_ratio",
    "log_short_ratio",
    "log_aspect_change",
    "type_differs",
    "appearance",
];
pub const FEATURES: usize = 13;
/// Index of the appearance feature (filled in per study, see [`with_appearance`]).
pub const APPEARANCE: usize = 12;

pub type Features = [f32; FEATURES];

/// In-plane offset of the lesion's box centre from the image centre, in mm: patients lie
/// in the scanner much the same way from one study to the next.
fn in_plane_mm(record: &LesionRecord) -> [f32; 2] {
    let c = record.bbox.center();
    [
        (c.x - record.image_width as f32 / 2.0) * record.spacing.x_mm,
        (c.y - record.image_height as f32 / 2.0) * record.spacing.y_mm,
    ]
}

/// The features of one candidate against the lesion looked for, appearance left at zero.
pub fn pair_features(source: &LesionRecord, candidate: &LesionRecord) -> Features {
    let d = [
        (source.location.x - candidate.location.x).abs(),
        (source.location.y - candidate.location.y).abs(),
        (source.location.z - candidate.location.z).abs(),
    ];
    let (a, b) = (in_plane_mm(source), in_plane_mm(candidate));
    let log_ratio = |x: f32, y: f32| (x.max(0.1) / y.max(0.1)).ln().abs();
    let (sl, ss) = (source.long_diameter_mm(), source.short_diameter_mm());
    let (cl, cs) = (candidate.long_diameter_mm(), candidate.short_diameter_mm());
    let aspect = |long: f32, short: f32| ((short + 0.1) / (long + 0.1)).ln();
    let type_differs = source.coarse_type != CoarseType::Unknown
        && candidate.coarse_type != CoarseType::Unknown
        && source.coarse_type != candidate.coarse_type;
    [
        d[0],
        d[1],
        d[2],
        100.0 * d[0] * d[0],
        100.0 * d[1] * d[1],
        100.0 * d[2] * d[2],
        (a[0] - b[0]).abs() / 100.0,
        (a[1] - b[1]).abs() / 100.0,
        log_ratio(cl, sl),
        log_ratio(cs, ss),
        (aspect(cl, cs) - aspect(sl, ss)).abs(),
        f32::from(u8::from(type_differs)),
        0.0,
    ]
}

/// Sets the appearance feature of a study's candidates from their cosine to the lesion
/// looked for: how much more alike than the study's average candidate (0 where a slice is
/// missing), so appearance ranks candidates without moving the no-match decision.
pub fn with_appearance(features: &mut [Features], cosines: &[Option<f32>]) {
    let known: Vec<f32> = cosines.iter().flatten().copied().collect();
    if known.is_empty() {
        return;
    }
    let mean = known.iter().sum::<f32>() / known.len() as f32;
    for (f, cosine) in features.iter_mut().zip(cosines) {
        f[APPEARANCE] = cosine.map_or(0.0, |c| mean - c);
    }
}
