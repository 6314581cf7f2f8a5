//! Fitting the matcher on same-lesion pairs: Newton's method on the conditional logit's
//! log-likelihood (a small convex problem: 14 parameters), the threshold chosen on the same
//! pairs, and leave-patient-out cross-validation for the figure worth quoting.

use super::features::{Features, FEATURES, FEATURE_NAMES};
use super::matcher::{probabilities, MatcherModel, Provenance};

/// One decision to learn from: a study's candidates and which one is the lesion (`None`:
/// it is not among them).
#[derive(Debug, Clone)]
pub struct Group {
    pub candidates: Vec<Features>,
    pub answer: Option<usize>,
    pub patient: u32,
}

/// Ridge penalty on the standardized weights: keeps rarely seen features (appearance) near 0.
pub const DEFAULT_L2: f64 = 1.0;
/// Folds of the leave-patient-out cross-validation.
pub const FOLDS: u32 = 5;

/// The fold a patient's pairs fall in: a fixed scramble of the patient number, so folds do
/// not follow patient order and a rerun gives the same figures.
pub fn fold_of(patient: u32) -> u32 {
    patient.wrapping_mul(2_654_435_761).rotate_right(13) % FOLDS
}

fn standardization(groups: &[Group]) -> (Vec<f64>, Vec<f64>) {
    let rows: Vec<&Features> = groups.iter().flat_map(|g| &g.candidates).collect();
    let n = rows.len().max(1) as f64;
    let mean: Vec<f64> = (0..FEATURES)
        .map(|i| rows.iter().map(|r| f64::from(r[i])).sum::<f64>() / n)
        .collect();
    let scale = (0..FEATURES)
        .map(|i| {
            let var = rows
                .iter()
                .map(|r| (f64::from(r[i]) - mean[i]).powi(2))
                .sum::<f64>()
                / n;
            if var > 1e-12 {
                var.sqrt()
            } else {
                1.0
            }
        })
        .collect();
    (mean, scale)
}

/// Design row of a candidate: the negated standardized features, then 1 for the intercept.
fn design(f: &Features, mean: &[f64], scale: &[f64]) -> [f64; FEATURES + 1] {
    let mut x = [1.0; FEATURES + 1];
    for i in 0..FEATURES {
        x[i] = -(f64::from(f[i]) - mean[i]) / scale[i];
    }
    x
}

const P: usize = FEATURES + 1;

fn objective(
    groups: &[Vec<[f64; P]>],
    answers: &[Option<usize>],
    theta: &[f64; P],
    l2: f64,
) -> f64 {
    let mut total = 0.0;
    for (rows, answer) in groups.iter().zip(answers) {
        let u: Vec<f64> = rows.iter().map(|x| dot(x, theta)).collect();
        let (p, none) = probabilities(&u);
        total += match answer {
            Some(a) => p[*a].max(1e-300).ln(),
            None => none.max(1e-300).ln(),
        };
    }
    total - 0.5 * l2 * theta[..FEATURES].iter().map(|t| t * t).sum::<f64>()
}

