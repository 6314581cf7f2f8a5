//! The retrieval protocol, stated once. `eval` (over an index's vectors) and
//! `evaluate-model` (over a model's vectors of an archive) both measure through [`measure`],
//! so their figures agree on the same archive and model.
//!
//! - Queries: the typed lesions of one split, the test split unless asked otherwise:
//!   patients no model trained on, the split DeepLesion reports its figures on.
//! - Gallery: every typed lesion of the archive, whatever its split, less the query's own
//!   patient. DeepLesion types only its validation and test lesions (training rows are -1,
//!   and `synth` copies that), so a gallery of "the other splits" is the validation split
//!   alone, whose size is a draw of the patient split: on `synth --lesions 3000 --seed 21`
//!   it is 359 lesions against 514 test queries, and P@5 there read 0.825 where the same
//!   vectors give 0.874 against every typed lesion. A figure of the model, not of the draw.
//! - The query's own patient is excluded: that patient's other lesions and the same lesion
//!   in their other studies would otherwise fill the top ranks. Splits are by patient, so
//!   no query can find itself or a follow-up of itself in another split either.
//! - Untyped lesions are neither queries nor gallery: they cannot judge a type.
//!
//! Location and size differences are measured on the same top 10 the types judge.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use crate::dataset::{CoarseType, LesionRecord, Split};
use crate::error::{Error, Result};
use crate::index::{IdSet, Plan, VectorIndex};
use crate::search::LesionFacts;

/// What the protocol reads of a lesion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JudgedLesion {
    pub patient: u32,
    pub split: Split,
    pub coarse_type: CoarseType,
    /// Normalized body location (x, y, z), each in 0..1.
    pub location: [f32; 3],
    pub long_mm: f32,
}

impl JudgedLesion {
    pub fn of_record(record: &LesionRecord) -> Self {
        JudgedLesion {
            patient: record.patient,
            split: record.split,
            coarse_type: record.coarse_type,
            location: [record.location.x, record.location.y, record.location.z],
            long_mm: record.long_diameter_mm(),
        }
    }

    pub fn of_facts(facts: &LesionFacts) -> Self {
        JudgedLesion {
            patient: facts.patient,
            split: facts.split,
            coarse_type: facts.coarse_type,
            location: facts.location,
            long_mm: facts.long_mm,
        }
    }

    /// Whether the lesion can judge a neighbour's type, and so belongs to the gallery.
    pub fn in_gallery(&self) -> bool {
        self.coarse_type.is_known()
    }

    fn is_query(&self, query_split: Split) -> bool {
        self.in_gallery() && self.split == query_split
    }
}

/// The queries and the gallery one run chose, counted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Protocol {
    pub query_split: Split,
    /// The typed lesions of the query split.
    pub queries: usize,
    /// Lesions of the query split without a type: not queries, nothing could judge them.
    pub untyped_in_query_split: usize,
    /// Every typed lesion, any split (each query searches it less its own patient).
    pub gallery: usize,
    /// The gallery's lesions per split, in split order, splits with none left out.
    pub gallery_by_split: Vec<(Split, usize)>,
    /// Lesions without a type, in no role.
    pub untyped: usize,
}

impl Protocol {
    /// The protocol in one line: the first line of `eval`'s report and of `evaluate-model`'s.
    pub fn statement(&self) -> String {
        let by_split: Vec<String> = self
            .gallery_by_split
            .iter()
            .map(|(split, n)| format!("{} {n}", split.name()))
            .collect();
        format!(
            "Protocol: queries: the typed lesions of the {} split (n = {}); gallery: the typed lesions of every split (n = {}: {}), each query's own patient excluded; untyped lesions (n = {}) neither query nor judge.",
            self.query_split.name(),
            self.queries,
            self.gallery,
            by_split.join(", "),
            self.untyped,
        )
    }
}

/// The queries and gallery of one run, as ids.
struct Selection {
    protocol: Protocol,
    queries: Vec<u32>,
    gallery: IdSet,
    by_patient: HashMap<u32, Vec<u32>>,
}

