//! The same lesion in the patient's other studies: candidates are the patient's lesions in
//! each other study, scored by appearance (cosine of embeddings), place (distance between
//! normalized body locations) and size (log ratio of long diameters); the best candidate of a
//! study is a match when it lies near enough.

use serde::Serialize;

use super::Engine;
use crate::error::{Error, Result};

/// Farther apart than this (normalized location units, about 5% of the body) is another lesion.
const MAX_LOCATION_DISTANCE: f32 = 0.06;
/// Weights of place and size against appearance in the match score.
const LOCATION_WEIGHT: f32 = 6.0;
const SIZE_WEIGHT: f32 = 0.3;

/// One lesion of the series: the query itself or its match in another study.
#[derive(Debug, Clone, Serialize)]
pub struct FollowUp {
    pub id: u32,
    pub key: String,
    pub study: u32,
    pub age: Option<f32>,
    pub long_mm: f32,
    pub short_mm: f32,
    /// Against the query lesion; `None` for the query itself.
    pub cosine: Option<f32>,
    pub location_distance: Option<f32>,
    pub score: Option<f32>,
    /// Long-diameter change against the query lesion, in percent.
    pub change_percent: f32,
}

/// A lesion over time.
#[derive(Debug, Clone, Serialize)]
pub struct FollowUps {
    pub lesion: u32,
    /// The query and its matches, by study.
    pub series: Vec<FollowUp>,
    /// Long-diameter growth between the first and last study, in mm per year, when the
    /// patient's age differs between them.
    pub growth_mm_per_year: Option<f32>,
    /// Long-diameter change per study interval, in percent (geometric mean), when there is
    /// more than one study.
    pub growth_percent_per_study: Option<f32>,
}

impl Engine {
    /// The lesion's matches in the same patient's other studies.
    pub fn followups(&self, id: u32) -> Result<FollowUps> {
        let query = self
            .catalog
            .get(id)
            .ok_or_else(|| {
                Error::invalid_argument("id", format!("lesion {id} is not in the index"))
            })?
            .clone();
        let vectors = &self.archive.vectors.flat;
        let query_vector = vectors.vector(id);
        let mut best_per_study: std::collections::BTreeMap<u32, (f32, u32, f32, f32)> =
            Default::default();
        for other in self.catalog.of_patient(query.patient) {
            let Some(facts) = self.catalog.get(other) else {
                continue;
            };
            if facts.study == query.study {
                continue;
            }
            let distance = query
                .location
                .iter()
                .zip(&facts.location)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt();
            if distance > MAX_LOCATION_DISTANCE {
                continue;
            }
            let cosine = crate::index::dot(query_vector, vectors.vector(other));
            let size = (facts.long_mm.max(0.1) / query.long_mm.max(0.1)).ln().abs();
            let score = cosine - LOCATION_WEIGHT * distance - SIZE_WEIGHT * size;
            let entry = best_per_study.entry(facts.study).or_insert((
                f32::NEG_INFINITY,
                other,
                cosine,
                distance,
            ));
            if score > entry.0 {
                *entry = (score, other, cosine, distance);
            }
        }

        let key_of = |id: u32| -> Result<String> {
            Ok(self
                .catalog
                .get(id)
                .map(|f| f.key.clone())
                .unwrap_or_default())
        };
        let change = |long_mm: f32| 100.0 * (long_mm / query.long_mm.max(0.1) - 1.0);
        let mut series = vec![FollowUp {
            id,
            key: key_of(id)?,
            study: query.study,
            age: query.age,
            long_mm: query.long_mm,
            short_mm: query.short_mm,
            cosine: None,
            location_distance: None,
            score: None,
            change_percent: 0.0,
        }];
        for (study, (score, other, cosine, distance)) in best_per_study {
            let facts = self.catalog.get(other).expect("a candidate is live");
            series.push(FollowUp {
                id: other,
                key: key_of(other)?,
                study,
                age: facts.age,
                long_mm: facts.long_mm,
                short_mm: facts.short_mm,
                cosine: Some(cosine),
                location_distance: Some(distance),
                score: Some(score),
                change_percent: change(facts.long_mm),
            });
        }
        series.sort_by_key(|f| f.study);

        let (first, last) = (&series[0], &series[series.len() - 1]);
        let growth_mm_per_year = match (first.age, last.age) {
            (Some(a), Some(b)) if b > a => Some((last.long_mm - first.long_mm) / (b - a)),
            _ => None,
        };
        let growth_percent_per_study = (series.len() > 1).then(|| {
            let ratio = last.long_mm.max(0.1) / first.long_mm.max(0.1);
            100.0 * (ratio.powf(1.0 / (series.len() - 1) as f32) - 1.0)
        });
        Ok(FollowUps {
            lesion: id,
            series,
            growth_mm_per_year,
            growth_percent_per_study,
        })
    }
}
