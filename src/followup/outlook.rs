//! What happened next to similar lesions: the follow-ups of other patients' lesions most like
//! this one (type, size, place, age, appearance), their changes, and the share that grew,
//! stayed or shrank. Decision support with its evidence, measured leave-patient-out on real
//! pairs (`lesion-indexer eval-outlook`); it claims a prediction only where that measurement
//! beat the base rates.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::table::{resolve_pairs, LesionTable};
use crate::dataset::pairs::FollowUpPair;
use crate::dataset::{CoarseType, LesionRecord};
use crate::error::{Error, Result};

/// Long-diameter change beyond which a lesion counts as grown or shrunk (RECIST's 20%).
pub const CHANGE_BAND: f32 = 0.2;

/// Where a lesion went between two studies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Course {
    Grew,
    Stable,
    Shrank,
}

impl Course {
    pub fn of(ratio: f32) -> Course {
        if ratio > 1.0 + CHANGE_BAND {
            Course::Grew
        } else if ratio < 1.0 - CHANGE_BAND {
            Course::Shrank
        } else {
            Course::Stable
        }
    }
}

/// What the similarity reads of a lesion.
#[derive(Debug, Clone, PartialEq)]
pub struct LesionProfile {
    pub patient: u32,
    pub coarse_type: CoarseType,
    pub long_mm: f32,
    /// Normalized body location, when known (an uploaded slice has none).
    pub location: Option<[f32; 3]>,
    pub age: Option<f32>,
    /// Unit embedding, when its slice was seen.
    pub vector: Option<Vec<f32>>,
}

impl LesionProfile {
    pub fn of(record: &LesionRecord, vector: Option<Vec<f32>>) -> Self {
        LesionProfile {
            patient: record.patient,
            coarse_type: record.coarse_type,
            long_mm: record.long_diameter_mm(),
            location: Some([record.location.x, record.location.y, record.location.z]),
            age: record.age,
            vector,
        }
    }

    /// Dissimilarity: a different type weighs like doubling the size, the place like a
    /// quarter of the body per unit, age per 30 years, appearance by cosine distance.
    pub fn distance(&self, other: &LesionProfile) -> f32 {
        let typed = self.coarse_type.is_known() && other.coarse_type.is_known();
        let type_term = if typed && self.coarse_type != other.coarse_type {
            std::f32::consts::LN_2 * 2.0
        } else {
            0.0
        };
        let size = (self.long_mm.max(0.1) / other.long_mm.max(0.1)).ln().abs();
        let place = match (self.location, other.location) {
            (Some(a), Some(b)) => a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>()
                .sqrt(),
            _ => 0.0,
        };
        let age = match (self.age, other.age) {
            (Some(a), Some(b)) => (a - b).abs() / 30.0,
            _ => 0.0,
        };
        let look = match (&self.vector, &other.vector) {
            (Some(a), Some(b)) => 2.0 * (1.0 - crate::index::dot(a, b)),
            _ => 0.0,
        };
        type_term + size + 4.0 * place + age + look
    }
}

/// One lesion seen again in a later study.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    pub profile: LesionProfile,
    /// Index lesion ids (archive) or table rows (evaluation) of the two sightings.
    pub from: u32,
    pub to: u32,
    pub from_long_mm: f32,
    pub to_long_mm: f32,
    /// Years between the studies, when the ages say.
    pub years: Option<f32>,
}

impl Trajectory {
    pub fn ratio(&self) -> f32 {
        self.to_long_mm.max(0.1) / self.from_long_mm.max(0.1)
    }
}

/// Shares of the three courses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Shares {
    pub grew: f32,
    pub stable: f32,
    pub shrank: f32,
}

impl Shares {
    fn of_counts(counts: &HashMap<Course, usize>) -> Shares {
        let n = counts.values().sum::<usize>().max(1) as f32;
        let get = |c| *counts.get(&c).unwrap_or(&0) as f32 / n;
        Shares {
            grew: get(Course::Grew),
            stable: get(Course::Stable),
            shrank: get(Course::Shrank),
        }
    }

    fn blend(self, other: Shares, weight_self: f32) -> Shares {
        let w = weight_self;
        Shares {
            grew: w * self.grew + (1.0 - w) * other.grew,
            stable: w * self.stable + (1.0 - w) * other.stable,
            shrank: w * self.shrank + (1.0 - w) * other.shrank,
        }
    }

