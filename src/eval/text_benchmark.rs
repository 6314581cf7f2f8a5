//! The LesaNet text benchmark: the 500 hand-labelled report phrases are the corpus, one per
//! lesion. Two query sets:
//!
//! - **Judged queries** (`data/text-benchmark/queries.tsv`): written as researchers type them,
//!   by kind (plain words, synonym beside a plain word, abbreviation, compound, misspelling,
//!   several concepts, plain language); a phrase is relevant when its hand-labelled
//!   `expanded_terms` hold every concept of the query. Measured with every query feature,
//!   with each turned off, with none, and (given a sentence encoder) with semantic
//!   retrieval fused in or alone.
//! - **Term queries**: every ontology term that labels a phrase, by its name and by each
//!   synonym; relevant when the phrase's `expanded_terms` hold the term.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::dataset::{
    CoarseType, LesionRecord, NormalizedLocation, PixelBox, Point, Recist, Sex, SliceRange,
    Spacing, Split,
};
use crate::error::{Error, Result};
use crate::imaging::Window;
use crate::ontology::Ontology;
use crate::search::{rrf, semantic_ranking, SEMANTIC_MIN_COSINE};
use crate::text::{QueryFeatures, TextEntry, TextIndex, TextIndexWriter};

const JUDGED_QUERIES_TSV: &str = include_str!("../../data/text-benchmark/queries.tsv");
/// Depth of each ranked list the benchmark reads (recall is measured at 50).
const DEPTH: usize = 100;
/// Semantic thresholds measured beside the shipped one ([`SEMANTIC_MIN_COSINE`]).
const THRESHOLDS: [f32; 6] = [0.3, 0.4, 0.45, 0.5, 0.55, 0.6];

#[derive(Debug, Clone, Deserialize)]
struct Phrase {
    text: String,
    expanded_terms: Vec<String>,
}

/// One judged query of `data/text-benchmark/queries.tsv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JudgedQuery {
    pub kind: String,
    pub query: String,
    /// Ontology terms a relevant phrase's `expanded_terms` must all hold.
    pub concepts: Vec<String>,
}

/// The judged queries bundled with the library.
pub fn judged_queries() -> Result<Vec<JudgedQuery>> {
    let mut out = Vec::new();
    for (i, line) in JUDGED_QUERIES_TSV.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split('\t').collect();
        if cells.len() < 3 {
            return Err(Error::invalid_argument(
                "queries.tsv",
                format!("line {}: kind, query and concepts expected", i + 1),
            ));
        }
        // Plain-language queries written after the lay-term list are reported apart.
        let held_out = cells.get(3).is_some_and(|note| note.contains("held out"));
        let kind = cells[0].trim();
        out.push(JudgedQuery {
            kind: if held_out {
                format!("{kind} (held out)")
            } else {
                kind.to_string()
            },
            query: cells[1].trim().to_string(),
            concepts: cells[2]
                .split('|')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect(),
        });
    }
    Ok(out)
}

/// Means over a set of queries.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TextScores {
    pub queries: usize,
    pub ndcg_at_10: f32,
    pub recall_at_10: f32,
    pub recall_at_50: f32,
    pub recall_at_100: f32,
    /// Queries with no relevant phrase among their first 10 results.
    pub without_relevant_in_top_10: usize,
}

/// One way of answering the judged queries, scored overall and per kind.
#[derive(Debug, Clone, Serialize)]
pub struct VariantScores {
    pub variant: String,
    pub overall: TextScores,
    pub by_kind: BTreeMap<String, TextScores>,
    /// The queries with no relevant phrase in their first 10 results.
    pub missed: Vec<String>,
}

