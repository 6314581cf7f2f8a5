//! A generator of realistic DeepLesion-format archives.
//!
//! [`generate`] plans patients, studies and lesions from one seed, then renders every slice
//! a `DL_info.csv` row names (the key slice and the neighbours in its `Slice_range`) from a
//! body phantom whose anatomy follows z, with lesions of all eight coarse types drawn as
//! 3-D spheroids that grow or shrink between a patient's studies. Each slice has its own
//! random stream derived from the seed and its indices, so the output is byte-identical
//! however many threads render it.

mod anatomy;
mod canvas;
mod lesion;
mod report;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use self::anatomy::{parts_at, Body, MM_PER_Z};
use self::canvas::Canvas;
use self::lesion::{plan_lesion, TrackedLesion};
pub use self::report::family_terms;
use self::report::{sentence, Change};
use crate::dataset::{
    write_dl_info, write_reports, CoarseType, DlInfoReader, LesionRecord, NormalizedLocation,
    PixelBox, Point, Recist, ReportEntry, Sex, SliceRange, Spacing, Split, DL_INFO_FILE,
    FOLLOWUP_PAIRS_FILE, IMAGES_DIR, REPORTS_FILE,
};
use crate::error::{Error, Result};
use crate::fsutil::write_atomically;
use crate::imaging::{encode_png16, Window, WindowPreset};
pub use crate::util::Rng;

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub lesions: usize,
    pub seed: u64,
    /// A real `DL_info.csv` to draw type, location, size, spacing, window, age and sex from.
    pub like: Option<PathBuf>,
    /// Context written on each side of a key slice, in mm: every slice within it (at least
    /// one on each side) is part of the row's `Slice_range`.
    pub context_mm: f32,
    /// Write the true coarse type on training rows too (DeepLesion leaves them -1).
    pub label_train: bool,
    pub image_size: usize,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            lesions: 100,
            seed: 1,
            like: None,
            context_mm: 2.0,
            label_train: false,
            image_size: 512,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct SynthSummary {
    pub lesions: usize,
    pub patients: usize,
    pub studies: usize,
    pub slices: usize,
    pub bytes: u64,
}

/// Lesion types weighted as in DeepLesion's validation and test rows (DEEPLESION.md).
const TYPE_WEIGHTS: [(CoarseType, f32); 8] = [
    (CoarseType::Bone, 247.0),
    (CoarseType::Abdomen, 2176.0),
    (CoarseType::Mediastinum, 1672.0),
    (CoarseType::Liver, 1284.0),
    (CoarseType::Lung, 2394.0),
    (CoarseType::Kidney, 495.0),
    (CoarseType::SoftTissue, 681.0),
    (CoarseType::Pelvis, 867.0),
];

/// Metadata borrowed from one real row (`--like`).
#[derive(Debug, Clone)]
struct RealMetadata {
    coarse_type: CoarseType,
    z: f32,
    long_mm: f32,
    spacing_mm: f32,
    slice_interval_mm: f32,
    window: Window,
    age: Option<f32>,
    sex: Sex,
}

struct PlannedPatient {
    index: u32,
    body: Body,
    lesions: Vec<TrackedLesion>,
    studies: Vec<PlannedStudy>,
}

struct PlannedStudy {
    index: u32,
    months: f32,
    spacing_mm: f32,
    slice_interval_mm: f32,
    /// z (mm) of slice 1.
    first_slice_mm: f32,
    /// Where the image centre falls in body coordinates (patient positioning).
    centre_mm: (f32, f32),
    slice_count: u32,
}

impl PlannedStudy {
    fn slice_index(&self, z: f32) -> u32 {
        (((z * MM_PER_Z - self.first_slice_mm) / self.slice_interval_mm).round() as i64 + 1)
            .clamp(1, self.slice_count as i64) as u32
    }

    fn slice_z(&self, index: u32) -> f32 {
        (self.first_slice_mm + (index as f32 - 1.0) * self.slice_interval_mm) / MM_PER_Z
    }
}