    /// Brier score of these shares against what happened (0 is perfect, 2 the worst).
    pub fn brier(&self, course: Course) -> f32 {
        let hit = |c: Course| f32::from(u8::from(c == course));
        (self.grew - hit(Course::Grew)).powi(2)
            + (self.stable - hit(Course::Stable)).powi(2)
            + (self.shrank - hit(Course::Shrank)).powi(2)
    }
}

/// How the outlook fared on real pairs (shipped in `data/followup/outlook.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OutlookEvaluation {
    pub command: String,
    /// Forward pairs (the later study is the target) scored, and their patients.
    pub pairs: usize,
    pub patients: usize,
    pub brier: f32,
    /// The same, predicting every lesion with the other patients' base rates.
    pub brier_base_rates: f32,
    /// Mean absolute error of the similar lesions' median log change of the long diameter.
    pub mae_median_change: f32,
    /// The same for predicting no change.
    pub mae_no_change: f32,
    pub base_rates: Shares,
    /// Whether the outlook's Brier score beat the base rates'. When false, the API and UI
    /// show the similar lesions as evidence but no prediction.
    pub beats_base_rates: bool,
}

/// Outlook parameters and their measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlookModel {
    /// Similar lesions consulted.
    pub neighbours: usize,
    /// Pseudo-counts of the base rates mixed into the neighbours' shares.
    pub prior_weight: f32,
    pub evaluation: Option<OutlookEvaluation>,
}

impl Default for OutlookModel {
    fn default() -> Self {
        OutlookModel {
            neighbours: 20,
            prior_weight: 20.0,
            evaluation: None,
        }
    }
}

const BUNDLED: &str = include_str!("../../data/followup/outlook.json");

impl OutlookModel {
    pub fn bundled() -> &'static OutlookModel {
        static MODEL: OnceLock<OutlookModel> = OnceLock::new();
        MODEL.get_or_init(|| {
            serde_json::from_str(BUNDLED).expect("the bundled outlook is checked by the tests")
        })
    }

    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Index {
            path: path.to_path_buf(),
            message: format!("not an outlook model: {e}"),
        })
    }
}

/// One similar lesion's course, the evidence behind an outlook.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SimilarCourse {
    pub from: u32,
    pub to: u32,
    pub distance: f32,
    pub from_long_mm: f32,
    pub to_long_mm: f32,
    pub change_percent: f32,
    pub years: Option<f32>,
    pub course: Course,
}

/// The outlook of one lesion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outlook {
    /// The most similar lesions of other patients that were seen again, nearest first.
    pub similar: Vec<SimilarCourse>,
    pub grew: usize,
    pub stable: usize,
    pub shrank: usize,
    /// Median long-diameter change of the similar lesions, in percent.
    pub median_change_percent: Option<f32>,
    /// Shares among all reference lesions of other patients.
    pub base_rates: Shares,
    /// The neighbours' shares mixed with the base rates; present only when the measured
    /// outlook beat the base rates on real pairs.
    pub prediction: Option<Shares>,
    /// Reference lesions with a follow-up that were consulted.
    pub reference_size: usize,
    /// The measurement on real pairs that decides whether a prediction is shown.
    pub evaluation: Option<OutlookEvaluation>,
}

fn median(mut values: Vec<f32>) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f32::total_cmp);
    let m = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[m - 1] + values[m]) / 2.0
    } else {
        values[m]
    })
}

/// The outlook of `lesion` from the trajectories of other patients.
pub fn outlook(model: &OutlookModel, lesion: &LesionProfile, reference: &[Trajectory]) -> Outlook {
    let others: Vec<&Trajectory> = reference
        .iter()
        .filter(|t| t.profile.patient != lesion.patient)
        .collect();
    let mut base_counts: HashMap<Course, usize> = HashMap::new();
    for t in &others {
        *base_counts.entry(Course::of(t.ratio())).or_default() += 1;
    }
    let base_rates = Shares::of_counts(&base_counts);
    let mut scored: Vec<(f32, &Trajectory)> = others
        .iter()
        .map(|t| (lesion.distance(&t.profile), *t))
        .collect();
    let order = |a: &(f32, &Trajectory), b: &(f32, &Trajectory)| {
        a.0.total_cmp(&b.0).then(a.1.from.cmp(&b.1.from))
    };
    if scored.len() > model.neighbours && model.neighbours > 0 {
        scored.select_nth_unstable_by(model.neighbours - 1, order);
    }
    scored.truncate(model.neighbours);
    scored.sort_by(order);
    let mut counts: HashMap<Course, usize> = HashMap::new();
    let similar: Vec<SimilarCourse> = scored
        .iter()
        .map(|(distance, t)| {
            let course = Course::of(t.ratio());
            *counts.entry(course).or_default() += 1;
            SimilarCourse {
                from: t.from,
                to: t.to,
                distance: *distance,
                from_long_mm: t.from_long_mm,
                to_long_mm: t.to_long_mm,
                change_percent: 100.0 * (t.ratio() - 1.0),
                years: t.years,
                course,
            }
        })
        .collect();
    let k = similar.len() as f32;
    let shares =
        Shares::of_counts(&counts).blend(base_rates, k / (k + model.prior_weight).max(1e-6));
    let beats = model
        .evaluation
        .as_ref()
        .is_some_and(|e| e.beats_base_rates);
    Outlook {
        grew: *counts.get(&Course::Grew).unwrap_or(&0),
        stable: *counts.get(&Course::Stable).unwrap_or(&0),
        shrank: *counts.get(&Course::Shrank).unwrap_or(&0),
        median_change_percent: median(similar.iter().map(|s| s.change_percent).collect()),
        similar,
        base_rates,
        prediction: (beats && k > 0.0).then_some(shares),
        reference_size: others.len(),
        evaluation: model.evaluation.clone(),
    }
}

