//! Retrieval quality the way the DeepLesion literature measures it: queries are the lesions
//! of one split, the database the others, hits from the query's own patient excluded.
//! Also follow-up matching on same-lesion pairs, text retrieval, the approximate index
//! against the exact one, and latency per query kind. [`plots`] draws the figures;
//! [`text_benchmark`] is the LesaNet report-phrase benchmark.

pub mod pairs;
pub mod plots;
pub mod real_ct;
pub mod text_benchmark;

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::Allowed;
use crate::dataset::{CoarseType, Split};
use crate::error::{Error, Result};
use crate::index::{FlatIndex, GraphParams, IdSet, Plan, VectorIndex};
use crate::search::{Engine, ImageQuery, LesionFacts, SearchRequest};

pub use pairs::{read_pairs, FollowUpPair};

/// A text query and what is relevant to it: listed lesion keys, or every lesion of the
/// listed coarse types.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextQuery {
    pub text: String,
    #[serde(default)]
    pub relevant: Vec<String>,
    #[serde(default)]
    pub types: Vec<CoarseType>,
}

/// Phrases per coarse type, used when no text queries are given: relevant = that type.
pub fn default_text_queries() -> Vec<TextQuery> {
    let phrases: [(&str, CoarseType); 10] = [
        ("lung nodule", CoarseType::Lung),
        ("pulmonary mass", CoarseType::Lung),
        ("liver lesion", CoarseType::Liver),
        ("hepatic hypodensity", CoarseType::Liver),
        ("renal lesion", CoarseType::Kidney),
        ("mediastinal lymph node", CoarseType::Mediastinum),
        ("bone lesion", CoarseType::Bone),
        ("pelvic mass", CoarseType::Pelvis),
        ("soft tissue nodule", CoarseType::SoftTissue),
        ("abdominal lymph node", CoarseType::Abdomen),
    ];
    phrases
        .iter()
        .map(|(text, t)| TextQuery {
            text: text.to_string(),
            relevant: Vec::new(),
            types: vec![*t],
        })
        .collect()
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub query_split: Split,
    pub pairs: Vec<FollowUpPair>,
    pub text_queries: Vec<TextQuery>,
    /// Image queries (embedding included) timed on this many lesions.
    pub image_queries: usize,
}

/// Per-type retrieval figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeFigures {
    pub queries: usize,
    pub p_at_1: f32,
    pub p_at_5: f32,
    pub p_at_10: f32,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub queries: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Every latency, for the histogram.
    #[serde(skip)]
    pub samples: Vec<f64>,
}

