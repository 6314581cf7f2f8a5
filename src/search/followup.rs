//! The same lesion in the patient's other studies, by the fitted matcher
//! ([`crate::followup::MatcherModel`]): every other study's lesions (in the lesion's own
//! study, those of its other series) are ranked with a probability, and the best is called a
//! match only above the threshold chosen on real pairs. The outlook of similar lesions draws
//! on the archive's own matched follow-ups.

use serde::Serialize;

use super::Engine;
use crate::dataset::LesionRecord;
use crate::error::{Error, Result};
use crate::followup::{
    outlook, pair_features, with_appearance, LesionProfile, MatcherModel, Outlook, OutlookModel,
    Trajectory,
};

/// One lesion of the series: the query itself or a candidate in another study.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FollowUp {
    pub id: u32,
    pub key: String,
    pub study: u32,
    pub series: u32,
    pub age: Option<f32>,
    pub long_mm: f32,
    pub short_mm: f32,
    /// Against the query lesion; `None` for the query itself.
    pub cosine: Option<f32>,
    pub location_distance: Option<f32>,
    /// Probability that this is the query lesion (the matcher's); `None` for the query.
    pub probability: Option<f32>,
    /// Long-diameter change against the query lesion, in percent.
    pub change_percent: f32,
}

/// One other study (or, in the lesion's own study, its other series) and its candidates.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StudyCandidates {
    pub study: u32,
    /// True for the lesion's own study, where other series are searched.
    pub same_study: bool,
    /// Most probable first.
    pub candidates: Vec<FollowUp>,
    /// Probability that the lesion is not among them.
    pub no_match_probability: f32,
    /// The candidate taken as the lesion, when its probability reaches the threshold.
    pub matched: Option<u32>,
}

/// What the matcher is, for the reader of its answers.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MatcherSummary {
    pub fitted_on: String,
    pub pairs: usize,
    pub cross_validated_accuracy_at_1: f32,
    pub match_threshold: f64,
}

/// A lesion over time.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FollowUps {
    pub lesion: u32,
    /// The query and its matches in other studies, by study.
    pub series: Vec<FollowUp>,
    /// Every other study with its ranked candidates, by study.
    pub studies: Vec<StudyCandidates>,
    /// Long-diameter growth between the first and last study, in mm per year, when the
    /// patient's age differs between them.
    pub growth_mm_per_year: Option<f32>,
    /// Long-diameter change per study interval, in percent (geometric mean), when there is
    /// more than one study.
    pub growth_percent_per_study: Option<f32>,
    pub matcher: MatcherSummary,
}

impl FollowUps {
    /// The lesion asked about, within its series.
    pub fn query(&self) -> &FollowUp {
        self.series
            .iter()
            .find(|f| f.id == self.lesion)
            .expect("the series holds the lesion asked about")
    }
}

fn location_distance(a: &LesionRecord, b: &LesionRecord) -> f32 {
    ((a.location.x - b.location.x).powi(2)
        + (a.location.y - b.location.y).powi(2)
        + (a.location.z - b.location.z).powi(2))
    .sqrt()
}

/// Long-diameter growth of a series sorted by study: mm per year (when the ages differ) and
/// percent per study interval (geometric mean).
fn growth(series: &[FollowUp]) -> (Option<f32>, Option<f32>) {
    let (first, last) = (&series[0], &series[series.len() - 1]);
    let per_year = match (first.age, last.age) {
        (Some(a), Some(b)) if b > a => Some((last.long_mm - first.long_mm) / (b - a)),
        _ => None,
    };
    let per_study = (series.len() > 1).then(|| {
        let ratio = last.long_mm.max(0.1) / first.long_mm.max(0.1);
        100.0 * (ratio.powf(1.0 / (series.len() - 1) as f32) - 1.0)
    });
    (per_year, per_study)
}

impl Engine {
    fn record_of(&self, id: u32) -> Result<LesionRecord> {
        self.lesion(id)?.map(|l| l.record).ok_or_else(|| {
            Error::invalid_argument("id", format!("lesion {id} is not in the index"))
        })
    }