/// Forward trajectories of real pairs (target in a later study), from a table.
pub fn table_trajectories(
    table: &LesionTable,
    pairs: &[FollowUpPair],
    vectors: &HashMap<usize, Vec<f32>>,
) -> Vec<Trajectory> {
    let (resolved, _) = resolve_pairs(table, pairs);
    resolved
        .into_iter()
        .filter_map(|p| {
            let (s, t) = (&table.records[p.source], &table.records[p.target]);
            (t.study > s.study).then(|| Trajectory {
                profile: LesionProfile::of(s, vectors.get(&p.source).cloned()),
                from: p.source as u32,
                to: p.target as u32,
                from_long_mm: s.long_diameter_mm(),
                to_long_mm: t.long_diameter_mm(),
                years: match (s.age, t.age) {
                    (Some(a), Some(b)) => Some(b - a),
                    _ => None,
                },
            })
        })
        .collect()
}

/// Pseudo-counts of base rates the fit chooses among: from trusting the similar lesions to
/// all but ignoring them.
pub const PRIOR_WEIGHTS: [f32; 9] = [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0, 1280.0];

/// Sums over scored lesions: outlook Brier, base-rate Brier, errors of the median change and
/// of "no change".
#[derive(Default)]
struct Scores {
    n: usize,
    brier: f64,
    brier_base: f64,
    mae: f64,
    mae_none: f64,
}

/// Scores the outlooks of `scored`, each made from `reference` (other patients only).
fn score(model: &OutlookModel, scored: &[&Trajectory], reference: &[Trajectory]) -> Scores {
    let unconditional = OutlookModel {
        evaluation: Some(OutlookEvaluation {
            command: String::new(),
            pairs: 0,
            patients: 0,
            brier: 0.0,
            brier_base_rates: 0.0,
            mae_median_change: 0.0,
            mae_no_change: 0.0,
            base_rates: Shares::default(),
            beats_base_rates: true,
        }),
        ..model.clone()
    };
    let mut sums = Scores::default();
    for t in scored {
        let o = outlook(&unconditional, &t.profile, reference);
        let course = Course::of(t.ratio());
        sums.n += 1;
        sums.brier += f64::from(o.prediction.unwrap_or(o.base_rates).brier(course));
        sums.brier_base += f64::from(o.base_rates.brier(course));
        let actual = t.ratio().ln();
        let median_log = median(
            o.similar
                .iter()
                .map(|s| (s.to_long_mm.max(0.1) / s.from_long_mm.max(0.1)).ln())
                .collect(),
        )
        .unwrap_or(0.0);
        sums.mae += f64::from((median_log - actual).abs());
        sums.mae_none += f64::from(actual.abs());
    }
    sums
}