/// BM25 fused with the semantic matches of one threshold, as the search pipeline does.
#[derive(Debug, Clone, Serialize)]
pub struct ThresholdScores {
    pub min_cosine: f32,
    pub ndcg_at_10: f32,
    pub recall_at_50: f32,
    /// Mean semantic matches per judged query (phrases whose cosine reaches the threshold).
    pub mean_semantic_matches: f32,
    /// Mean rows of the fused list (BM25 matches and semantic matches): the `total` a
    /// search would report.
    pub mean_matches: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct TextBenchmark {
    pub phrases: usize,
    pub judged_queries: usize,
    /// Every query feature, each one off, none; semantic variants when an encoder is given.
    pub variants: Vec<VariantScores>,
    /// With an encoder: the fused list at each semantic threshold measured.
    pub thresholds: Vec<ThresholdScores>,
    pub terms: usize,
    pub term_queries: usize,
    pub with_expansion: TextScores,
    pub without_expansion: TextScores,
}

impl TextBenchmark {
    pub fn variant(&self, name: &str) -> Option<&VariantScores> {
        self.variants.iter().find(|v| v.variant == name)
    }

    /// The report's tables: judged queries by variant and by kind, then the term queries.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "\n## Text benchmark (LesaNet's {} hand-labelled report phrases, one per lesion)\n\n\
             **Judged queries** (n = {}, `data/text-benchmark/queries.tsv`): relevant when the \
             phrase's `expanded_terms` hold every concept of the query.\n\n\
             | variant | nDCG@10 | recall@10 | recall@50 | queries without a relevant phrase in the top 10 |\n\
             |---|---:|---:|---:|---:|\n",
            self.phrases, self.judged_queries
        );
        for v in &self.variants {
            let o = &v.overall;
            md.push_str(&format!(
                "| {} | {:.3} | {:.3} | {:.3} | {} |\n",
                v.variant,
                o.ndcg_at_10,
                o.recall_at_10,
                o.recall_at_50,
                o.without_relevant_in_top_10
            ));
        }
        let kinds: Vec<&String> = self
            .variants
            .first()
            .map(|v| v.by_kind.keys().collect())
            .unwrap_or_default();
        md.push_str("\nnDCG@10 / recall@50 by query kind (n queries):\n\n| variant |");
        for kind in &kinds {
            let n = self.variants[0].by_kind[*kind].queries;
            md.push_str(&format!(" {kind} ({n}) |"));
        }
        md.push_str("\n|---|");
        md.push_str(&"---:|".repeat(kinds.len()));
        md.push('\n');
        for v in &self.variants {
            md.push_str(&format!("| {} |", v.variant));
            for kind in &kinds {
                let s = &v.by_kind[*kind];
                md.push_str(&format!(" {:.3} / {:.3} |", s.ndcg_at_10, s.recall_at_50));
            }
            md.push('\n');
        }
        if let Some(all) = self.variants.first() {
            if !all.missed.is_empty() {
                md.push_str(&format!(
                    "\nNo relevant phrase in the top 10 ({}): {}.\n",
                    all.variant,
                    all.missed.join("; ")
                ));
            }
        }
        if !self.thresholds.is_empty() {
            md.push_str(&format!(
                "\nSemantic threshold (BM25 with all features fused by RRF with the phrases whose \
                 cosine reaches it; {SEMANTIC_MIN_COSINE} ships; {} judged queries, {} phrases):\n\n\
                 | min cosine | nDCG@10 | recall@50 | semantic matches per query | matches per query |\n\
                 |---:|---:|---:|---:|---:|\n",
                self.judged_queries, self.phrases
            ));
            for t in &self.thresholds {
                md.push_str(&format!(
                    "| {} | {:.3} | {:.3} | {:.1} | {:.1} |\n",
                    t.min_cosine,
                    t.ndcg_at_10,
                    t.recall_at_50,
                    t.mean_semantic_matches,
                    t.mean_matches
                ));
            }
        }
        md.push_str(&format!(
            "\n**Term queries** ({} ontology terms, {} queries: each term by name and by every \
             synonym; relevant when `expanded_terms` hold the term):\n\n\
             | | nDCG@10 | recall@10 | recall@100 |\n|---|---:|---:|---:|\n\
             | all features | {:.3} | {:.3} | {:.3} |\n| none | {:.3} | {:.3} | {:.3} |\n",
            self.terms,
            self.term_queries,
            self.with_expansion.ndcg_at_10,
            self.with_expansion.recall_at_10,
            self.with_expansion.recall_at_100,
            self.without_expansion.ndcg_at_10,
            self.without_expansion.recall_at_10,
            self.without_expansion.recall_at_100,
        ));
        md
    }
}