impl Selection {
    /// `lesions` by dense id; `None` for an id with no live lesion.
    fn of(lesions: &[Option<JudgedLesion>], query_split: Split) -> Result<Self> {
        let mut gallery = IdSet::new(lesions.len());
        let mut by_split: Vec<(Split, usize)> = Vec::new();
        let mut by_patient: HashMap<u32, Vec<u32>> = HashMap::new();
        let (mut queries, mut untyped, mut untyped_in_query_split) = (Vec::new(), 0, 0);
        for (id, lesion) in live(lesions) {
            by_patient.entry(lesion.patient).or_default().push(id);
            if !lesion.in_gallery() {
                untyped += 1;
                untyped_in_query_split += usize::from(lesion.split == query_split);
                continue;
            }
            gallery.insert(id);
            match by_split.iter_mut().find(|(s, _)| *s == lesion.split) {
                Some((_, n)) => *n += 1,
                None => by_split.push((lesion.split, 1)),
            }
            if lesion.is_query(query_split) {
                queries.push(id);
            }
        }
        if queries.is_empty() {
            return Err(Error::invalid_argument(
                "query_split",
                format!(
                    "no typed lesion of the archive is in the {} split",
                    query_split.name()
                ),
            ));
        }
        by_split.sort_by_key(|(split, _)| *split);
        Ok(Selection {
            protocol: Protocol {
                query_split,
                queries: queries.len(),
                untyped_in_query_split,
                gallery: gallery.len(),
                gallery_by_split: by_split,
                untyped,
            },
            queries,
            gallery,
            by_patient,
        })
    }

    /// What one query searches: the gallery less its own patient's lesions.
    fn gallery_for(&self, patient: u32) -> IdSet {
        let mut set = self.gallery.clone();
        for &id in self.by_patient.get(&patient).map_or(&[][..], Vec::as_slice) {
            set.remove(id);
        }
        set
    }
}

fn live(lesions: &[Option<JudgedLesion>]) -> impl Iterator<Item = (u32, &JudgedLesion)> {
    lesions
        .iter()
        .enumerate()
        .filter_map(|(id, lesion)| lesion.as_ref().map(|l| (id as u32, l)))
}

/// Per-type retrieval figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeFigures {
    pub queries: usize,
    pub p_at_1: f32,
    pub p_at_5: f32,
    pub p_at_10: f32,
}

/// Image retrieval under the protocol, by exact scan.
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalFigures {
    pub protocol: Protocol,
    pub p_at_1: f32,
    pub p_at_5: f32,
    pub p_at_10: f32,
    pub map_at_10: f32,
    /// Share of queries whose top 5 has a strict majority of the query's type.
    pub mmv_at_5: f32,
    /// Majority vote of the top 5 as the predicted type.
    pub knn_type_accuracy: f32,
    /// `confusion[true][predicted]` over [`CoarseType::KNOWN`].
    pub confusion: Vec<Vec<usize>>,
    pub per_type: Vec<(CoarseType, TypeFigures)>,
    /// Mean distance of normalized location over the top 10.
    pub location_difference: f32,
    /// Mean |ln long-diameter ratio| over the top 10.
    pub log_size_difference: f32,
    /// The queries' ids, in id order.
    #[serde(skip)]
    pub query_ids: Vec<u32>,
    /// Milliseconds of each query's exact top 10.
    #[serde(skip)]
    pub exact_latency_ms: Vec<f64>,
}

/// Ranks each query's top 10 in the gallery less its own patient (exact scan of `vectors`,
/// whose ids are those of `lesions`) and judges them by type, location and size.
pub fn measure(
    lesions: &[Option<JudgedLesion>],
    vectors: &VectorIndex,
    query_split: Split,
) -> Result<RetrievalFigures> {
    let selection = Selection::of(lesions, query_split)?;
    let lesion = |id: u32| {
        lesions[id as usize]
            .as_ref()
            .expect("selected lesions are live")
    };
    let mut tally = Tally::new();
    let mut exact_latency_ms = Vec::with_capacity(selection.queries.len());
    for &q in &selection.queries {
        let query = lesion(q);
        let allowed = selection.gallery_for(query.patient);
        let t = Instant::now();
        let (hits, _) = vectors.search_with(vectors.vector(q), 10, Some(&allowed), Plan::Exact);
        exact_latency_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let neighbours: Vec<&JudgedLesion> = hits.iter().map(|h| lesion(h.id)).collect();
        tally.add(query, &neighbours);
    }
    Ok(tally.figures(selection, exact_latency_ms))
}

