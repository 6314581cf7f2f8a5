//! The fitted same-lesion matcher: a conditional logit over a study's candidates with a
//! "not in this study" alternative, so every candidate gets a probability and "no match" is a
//! probability too, never a hard gate on one feature.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::features::{Features, FEATURES, FEATURE_NAMES};
use crate::error::{Error, Result};

/// Where the shipped weights came from (the model file says it; the API repeats it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// How the weights were made, as a command.
    pub command: String,
    /// What they were fitted on, with its licence.
    pub fitted_on: String,
    /// Pairs (each used with its target and once with the target withheld).
    pub pairs: usize,
    /// Five-fold leave-patient-out accuracy@1 on those pairs (weights fitted without the
    /// patient's pairs), the figure to quote; in-sample accuracy is higher.
    pub cross_validated_accuracy_at_1: f32,
    pub cross_validated_accuracy_at_3: f32,
}

/// Weights over standardized features: a candidate's utility is
/// `intercept - sum(weight * (feature - mean) / scale)`, "no match" has utility 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatcherModel {
    pub features: Vec<String>,
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    pub weights: Vec<f64>,
    pub intercept: f64,
    /// Below this probability the best candidate of a study is not called a match; chosen on
    /// the real pairs to get the most decisions right with and without the true target.
    pub match_threshold: f64,
    pub provenance: Provenance,
}

/// One candidate's standing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ranked {
    /// Index into the candidates given.
    pub candidate: usize,
    /// Probability that it is the lesion looked for.
    pub probability: f32,
}

/// A study's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudyMatch {
    /// Most probable first.
    pub ranked: Vec<Ranked>,
    /// Probability that the lesion is not among the candidates.
    pub no_match_probability: f32,
    /// The best candidate when its probability reaches the model's threshold.
    pub matched: Option<usize>,
}

const BUNDLED: &str = include_str!("../../data/followup/matcher.json");

impl MatcherModel {
    /// The weights fitted on real DLT pairs that ship with the project.
    pub fn bundled() -> &'static MatcherModel {
        static MODEL: OnceLock<MatcherModel> = OnceLock::new();
        MODEL.get_or_init(|| {
            Self::from_json(BUNDLED, "data/followup/matcher.json")
                .expect("the bundled follow-up matcher is checked by the tests")
        })
    }

    pub fn from_json(text: &str, label: &str) -> Result<Self> {
        let model: MatcherModel = serde_json::from_str(text).map_err(|e| Error::Index {
            path: label.into(),
            message: format!("not a follow-up matcher: {e}"),
        })?;
        model.check(label)?;
        Ok(model)
    }

    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, &path.display().to_string())
    }

    fn check(&self, label: &str) -> Result<()> {
        let bad = |message: String| Error::Index {
            path: label.into(),
            message,
        };
        if self.features != FEATURE_NAMES {
            return Err(bad(format!(
                "features {:?} are not the {FEATURES} this build computes ({FEATURE_NAMES:?})",
                self.features
            )));
        }
        for (name, values) in [
            ("mean", &self.mean),
            ("scale", &self.scale),
            ("weights", &self.weights),
        ] {
            if values.len() != FEATURES || values.iter().any(|v| !v.is_finite()) {
                return Err(bad(format!("`{name}` needs {FEATURES} finite numbers")));
            }
        }
        if self.scale.iter().any(|s| *s <= 0.0) {
            return Err(bad("`scale` must be positive".into()));
        }
        if !self.intercept.is_finite() || !(0.0..=1.0).contains(&self.match_threshold) {
            return Err(bad(
                "`intercept` must be finite and `match_threshold` in 0..1".into(),
            ));
        }
        Ok(())
    }

    /// Utility of each candidate (higher is likelier); "no match" is 0.
    pub fn utilities(&self, candidates: &[Features]) -> Vec<f64> {
        candidates
            .iter()
            .map(|f| {
                self.intercept
                    - (0..FEATURES)
                        .map(|i| self.weights[i] * (f64::from(f[i]) - self.mean[i]) / self.scale[i])
                        .sum::<f64>()
            })
            .collect()
    }

    /// Ranks one study's candidates against the lesion looked for.
    pub fn rank(&self, candidates: &[Features]) -> StudyMatch {
        let (probabilities, no_match) = probabilities(&self.utilities(candidates));
        let mut ranked: Vec<Ranked> = probabilities
            .iter()
            .enumerate()
            .map(|(candidate, p)| Ranked {
                candidate,
                probability: *p as f32,
            })
            .collect();
        ranked.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        let matched = ranked
            .first()
            .filter(|r| f64::from(r.probability) >= self.match_threshold)
            .map(|r| r.candidate);
        StudyMatch {
            ranked,
            no_match_probability: no_match as f32,
            matched,
        }
    }
}

/// Softmax of the utilities beside a "no match" alternative of utility 0.
pub(crate) fn probabilities(utilities: &[f64]) -> (Vec<f64>, f64) {
    let top = utilities.iter().copied().fold(0.0f64, f64::max);
    let exps: Vec<f64> = utilities.iter().map(|u| (u - top).exp()).collect();
    let none = (-top).exp();
    let total = none + exps.iter().sum::<f64>();
    (exps.iter().map(|e| e / total).collect(), none / total)
}
