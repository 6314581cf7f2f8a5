//! Same-lesion pairs resolved against a `DL_info.csv` table: every pair's candidates are the
//! table's lesions of the target study, as a clinician would face them. This is where the
//! matcher is fitted and measured (`lesion-indexer fit-followup`, `eval-followup`).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::features::{pair_features, with_appearance, Features};
use super::fit::{self, Group, NoMatchFigures};
use super::matcher::MatcherModel;
use crate::dataset::pairs::FollowUpPair;
use crate::dataset::{CoarseType, Dataset, LesionRecord};
use crate::embed::Embedder;
use crate::error::Result;

/// A table's lesions, looked up by slice and by study.
pub struct LesionTable {
    pub records: Vec<LesionRecord>,
    by_file: HashMap<String, Vec<usize>>,
    by_study: HashMap<(u32, u32), Vec<usize>>,
}

impl LesionTable {
    pub fn new(records: Vec<LesionRecord>) -> Self {
        let mut by_file: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_study: HashMap<(u32, u32), Vec<usize>> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            by_file.entry(r.file_name.clone()).or_default().push(i);
            by_study.entry((r.patient, r.study)).or_default().push(i);
        }
        LesionTable {
            records,
            by_file,
            by_study,
        }
    }

    /// The row on `file_name` whose box centre or RECIST centre (DLT gives the latter) is
    /// nearest `center`, within 10 px.
    pub fn resolve(&self, file_name: &str, center: [f32; 2]) -> Option<usize> {
        self.by_file
            .get(file_name)?
            .iter()
            .map(|&i| {
                let r = &self.records[i];
                let b = r.bbox.center();
                let ends = r.recist.long_axis.iter().chain(&r.recist.short_axis);
                let m = ends.fold((0.0, 0.0), |(x, y), p| (x + p.x / 4.0, y + p.y / 4.0));
                let d = |x: f32, y: f32| ((x - center[0]).powi(2) + (y - center[1]).powi(2)).sqrt();
                (d(b.x, b.y).min(d(m.0, m.1)), i)
            })
            .filter(|(d, _)| *d <= 10.0)
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, i)| i)
    }

    /// Where to look for `source` in `study`: the patient's lesions of that study, less the
    /// source itself and, in its own study, its own series (the same lesion is sought in
    /// another series of that study then).
    pub fn candidates(&self, source: usize, study: u32) -> Vec<usize> {
        let s = &self.records[source];
        self.by_study
            .get(&(s.patient, study))
            .map(|rows| {
                rows.iter()
                    .copied()
                    .filter(|&i| {
                        i != source && !(study == s.study && self.records[i].series == s.series)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A pair found in the table: row indexes of its two lesions.
#[derive(Debug, Clone, Copy)]
pub struct TablePair {
    pub source: usize,
    pub target: usize,
}

/// Resolves pairs; the second value counts those whose ends are not in the table.
pub fn resolve_pairs(table: &LesionTable, pairs: &[FollowUpPair]) -> (Vec<TablePair>, usize) {
    let mut found = Vec::new();
    for pair in pairs {
        if let (Some(source), Some(target)) = (
            table.resolve(&pair.source.file_name, pair.source.center),
            table.resolve(&pair.target.file_name, pair.target.center),
        ) {
            found.push(TablePair { source, target });
        }
    }
    let missing = pairs.len() - found.len();
    (found, missing)
}

/// Unit vectors of the lesions whose key slice is present under the dataset folder.
pub fn embed_present(
    table: &LesionTable,
    rows: &[usize],
    dataset: &Dataset,
    embedder: &dyn Embedder,
) -> Result<HashMap<usize, Vec<f32>>> {
    let spec = &embedder.card().patch;
    let mut vectors = HashMap::new();
    for &row in rows {
        let record = &table.records[row];
        if !record.key_slice_path(dataset.root()).is_file() || vectors.contains_key(&row) {
            continue;
        }
        let patch = dataset.lesion_patch(record, spec)?;
        let mut v = embedder.embed(std::slice::from_ref(&patch))?;
        vectors.insert(row, v.remove(0));
    }
    Ok(vectors)
}

/// The decision of a pair with its target present, and with it withheld (None when that
/// leaves no candidate: "no match" is then certain and teaches nothing).
pub fn groups_of(
    table: &LesionTable,
    pair: TablePair,
    vectors: &HashMap<usize, Vec<f32>>,
) -> (Group, Vec<usize>, Option<Group>) {
    let target_study = table.records[pair.target].study;
    let rows = table.candidates(pair.source, target_study);
    let source = &table.records[pair.source];
    let mut features: Vec<Features> = rows
        .iter()
        .map(|&c| pair_features(source, &table.records[c]))
        .collect();
    let cosines: Vec<Option<f32>> = rows
        .iter()
        .map(|c| {
            let (a, b) = (vectors.get(&pair.source)?, vectors.get(c)?);
            Some(crate::index::dot(a, b))
        })
        .collect();
    with_appearance(&mut features, &cosines);
    let answer = rows.iter().position(|&c| c == pair.target);
    let patient = source.patient;
    let withheld = answer.and_then(|a| {
        let mut rest = features.clone();
        rest.remove(a);
        let mut rest_cosines = cosines.clone();
        rest_cosines.remove(a);
        (!rest.is_empty()).then(|| {
            // Appearance is relative to the study's other candidates: recompute without it.
            for f in &mut rest {
                f[super::features::APPEARANCE] = 0.0;
            }
            with_appearance(&mut rest, &rest_cosines);
            Group {
                candidates: rest,
                answer: None,
                patient,
            }
        })
    });
    (
        Group {
            candidates: features,
            answer,
            patient,
        },
        rows,
        withheld,
    )
}

/// Accuracy of one slice of the pairs.
#[derive(Debug, Clone, Serialize)]
pub struct TypeFigures {
    pub coarse_type: CoarseType,
    pub pairs: usize,
    pub accuracy_at_1: f32,
}

/// Pairs where pixels were there for appearance, ranked without and with it.
#[derive(Debug, Clone, Serialize)]
pub struct AppearanceFigures {
    /// Pairs whose lesion and at least one candidate have their key slice on disk.
    pub pairs: usize,
    pub accuracy_at_1_table_only: f32,
    pub accuracy_at_1_with_appearance: f32,
}

/// What `eval-followup` reports.
#[derive(Debug, Clone, Serialize)]
pub struct FollowUpEvaluation {
    pub pairs: usize,
    /// Pairs whose two ends were found in the table.
    pub resolved: usize,
    /// Mean number of candidates in the target study.
    pub mean_candidates: f32,
    /// Share of resolved pairs whose target study holds only the target.
    pub single_candidate_share: f32,
    /// With the model given (fitted on these pairs when it is the bundled one).
    pub accuracy_at_1: f32,
    pub accuracy_at_3: f32,
    /// Five-fold leave-patient-out, refitted per fold: the figure for unseen patients.
    pub cross_validated_accuracy_at_1: f32,
    pub cross_validated_accuracy_at_3: f32,
    /// The nearest candidate by normalized location, for comparison.
    pub nearest_location_accuracy_at_1: f32,
    /// The matcher this one replaced (a 0.06 gate on location distance, then place and size
    /// without appearance), for comparison: a gated-out target counts as missed.
    pub previous_gate_accuracy_at_1: f32,
    /// Each pair once with its target and once with it withheld.
    pub no_match: NoMatchFigures,
    /// Leave-patient-out reliability of the best candidate's probability (same decisions).
    pub calibration: fit::Calibration,
    pub appearance: AppearanceFigures,
    pub by_type: Vec<TypeFigures>,
}

/// Scores `model` on the pairs (pixels used where `vectors` has them).
pub fn evaluate(
    table: &LesionTable,
    pairs: &[FollowUpPair],
    model: &MatcherModel,
    vectors: &HashMap<usize, Vec<f32>>,
) -> FollowUpEvaluation {
    let (resolved, _) = resolve_pairs(table, pairs);
    let mut tally = Tally::default();
    let mut present = Vec::new();
    let mut both = Vec::new();
    for &pair in &resolved {
        let (group, rows, withheld) = groups_of(table, pair, vectors);
        tally.count(table, model, vectors, pair, &group, &rows);
        if let Some(w) = withheld {
            both.push(w);
        }
        both.push(group.clone());
        present.push(group);
    }
    let (n, at1, at3) = fit::accuracy(model, &present);
    let (cv1, cv3) = fit::cross_validate(&both, fit::DEFAULT_L2);
    FollowUpEvaluation {
        pairs: pairs.len(),
        resolved: resolved.len(),
        mean_candidates: ratio(tally.candidates, resolved.len()),
        single_candidate_share: ratio(tally.single, resolved.len()),
        accuracy_at_1: ratio(at1, n),
        accuracy_at_3: ratio(at3, n),
        cross_validated_accuracy_at_1: cv1,
        cross_validated_accuracy_at_3: cv3,
        nearest_location_accuracy_at_1: ratio(tally.nearest_right, resolved.len()),
        previous_gate_accuracy_at_1: ratio(tally.gate_right, resolved.len()),
        no_match: fit::no_match_figures(model, &both, model.match_threshold),
        calibration: fit::calibration(&both, fit::DEFAULT_L2),
        appearance: AppearanceFigures {
            pairs: tally.with_pixels,
            accuracy_at_1_table_only: ratio(tally.pixels_table_right, tally.with_pixels),
            accuracy_at_1_with_appearance: ratio(tally.pixels_right, tally.with_pixels),
        },
        by_type: tally
            .by_type
            .into_iter()
            .map(|(coarse_type, (pairs, right))| TypeFigures {
                coarse_type,
                pairs,
                accuracy_at_1: ratio(right, pairs),
            })
            .collect(),
    }
}

/// `a / b`, 0 when there is nothing to divide by.
fn ratio(a: usize, b: usize) -> f32 {
    if b == 0 {
        0.0
    } else {
        a as f32 / b as f32
    }
}

/// What [`evaluate`] counts over the resolved pairs, besides the groups it fits on.
#[derive(Default)]
struct Tally {
    /// Candidates summed over the pairs.
    candidates: usize,
    /// Pairs whose target study holds only the target.
    single: usize,
    /// Pairs the nearest candidate by location gets right.
    nearest_right: usize,
    /// Pairs the previous gated matcher gets right.
    gate_right: usize,
    /// Pairs with pixels for appearance, and those ranked right without and with it.
    with_pixels: usize,
    pixels_table_right: usize,
    pixels_right: usize,
    /// Pairs and pairs ranked right, per coarse type of the source lesion.
    by_type: BTreeMap<CoarseType, (usize, usize)>,
}

impl Tally {
    /// Counts one pair, `group` being its decision with the target present.
    fn count(
        &mut self,
        table: &LesionTable,
        model: &MatcherModel,
        vectors: &HashMap<usize, Vec<f32>>,
        pair: TablePair,
        group: &Group,
        rows: &[usize],
    ) {
        let source = &table.records[pair.source];
        self.candidates += rows.len();
        self.single += usize::from(rows.len() == 1);
        self.nearest_right +=
            usize::from(nearest_by_location(table, source, rows) == Some(pair.target));
        self.gate_right +=
            usize::from(previous_gate_choice(table, source, rows) == Some(pair.target));
        let right = ranks_answer_first(model, &group.candidates, group.answer);
        let entry = self.by_type.entry(source.coarse_type).or_default();
        entry.0 += 1;
        entry.1 += usize::from(right);
        let has_pixels =
            vectors.contains_key(&pair.source) && rows.iter().any(|r| vectors.contains_key(r));
        if has_pixels {
            self.with_pixels += 1;
            self.pixels_right += usize::from(right);
            let table_only = without_appearance(&group.candidates);
            self.pixels_table_right +=
                usize::from(ranks_answer_first(model, &table_only, group.answer));
        }
    }
}

/// Whether `model`'s best candidate is the answer (never, when there is none).
fn ranks_answer_first(
    model: &MatcherModel,
    candidates: &[Features],
    answer: Option<usize>,
) -> bool {
    let top = model.rank(candidates).ranked.first().map(|r| r.candidate);
    answer.is_some() && top == answer
}

/// The candidates' features with appearance zeroed: the table alone.
fn without_appearance(candidates: &[Features]) -> Vec<Features> {
    let mut table_only = candidates.to_vec();
    for f in &mut table_only {
        f[super::features::APPEARANCE] = 0.0;
    }
    table_only
}

/// The candidate nearest the source by normalized location.
fn nearest_by_location(
    table: &LesionTable,
    source: &LesionRecord,
    rows: &[usize],
) -> Option<usize> {
    rows.iter().copied().min_by(|&a, &b| {
        let d = |c: usize| {
            let l = &table.records[c].location;
            (l.x - source.location.x).powi(2)
                + (l.y - source.location.y).powi(2)
                + (l.z - source.location.z).powi(2)
        };
        d(a).total_cmp(&d(b))
    })
}

/// The choice of the matcher this one replaced: a 0.06 gate on location distance, then
/// place and size without appearance.
fn previous_gate_choice(
    table: &LesionTable,
    source: &LesionRecord,
    rows: &[usize],
) -> Option<usize> {
    rows.iter()
        .map(|&c| {
            let r = &table.records[c];
            let d = ((r.location.x - source.location.x).powi(2)
                + (r.location.y - source.location.y).powi(2)
                + (r.location.z - source.location.z).powi(2))
            .sqrt();
            let size = (r.long_diameter_mm().max(0.1) / source.long_diameter_mm().max(0.1))
                .ln()
                .abs();
            (c, d, -6.0 * d - 0.3 * size)
        })
        .filter(|(_, d, _)| *d <= 0.06)
        .max_by(|a, b| a.2.total_cmp(&b.2))
        .map(|(c, ..)| c)
}

/// Fits a matcher on the pairs: weights, then the threshold, then cross-validated figures
/// for its provenance.
pub fn fit_matcher(
    table: &LesionTable,
    pairs: &[FollowUpPair],
    vectors: &HashMap<usize, Vec<f32>>,
    command: &str,
    fitted_on: &str,
) -> (MatcherModel, NoMatchFigures) {
    let (resolved, _) = resolve_pairs(table, pairs);
    let mut groups = Vec::new();
    for &pair in &resolved {
        let (group, _, withheld) = groups_of(table, pair, vectors);
        groups.push(group);
        groups.extend(withheld);
    }
    let (cv1, cv3) = fit::cross_validate(&groups, fit::DEFAULT_L2);
    let mut model = fit::fit(
        &groups,
        fit::DEFAULT_L2,
        super::matcher::Provenance {
            command: command.to_string(),
            fitted_on: fitted_on.to_string(),
            pairs: resolved.len(),
            cross_validated_accuracy_at_1: cv1,
            cross_validated_accuracy_at_3: cv3,
        },
    );
    let figures = fit::choose_threshold(&model, &groups);
    model.match_threshold = figures.threshold;
    (model, figures)
}