/// Sums over the queries.
struct Tally {
    queries: usize,
    /// Precision at 1, 5 and 10.
    precision: [f32; 3],
    map10: f32,
    mmv: f32,
    knn_correct: usize,
    /// Per type: queries and precision at 1, 5, 10.
    by_type: HashMap<CoarseType, (usize, [f32; 3])>,
    confusion: Vec<Vec<usize>>,
    location_sum: f64,
    size_sum: f64,
    neighbours: usize,
}

impl Tally {
    fn new() -> Self {
        let known = CoarseType::KNOWN.len();
        Tally {
            queries: 0,
            precision: [0.0; 3],
            map10: 0.0,
            mmv: 0.0,
            knn_correct: 0,
            by_type: HashMap::new(),
            confusion: vec![vec![0; known]; known],
            location_sum: 0.0,
            size_sum: 0.0,
            neighbours: 0,
        }
    }

    fn add(&mut self, query: &JudgedLesion, neighbours: &[&JudgedLesion]) {
        self.add_neighbourhood(query, neighbours);
        let types: Vec<CoarseType> = neighbours.iter().map(|n| n.coarse_type).collect();
        self.add_typed(query.coarse_type, &types);
    }

    /// How far the neighbours lie in body location and size.
    fn add_neighbourhood(&mut self, query: &JudgedLesion, neighbours: &[&JudgedLesion]) {
        for f in neighbours {
            let d: f32 = query
                .location
                .iter()
                .zip(&f.location)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt();
            self.location_sum += f64::from(d);
            self.size_sum += f64::from((f.long_mm.max(0.1) / query.long_mm.max(0.1)).ln().abs());
            self.neighbours += 1;
        }
    }

    /// Precision, average precision, majority vote and k-NN type of one query whose ranked
    /// neighbours have `types`.
    fn add_typed(&mut self, query: CoarseType, types: &[CoarseType]) {
        self.queries += 1;
        let same: Vec<bool> = types.iter().map(|t| *t == query).collect();
        let precision = |k: usize| same.iter().take(k).filter(|s| **s).count() as f32 / k as f32;
        let at = [precision(1), precision(5), precision(10)];
        let entry = self.by_type.entry(query).or_default();
        entry.0 += 1;
        for ((overall, of_type), p) in self.precision.iter_mut().zip(&mut entry.1).zip(at) {
            *overall += p;
            *of_type += p;
        }
        // Average precision over the top 10 (relevant = same type among the retrieved).
        let mut found = 0;
        let mut ap = 0.0;
        for (i, s) in same.iter().enumerate() {
            if *s {
                found += 1;
                ap += found as f32 / (i + 1) as f32;
            }
        }
        if found > 0 {
            self.map10 += ap / found as f32;
        }
        if same.iter().take(5).filter(|s| **s).count() >= 3 {
            self.mmv += 1.0;
        }
        self.add_vote(query, types);
    }

    /// k-NN type: the majority of the top 5, ties to the better ranked.
    fn add_vote(&mut self, query: CoarseType, types: &[CoarseType]) {
        let mut votes: Vec<(CoarseType, usize, usize)> = Vec::new();
        for (rank, t) in types.iter().take(5).enumerate() {
            match votes.iter_mut().find(|v| v.0 == *t) {
                Some(v) => v.1 += 1,
                None => votes.push((*t, 1, rank)),
            }
        }
        votes.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        if let Some(&(predicted, ..)) = votes.first() {
            if predicted == query {
                self.knn_correct += 1;
            }
            let slot = |t: CoarseType| CoarseType::KNOWN.iter().position(|k| *k == t);
            if let (Some(t), Some(p)) = (slot(query), slot(predicted)) {
                self.confusion[t][p] += 1;
            }
        }
    }

    fn per_type(&self) -> Vec<(CoarseType, TypeFigures)> {
        let mut out: Vec<(CoarseType, TypeFigures)> = self
            .by_type
            .iter()
            .map(|(t, (n, sums))| {
                let n32 = (*n).max(1) as f32;
                (
                    *t,
                    TypeFigures {
                        queries: *n,
                        p_at_1: sums[0] / n32,
                        p_at_5: sums[1] / n32,
                        p_at_10: sums[2] / n32,
                    },
                )
            })
            .collect();
        out.sort_by_key(|(t, _)| *t);
        out
    }