fn dot(a: &[f64; P], b: &[f64; P]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting (a is positive definite).
fn solve(mut a: [[f64; P]; P], mut b: [f64; P]) -> [f64; P] {
    for col in 0..P {
        let pivot = (col..P)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        let d = a[col][col];
        if d.abs() < 1e-300 {
            continue;
        }
        let pivot_row = a[col];
        for row in col + 1..P {
            let factor = a[row][col] / d;
            for (x, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= factor * p;
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = [0.0; P];
    for row in (0..P).rev() {
        let rest: f64 = (row + 1..P).map(|k| a[row][k] * x[k]).sum();
        x[row] = if a[row][row].abs() < 1e-300 {
            0.0
        } else {
            (b[row] - rest) / a[row][row]
        };
    }
    x
}

/// The weights that make the answers most probable (ridge-penalized); the threshold is left
/// at 0.5 for [`choose_threshold`] to set.
pub fn fit(groups: &[Group], l2: f64, provenance: Provenance) -> MatcherModel {
    let (mean, scale) = standardization(groups);
    let rows: Vec<Vec<[f64; P]>> = groups
        .iter()
        .map(|g| {
            g.candidates
                .iter()
                .map(|f| design(f, &mean, &scale))
                .collect()
        })
        .collect();
    let answers: Vec<Option<usize>> = groups.iter().map(|g| g.answer).collect();
    let mut theta = [0.0; P];
    let mut current = objective(&rows, &answers, &theta, l2);
    for _ in 0..100 {
        let mut gradient = [0.0; P];
        let mut hessian = [[0.0; P]; P];
        for (group, answer) in rows.iter().zip(&answers) {
            let u: Vec<f64> = group.iter().map(|x| dot(x, &theta)).collect();
            let (p, _) = probabilities(&u);
            let mut expected = [0.0; P];
            for (x, pc) in group.iter().zip(&p) {
                for i in 0..P {
                    expected[i] += pc * x[i];
                    for j in 0..P {
                        hessian[i][j] += pc * x[i] * x[j];
                    }
                }
            }
            for i in 0..P {
                gradient[i] += answer.map_or(0.0, |a| group[a][i]) - expected[i];
                for j in 0..P {
                    hessian[i][j] -= expected[i] * expected[j];
                }
            }
        }
        for i in 0..FEATURES {
            gradient[i] -= l2 * theta[i];
            hessian[i][i] += l2;
        }
        for (i, row) in hessian.iter_mut().enumerate() {
            row[i] += 1e-9;
        }
        let step = solve(hessian, gradient);
        let mut scale_step = 1.0;
        let mut improved = false;
        for _ in 0..30 {
            let mut next = theta;
            for i in 0..P {
                next[i] += scale_step * step[i];
            }
            let value = objective(&rows, &answers, &next, l2);
            if value >= current {
                let gain = value - current;
                theta = next;
                current = value;
                improved = gain > 1e-10;
                break;
            }
            scale_step /= 2.0;
        }
        if !improved {
            break;
        }
    }
    MatcherModel {
        features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        mean,
        scale,
        weights: theta[..FEATURES].to_vec(),
        intercept: theta[FEATURES],
        match_threshold: 0.5,
        provenance,
    }
}

/// How a threshold fares on a set of decisions with and without the true target.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct NoMatchFigures {
    pub threshold: f64,
    /// Decisions where the target was withheld.
    pub withheld: usize,
    /// Decisions where it was present.
    pub present: usize,
    /// Of the "no match" answers, the share where the target was indeed withheld.
    pub precision: f32,
    /// Of the withheld targets, the share answered "no match".
    pub recall: f32,
    /// Of the present targets, the share wrongly answered "no match".
    pub false_no_match: f32,
    /// Share of all decisions right (the right candidate, or "no match" when withheld).
    pub decisions_right: f32,
}

/// The best probability of each decision and whether its top candidate is the answer.
fn outcomes(model: &MatcherModel, groups: &[Group]) -> Vec<(f64, bool, bool)> {
    groups
        .iter()
        .map(|g| {
            let verdict = model.rank(&g.candidates);
            let best = verdict.ranked.first();
            let top_right = best.is_some_and(|r| Some(r.candidate) == g.answer);
            (
                best.map_or(0.0, |r| f64::from(r.probability)),
                g.answer.is_some(),
                top_right,
            )
        })
        .collect()
}

/// The figures of "no match" at a threshold.
pub fn no_match_figures(model: &MatcherModel, groups: &[Group], threshold: f64) -> NoMatchFigures {
    let outcomes = outcomes(model, groups);
    figures_at(&outcomes, threshold)
}

fn figures_at(outcomes: &[(f64, bool, bool)], threshold: f64) -> NoMatchFigures {
    let (mut said_none_right, mut said_none_wrong, mut right) = (0usize, 0usize, 0usize);
    let withheld = outcomes.iter().filter(|o| !o.1).count();
    let present = outcomes.len() - withheld;
    for &(best, has_target, top_right) in outcomes {
        let says_none = best < threshold;
        match (has_target, says_none) {
            (false, true) => {
                said_none_right += 1;
                right += 1;
            }
            (true, true) => said_none_wrong += 1,
            (true, false) if top_right => right += 1,
            _ => {}
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f32 / b as f32 };
    NoMatchFigures {
        threshold,
        withheld,
        present,
        precision: ratio(said_none_right, said_none_right + said_none_wrong),
        recall: ratio(said_none_right, withheld),
        false_no_match: ratio(said_none_wrong, present),
        decisions_right: ratio(right, outcomes.len()),
    }
}

/// The threshold that gets the most decisions right (ties: the lowest, so a true follow-up
/// is shown rather than hidden).
pub fn choose_threshold(model: &MatcherModel, groups: &[Group]) -> NoMatchFigures {
    let outcomes = outcomes(model, groups);
    let mut cuts: Vec<f64> = outcomes.iter().map(|o| o.0).collect();
    cuts.push(0.0);
    cuts.sort_by(f64::total_cmp);
    cuts.dedup();
    let mut best = figures_at(&outcomes, 0.0);
    for pair in cuts.windows(2) {
        let figures = figures_at(&outcomes, (pair[0] + pair[1]) / 2.0);
        if figures.decisions_right > best.decisions_right {
            best = figures;
        }
    }
    best
}

/// Accuracy@1 and @3 of a model on the decisions whose target is present.
pub fn accuracy(model: &MatcherModel, groups: &[Group]) -> (usize, usize, usize) {
    let (mut n, mut at1, mut at3) = (0, 0, 0);
    for g in groups {
        let Some(answer) = g.answer else { continue };
        n += 1;
        let verdict = model.rank(&g.candidates);
        let rank = verdict.ranked.iter().position(|r| r.candidate == answer);
        at1 += usize::from(rank == Some(0));
        at3 += usize::from(rank.is_some_and(|r| r < 3));
    }
    (n, at1, at3)
}

/// Calls `each` with every fold's decisions and the weights fitted on the other folds'
/// patients (folds left empty on either side are skipped).
fn for_each_fold(groups: &[Group], l2: f64, mut each: impl FnMut(&MatcherModel, &[Group])) {
    for fold in 0..FOLDS {
        let (test, train): (Vec<Group>, Vec<Group>) = groups
            .iter()
            .cloned()
            .partition(|g| fold_of(g.patient) == fold);
        if test.is_empty() || train.is_empty() {
            continue;
        }
        each(&fit(&train, l2, placeholder_provenance()), &test);
    }
}

/// Leave-patient-out accuracy@1 and @3: each fold's pairs ranked by weights fitted on the
/// other folds' patients.
pub fn cross_validate(groups: &[Group], l2: f64) -> (f32, f32) {
    let (mut n, mut at1, mut at3) = (0, 0, 0);
    for_each_fold(groups, l2, |model, test| {
        let (fn_, f1, f3) = accuracy(model, test);
        n += fn_;
        at1 += f1;
        at3 += f3;
    });
    let n = n.max(1) as f32;
    (at1 as f32 / n, at3 as f32 / n)
}

/// One probability band of a reliability table.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CalibrationBin {
    pub from: f32,
    pub to: f32,
    /// Decisions whose best candidate's probability fell in the band.
    pub decisions: usize,
    pub mean_probability: f32,
    /// Of them, the share whose best candidate was the lesion.
    pub share_right: f32,
}

/// Whether the best candidate's probability means what it says, for unseen patients.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Calibration {
    pub bins: Vec<CalibrationBin>,
    /// Mean gap between stated probability and share right, weighted by decisions.
    pub expected_calibration_error: f32,
}

/// Leave-patient-out reliability of the best candidate's probability over decisions with
/// and without their target, in ten bands.
pub fn calibration(groups: &[Group], l2: f64) -> Calibration {
    let mut outcomes: Vec<(f32, bool)> = Vec::new();
    for_each_fold(groups, l2, |model, test| {
        for g in test {
            if let Some(best) = model.rank(&g.candidates).ranked.first() {
                outcomes.push((best.probability, Some(best.candidate) == g.answer));
            }
        }
    });
    let mut bins = Vec::new();
    let mut gap = 0.0f32;
    for b in 0..10 {
        let (from, to) = (b as f32 / 10.0, (b + 1) as f32 / 10.0);
        let inside: Vec<&(f32, bool)> = outcomes
            .iter()
            .filter(|(p, _)| *p >= from && (*p < to || (b == 9 && *p <= to)))
            .collect();
        if inside.is_empty() {
            continue;
        }
        let n = inside.len() as f32;
        let mean_probability = inside.iter().map(|(p, _)| p).sum::<f32>() / n;
        let share_right = inside.iter().filter(|(_, right)| *right).count() as f32 / n;
        gap += n * (mean_probability - share_right).abs();
        bins.push(CalibrationBin {
            from,
            to,
            decisions: inside.len(),
            mean_probability,
            share_right,
        });
    }
    Calibration {
        bins,
        expected_calibration_error: gap / outcomes.len().max(1) as f32,
    }
}

pub(crate) fn placeholder_provenance() -> Provenance {
    Provenance {
        command: String::new(),
        fitted_on: String::new(),
        pairs: 0,
        cross_validated_accuracy_at_1: 0.0,
        cross_validated_accuracy_at_3: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::followup::features::FEATURES;

    /// Groups where the answer is the candidate nearest in z and of like size, among
    /// decoys; every other pair also withheld.
    fn groups(n: u32) -> Vec<Group> {
        let mut state = 7u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32) / (1u64 << 31) as f32
        };
        let mut out = Vec::new();
        for patient in 0..n {
            let mut candidates = Vec::new();
            let answer = (next() * 3.0) as usize % 3;
            for c in 0..3 {
                let mut f = [0.0f32; FEATURES];
                let near = c == answer;
                f[2] = if near {
                    0.01 * next()
                } else {
                    0.05 + 0.2 * next()
                };
                f[8] = if near { 0.1 * next() } else { 0.2 + next() };
                f[0] = next() * 0.1;
                candidates.push(f);
            }
            out.push(Group {
                candidates: candidates.clone(),
                answer: Some(answer),
                patient,
            });
            if patient % 2 == 0 {
                candidates.remove(answer);
                out.push(Group {
                    candidates,
                    answer: None,
                    patient,
                });
            }
        }
        out
    }

    #[test]
    fn fitting_learns_which_features_mark_the_same_lesion() {
        let data = groups(300);
        let model = fit(&data, DEFAULT_L2, placeholder_provenance());
        assert!(
            model.weights[2] > 0.5 && model.weights[8] > 0.5,
            "{:?}",
            model.weights
        );
        assert!(
            model.weights[0].abs() < model.weights[2] / 3.0,
            "{:?}",
            model.weights
        );
        let (n, at1, _) = accuracy(&model, &data);
        assert!(at1 as f32 / n as f32 > 0.97, "{at1}/{n}");
        let (cv1, _) = cross_validate(&data, DEFAULT_L2);
        assert!(cv1 > 0.95, "{cv1}");
    }

    #[test]
    fn the_threshold_separates_withheld_targets_and_probabilities_sum_to_one() {
        let data = groups(300);
        let mut model = fit(&data, DEFAULT_L2, placeholder_provenance());
        let figures = choose_threshold(&model, &data);
        model.match_threshold = figures.threshold;
        assert!(
            figures.recall > 0.9 && figures.precision > 0.9,
            "{figures:?}"
        );
        for g in &data {
            let verdict = model.rank(&g.candidates);
            let total: f32 = verdict.ranked.iter().map(|r| r.probability).sum::<f32>()
                + verdict.no_match_probability;
            assert!((total - 1.0).abs() < 1e-4);
            assert!(verdict
                .ranked
                .windows(2)
                .all(|w| w[0].probability >= w[1].probability));
        }
        // A study without candidates has nothing to match.
        assert_eq!(model.rank(&[]).matched, None);
    }

    #[test]
    fn a_model_file_with_other_features_or_bad_numbers_is_refused() {
        let model = crate::followup::MatcherModel::bundled().clone();
        let mut other = serde_json::to_value(&model).unwrap();
        other["features"][0] = "size".into();
        let err = crate::followup::MatcherModel::from_json(&other.to_string(), "m.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.json") && err.contains("features"), "{err}");
        let mut short = serde_json::to_value(&model).unwrap();
        short["weights"] = serde_json::json!([1.0]);
        let err = crate::followup::MatcherModel::from_json(&short.to_string(), "m.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("weights"), "{err}");
    }
}