impl Latency {
    fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            if samples.is_empty() {
                0.0
            } else {
                samples[((samples.len() - 1) as f64 * q).round() as usize]
            }
        };
        Latency {
            queries: samples.len(),
            p50_ms: pick(0.5),
            p99_ms: pick(0.99),
            samples: samples.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FollowUpFigures {
    pub pairs: usize,
    /// Pairs whose two lesions were both found in the index.
    pub resolved: usize,
    pub accuracy_at_1: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct TextFigures {
    pub queries: usize,
    pub ndcg_at_10: f32,
    pub p_at_10: f32,
}

/// Everything `eval` measures.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub model: String,
    pub lesions: usize,
    pub query_split: Split,
    pub queries: usize,
    pub typed_queries: usize,
    pub database: usize,
    pub p_at_1: f32,
    pub p_at_5: f32,
    pub p_at_10: f32,
    pub map_at_10: f32,
    /// Share of queries whose top 5 has a strict majority of the query's type.
    pub mmv_at_5: f32,
    /// Mean distance of normalized location over the top 10.
    pub location_difference: f32,
    /// Mean |ln long-diameter ratio| over the top 10.
    pub log_size_difference: f32,
    /// Majority vote of the top 5 as the predicted type.
    pub knn_type_accuracy: f32,
    /// `confusion[true][predicted]` over [`CoarseType::KNOWN`].
    pub confusion: Vec<Vec<usize>>,
    pub per_type: Vec<(CoarseType, TypeFigures)>,
    pub recall_at_10: f32,
    /// How the approximate path was measured (the index's graph, or one built for the
    /// evaluation when the index is small enough to need none).
    pub recall_source: String,
    pub followups: Option<FollowUpFigures>,
    pub text: Option<TextFigures>,
    pub latency: Vec<(String, Latency)>,
}

fn typed(t: CoarseType) -> bool {
    t.is_known()
}

/// Runs the evaluation on an open engine: image retrieval by exact scan, the graph against
/// it, follow-ups, text, and the latency of whole requests.
pub fn evaluate(engine: &Engine, options: &EvalOptions) -> Result<EvalReport> {
    let split = QuerySplit::of(engine, options.query_split)?;
    // The graph is measured against the exact scan over the same vectors, in-process.
    let vectors = engine.vectors().ok_or_else(|| {
        Error::invalid_argument(
            "backend",
            format!(
                "the evaluation needs the vectors in-process; the {} backend keeps them elsewhere",
                engine.backend().name
            ),
        )
    })?;
    let image = ImageRetrieval::measure(engine, vectors, &split);
    let graph = graph_recall(vectors, &split.queries);
    let followups = if options.pairs.is_empty() {
        None
    } else {
        Some(pairs::evaluate_followups(engine, &options.pairs)?)
    };
    let mut latency = vec![
        (
            "vector exact top-10".to_string(),
            Latency::of(image.exact_latency.clone()),
        ),
        (
            "vector graph top-10".to_string(),
            Latency::of(graph.latency),
        ),
    ];
    let text = if options.text_queries.is_empty() {
        None
    } else {
        let (figures, samples) = text_retrieval(
            engine,
            &options.text_queries,
            &split.whole_database,
            &split.typed_database,
        )?;
        latency.push(("text (BM25)".to_string(), Latency::of(samples)));
        Some(figures)
    };
    latency.extend(request_latency(
        engine,
        &split.queries,
        options.image_queries,
    )?);
    let tq = image.typed_queries.max(1) as f32;
    let neighbours = image.neighbours.max(1) as f64;
    Ok(EvalReport {
        model: engine.published.manifest.model.name.clone(),
        lesions: split.live,
        query_split: options.query_split,
        queries: split.queries.len(),
        typed_queries: image.typed_queries,
        database: split.database,
        p_at_1: image.precision[0] / tq,
        p_at_5: image.precision[1] / tq,
        p_at_10: image.precision[2] / tq,
        map_at_10: image.map10 / tq,
        mmv_at_5: image.mmv / tq,
        location_difference: (image.location_sum / neighbours) as f32,
        log_size_difference: (image.size_sum / neighbours) as f32,
        knn_type_accuracy: image.knn_correct as f32 / tq,
        per_type: image.per_type(),
        confusion: image.confusion,
        recall_at_10: graph.recall_at_10,
        recall_source: graph.source,
        followups,
        text,
        latency,
    })
}

/// Queries (the live lesions of one split) and the database they search (the others).
struct QuerySplit {
    live: usize,
    queries: Vec<u32>,
    database: usize,
    whole_database: IdSet,
    /// The database's lesions of a known type: what type-based metrics can judge.
    typed_database: IdSet,
}

impl QuerySplit {
    fn of(engine: &Engine, query_split: Split) -> Result<Self> {
        let catalog = &engine.catalog;
        let capacity = catalog.capacity();
        let live: Vec<u32> = (0..capacity as u32)
            .filter(|&id| catalog.get(id).is_some())
            .collect();
        let (queries, database): (Vec<u32>, Vec<u32>) = live
            .iter()
            .partition(|&&id| catalog.get(id).is_some_and(|f| f.split == query_split));
        if queries.is_empty() {
            return Err(Error::invalid_argument(
                "query_split",
                format!(
                    "no lesion of the index is in the {} split",
                    query_split.name()
                ),
            ));
        }
        Ok(QuerySplit {
            live: live.len(),
            typed_database: IdSet::from_ids(
                capacity,
                database
                    .iter()
                    .copied()
                    .filter(|&id| catalog.get(id).is_some_and(|f| typed(f.coarse_type))),
            ),
            whole_database: IdSet::from_ids(capacity, database.iter().copied()),
            database: database.len(),
            queries,
        })
    }
}

/// Image retrieval by exact scan, summed over the queries.
struct ImageRetrieval {
    typed_queries: usize,
    /// Precision at 1, 5 and 10, summed.
    precision: [f32; 3],
    map10: f32,
    mmv: f32,
    knn_correct: usize,
    /// Per type: queries and summed precision at 1, 5, 10.
    by_type: HashMap<CoarseType, (usize, [f32; 3])>,
    confusion: Vec<Vec<usize>>,
    location_sum: f64,
    size_sum: f64,
    neighbours: usize,
    exact_latency: Vec<f64>,
}

impl ImageRetrieval {
    fn measure(engine: &Engine, vectors: &VectorIndex, split: &QuerySplit) -> Self {
        let catalog = &engine.catalog;
        let known = CoarseType::KNOWN.len();
        let mut figures = ImageRetrieval {
            typed_queries: 0,
            precision: [0.0; 3],
            map10: 0.0,
            mmv: 0.0,
            knn_correct: 0,
            by_type: HashMap::new(),
            confusion: vec![vec![0; known]; known],
            location_sum: 0.0,
            size_sum: 0.0,
            neighbours: 0,
            exact_latency: Vec::new(),
        };
        for &q in &split.queries {
            let facts = catalog.get(q).expect("live");
            let without_own_patient = |set: &IdSet| {
                let mut s = set.clone();
                for other in catalog.of_patient(facts.patient) {
                    s.remove(other);
                }
                s
            };
            let query = vectors.flat.vector(q);
            // Location and size over the whole database (typed or not).
            let allowed = without_own_patient(&split.whole_database);
            let t = Instant::now();
            let (hits, _) = vectors.search_with(query, 10, Some(&allowed), Plan::Exact);
            figures.exact_latency.push(t.elapsed().as_secs_f64() * 1e3);
            let neighbours: Vec<&LesionFacts> = hits
                .iter()
                .map(|h| catalog.get(h.id).expect("live"))
                .collect();
            figures.add_neighbourhood(facts, &neighbours);
            if typed(facts.coarse_type) {
                let allowed = without_own_patient(&split.typed_database);
                let (hits, _) = vectors.search_with(query, 10, Some(&allowed), Plan::Exact);
                let types: Vec<CoarseType> = hits
                    .iter()
                    .map(|h| catalog.get(h.id).expect("live").coarse_type)
                    .collect();
                figures.add_typed(facts.coarse_type, &types);
            }
        }
        figures
    }

    /// How far the neighbours lie in body location and size.
    fn add_neighbourhood(&mut self, query: &LesionFacts, neighbours: &[&LesionFacts]) {
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

    /// Precision, average precision, majority vote and k-NN type of one typed query whose
    /// ranked neighbours have `types`.
    fn add_typed(&mut self, query: CoarseType, types: &[CoarseType]) {
        self.typed_queries += 1;
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
        // k-NN type: the majority of the top 5, ties to the better ranked.
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
}

/// The approximate path against the exact one, on the same queries.
struct GraphRecall {
    recall_at_10: f32,
    /// Which graph was measured.
    source: String,
    latency: Vec<f64>,
}

fn graph_recall(vectors: &VectorIndex, queries: &[u32]) -> GraphRecall {
    let built;
    let (approximate, source): (&VectorIndex, String) = if vectors.graph.is_some() {
        (
            vectors,
            format!("the index's HNSW graph (ef {})", vectors.ef),
        )
    } else {
        let (index, calibration) = VectorIndex::with_graph(
            FlatIndex::from_data(vectors.flat.dim(), vectors.flat.data().to_vec()),
            GraphParams::default(),
        );
        built = index;
        (
            &built,
            format!(
                "an HNSW graph built for the evaluation (the index is exact-only below its graph threshold; ef {})",
                calibration.ef
            ),
        )
    };
    let mut latency = Vec::new();
    let (mut hit, mut total) = (0usize, 0usize);
    for &q in queries {
        let query = approximate.flat.vector(q);
        let (truth, _) = approximate.search_with(query, 10, None, Plan::Exact);
        let t = Instant::now();
        let (found, _) = approximate.search_with(
            query,
            10,
            None,
            Plan::Graph {
                ef: approximate.ef.max(10),
            },
        );
        latency.push(t.elapsed().as_secs_f64() * 1e3);
        hit += truth
            .iter()
            .filter(|t| found.iter().any(|f| f.id == t.id))
            .count();
        total += truth.len();
    }
    GraphRecall {
        recall_at_10: hit as f32 / total.max(1) as f32,
        source,
        latency,
    }
}

/// Whole engine requests: by lesion (up to 500), and by image with the embedding included.
fn request_latency(
    engine: &Engine,
    queries: &[u32],
    image_queries: usize,
) -> Result<Vec<(String, Latency)>> {
    let mut lesion_latency = Vec::new();
    for &q in queries.iter().take(500) {
        let t = Instant::now();
        engine.search(&SearchRequest {
            lesion: Some(q),
            k: 10,
            ..Default::default()
        })?;
        lesion_latency.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut out = vec![("search by lesion".to_string(), Latency::of(lesion_latency))];
    let mut image_latency = Vec::new();
    for &q in queries.iter().take(image_queries) {
        let lesion = engine.lesion(q)?.expect("live");
        let image = engine
            .published
            .dataset_of(&lesion)
            .load_key_slice(&lesion.record)?;
        let request = SearchRequest {
            image: Some(ImageQuery {
                image,
                bbox: lesion.record.bbox,
                spacing_mm: Some(lesion.record.spacing.x_mm),
            }),
            k: 10,
            ..Default::default()
        };
        let t = Instant::now();
        engine.search(&request)?;
        image_latency.push(t.elapsed().as_secs_f64() * 1e3);
    }
    if !image_latency.is_empty() {
        out.push((
            "search by image (embedding included)".to_string(),
            Latency::of(image_latency),
        ));
    }
    Ok(out)
}

/// nDCG@10 and P@10 of text queries over the database (binary relevance). Queries judged
/// by coarse type search the typed lesions only, as the image metrics do (an untyped
/// lesion cannot be judged).
fn text_retrieval(
    engine: &Engine,
    queries: &[TextQuery],
    whole_database: &IdSet,
    typed_database: &IdSet,
) -> Result<(TextFigures, Vec<f64>)> {
    let catalog = &engine.catalog;
    let (mut ndcg, mut p10) = (0f32, 0f32);
    let mut samples = Vec::new();
    for query in queries {
        let database = if query.types.is_empty() {
            whole_database
        } else {
            typed_database
        };
        let keys: Vec<u32> = query
            .relevant
            .iter()
            .filter_map(|k| engine.id_of(k).ok().flatten())
            .collect();
        let relevant = |id: u32| {
            keys.contains(&id)
                || catalog
                    .get(id)
                    .is_some_and(|f| query.types.contains(&f.coarse_type))
        };
        let relevant_total = database.iter().filter(|&id| relevant(id)).count();
        let t = Instant::now();
        // Ranked as every text request is, snippets included (as the user waits for them).
        let share = database.len() as f32 / engine.live().max(1) as f32;
        let (hits, _) =
            engine
                .backend
                .ranked_text(&query.text, 10, Allowed::ids(database), share)?;
        engine.backend.snippets(&query.text, &hits)?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        let gains: Vec<bool> = hits.iter().map(|h| relevant(h.id)).collect();
        ndcg += ndcg_at_10(&gains, relevant_total);
        p10 += gains.iter().filter(|g| **g).count() as f32 / 10.0;
    }
    let n = queries.len().max(1) as f32;
    Ok((
        TextFigures {
            queries: queries.len(),
            ndcg_at_10: ndcg / n,
            p_at_10: p10 / n,
        },
        samples,
    ))
}

/// Binary-relevance nDCG@10: DCG of the ranking over the DCG of an ideal one.
pub fn ndcg_at_10(gains: &[bool], relevant_total: usize) -> f32 {
    let dcg: f32 = gains
        .iter()
        .take(10)
        .enumerate()
        .filter(|(_, g)| **g)
        .map(|(i, _)| 1.0 / ((i + 2) as f32).log2())
        .sum();
    let ideal: f32 = (0..relevant_total.min(10))
        .map(|i| 1.0 / ((i + 2) as f32).log2())
        .sum();
    if ideal == 0.0 {
        0.0
    } else {
        dcg / ideal
    }
}

/// The report as Markdown.
pub fn markdown(report: &EvalReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "# Retrieval evaluation\n");
    let _ = writeln!(
        out,
        "Model `{}`, {} lesions; queries: the {} split ({} lesions, {} typed); database: the other splits ({} lesions); hits from the query's own patient excluded.\n",
        report.model,
        report.lesions,
        report.query_split.name(),
        report.queries,
        report.typed_queries,
        report.database
    );
    let _ = writeln!(out, "| metric | value |\n|---|---:|");
    for (name, value) in [
        ("P@1 (coarse type)", report.p_at_1),
        ("P@5", report.p_at_5),
        ("P@10", report.p_at_10),
        ("mAP@10", report.map_at_10),
        ("mMV@5", report.mmv_at_5),
        ("k-NN type accuracy (top 5)", report.knn_type_accuracy),
        (
            "mean location difference, top 10",
            report.location_difference,
        ),
        (
            "mean absolute ln size ratio, top 10",
            report.log_size_difference,
        ),
        ("recall@10, approximate vs exact", report.recall_at_10),
    ] {
        let _ = writeln!(out, "| {name} | {value:.3} |");
    }
    if let Some(f) = &report.followups {
        let _ = writeln!(
            out,
            "| follow-up matching accuracy@1 ({} of {} pairs resolved) | {:.3} |",
            f.resolved, f.pairs, f.accuracy_at_1
        );
    }
    if let Some(t) = &report.text {
        let _ = writeln!(
            out,
            "| text nDCG@10 ({} queries) | {:.3} |",
            t.queries, t.ndcg_at_10
        );
        let _ = writeln!(out, "| text P@10 | {:.3} |", t.p_at_10);
    }
    let _ = writeln!(out, "\nRecall measured with {}.\n", report.recall_source);
    let _ = writeln!(
        out,
        "## Per type\n\n| type | queries | P@1 | P@5 | P@10 |\n|---|---:|---:|---:|---:|"
    );
    for (t, f) in &report.per_type {
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} | {:.3} | {:.3} |",
            t.name(),
            f.queries,
            f.p_at_1,
            f.p_at_5,
            f.p_at_10
        );
    }
    let _ = writeln!(out, "\n![P@K per type](p_at_k.svg)\n\n## Confusion of the k-NN type (rows: true, columns: predicted)\n");
    let names: Vec<&str> = CoarseType::KNOWN.iter().map(|t| t.name()).collect();
    let _ = writeln!(out, "| | {} |", names.join(" | "));
    let _ = writeln!(out, "|---|{}|", vec!["---:"; names.len()].join("|"));
    for (i, row) in report.confusion.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|c| c.to_string()).collect();
        let _ = writeln!(out, "| {} | {} |", names[i], cells.join(" | "));
    }
    let _ = writeln!(out, "\n![Confusion matrix](confusion.svg)\n\n## Latency (one thread, in process)\n\n| query kind | queries | p50 ms | p99 ms |\n|---|---:|---:|---:|");
    for (kind, l) in &report.latency {
        let _ = writeln!(
            out,
            "| {kind} | {} | {:.3} | {:.3} |",
            l.queries, l.p50_ms, l.p99_ms
        );
    }
    let _ = writeln!(out, "\n![Latency](latency.svg)");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndcg_is_one_for_an_ideal_ranking_and_less_otherwise() {
        assert!((ndcg_at_10(&[true, true, false], 2) - 1.0).abs() < 1e-6);
        assert!(ndcg_at_10(&[false, true, true], 2) < 1.0);
        assert_eq!(ndcg_at_10(&[false; 10], 0), 0.0);
    }
}