/// Embeds texts as unit vectors (the sentence encoder, when the benchmark has one).
pub type Encode<'a> = &'a dyn Fn(&[&str]) -> Result<Vec<Vec<f32>>>;

fn placeholder_record(i: usize) -> LesionRecord {
    let p = Point { x: 0.0, y: 0.0 };
    LesionRecord {
        file_name: format!("{:06}_01_01_001.png", i + 1),
        patient: i as u32 + 1,
        study: 1,
        series: 1,
        key_slice: 1,
        recist: Recist {
            long_axis: [p, p],
            short_axis: [p, p],
        },
        bbox: PixelBox::new(0.0, 0.0, 1.0, 1.0),
        diameters_px: [1.0, 1.0],
        location: NormalizedLocation {
            x: 0.5,
            y: 0.5,
            z: 0.5,
        },
        coarse_type: CoarseType::Unknown,
        possibly_noisy: false,
        slice_range: SliceRange { first: 1, last: 1 },
        spacing: Spacing {
            x_mm: 1.0,
            y_mm: 1.0,
            z_mm: 1.0,
        },
        image_width: 1,
        image_height: 1,
        window: Window {
            low: -160.0,
            high: 240.0,
        },
        sex: Sex::Unknown,
        age: None,
        split: Split::Test,
    }
}

/// Runs the benchmark on `hand_labeled_test_set.json`, indexing into `work_dir`; with
/// `encode`, semantic retrieval is measured too.
pub fn run_text_benchmark(
    phrases_path: &Path,
    work_dir: &Path,
    encode: Option<Encode<'_>>,
) -> Result<TextBenchmark> {
    let text = std::fs::read_to_string(phrases_path).map_err(|e| Error::io(phrases_path, e))?;
    let phrases: Vec<Phrase> = serde_json::from_str(&text).map_err(|e| Error::Index {
        path: phrases_path.to_path_buf(),
        message: format!("not LesaNet's hand-labeled phrases: {e}"),
    })?;
    let index = index_phrases(&phrases, &work_dir.join("text-benchmark"))?;
    let judged = judged_queries()?;
    let mut variants = Vec::new();
    for (name, features) in feature_variants() {
        variants.push(score_judged(&judged, &phrases, |q| {
            ranked_ids(&index, q, features)
        })?);
        variants.last_mut().expect("just pushed").variant = name.to_string();
    }
    let mut thresholds = Vec::new();
    if let Some(encode) = encode {
        let texts: Vec<&str> = phrases.iter().map(|p| p.text.as_str()).collect();
        let corpus = encode(&texts)?;
        // Each judged query embedded once, for every variant.
        let query_texts: Vec<&str> = judged.iter().map(|q| q.query.as_str()).collect();
        let query_vectors: BTreeMap<&str, Vec<f32>> = query_texts
            .iter()
            .copied()
            .zip(encode(&query_texts)?)
            .collect();
        let cosines = |query: &str| -> Result<Vec<(u32, f32)>> {
            let q = query_vectors.get(query).cloned().map_or_else(
                || Ok(encode(&[query])?.pop().unwrap_or_default()),
                Ok::<_, Error>,
            )?;
            Ok(corpus
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u32, v.iter().zip(&q).map(|(a, b)| a * b).sum()))
                .collect())
        };
        // The semantic list of the matches (BM25's and those reaching the threshold).
        let semantic = |query: &str, bm25: &[u32], min_cosine: f32| -> Result<Vec<u32>> {
            let bm25: std::collections::HashSet<u32> = bm25.iter().copied().collect();
            Ok(
                semantic_ranking(cosines(query)?, |id| bm25.contains(&id), min_cosine)
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect(),
            )
        };
        // Every BM25 match, as the search pipeline fuses them.
        let all_bm25 = |query: &str| -> Result<Vec<u32>> {
            let (ranked, _) = index.ranked(query, phrases.len(), &|_| true, QueryFeatures::ALL)?;
            Ok(ranked.iter().map(|r| r.id).collect())
        };
        let fused = |query: &str, min_cosine: f32| -> Result<Vec<u32>> {
            let bm25 = all_bm25(query)?;
            let semantic = semantic(query, &bm25, min_cosine)?;
            Ok(rrf(&[&bm25, &semantic])
                .into_iter()
                .take(DEPTH)
                .map(|(id, _)| id)
                .collect())
        };
        let mut alone = score_judged(&judged, &phrases, |q| {
            Ok(semantic(q, &[], f32::NEG_INFINITY)?
                .into_iter()
                .take(DEPTH)
                .collect())
        })?;
        alone.variant = "semantic alone".into();
        let mut unthresholded = score_judged(&judged, &phrases, |q| fused(q, f32::NEG_INFINITY))?;
        unthresholded.variant = "all features + semantic (RRF, every phrase)".into();
        let mut shipped = score_judged(&judged, &phrases, |q| fused(q, SEMANTIC_MIN_COSINE))?;
        shipped.variant =
            format!("all features + semantic (RRF, cosine >= {SEMANTIC_MIN_COSINE}, as shipped)");
        variants.push(shipped);
        variants.push(unthresholded);
        variants.push(alone);
        for min_cosine in THRESHOLDS {
            let scores = score_judged(&judged, &phrases, |q| fused(q, min_cosine))?;
            let (mut semantic_matches, mut matches) = (0usize, 0usize);
            for q in &judged {
                let bm25 = all_bm25(&q.query)?;
                semantic_matches += semantic(&q.query, &[], min_cosine)?.len();
                matches += semantic(&q.query, &bm25, min_cosine)?.len();
            }
            let n = judged.len().max(1) as f32;
            thresholds.push(ThresholdScores {
                min_cosine,
                ndcg_at_10: scores.overall.ndcg_at_10,
                recall_at_50: scores.overall.recall_at_50,
                mean_semantic_matches: semantic_matches as f32 / n,
                mean_matches: matches as f32 / n,
            });
        }
    }
    let (terms, term_queries) = term_queries(&phrases);
    let score_terms = |features: QueryFeatures| -> Result<TextScores> {
        let mut scores = Vec::with_capacity(term_queries.len());
        for (query, relevant) in &term_queries {
            scores.push(score_one(&ranked_ids(&index, query, features)?, relevant));
        }
        Ok(mean(&scores))
    };
    Ok(TextBenchmark {
        phrases: phrases.len(),
        judged_queries: judged.len(),
        variants,
        thresholds,
        terms,
        term_queries: term_queries.len(),
        with_expansion: score_terms(QueryFeatures::ALL)?,
        without_expansion: score_terms(QueryFeatures::NONE)?,
    })
}

