//! What a search answers: hits that explain themselves, the type suggestion, timings.

use std::time::Duration;

use serde::Serialize;

use super::Facets;
use crate::dataset::CoarseType;
use crate::index::Plan;
use crate::text::Snippet;

/// The image side of a hit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ImageMatch {
    /// 1-based rank in the image list (every allowed lesion, by cosine then id).
    pub rank: usize,
    pub cosine: f32,
}

/// The text side of a hit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextMatch {
    /// 1-based rank among the allowed matches (by score, then id).
    pub rank: usize,
    pub bm25: f32,
    /// The passage of the report that matched, with the matched ranges.
    pub snippet: Snippet,
}

/// The semantic side of a hit (a text query with `semantic` on): the cosine of its
/// report's sentence vector to the text's, and its rank in the semantic list, which ranks
/// every match of the text (its BM25 matches and the reports whose cosine reaches
/// [`super::SEMANTIC_MIN_COSINE`]) by cosine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SemanticMatch {
    /// 1-based rank in the semantic list (the allowed matches by cosine, then id); `None`
    /// for a lesion that only an image ranked.
    pub rank: Option<usize>,
    pub cosine: f32,
}

/// Which signals found a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Matched {
    Image,
    Text,
    Both,
    /// No query: the filtered set in id order.
    Filter,
}

impl Matched {
    /// Which of the lists held a hit (`text` for the text's BM25 or semantic list).
    pub fn of(image: bool, text: bool) -> Self {
        match (image, text) {
            (true, true) => Matched::Both,
            (true, false) => Matched::Image,
            (false, true) => Matched::Text,
            (false, false) => Matched::Filter,
        }
    }
}

/// One result, explaining itself.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub id: u32,
    pub key: String,
    pub score: f32,
    pub matched: Matched,
    pub image: Option<ImageMatch>,
    pub text: Option<TextMatch>,
    /// Set on every hit when semantic retrieval ranked the list.
    pub semantic: Option<SemanticMatch>,
}

/// Coarse type suggested by the nearest neighbours of other patients.
#[derive(Debug, Clone, Serialize)]
pub struct TypeSuggestion {
    pub coarse_type: CoarseType,
    /// Vote share of each type among the typed neighbours, largest first.
    pub votes: Vec<(CoarseType, f32)>,
    pub neighbours: usize,
}

/// Milliseconds spent per stage.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Timings {
    pub embed_ms: f64,
    pub vector_ms: f64,
    pub text_ms: f64,
    pub total_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SearchResponse {
    pub hits: Vec<Hit>,
    /// Rows of the whole result list, the same on every page: lesions (patients when
    /// grouped by patient) whose text matches and the filter allows for text alone; every
    /// allowed lesion (patient) when an image, lesion or liked result ranks them all, or
    /// when there is no query; with `semantic`, the text's matches are its BM25 matches and
    /// the reports whose cosine reaches the threshold. Paging with `offset` up to `total`
    /// reaches every row once.
    pub total: usize,
    /// Lesions whose text matches, within the filter, when there was text (for a hybrid
    /// query, how many of the ranked lesions the text also found).
    pub text_matches: Option<usize>,
    /// Lesions the query and filters select, whatever the grouping (`total` counts patients
    /// when grouped).
    pub matched_lesions: usize,
    /// The text with each misspelt word replaced by the archive's or ontology's word it
    /// was searched as ("kidny cyst" -> "kidney cyst"); `None` when no word was respelt.
    pub did_you_mean: Option<String>,
    /// Counts over what the query selects (the text's matches for text alone, every
    /// lesion otherwise), each dimension under the filter less its own clause;
    /// `facets.total` is `matched_lesions`.
    pub facets: Facets,
    pub suggestion: Option<TypeSuggestion>,
    /// Whether the text's semantic list (report sentence vectors) was fused into the list.
    pub semantic: bool,
    /// Why the image path was dropped, when it was.
    pub degraded: Option<String>,
    pub plan: Option<Plan>,
    /// Set when an uploaded slice stated no pixel spacing and none was given.
    pub assumed_spacing_mm: Option<f32>,
    /// For an image example: what became of the most similar lesions seen again.
    pub outlook: Option<crate::followup::Outlook>,
    pub timings: Timings,
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
