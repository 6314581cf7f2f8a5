//! Retrieval quality the way the DeepLesion literature measures it, under the one protocol
//! of [`protocol`] (queries: the typed lesions of the test split; gallery: every typed
//! lesion, the query's own patient excluded), which `evaluate-model` ([`model`]) shares.
//! Also follow-up matching on same-lesion pairs, text retrieval, the approximate index
//! against the exact one, and latency per query kind. [`plots`] draws the figures;
//! [`text_benchmark`] is the LesaNet report-phrase benchmark.

pub mod bone_lesions;
pub mod model;
pub mod pairs;
mod perturb;
pub mod plots;
pub mod protocol;
pub mod real_ct;
pub mod text_benchmark;

use std::fmt::Write;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::Allowed;
use crate::dataset::{CoarseType, Split};
use crate::error::{Error, Result};
use crate::index::{FlatIndex, GraphParams, IdSet, Plan, VectorIndex};
use crate::search::{Engine, ImageQuery, SearchRequest};

pub use model::evaluate_model;
pub use pairs::{read_pairs, FollowUpPair};
pub use protocol::{JudgedLesion, Protocol, RetrievalFigures, TypeFigures};

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
    /// Which lesions queried and which they searched, counted.
    pub protocol: Protocol,
    pub query_split: Split,
    /// The lesions of the query split, typed or not.
    pub queries: usize,
    /// The queries the figures average over (the typed ones).
    pub typed_queries: usize,
    /// The gallery: every typed lesion, any split.
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

/// Runs the evaluation on an open engine: image retrieval by exact scan under the
/// [`protocol`], the graph against it, follow-ups, text, and the latency of whole requests.
pub fn evaluate(engine: &Engine, options: &EvalOptions) -> Result<EvalReport> {
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
    let lesions = judged_lesions(engine);
    let image = protocol::measure(&lesions, vectors, options.query_split)?;
    let graph = graph_recall(vectors, &image.query_ids);
    let followups = if options.pairs.is_empty() {
        None
    } else {
        Some(pairs::evaluate_followups(engine, &options.pairs)?)
    };
    let mut latency = vec![
        (
            "vector exact top-10".to_string(),
            Latency::of(image.exact_latency_ms.clone()),
        ),
        (
            "vector graph top-10".to_string(),
            Latency::of(graph.latency),
        ),
    ];
    let text = if options.text_queries.is_empty() {
        None
    } else {
        let (figures, samples) = text_retrieval(engine, &options.text_queries, &lesions)?;
        latency.push(("text (BM25)".to_string(), Latency::of(samples)));
        Some(figures)
    };
    latency.extend(request_latency(
        engine,
        &image.query_ids,
        options.image_queries,
    )?);
    let in_query_split = image.protocol.queries + image.protocol.untyped_in_query_split;
    Ok(EvalReport {
        model: engine.published.manifest.model.name.clone(),
        lesions: lesions.iter().flatten().count(),
        query_split: options.query_split,
        queries: in_query_split,
        typed_queries: image.protocol.queries,
        database: image.protocol.gallery,
        protocol: image.protocol,
        p_at_1: image.p_at_1,
        p_at_5: image.p_at_5,
        p_at_10: image.p_at_10,
        map_at_10: image.map_at_10,
        mmv_at_5: image.mmv_at_5,
        location_difference: image.location_difference,
        log_size_difference: image.log_size_difference,
        knn_type_accuracy: image.knn_type_accuracy,
        per_type: image.per_type,
        confusion: image.confusion,
        recall_at_10: graph.recall_at_10,
        recall_source: graph.source,
        followups,
        text,
        latency,
    })
}