fn index_phrases(phrases: &[Phrase], dir: &Path) -> Result<TextIndex> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut writer = TextIndexWriter::create(dir)?;
    for (i, phrase) in phrases.iter().enumerate() {
        let record = placeholder_record(i);
        writer.add(&TextEntry {
            id: i as u32,
            key: &record.file_name,
            record: &record,
            report: &phrase.text,
            tags: &[],
        })?;
    }
    writer.commit()?;
    TextIndex::open(dir)
}

/// Every query feature, each turned off alone, and none.
fn feature_variants() -> Vec<(&'static str, QueryFeatures)> {
    let all = QueryFeatures::ALL;
    vec![
        ("all features", all),
        (
            "without ontology",
            QueryFeatures {
                ontology: false,
                ..all
            },
        ),
        (
            "without abbreviations",
            QueryFeatures {
                abbreviations: false,
                ..all
            },
        ),
        (
            "without lay terms",
            QueryFeatures {
                lay_terms: false,
                ..all
            },
        ),
        (
            "without compounds",
            QueryFeatures {
                compounds: false,
                ..all
            },
        ),
        (
            "without fuzzy",
            QueryFeatures {
                fuzzy: false,
                ..all
            },
        ),
        ("none (BM25 on the words as typed)", QueryFeatures::NONE),
    ]
}

fn ranked_ids(index: &TextIndex, query: &str, features: QueryFeatures) -> Result<Vec<u32>> {
    let (ranked, _) = index.ranked(query, DEPTH, &|_| true, features)?;
    Ok(ranked.iter().map(|r| r.id).collect())
}