    /// The lesion's candidates in each of the patient's other studies, ranked by the bundled
    /// matcher.
    pub fn followups(&self, id: u32) -> Result<FollowUps> {
        self.followups_with(id, MatcherModel::bundled())
    }

    pub fn followups_with(&self, id: u32, matcher: &MatcherModel) -> Result<FollowUps> {
        let query = self.record_of(id)?;
        let own = self.backend.vector(id)?;
        let mut series = vec![self.follow_up(id, &query, id, &query, None, None)];
        let mut studies = Vec::new();
        for (study, candidates) in self.other_studies(id, &query)? {
            let ranked = self.rank_study(id, &query, &own, study, &candidates, matcher)?;
            if let Some(m) = ranked.matched.filter(|_| study != query.study) {
                if let Some(f) = ranked.candidates.iter().find(|f| f.id == m) {
                    series.push(f.clone());
                }
            }
            studies.push(ranked);
        }
        series.sort_by_key(|f| f.study);
        let (growth_mm_per_year, growth_percent_per_study) = growth(&series);
        Ok(FollowUps {
            lesion: id,
            series,
            studies,
            growth_mm_per_year,
            growth_percent_per_study,
            matcher: MatcherSummary {
                fitted_on: matcher.provenance.fitted_on.clone(),
                pairs: matcher.provenance.pairs,
                cross_validated_accuracy_at_1: matcher.provenance.cross_validated_accuracy_at_1,
                match_threshold: matcher.match_threshold,
            },
        })
    }

    /// The patient's other lesions by study: in the query's own study, those of its other
    /// series only.
    fn other_studies(
        &self,
        id: u32,
        query: &LesionRecord,
    ) -> Result<std::collections::BTreeMap<u32, Vec<(u32, LesionRecord)>>> {
        let mut by_study: std::collections::BTreeMap<u32, Vec<(u32, LesionRecord)>> =
            Default::default();
        for other in self.catalog.of_patient(query.patient) {
            if other == id {
                continue;
            }
            let record = self.record_of(other)?;
            // In its own study the lesion is sought in the other series only.
            if record.study == query.study && record.series == query.series {
                continue;
            }
            by_study
                .entry(record.study)
                .or_default()
                .push((other, record));
        }
        Ok(by_study)
    }

    /// One study's candidates ranked by the matcher, with the "not in this study" share.
    fn rank_study(
        &self,
        id: u32,
        query: &LesionRecord,
        own: &[f32],
        study: u32,
        candidates: &[(u32, LesionRecord)],
        matcher: &MatcherModel,
    ) -> Result<StudyCandidates> {
        let mut features: Vec<_> = candidates
            .iter()
            .map(|(_, r)| pair_features(query, r))
            .collect();
        let cosines: Vec<Option<f32>> = candidates
            .iter()
            .map(|(other, _)| {
                let theirs = self.backend.vector(*other)?;
                Ok(Some(crate::index::dot(own, &theirs)))
            })
            .collect::<Result<_>>()?;
        with_appearance(&mut features, &cosines);
        let verdict = matcher.rank(&features);
        let ranked: Vec<FollowUp> = verdict
            .ranked
            .iter()
            .map(|r| {
                let (other, record) = &candidates[r.candidate];
                self.follow_up(
                    id,
                    query,
                    *other,
                    record,
                    cosines[r.candidate],
                    Some(r.probability),
                )
            })
            .collect();
        Ok(StudyCandidates {
            study,
            same_study: study == query.study,
            candidates: ranked,
            no_match_probability: verdict.no_match_probability,
            matched: verdict.matched.map(|i| candidates[i].0),
        })
    }