/// One generated row, with what is needed to write its report and render its slices.
struct PlannedRow {
    record: LesionRecord,
    patient: usize,
    lesion: usize,
    study: usize,
    long_mm: f32,
    short_mm: f32,
}

/// Writes a DeepLesion-format archive of `options.lesions` lesions into `out`.
///
/// `DL_info.csv` is written last, through a temporary file and a rename, so a folder whose
/// generation was interrupted holds no table and is not mistaken for an archive.
pub fn generate(
    out: &Path,
    options: &SynthOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<SynthSummary> {
    if options.lesions == 0 {
        return Err(Error::invalid_argument("lesions", "must be at least 1"));
    }
    if !(64..=2048).contains(&options.image_size) {
        return Err(Error::invalid_argument("image size", "must be in 64..2048"));
    }
    let like = match &options.like {
        Some(path) => Some(read_like(path)?),
        None => None,
    };
    let (patients, rows) = plan(options, like.as_deref());

    // Every slice that some row's Slice_range names, once.
    let mut slices: BTreeMap<(usize, usize, u32), ()> = BTreeMap::new();
    for row in &rows {
        let r = &row.record;
        for index in r.slice_range.first..=r.slice_range.last {
            slices.insert((row.patient, row.study, index), ());
        }
    }
    let images = out.join(IMAGES_DIR);
    fs::create_dir_all(&images).map_err(|e| Error::io(&images, e))?;
    let done = AtomicUsize::new(0);
    let total = slices.len();
    let bytes: u64 = slices
        .keys()
        .collect::<Vec<_>>()
        .par_iter()
        .map(|&&(p, s, index)| -> Result<u64> {
            let patient = &patients[p];
            let study = &patient.studies[s];
            let hu = render_slice(patient, study, index, options);
            let png = encode_png16(options.image_size, options.image_size, &hu);
            let folder = images.join(format!("{:06}_{:02}_{:02}", patient.index, study.index, 1));
            fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
            let path = folder.join(format!("{index:03}.png"));
            fs::write(&path, &png).map_err(|e| Error::io(&path, e))?;
            progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
            Ok(png.len() as u64)
        })
        .collect::<Result<Vec<u64>>>()?
        .into_iter()
        .sum();

    // Same-lesion pairs across studies, for follow-up matching (DLT benchmark format).
    let mut by_lesion: BTreeMap<(usize, usize), Vec<&PlannedRow>> = BTreeMap::new();
    for row in &rows {
        by_lesion
            .entry((row.patient, row.lesion))
            .or_default()
            .push(row);
    }
    let mut pairs = Vec::new();
    for group in by_lesion.values() {
        for (i, a) in group.iter().enumerate() {
            for b in &group[i + 1..] {
                if a.study == b.study {
                    continue;
                }
                let end = |r: &PlannedRow| crate::dataset::pairs::PairEnd {
                    file_name: r.record.file_name.clone(),
                    center: [r.record.bbox.center().x, r.record.bbox.center().y],
                };
                pairs.push(crate::dataset::pairs::FollowUpPair {
                    source: end(a),
                    target: end(b),
                });
            }
        }
    }
    let pairs_path = out.join(FOLLOWUP_PAIRS_FILE);
    let pairs_text = serde_json::to_string_pretty(&crate::dataset::pairs::pairs_json(&pairs))
        .unwrap_or_default();
    write_atomically(&pairs_path, |w| {
        std::io::Write::write_all(w, pairs_text.as_bytes())
    })?;

    let reports = report_entries(&patients, &rows, options.seed);
    let reports_path = out.join(REPORTS_FILE);
    write_atomically(&reports_path, |w| write_reports(w, &reports))?;
    let csv_path = out.join(DL_INFO_FILE);
    write_atomically(&csv_path, |w| {
        write_dl_info(w, rows.iter().map(|r| &r.record))
    })?;

    Ok(SynthSummary {
        lesions: rows.len(),
        patients: patients.len(),
        studies: patients.iter().map(|p| p.studies.len()).sum(),
        slices: total,
        bytes,
    })
}

fn read_like(path: &Path) -> Result<Vec<RealMetadata>> {
    let mut rows = Vec::new();
    for row in DlInfoReader::open(path)? {
        // Bad rows are `inspect`'s business; a sample of good ones is all synthesis needs.
        let Ok(row) = row else { continue };
        let r = row.record;
        rows.push(RealMetadata {
            coarse_type: r.coarse_type,
            z: r.location.z,
            long_mm: r.long_diameter_mm(),
            spacing_mm: r.spacing.x_mm,
            slice_interval_mm: r.spacing.z_mm,
            window: r.window,
            age: r.age,
            sex: r.sex,
        });
    }
    if rows.is_empty() {
        return Err(Error::invalid_argument(
            "like",
            format!("{} has no valid rows to draw metadata from", path.display()),
        ));
    }
    Ok(rows)
}

fn draw_type(rng: &mut Rng) -> CoarseType {
    let weights: Vec<f32> = TYPE_WEIGHTS.iter().map(|(_, w)| *w).collect();
    TYPE_WEIGHTS[rng.weighted(&weights)].0
}

fn plan(
    options: &SynthOptions,
    like: Option<&[RealMetadata]>,
) -> (Vec<PlannedPatient>, Vec<PlannedRow>) {
    let mut rng = Rng::new(options.seed);
    let size = options.image_size;
    let mut patients: Vec<PlannedPatient> = Vec::new();
    let mut rows: Vec<PlannedRow> = Vec::new();
    while rows.len() < options.lesions {
        let p = patients.len();
        let borrowed = |rng: &mut Rng| {
            like.map(|rows| rows[rng.int(0, rows.len() as u32 - 1) as usize].clone())
        };
        let demographics = borrowed(&mut rng);
        let sex = match demographics.as_ref().map(|m| m.sex) {
            Some(Sex::Unknown) | None => {
                if rng.chance(0.45) {
                    Sex::Female
                } else {
                    Sex::Male
                }
            }
            Some(sex) => sex,
        };
        let female = sex == Sex::Female;
        let base_age = demographics
            .as_ref()
            .and_then(|m| m.age)
            .unwrap_or_else(|| rng.gaussian(56.0, 15.0).clamp(18.0, 92.0).round());
        let body = Body::random(&mut rng, female);
        let split = match rng.unit() {
            u if u < 0.7 => Split::Train,
            u if u < 0.85 => Split::Validation,
            _ => Split::Test,
        };

        // Lesions of this patient; some share a level with an earlier one (two lesions on
        // one key slice).
        let tracked_count = 1 + rng.weighted(&[0.35, 0.3, 0.2, 0.15]);
        let mut lesions: Vec<TrackedLesion> = Vec::new();
        let mut metadata: Vec<Option<RealMetadata>> = Vec::new();
        while lesions.len() < tracked_count {
            let real = borrowed(&mut rng);
            let t = match real.as_ref().map(|m| m.coarse_type) {
                Some(t) if t.is_known() => t,
                _ => draw_type(&mut rng),
            };
            let same_level = lesions.last().filter(|_| rng.chance(0.12)).map(|l| l.z);
            let z_hint = same_level.or(real.as_ref().map(|m| m.z));
            // Redraw the site, not the type, so that hard-to-place types keep their share.
            let placed = (0..40).find_map(|attempt| {
                let hint = if attempt < 10 { z_hint } else { None };
                let lesion =
                    plan_lesion(&mut rng, t, real.as_ref().map(|m| m.long_mm), hint, female);
                lesion.fits(&body).then_some(lesion)
            });
            if let Some(lesion) = placed {
                lesions.push(lesion);
                metadata.push(real);
            }
        }

        let study_count = 1 + rng.weighted(&[0.3, 0.35, 0.2, 0.15]);
        let spacing_mm = metadata
            .iter()
            .flatten()
            .map(|m| m.spacing_mm)
            .next()
            .unwrap_or_else(|| (rng.range(0.62, 0.98) * 512.0).round() / 512.0);
        let mut studies = Vec::new();
        let mut months = 0.0;
        for s in 0..study_count {
            let slice_interval_mm = metadata
                .iter()
                .flatten()
                .map(|m| m.slice_interval_mm)
                .next()
                .filter(|_| s == 0)
                .unwrap_or_else(|| [5.0, 1.0, 2.5][rng.weighted(&[0.5, 0.45, 0.05])]);
            let first_slice_mm = rng.range(0.27, 0.31) * MM_PER_Z;
            let slice_count = ((0.97 * MM_PER_Z - first_slice_mm) / slice_interval_mm) as u32;
            studies.push(PlannedStudy {
                index: s as u32 + 1,
                months,
                spacing_mm,
                slice_interval_mm,
                first_slice_mm,
                centre_mm: (rng.gaussian(0.0, 8.0), rng.gaussian(-10.0, 8.0)),
                slice_count,
            });
            months += rng.range(2.0, 9.0);
        }
        let age_years = base_age;

        let patient = PlannedPatient {
            index: p as u32 + 1,
            body,
            lesions,
            studies,
        };
        let mut patient_rows = Vec::new();
        for (s, study) in patient.studies.iter().enumerate() {
            let mut present: Vec<usize> = (0..patient.lesions.len())
                .filter(|_| rng.chance(0.8))
                .collect();
            if present.is_empty() {
                present.push(0);
            }
            for l in present {
                let lesion = &patient.lesions[l];
                let real = &metadata[l];
                if let Some(row) = plan_row(
                    &patient,
                    study,
                    lesion,
                    real.as_ref(),
                    sex,
                    age_years + study.months / 12.0,
                    split,
                    options,
                    size,
                ) {
                    patient_rows.push(PlannedRow {
                        patient: p,
                        lesion: l,
                        study: s,
                        ..row
                    });
                }
            }
        }
        patients.push(patient);
        rows.extend(patient_rows);
    }
    rows.truncate(options.lesions);
    rows.sort_by(|a, b| (&a.record.file_name, a.lesion).cmp(&(&b.record.file_name, b.lesion)));
    (patients, rows)
}

#[allow(clippy::too_many_arguments)]
fn plan_row(
    patient: &PlannedPatient,
    study: &PlannedStudy,
    lesion: &TrackedLesion,
    real: Option<&RealMetadata>,
    sex: Sex,
    age: f32,
    split: Split,
    options: &SynthOptions,
    size: usize,
) -> Option<PlannedRow> {
    let key_slice = study.slice_index(lesion.z);
    let z = study.slice_z(key_slice);
    let (x, y) = lesion.anchor.position(&patient.body, z)?;
    let canvas = Canvas::new(size, size, study.spacing_mm, study.centre_mm, 0.0);
    let (px, py) = canvas.to_px(x, y);
    let long_mm = lesion.long_mm_at(study.months);
    let short_mm = long_mm * lesion.short_ratio;
    let (sin, cos) = lesion.angle.sin_cos();
    let half_long = long_mm / 2.0 / study.spacing_mm;
    let half_short = short_mm / 2.0 / study.spacing_mm;
    let long_axis = [
        Point {
            x: px - half_long * cos,
            y: py - half_long * sin,
        },
        Point {
            x: px + half_long * cos,
            y: py + half_long * sin,
        },
    ];
    let short_axis = [
        Point {
            x: px + half_short * sin,
            y: py - half_short * cos,
        },
        Point {
            x: px - half_short * sin,
            y: py + half_short * cos,
        },
    ];
    let all = [long_axis[0], long_axis[1], short_axis[0], short_axis[1]];
    let limit = size as f32 - 1.0;
    let bbox = PixelBox {
        x1: (all.iter().map(|p| p.x).fold(f32::MAX, f32::min) - 5.0).max(0.0),
        y1: (all.iter().map(|p| p.y).fold(f32::MAX, f32::min) - 5.0).max(0.0),
        x2: (all.iter().map(|p| p.x).fold(f32::MIN, f32::max) + 5.0).min(limit),
        y2: (all.iter().map(|p| p.y).fold(f32::MIN, f32::max) + 5.0).min(limit),
    };
    let margin = 8.0;
    if !(margin..size as f32 - margin).contains(&px)
        || !(margin..size as f32 - margin).contains(&py)
    {
        return None;
    }
    let n = ((options.context_mm / study.slice_interval_mm).round() as u32).max(1);
    let first = key_slice.saturating_sub(n).max(1);
    let last = (key_slice + n).min(study.slice_count);
    let window = real
        .map(|m| m.window)
        .unwrap_or_else(|| match lesion.coarse_type {
            CoarseType::Lung => Window {
                low: -1500.0,
                high: 500.0,
            },
            _ => Window {
                low: -175.0,
                high: 275.0,
            },
        });
    let coarse_type = if split == Split::Train && !options.label_train {
        CoarseType::Unknown
    } else {
        lesion.coarse_type
    };
    let round = |v: f32| (v * 1000.0).round() / 1000.0;
    let record = LesionRecord {
        file_name: LesionRecord::canonical_file_name(patient.index, study.index, 1, key_slice),
        patient: patient.index,
        study: study.index,
        series: 1,
        key_slice,
        recist: Recist {
            long_axis: long_axis.map(|p| Point {
                x: round(p.x),
                y: round(p.y),
            }),
            short_axis: short_axis.map(|p| Point {
                x: round(p.x),
                y: round(p.y),
            }),
        },
        bbox: PixelBox {
            x1: round(bbox.x1),
            y1: round(bbox.y1),
            x2: round(bbox.x2),
            y2: round(bbox.y2),
        },
        diameters_px: [round(half_long * 2.0), round(half_short * 2.0)],
        location: NormalizedLocation {
            x: round(px / size as f32),
            y: round(py / size as f32),
            z: round(z),
        },
        coarse_type,
        possibly_noisy: false,
        slice_range: SliceRange { first, last },
        spacing: Spacing {
            x_mm: study.spacing_mm,
            y_mm: study.spacing_mm,
            z_mm: study.slice_interval_mm,
        },
        image_width: size as u32,
        image_height: size as u32,
        window,
        sex,
        age: Some(age.floor()),
        split,
    };
    Some(PlannedRow {
        record,
        patient: 0,
        lesion: 0,
        study: 0,
        long_mm,
        short_mm,
    })
}

/// Renders one slice of a patient's study in HU.
fn render_slice(
    patient: &PlannedPatient,
    study: &PlannedStudy,
    index: u32,
    options: &SynthOptions,
) -> Vec<f32> {
    let z = study.slice_z(index);
    let size = options.image_size;
    let mut canvas = Canvas::new(size, size, study.spacing_mm, study.centre_mm, -1024.0);
    for part in parts_at(&patient.body, z) {
        canvas.paint(&part.shape);
    }
    for lesion in &patient.lesions {
        // Lesions are centred on the slice they are bookmarked on in this study.
        let centre_z = study.slice_z(study.slice_index(lesion.z));
        let dz_mm = (z - centre_z) * MM_PER_Z;
        let Some((x, y)) = lesion.anchor.position(&patient.body, centre_z) else {
            continue;
        };
        for shape in lesion.shapes(x, y, lesion.long_mm_at(study.months), dz_mm) {
            canvas.paint(&shape);
        }
    }
    let mut rng = Rng::derive(
        options.seed,
        &[
            u64::from(patient.index),
            u64::from(study.index),
            u64::from(index),
        ],
    );
    canvas.finish(&mut rng, 18.0, |v| v > -1000.0);
    canvas.hu
}

fn report_entries(patients: &[PlannedPatient], rows: &[PlannedRow], seed: u64) -> Vec<ReportEntry> {
    let mut previous: HashMap<(usize, usize), (usize, f32)> = HashMap::new();
    let mut order: Vec<&PlannedRow> = rows.iter().collect();
    order.sort_by_key(|r| (r.patient, r.lesion, r.study));
    let mut text_of: HashMap<*const PlannedRow, String> = HashMap::new();
    for row in order {
        let lesion = &patients[row.patient].lesions[row.lesion];
        let change = match previous.get(&(row.patient, row.lesion)) {
            Some(&(_, previous_mm)) => Change::Since { previous_mm },
            None => Change::Baseline,
        };
        let mut rng = Rng::derive(
            seed,
            &[
                row.patient as u64,
                row.lesion as u64,
                row.study as u64,
                0x5E47,
            ],
        );
        text_of.insert(
            row as *const _,
            sentence(&mut rng, lesion, row.long_mm, row.short_mm, change),
        );
        previous.insert((row.patient, row.lesion), (row.study, row.long_mm));
    }
    let mut ordinal: HashMap<&str, u32> = HashMap::new();
    rows.iter()
        .map(|row| {
            let n = ordinal.entry(row.record.file_name.as_str()).or_default();
            let entry = ReportEntry {
                file_name: row.record.file_name.clone(),
                lesion: *n,
                text: text_of.remove(&(row as *const _)).unwrap_or_default(),
            };
            *n += 1;
            entry
        })
        .collect()
}

/// The window the demo and tests render a synthetic lesion's type in.
pub fn display_window(t: CoarseType) -> Window {
    match t {
        CoarseType::Lung => WindowPreset::Lung.window(),
        CoarseType::Bone => WindowPreset::Bone.window(),
        _ => WindowPreset::SoftTissue.window(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_mix_follows_deeplesion() {
        let options = SynthOptions {
            lesions: 3000,
            label_train: true,
            ..Default::default()
        };
        let (_, rows) = plan(&options, None);
        let mut counts: HashMap<CoarseType, usize> = HashMap::new();
        for r in &rows {
            *counts.entry(r.record.coarse_type).or_default() += 1;
        }
        let total: f32 = TYPE_WEIGHTS.iter().map(|w| w.1).sum();
        for (t, w) in TYPE_WEIGHTS {
            let share = counts.get(&t).copied().unwrap_or(0) as f32 / rows.len() as f32;
            let expected = w / total;
            assert!(
                (share - expected).abs() < 0.03,
                "{t}: {share:.3}, DeepLesion {expected:.3}"
            );
        }
    }

    #[test]
    fn every_report_word_for_a_family_is_an_ontology_term() {
        let ontology = crate::ontology::Ontology::lesanet();
        for family in self::lesion::Family::ALL {
            let (types, attributes) = family_terms(family);
            for term in types.iter().chain(attributes) {
                assert!(
                    ontology.find(term).is_some(),
                    "{family:?}: `{term}` is not in the ontology"
                );
            }
        }
    }

    #[test]
    fn every_site_is_an_ontology_body_part_and_lesions_recur_across_studies() {
        let ontology = crate::ontology::Ontology::lesanet();
        let options = SynthOptions {
            lesions: 600,
            ..Default::default()
        };
        let (patients, rows) = plan(&options, None);
        for p in &patients {
            for l in &p.lesions {
                assert!(
                    ontology.find(l.site_term).is_some(),
                    "site `{}`",
                    l.site_term
                );
            }
        }
        let mut studies_of: HashMap<(usize, usize), usize> = HashMap::new();
        let mut per_slice: HashMap<&str, usize> = HashMap::new();
        for r in &rows {
            *studies_of.entry((r.patient, r.lesion)).or_default() += 1;
            *per_slice.entry(r.record.file_name.as_str()).or_default() += 1;
        }
        assert!(
            studies_of.values().filter(|&&n| n > 1).count() > 50,
            "too few follow-ups"
        );
        assert!(
            per_slice.values().any(|&n| n > 1),
            "no slice with two lesions"
        );
        let sizes: Vec<f32> = rows.iter().map(|r| r.long_mm).collect();
        assert!(sizes.iter().all(|s| (3.0..=100.0).contains(s)));
        assert!(sizes.iter().any(|&s| s < 6.0) && sizes.iter().any(|&s| s > 50.0));
    }
}