fn relevant_to(concepts: &[String], phrases: &[Phrase]) -> Vec<u32> {
    phrases
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            concepts
                .iter()
                .all(|c| p.expanded_terms.iter().any(|t| t.eq_ignore_ascii_case(c)))
        })
        .map(|(i, _)| i as u32)
        .collect()
}

fn score_one(ranked: &[u32], relevant: &[u32]) -> TextScores {
    let gains: Vec<bool> = ranked.iter().map(|id| relevant.contains(id)).collect();
    let found = |k: usize| gains.iter().take(k).filter(|g| **g).count() as f32;
    let r = relevant.len().max(1);
    TextScores {
        queries: 1,
        ndcg_at_10: super::ndcg_at_10(&gains, relevant.len()),
        recall_at_10: found(10) / r.min(10) as f32,
        recall_at_50: found(50) / r.min(50) as f32,
        recall_at_100: found(100) / r.min(100) as f32,
        without_relevant_in_top_10: usize::from(found(10) == 0.0),
    }
}

fn mean(scores: &[TextScores]) -> TextScores {
    let n = scores.len().max(1) as f32;
    TextScores {
        queries: scores.len(),
        ndcg_at_10: scores.iter().map(|s| s.ndcg_at_10).sum::<f32>() / n,
        recall_at_10: scores.iter().map(|s| s.recall_at_10).sum::<f32>() / n,
        recall_at_50: scores.iter().map(|s| s.recall_at_50).sum::<f32>() / n,
        recall_at_100: scores.iter().map(|s| s.recall_at_100).sum::<f32>() / n,
        without_relevant_in_top_10: scores.iter().map(|s| s.without_relevant_in_top_10).sum(),
    }
}

fn score_judged(
    judged: &[JudgedQuery],
    phrases: &[Phrase],
    rank: impl Fn(&str) -> Result<Vec<u32>>,
) -> Result<VariantScores> {
    let mut by_kind: BTreeMap<String, Vec<TextScores>> = BTreeMap::new();
    let mut all = Vec::with_capacity(judged.len());
    let mut missed = Vec::new();
    for q in judged {
        let relevant = relevant_to(&q.concepts, phrases);
        let scores = score_one(&rank(&q.query)?, &relevant);
        if scores.without_relevant_in_top_10 > 0 {
            missed.push(format!("{} ({})", q.query, q.kind));
        }
        by_kind
            .entry(q.kind.clone())
            .or_default()
            .push(scores.clone());
        all.push(scores);
    }
    Ok(VariantScores {
        variant: String::new(),
        overall: mean(&all),
        by_kind: by_kind.iter().map(|(k, v)| (k.clone(), mean(v))).collect(),
        missed,
    })
}

/// Every ontology term labelling a phrase, by name and by each synonym, with its relevant
/// phrases; and the number of terms.
fn term_queries(phrases: &[Phrase]) -> (usize, Vec<(String, Vec<u32>)>) {
    let ontology = Ontology::lesanet();
    let mut terms: Vec<String> = phrases
        .iter()
        .flat_map(|p| p.expanded_terms.iter().cloned())
        .collect();
    terms.sort();
    terms.dedup();
    let mut queries = Vec::new();
    for term in &terms {
        let relevant = relevant_to(std::slice::from_ref(term), phrases);
        let mut names = vec![term.clone()];
        if let Some(entry) = ontology.find(term) {
            names.extend(entry.synonyms.iter().cloned());
        }
        names.sort();
        names.dedup();
        for name in names {
            queries.push((name, relevant.clone()));
        }
    }
    (terms.len(), queries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_judged_queries_parse_with_every_kind() {
        let queries = judged_queries().unwrap();
        assert!(queries.len() >= 60, "{} queries", queries.len());
        for kind in [
            "plain",
            "synonym",
            "abbreviation",
            "compound",
            "misspelling",
            "multi",
            "natural",
            "natural (held out)",
        ] {
            assert!(
                queries.iter().filter(|q| q.kind == kind).count() >= 10,
                "kind {kind}"
            );
        }
        assert!(queries.iter().all(|q| !q.concepts.is_empty()));
    }
}