/// Every id of the engine's catalog, with what the protocol reads of its lesion.
fn judged_lesions(engine: &Engine) -> Vec<Option<JudgedLesion>> {
    let catalog = &engine.catalog;
    (0..catalog.capacity() as u32)
        .map(|id| catalog.get(id).map(JudgedLesion::of_facts))
        .collect()
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
    let (approximate, source): (&VectorIndex, String) = if vectors.graph().is_some() {
        (
            vectors,
            format!("the index's HNSW graph (ef {})", vectors.ef()),
        )
    } else {
        let (index, calibration) = VectorIndex::with_graph(
            FlatIndex::from_data(vectors.dim(), vectors.flat().data().to_vec()),
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
        let query = approximate.vector(q);
        let (truth, _) = approximate.search_with(query, 10, None, Plan::Exact);
        let t = Instant::now();
        let (found, _) = approximate.search_with(
            query,
            10,
            None,
            Plan::Graph {
                ef: approximate.ef().max(10),
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

/// nDCG@10 and P@10 of text queries (binary relevance). Queries judged by coarse type
/// search the protocol's gallery (the typed lesions, an untyped lesion cannot be judged),
/// as the image metrics do; queries judged by listed keys search every lesion.
fn text_retrieval(
    engine: &Engine,
    queries: &[TextQuery],
    lesions: &[Option<JudgedLesion>],
) -> Result<(TextFigures, Vec<f64>)> {
    let ids_where = |keep: fn(&JudgedLesion) -> bool| {
        let ids = lesions
            .iter()
            .enumerate()
            .filter_map(|(id, lesion)| lesion.as_ref().filter(|l| keep(l)).map(|_| id as u32));
        IdSet::from_ids(lesions.len(), ids)
    };
    let whole_database = ids_where(|_| true);
    let typed_database = ids_where(JudgedLesion::in_gallery);
    let (whole_database, typed_database) = (&whole_database, &typed_database);
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

/// The report as Markdown; its first line states the protocol.
pub fn markdown(report: &EvalReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}\n", report.protocol.statement());
    let _ = writeln!(out, "# Retrieval evaluation\n");
    let _ = writeln!(
        out,
        "Model `{}`, {} lesions; exact top 10 of each query; type figures average over the {} queries.\n",
        report.model, report.lesions, report.typed_queries,
    );
    headline_table(&mut out, report);
    let _ = writeln!(out, "\nRecall measured with {}.\n", report.recall_source);
    per_type_table(&mut out, report);
    let _ = writeln!(out, "\n![P@K per type](p_at_k.svg)\n\n## Confusion of the k-NN type (rows: true, columns: predicted)\n");
    confusion_table(&mut out, &report.confusion);
    let _ = writeln!(
        out,
        "\n![Confusion matrix](confusion.svg)\n\n## Latency (one thread, in process)\n"
    );
    latency_table(&mut out, &report.latency);
    let _ = writeln!(out, "\n![Latency](latency.svg)");
    out
}

/// One row per figure: the image metrics, then follow-ups and text where measured.
fn headline_table(out: &mut String, report: &EvalReport) {
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
}

fn per_type_table(out: &mut String, report: &EvalReport) {
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
}

/// `confusion[true][predicted]`, rows and columns in the order of [`CoarseType::KNOWN`].
fn confusion_table(out: &mut String, confusion: &[Vec<usize>]) {
    let names: Vec<&str> = CoarseType::KNOWN.iter().map(|t| t.name()).collect();
    let _ = writeln!(out, "| | {} |", names.join(" | "));
    let _ = writeln!(out, "|---|{}|", vec!["---:"; names.len()].join("|"));
    for (i, row) in confusion.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|c| c.to_string()).collect();
        let _ = writeln!(out, "| {} | {} |", names[i], cells.join(" | "));
    }
}

fn latency_table(out: &mut String, latency: &[(String, Latency)]) {
    let _ = writeln!(
        out,
        "| query kind | queries | p50 ms | p99 ms |\n|---|---:|---:|---:|"
    );
    for (kind, l) in latency {
        let _ = writeln!(
            out,
            "| {kind} | {} | {:.3} | {:.3} |",
            l.queries, l.p50_ms, l.p99_ms
        );
    }
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