/// The pseudo-count weight with the lowest leave-patient-out Brier score on `trajectories`.
pub fn choose_prior_weight(model: &OutlookModel, trajectories: &[Trajectory]) -> f32 {
    let all: Vec<&Trajectory> = trajectories.iter().collect();
    PRIOR_WEIGHTS
        .iter()
        .map(|&w| {
            let candidate = OutlookModel {
                prior_weight: w,
                ..model.clone()
            };
            (score(&candidate, &all, trajectories).brier, w)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map_or(model.prior_weight, |(_, w)| w)
}

/// Nested leave-patient-out measurement: the patients fall in five folds; for each fold the
/// pseudo-count weight is chosen on the other folds alone (itself leave-patient-out), and the
/// fold's lesions get outlooks made from the other folds' lesions, scored against those folds'
/// base rates. No lesion's own course, nor its patient's, ever informs its outlook.
pub fn evaluate_outlook(
    model: &OutlookModel,
    trajectories: &[Trajectory],
    command: &str,
) -> OutlookEvaluation {
    let mut sums = Scores::default();
    for fold in 0..super::fit::FOLDS {
        let in_fold = |t: &Trajectory| super::fit::fold_of(t.profile.patient) == fold;
        let train: Vec<Trajectory> = trajectories
            .iter()
            .filter(|t| !in_fold(t))
            .cloned()
            .collect();
        let test: Vec<&Trajectory> = trajectories.iter().filter(|t| in_fold(t)).collect();
        if train.is_empty() || test.is_empty() {
            continue;
        }
        let tuned = OutlookModel {
            prior_weight: choose_prior_weight(model, &train),
            ..model.clone()
        };
        let s = score(&tuned, &test, &train);
        sums.n += s.n;
        sums.brier += s.brier;
        sums.brier_base += s.brier_base;
        sums.mae += s.mae;
        sums.mae_none += s.mae_none;
    }
    let mut all_counts: HashMap<Course, usize> = HashMap::new();
    let mut patients = std::collections::BTreeSet::new();
    for t in trajectories {
        patients.insert(t.profile.patient);
        *all_counts.entry(Course::of(t.ratio())).or_default() += 1;
    }
    let n = sums.n.max(1) as f64;
    let (brier, brier_base) = ((sums.brier / n) as f32, (sums.brier_base / n) as f32);
    OutlookEvaluation {
        command: command.to_string(),
        pairs: sums.n,
        patients: patients.len(),
        brier,
        brier_base_rates: brier_base,
        mae_median_change: (sums.mae / n) as f32,
        mae_no_change: (sums.mae_none / n) as f32,
        base_rates: Shares::of_counts(&all_counts),
        beats_base_rates: brier < brier_base,
    }
}

/// The outlook to ship: its pseudo-count weight chosen on all the trajectories, and the
/// nested measurement of that procedure.
pub fn fit_outlook(
    model: &OutlookModel,
    trajectories: &[Trajectory],
    command: &str,
) -> OutlookModel {
    OutlookModel {
        prior_weight: choose_prior_weight(model, trajectories),
        evaluation: Some(evaluate_outlook(model, trajectories, command)),
        neighbours: model.neighbours,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn course(patient: u32, long_mm: f32, ratio: f32) -> Trajectory {
        Trajectory {
            profile: LesionProfile {
                patient,
                coarse_type: CoarseType::Lung,
                long_mm,
                location: Some([0.5, 0.5, 0.5]),
                age: Some(60.0),
                vector: None,
            },
            from: patient,
            to: patient + 1000,
            from_long_mm: long_mm,
            to_long_mm: long_mm * ratio,
            years: Some(1.0),
        }
    }

    #[test]
    fn courses_follow_the_recist_band_and_brier_scores_them() {
        assert_eq!(Course::of(1.21), Course::Grew);
        assert_eq!(Course::of(1.2), Course::Stable);
        assert_eq!(Course::of(0.79), Course::Shrank);
        let sure = Shares {
            grew: 1.0,
            stable: 0.0,
            shrank: 0.0,
        };
        assert_eq!(sure.brier(Course::Grew), 0.0);
        assert_eq!(sure.brier(Course::Shrank), 2.0);
    }

    #[test]
    fn an_outlook_uses_other_patients_and_predicts_only_when_measured_better() {
        // Small lesions grew, large ones shrank: the similar ones tell them apart.
        let mut reference: Vec<Trajectory> = (0..30).map(|p| course(p, 5.0, 1.5)).collect();
        reference.extend((30..60).map(|p| course(p, 50.0, 0.5)));
        let small = course(7, 5.0, 1.5).profile;
        let untested = OutlookModel::default();
        let o = outlook(&untested, &small, &reference);
        assert_eq!(o.reference_size, 59, "the lesion's own patient is left out");
        assert_eq!((o.grew, o.shrank), (20, 0));
        assert!(o.prediction.is_none(), "not measured: no prediction");
        let measured = evaluate_outlook(&untested, &reference, "test");
        assert!(measured.beats_base_rates && measured.brier < measured.brier_base_rates);
        let shipped = fit_outlook(&untested, &reference, "test");
        let p = outlook(&shipped, &small, &reference).prediction.unwrap();
        assert!(p.grew > 0.5 && p.grew > o.base_rates.grew, "{p:?}");
    }
}