    /// `other` as seen from the query lesion `id`: its size, place and change.
    fn follow_up(
        &self,
        id: u32,
        query: &LesionRecord,
        other: u32,
        record: &LesionRecord,
        cosine: Option<f32>,
        probability: Option<f32>,
    ) -> FollowUp {
        let change = 100.0 * (record.long_diameter_mm() / query.long_diameter_mm().max(0.1) - 1.0);
        FollowUp {
            id: other,
            key: self
                .catalog
                .get(other)
                .map(|f| f.key.clone())
                .unwrap_or_default(),
            study: record.study,
            series: record.series,
            age: record.age,
            long_mm: record.long_diameter_mm(),
            short_mm: record.short_diameter_mm(),
            cosine,
            location_distance: (other != id).then(|| location_distance(query, record)),
            probability,
            change_percent: change,
        }
    }

    /// Every matched follow-up of the archive that goes forward in time: the lesions whose
    /// course the outlook can show. Built on first use and kept with this generation.
    pub fn trajectories(&self) -> Result<&[Trajectory]> {
        if let Some(done) = self.trajectories.get() {
            return Ok(done);
        }
        // One collector at a time: requests arriving meanwhile wait for its result instead
        // of each collecting their own.
        let _collecting = self
            .collecting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(done) = self.trajectories.get() {
            return Ok(done);
        }
        let mut found = Vec::new();
        for patient in self.catalog.patients() {
            let ids = self.catalog.of_patient(patient);
            let studies: std::collections::BTreeSet<u32> = ids
                .iter()
                .filter_map(|&i| self.catalog.get(i).map(|f| f.study))
                .collect();
            if studies.len() < 2 {
                continue;
            }
            for &id in &ids {
                let followups = self.followups(id)?;
                let query = followups.query();
                // The next later study where the lesion was matched.
                let Some(next) = followups.series.iter().find(|f| f.study > query.study) else {
                    continue;
                };
                let record = self.record_of(id)?;
                found.push(Trajectory {
                    profile: LesionProfile::of(
                        &record,
                        Some(self.backend.vector(id)?.into_owned()),
                    ),
                    from: id,
                    to: next.id,
                    from_long_mm: query.long_mm,
                    to_long_mm: next.long_mm,
                    years: match (query.age, next.age) {
                        (Some(a), Some(b)) => Some(b - a),
                        _ => None,
                    },
                });
            }
        }
        Ok(self.trajectories.get_or_init(|| found))
    }

    /// The outlook of an archive lesion: what became of the most similar lesions of other
    /// patients that were seen again.
    pub fn outlook(&self, id: u32) -> Result<Outlook> {
        let record = self.record_of(id)?;
        let profile = LesionProfile::of(&record, Some(self.backend.vector(id)?.into_owned()));
        self.outlook_of(&profile)
    }

    /// The outlook of any lesion described by its profile (an uploaded one: its vector, box
    /// size and what the user says of it).
    pub fn outlook_of(&self, profile: &LesionProfile) -> Result<Outlook> {
        Ok(outlook(
            OutlookModel::bundled(),
            profile,
            self.trajectories()?,
        ))
    }
}

impl Engine {
    /// What the outlook can know of an uploaded lesion: its look, its size from the box (the
    /// box's longer side, a RECIST long axis is rarely much shorter), and its type when the
    /// filter names one or the neighbours suggest one; no place, no age, no patient.
    pub(super) fn uploaded_profile(
        &self,
        image: &super::ImageQuery,
        vector: &[f32],
        filter: &crate::filter::Filter,
        suggestion: Option<&super::TypeSuggestion>,
    ) -> LesionProfile {
        let spacing = image
            .spacing_mm
            .or(image.image.spacing_mm.map(|s| s.0))
            .unwrap_or(super::ASSUMED_SPACING_MM);
        let b = image.bbox;
        let coarse_type = match filter.types.as_slice() {
            [one] => *one,
            _ => suggestion.map_or(crate::dataset::CoarseType::Unknown, |s| s.coarse_type),
        };
        LesionProfile {
            patient: u32::MAX,
            coarse_type,
            long_mm: (b.x2 - b.x1).abs().max((b.y2 - b.y1).abs()) * spacing,
            location: None,
            age: None,
            vector: Some(vector.to_vec()),
        }
    }
}