    fn figures(self, selection: Selection, exact_latency_ms: Vec<f64>) -> RetrievalFigures {
        let n = self.queries.max(1) as f32;
        let neighbours = self.neighbours.max(1) as f64;
        RetrievalFigures {
            p_at_1: self.precision[0] / n,
            p_at_5: self.precision[1] / n,
            p_at_10: self.precision[2] / n,
            map_at_10: self.map10 / n,
            mmv_at_5: self.mmv / n,
            knn_type_accuracy: self.knn_correct as f32 / n,
            per_type: self.per_type(),
            confusion: self.confusion,
            location_difference: (self.location_sum / neighbours) as f32,
            log_size_difference: (self.size_sum / neighbours) as f32,
            protocol: selection.protocol,
            query_ids: selection.queries,
            exact_latency_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lesion(patient: u32, split: Split, coarse_type: CoarseType) -> Option<JudgedLesion> {
        Some(JudgedLesion {
            patient,
            split,
            coarse_type,
            location: [0.5; 3],
            long_mm: 10.0,
        })
    }

    /// Two untyped training lesions, two typed validation lesions, three typed and one
    /// untyped test lesion, one dead id.
    fn archive() -> Vec<Option<JudgedLesion>> {
        vec![
            lesion(1, Split::Train, CoarseType::Unknown),
            lesion(1, Split::Train, CoarseType::Unknown),
            lesion(2, Split::Validation, CoarseType::Lung),
            lesion(3, Split::Validation, CoarseType::Liver),
            lesion(4, Split::Test, CoarseType::Lung),
            lesion(4, Split::Test, CoarseType::Lung),
            None,
            lesion(5, Split::Test, CoarseType::Liver),
            lesion(5, Split::Test, CoarseType::Unknown),
        ]
    }

    #[test]
    fn queries_are_the_typed_test_lesions_and_the_gallery_every_typed_lesion() {
        let selection = Selection::of(&archive(), Split::Test).unwrap();
        assert_eq!(selection.queries, vec![4, 5, 7]);
        assert_eq!(
            selection.gallery.iter().collect::<Vec<_>>(),
            vec![2, 3, 4, 5, 7]
        );
        assert_eq!(
            selection.protocol,
            Protocol {
                query_split: Split::Test,
                queries: 3,
                untyped_in_query_split: 1,
                gallery: 5,
                gallery_by_split: vec![(Split::Validation, 2), (Split::Test, 3)],
                untyped: 3,
            }
        );
        assert_eq!(
            selection.protocol.statement(),
            "Protocol: queries: the typed lesions of the test split (n = 3); gallery: the typed lesions of every split (n = 5: validation 2, test 3), each query's own patient excluded; untyped lesions (n = 3) neither query nor judge."
        );
    }

    #[test]
    fn a_query_never_searches_its_own_patient() {
        let selection = Selection::of(&archive(), Split::Test).unwrap();
        assert_eq!(
            selection.gallery_for(4).iter().collect::<Vec<_>>(),
            vec![2, 3, 7]
        );
        assert_eq!(
            selection.gallery_for(5).iter().collect::<Vec<_>>(),
            vec![2, 3, 4, 5]
        );
    }

    #[test]
    fn labelled_training_lesions_join_the_gallery_but_never_query() {
        let mut lesions = archive();
        lesions[0] = lesion(1, Split::Train, CoarseType::Bone);
        let selection = Selection::of(&lesions, Split::Test).unwrap();
        assert_eq!(selection.queries, vec![4, 5, 7]);
        assert!(selection.gallery.contains(0));
        assert_eq!(
            selection.protocol.gallery_by_split,
            vec![(Split::Train, 1), (Split::Validation, 2), (Split::Test, 3)]
        );
    }

    #[test]
    fn a_split_without_typed_lesions_is_refused_by_name() {
        let lesions = vec![lesion(1, Split::Test, CoarseType::Unknown)];
        let error = Selection::of(&lesions, Split::Test).err().unwrap();
        assert!(error.to_string().contains("query_split"), "{error}");
    }
}
