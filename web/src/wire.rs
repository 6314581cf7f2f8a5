//! The JSON shapes of the API. Only this crate knows them; the core's types map onto them
//! here, with every malformed part named.

use lesion_search::dataset::{CoarseType, Sex, Split};
use lesion_search::followup::{Outlook, OutlookEvaluation, Shares, SimilarCourse};
use lesion_search::imaging::CtImage;
use lesion_search::search::{
    Facets, FilterInput, Hit, ImageMatch, LesionFacts, Matched, SearchInput, SearchResponse,
    SemanticMatch, TextMatch, Timings, TypeSuggestion, DEFAULT_K,
};
use lesion_search::store::StoredLesion;
use lesion_search::text::Snippet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use lesion_search::search::{Bounds, LesionRef};

/// A search's `filters`: the core's filter input itself, checked by the core.
pub type FilterBody = FilterInput;

fn yes() -> bool {
    true
}

fn default_k() -> usize {
    DEFAULT_K
}

/// `POST /api/search` as JSON (or the non-file parts of a multipart upload).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    #[serde(default)]
    pub text: Option<String>,
    /// "More like this".
    #[serde(default)]
    pub lesion: Option<LesionRef>,
    #[serde(default)]
    pub positives: Vec<LesionRef>,
    #[serde(default)]
    pub negatives: Vec<LesionRef>,
    #[serde(default)]
    pub filters: FilterBody,
    #[serde(default = "yes")]
    pub exclude_query_patient: bool,
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default)]
    pub offset: usize,
    #[serde(default = "yes")]
    pub group_by_patient: bool,
    /// `rrf` (default) or `weighted`.
    #[serde(default)]
    pub fusion: Option<String>,
    /// Weighted fusion: share of the image list, 0..1 (0.5 when absent).
    #[serde(default)]
    pub image_weight: Option<f32>,
    /// A slice uploaded before (`POST /api/uploads`) to search with, and the box on it.
    #[serde(default)]
    pub upload: Option<String>,
    #[serde(default, rename = "box")]
    pub bbox: Option<String>,
    /// Pixel spacing in mm of the uploaded slice, when its file does not state it.
    #[serde(default)]
    pub spacing_mm: Option<f32>,
    /// Search the report text by meaning too: the reports whose sentence vectors are close
    /// to the text's (cosine at least 0.5) join the BM25 matches, and the two lists are
    /// fused. Needs an archive built with `--text-encoder minilm` (400 naming `semantic`
    /// otherwise; `/healthz` says `semantic: true` when it is). Absent: the server's
    /// setting (off unless started with `--semantic`).
    #[serde(default)]
    pub semantic: Option<bool>,
}

impl SearchBody {
    /// The core's search input for this body (the defaults are the core's, see
    /// [`SearchInput::default`]); `image` is the slice it searches with, uploaded now or
    /// before.
    pub fn into_input(self, image: Option<CtImage>) -> SearchInput {
        SearchInput {
            text: self.text,
            image,
            bbox: self.bbox,
            spacing_mm: self.spacing_mm,
            lesion: self.lesion,
            positives: self.positives,
            negatives: self.negatives,
            filters: self.filters,
            exclude_query_patient: self.exclude_query_patient,
            k: self.k,
            offset: self.offset,
            group_by_patient: self.group_by_patient,
            fusion: self.fusion,
            image_weight: self.image_weight,
            semantic: self.semantic.unwrap_or(false),
        }
    }
}

/// A body with every field at the core's default (no query: the whole archive, paged).
impl Default for SearchBody {
    fn default() -> Self {
        let input = SearchInput::default();
        SearchBody {
            text: None,
            lesion: None,
            positives: Vec::new(),
            negatives: Vec::new(),
            filters: FilterBody::default(),
            exclude_query_patient: input.exclude_query_patient,
            k: input.k,
            offset: input.offset,
            group_by_patient: input.group_by_patient,
            fusion: None,
            image_weight: None,
            upload: None,
            bbox: None,
            spacing_mm: None,
            semantic: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Location {
    pub x: f32,
    pub y: f32,
    pub z: f32,
}

/// What a result card shows of a lesion.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LesionSummary {
    pub id: u32,
    pub key: String,
    pub coarse_type: CoarseType,
    pub sex: Sex,
    pub age: Option<f32>,
    pub long_mm: f32,
    pub short_mm: f32,
    pub location: Location,
    pub split: Split,
    pub patient: u32,
    pub study: u32,
    pub thumbnail: String,
    pub image: String,
}

impl LesionSummary {
    pub fn of(id: u32, f: &LesionFacts) -> Self {
        LesionSummary {
            id,
            key: f.key.clone(),
            coarse_type: f.coarse_type,
            sex: f.sex,
            age: f.age,
            long_mm: round1(f.long_mm),
            short_mm: round1(f.short_mm),
            location: Location {
                x: f.location[0],
                y: f.location[1],
                z: f.location[2],
            },
            split: f.split,
            patient: f.patient,
            study: f.study,
            thumbnail: format!("/api/lesions/{id}/thumbnail"),
            image: format!("/api/lesions/{id}/image"),
        }
    }
}

fn round1(v: f32) -> f32 {
    (v * 10.0).round() / 10.0
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HitOut {
    pub id: u32,
    pub key: String,
    pub score: f32,
    pub matched: Matched,
    pub image: Option<ImageMatch>,
    pub text: Option<TextMatchOut>,
    /// With semantic retrieval: the cosine of the report's sentence vector to the text's,
    /// and the rank in the semantic list, which ranks every text match (BM25 matches below
    /// the threshold too); no rank for a lesion only the image ranked.
    pub semantic: Option<SemanticMatch>,
    pub lesion: LesionSummary,
}

/// The text side of a hit: the matched passage as text with highlight ranges (character
/// offsets, end exclusive), and as HTML with the matches in `<b>` for direct display.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TextMatchOut {
    pub rank: usize,
    pub bm25: f32,
    pub snippet: String,
    pub snippet_text: String,
    pub highlights: Vec<[usize; 2]>,
}

impl From<TextMatch> for TextMatchOut {
    fn from(m: TextMatch) -> Self {
        let snippet = &m.snippet;
        let chars_before = |byte: usize| snippet.text[..byte].chars().count();
        TextMatchOut {
            rank: m.rank,
            bm25: m.bm25,
            snippet: html_marked(snippet),
            highlights: snippet
                .highlights
                .iter()
                .map(|r| [chars_before(r.start), chars_before(r.end)])
                .collect(),
            snippet_text: m.snippet.text,
        }
    }
}

/// The passage HTML-escaped, each match in `<b>`.
fn html_marked(snippet: &Snippet) -> String {
    let escape = |text: &str, out: &mut String| {
        for c in text.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&#39;"),
                c => out.push(c),
            }
        }
    };
    let mut html = String::with_capacity(snippet.text.len() + 16);
    let mut from = 0;
    for range in &snippet.highlights {
        escape(&snippet.text[from..range.start], &mut html);
        html.push_str("<b>");
        escape(&snippet.text[range.clone()], &mut html);
        html.push_str("</b>");
        from = range.end;
    }
    escape(&snippet.text[from..], &mut html);
    html
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Vote {
    pub coarse_type: CoarseType,
    pub share: f32,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SuggestionOut {
    pub coarse_type: CoarseType,
    pub votes: Vec<Vote>,
    pub neighbours: usize,
}

impl From<TypeSuggestion> for SuggestionOut {
    fn from(s: TypeSuggestion) -> Self {
        SuggestionOut {
            coarse_type: s.coarse_type,
            votes: s
                .votes
                .into_iter()
                .map(|(coarse_type, share)| Vote { coarse_type, share })
                .collect(),
            neighbours: s.neighbours,
        }
    }
}

/// One page of a result list. `total` is the length of the whole list, the same on every
/// page: patients when `group_by_patient` (one hit each), lesions otherwise; paging with
/// `offset` reaches its end, and an export of the same search writes exactly that many rows.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SearchReply {
    pub hits: Vec<HitOut>,
    /// Rows of the result list (patients when grouped, lesions otherwise).
    pub total: usize,
    pub offset: usize,
    pub k: usize,
    /// Whether the list holds one hit per patient (then `total` counts patients).
    pub group_by_patient: bool,
    /// Lesions the query and filters select, whatever the grouping.
    pub matched_lesions: usize,
    /// Report-text matches in the filtered set, when there was text.
    pub text_matches: Option<usize>,
    /// A respelling of the text that the archive supports, offered when the text found
    /// little: send it as `text` to search for it.
    pub did_you_mean: Option<String>,
    /// Counts over the matches, each facet computed with its own filter left out (ticking
    /// one type leaves the other types' counts as they were).
    pub facets: Facets,
    pub suggestion: Option<SuggestionOut>,
    /// Whether the text's semantic list was fused in (then `total` counts the BM25 and the
    /// semantic matches).
    pub semantic: bool,
    pub degraded: bool,
    pub degraded_reason: Option<String>,
    pub plan: Option<lesion_search::index::Plan>,
    pub assumed_spacing_mm: Option<f32>,
    pub outlook: Option<OutlookOut>,
    pub timings: Timings,
}

/// One similar lesion's course, with enough to show it and open it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SimilarCourseOut {
    #[serde(flatten)]
    pub course: SimilarCourse,
    pub lesion: Option<LesionSummary>,
    pub followup_key: Option<String>,
}

/// The outlook of a lesion, framed as evidence: what became of similar lesions, and how well
/// that foretold real courses.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct OutlookOut {
    pub similar: Vec<SimilarCourseOut>,
    pub grew: usize,
    pub stable: usize,
    pub shrank: usize,
    pub median_change_percent: Option<f32>,
    pub base_rates: Shares,
    /// Only when the measured outlook beat the base rates on real pairs.
    pub prediction: Option<Shares>,
    pub reference_size: usize,
    pub evaluation: Option<OutlookEvaluation>,
    /// How to read it, in words.
    pub statement: String,
}

impl OutlookOut {
    pub fn new(outlook: Outlook, facts: impl Fn(u32) -> Option<LesionFacts>) -> Self {
        let statement = match &outlook.evaluation {
            Some(e) if e.beats_base_rates => format!(
                "Decision support, not a diagnosis: measured on {} real follow-up pairs ({} patients), the similar lesions' shares scored Brier {:.3} against {:.3} for the base rates.",
                e.pairs, e.patients, e.brier, e.brier_base_rates
            ),
            Some(e) => format!(
                "No prediction: measured on {} real follow-up pairs ({} patients), what similar lesions did foretold the course no better than the base rates (Brier {:.3} against {:.3}; median change off by {:.3} in log size against {:.3} for \"no change\"). The similar lesions are shown as evidence only.",
                e.pairs, e.patients, e.brier, e.brier_base_rates, e.mae_median_change, e.mae_no_change
            ),
            None => "No prediction: the outlook has not been measured on real pairs.".into(),
        };
        OutlookOut {
            similar: outlook
                .similar
                .into_iter()
                .map(|course| SimilarCourseOut {
                    lesion: facts(course.from).map(|f| LesionSummary::of(course.from, &f)),
                    followup_key: facts(course.to).map(|f| f.key),
                    course,
                })
                .collect(),
            grew: outlook.grew,
            stable: outlook.stable,
            shrank: outlook.shrank,
            median_change_percent: outlook.median_change_percent,
            base_rates: outlook.base_rates,
            prediction: outlook.prediction,
            reference_size: outlook.reference_size,
            evaluation: outlook.evaluation,
            statement,
        }
    }
}

/// Which page of which list a reply answers.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub offset: usize,
    pub k: usize,
    pub group_by_patient: bool,
}

impl SearchReply {
    /// The reply to a page asked at `offset` with `k` hits, grouped by patient or not.
    pub fn new(
        response: SearchResponse,
        page: Page,
        facts: impl Fn(u32) -> Option<LesionFacts>,
    ) -> Self {
        let hits = response
            .hits
            .into_iter()
            .filter_map(|hit: Hit| {
                let f = facts(hit.id)?;
                Some(HitOut {
                    lesion: LesionSummary::of(hit.id, &f),
                    id: hit.id,
                    key: hit.key,
                    score: hit.score,
                    matched: hit.matched,
                    image: hit.image,
                    text: hit.text.map(Into::into),
                    semantic: hit.semantic,
                })
            })
            .collect();
        SearchReply {
            hits,
            total: response.total,
            offset: page.offset,
            k: page.k,
            group_by_patient: page.group_by_patient,
            matched_lesions: response.matched_lesions,
            text_matches: response.text_matches,
            did_you_mean: response.did_you_mean,
            facets: response.facets,
            suggestion: response.suggestion.map(Into::into),
            semantic: response.semantic,
            degraded: response.degraded.is_some(),
            degraded_reason: response.degraded,
            plan: response.plan,
            assumed_spacing_mm: response.assumed_spacing_mm,
            outlook: response.outlook.map(|o| OutlookOut::new(o, &facts)),
            timings: response.timings,
        }
    }
}

/// `GET /api/lesions/{id}`: everything stored about a lesion.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LesionDetail {
    #[serde(flatten)]
    pub summary: LesionSummary,
    pub report: String,
    pub tags: Vec<String>,
    /// `[x1, y1, x2, y2]` in pixels of the key slice.
    pub bbox: [f32; 4],
    /// RECIST long and short axes, `[x1, y1, x2, y2]` each.
    pub recist_long: [f32; 4],
    pub recist_short: [f32; 4],
    pub spacing_mm: [f32; 3],
    pub image_size: [u32; 2],
    /// The lesion's own window `[low, high]` in HU.
    pub window: [f32; 2],
    pub key_slice: u32,
    pub possibly_noisy: bool,
    /// Other lesions of the same patient: `(id, key, study)`.
    pub patient_lesions: Vec<LesionSummary>,
}

impl LesionDetail {
    pub fn new(
        id: u32,
        stored: StoredLesion,
        facts: &LesionFacts,
        others: Vec<LesionSummary>,
    ) -> Self {
        let r = &stored.record;
        let axis = |a: &[lesion_search::dataset::Point; 2]| [a[0].x, a[0].y, a[1].x, a[1].y];
        LesionDetail {
            summary: LesionSummary::of(id, facts),
            report: stored.report.clone(),
            tags: stored.tags.clone(),
            bbox: [r.bbox.x1, r.bbox.y1, r.bbox.x2, r.bbox.y2],
            recist_long: axis(&r.recist.long_axis),
            recist_short: axis(&r.recist.short_axis),
            spacing_mm: [r.spacing.x_mm, r.spacing.y_mm, r.spacing.z_mm],
            image_size: [r.image_width, r.image_height],
            window: [r.window.low, r.window.high],
            key_slice: r.key_slice,
            possibly_noisy: r.possibly_noisy,
            patient_lesions: others,
        }
    }
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Health {
    /// `ok`, or `degraded` (503) when the search backend does not answer.
    pub status: &'static str,
    pub version: &'static str,
    /// The index generation being served.
    pub generation: u64,
    /// Lesions live in that generation.
    pub lesions: usize,
    /// The embedding model's name.
    pub model: String,
    /// The sentence encoder of the archive's report vectors (`all-minilm-l6-v2`), when it
    /// was built with `--text-encoder`; none otherwise.
    pub text_encoder: Option<String>,
    /// Whether a search may ask for `semantic` (report vectors and their encoder loaded).
    pub semantic: bool,
    /// Whether text queries use it when a request does not say.
    pub semantic_default: bool,
    /// What builds the index's HNSW graph: `native` (our insertion, the default) or
    /// `hnsw-rs` (the hnsw_rs crate's), as the generation's manifest records it.
    pub graph_builder: &'static str,
    /// Whether write routes are on (an admin key is set).
    pub writes: bool,
    /// Admin writes queued or running.
    pub writes_pending: usize,
    /// What answers the vector and text parts of a search.
    pub backend: HealthBackend,
    /// How far a client may page and how long an export may be, so that a page can stop
    /// where the server would refuse.
    pub limits: HealthLimits,
}

/// `GET /healthz`: the caps on paging and exports (the settings file's `max_k`,
/// `max_offset`, `max_export`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HealthLimits {
    /// Most hits one page may ask for.
    pub max_k: usize,
    /// Deepest page offset a search may ask for.
    pub max_offset: usize,
    /// Most rows an export may hold.
    pub max_export: usize,
    /// The deepest row a list ranked by likeness (an image, a lesion) can reach, where the
    /// search backend caps it (Milvus: 16,384); none with the embedded stores.
    pub max_ranked_by_likeness: Option<usize>,
}

/// `GET /healthz`: the search backend.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HealthBackend {
    /// `embedded` (in-process vectors and tantivy) or an external engine's name.
    pub name: String,
    /// What ranks vectors, e.g. `hnsw+flat`.
    pub vectors: String,
    /// What ranks report text, e.g. `tantivy-bm25`.
    pub text: String,
    /// Whether it answered just now (an external engine may be down; then `status` is
    /// `degraded` and the answer is 503).
    pub reachable: bool,
}

/// Every failure: the status line says what kind, `error` says what and where.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ErrorReply {
    pub error: crate::error::ErrorBody,
}

/// `GET /api/tasks`: the most recent write tasks, newest first.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TaskList {
    pub tasks: Vec<crate::tasks::TaskReport>,
}

/// `GET /api/tasks/{id}` query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// Seconds to wait for the task to finish before answering (long polling), 0 to 60.
    pub wait: Option<f64>,
}

/// `GET /api/lesions/{id}/similar` query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimilarQuery {
    /// Hits per page, 1 to the server's cap (default 20).
    pub k: Option<usize>,
    pub offset: Option<usize>,
    /// One hit per patient (default true).
    pub group_by_patient: Option<bool>,
}

/// The query of the image routes (`/api/lesions/{id}/image`, `/api/uploads/{upload}/image`,
/// and the pixels and thumbnail routes, which take `window` only where it applies).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageQuery {
    /// soft, lung, liver, bone, brain, mediastinum, abdomen, dicom (the lesion's own), or
    /// `low,high` in HU.
    pub window: Option<String>,
    /// Draw the lesion's box (`1`/`true`).
    #[serde(rename = "box")]
    pub draw_box: Option<String>,
    /// Longest side of the PNG in pixels (default: the slice's own).
    pub size: Option<usize>,
    /// Crop a square of this many mm around the box.
    pub around_mm: Option<f32>,
}

/// `POST /api/export`: a search's whole result list as a file, with its provenance.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportBody {
    /// The search whose result list to export, as sent to `/api/search` (its `k` and
    /// `offset` are ignored: the export pages through the whole list).
    #[serde(default)]
    pub query: Option<SearchBody>,
    /// `csv` (default; the provenance as leading `# key: value` lines, read with pandas'
    /// `comment="#"`), `jsonl` (JSON Lines: a `{"provenance": ...}` line, then one row a
    /// line) or `json` (one document: `provenance`, `total`, `lesions`).
    #[serde(default)]
    pub format: Option<String>,
    /// Export only the first `limit` rows of the list (1 to the server's export cap); the
    /// provenance then says `truncated`. Without it the whole list is exported, and a list
    /// longer than the cap is refused (400 naming `limit`), never cut silently.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// What an export was made from: enough to know, and to redo, what the rows are.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExportProvenance {
    /// When the export was made, UTC, RFC 3339.
    pub exported_at: String,
    /// The server (`lesion-web` and its version) and the engine's version.
    pub server: String,
    pub version: &'static str,
    /// The search as sent (POST it to `/api/search` to see the same list page by page).
    #[schemars(schema_with = "any_object")]
    pub request: serde_json::Value,
    /// The report text searched for, if any.
    pub text: Option<String>,
    /// The filters as sent (`{}` when none).
    #[schemars(schema_with = "any_object")]
    pub filters: serde_json::Value,
    /// The image example, if any: a lesion of the archive or an uploaded slice and its box.
    pub example: Option<ExportExample>,
    /// Liked and disliked lesions that refined the search, by id.
    pub positives: Vec<u32>,
    pub negatives: Vec<u32>,
    /// One row per patient (the best of its lesions), or one per lesion.
    pub group_by_patient: bool,
    /// How the image and text lists were fused: `rrf`, or `weighted` with the image list's
    /// share `image_weight`.
    pub fusion: &'static str,
    pub image_weight: Option<f32>,
    /// The embedding model, as the engine serving the export reports it.
    pub model: ExportModel,
    /// Whether the text's semantic list was fused in, and the sentence encoder of the
    /// report vectors (when the archive has them).
    pub semantic: bool,
    pub text_encoder: Option<ExportModel>,
    /// The index generation served (its number and folder name).
    pub generation: u64,
    pub generation_name: Option<String>,
    /// Rows of the result list (patients when grouped, lesions otherwise).
    pub total: usize,
    /// Lesions the query and filters select, whatever the grouping.
    pub matched_lesions: usize,
    /// Rows written: `total`, or `limit` when one was asked and the list is longer.
    pub rows: usize,
    /// The `limit` asked, if any.
    pub limit: Option<usize>,
    /// Whether the file holds fewer rows than the list (only when a `limit` was asked).
    pub truncated: bool,
    /// Set when the image part of the search was dropped (the rows then rank by text
    /// alone): why.
    pub degraded: Option<String>,
    /// How to read the file.
    pub format: String,
}

/// A JSON object of any fields (a request as it was sent).
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "additionalProperties": true})
}

impl ExportProvenance {
    /// Its fields in the order a reader expects them (what was asked, from what, how many),
    /// as JSON values: the CSV writes one `# key: value` line each.
    pub fn fields(&self) -> Vec<(String, serde_json::Value)> {
        const ORDER: [&str; 24] = [
            "exported_at",
            "server",
            "version",
            "text",
            "filters",
            "example",
            "positives",
            "negatives",
            "group_by_patient",
            "fusion",
            "image_weight",
            "request",
            "model",
            "semantic",
            "text_encoder",
            "generation",
            "generation_name",
            "total",
            "matched_lesions",
            "rows",
            "limit",
            "truncated",
            "degraded",
            "format",
        ];
        let serde_json::Value::Object(mut fields) = serde_json::to_value(self).unwrap_or_default()
        else {
            return Vec::new();
        };
        let mut out: Vec<(String, serde_json::Value)> = ORDER
            .iter()
            .filter_map(|&key| fields.remove(key).map(|v| (key.to_string(), v)))
            .collect();
        out.extend(fields);
        out
    }
}

/// The image example of an exported search.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExportExample {
    /// A lesion of the archive: its id and key.
    pub lesion: Option<u32>,
    pub lesion_key: Option<String>,
    /// An uploaded slice and the box drawn on it (`x1,y1,x2,y2` in pixels).
    pub upload: Option<String>,
    #[serde(rename = "box")]
    pub bbox: Option<String>,
    pub spacing_mm: Option<f32>,
}

/// The embedding model of an export.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExportModel {
    /// The model card's name.
    pub name: String,
    /// The sha256 of its weights, as its card states it.
    pub weights_sha256: String,
}

/// One exported row: where it ranks and why, then the lesion in DeepLesion's `DL_info.csv`
/// columns (names and formats as DeepLesion writes them: lists as `"a, b, c"`, types and
/// splits as codes, `Patient_age` null where DeepLesion writes NaN), then our key, plain
/// type, sizes in mm and the report. CSV has the same columns in the same order.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExportRow {
    /// 1-based, in the order of the result list.
    pub rank: usize,
    /// The fused score the list is ranked by.
    pub score: f32,
    pub matched: Matched,
    /// The image side: rank in the image list and cosine similarity (null when the image
    /// list did not hold the lesion).
    pub image_rank: Option<usize>,
    pub image_cosine: Option<f32>,
    /// The text side: rank in the text list and BM25 (null when the text did not match).
    pub text_rank: Option<usize>,
    pub text_bm25: Option<f32>,
    /// The semantic side (null without semantic retrieval): rank in the semantic list
    /// (every text match has one; null for a lesion only the image ranked) and the
    /// report's cosine to the text.
    pub semantic_rank: Option<usize>,
    pub semantic_cosine: Option<f32>,
    #[serde(rename = "File_name")]
    pub file_name: String,
    #[serde(rename = "Patient_index")]
    pub patient_index: u32,
    #[serde(rename = "Study_index")]
    pub study_index: u32,
    #[serde(rename = "Series_ID")]
    pub series_id: u32,
    #[serde(rename = "Key_slice_index")]
    pub key_slice_index: u32,
    #[serde(rename = "Measurement_coordinates")]
    pub measurement_coordinates: String,
    #[serde(rename = "Bounding_boxes")]
    pub bounding_boxes: String,
    #[serde(rename = "Lesion_diameters_Pixel_")]
    pub lesion_diameters_pixel: String,
    #[serde(rename = "Normalized_lesion_location")]
    pub normalized_lesion_location: String,
    #[serde(rename = "Coarse_lesion_type")]
    pub coarse_lesion_type: i32,
    #[serde(rename = "Possibly_noisy")]
    pub possibly_noisy: u8,
    #[serde(rename = "Slice_range")]
    pub slice_range: String,
    #[serde(rename = "Spacing_mm_px_")]
    pub spacing_mm_px: String,
    #[serde(rename = "Image_size")]
    pub image_size: String,
    #[serde(rename = "DICOM_windows")]
    pub dicom_windows: String,
    #[serde(rename = "Patient_gender")]
    pub patient_gender: String,
    #[serde(rename = "Patient_age")]
    pub patient_age: Option<f32>,
    #[serde(rename = "Train_Val_Test")]
    pub train_val_test: i32,
    /// The lesion's key (`File_name`, `#n` for the n-th lesion of a slice) and dense id.
    pub key: String,
    pub id: u32,
    /// The coarse type by name, and the RECIST diameters in mm.
    pub coarse_type: CoarseType,
    pub long_mm: f32,
    pub short_mm: f32,
    pub report: String,
}

impl ExportRow {
    /// The row of `hit`, ranked `rank` in its list, from its stored lesion.
    pub fn new(rank: usize, hit: &Hit, stored: &StoredLesion) -> Self {
        use lesion_search::dataset::fields::join_numbers;
        let r = &stored.record;
        ExportRow {
            rank,
            score: hit.score,
            matched: hit.matched,
            image_rank: hit.image.map(|m| m.rank),
            image_cosine: hit.image.map(|m| m.cosine),
            text_rank: hit.text.as_ref().map(|m| m.rank),
            text_bm25: hit.text.as_ref().map(|m| m.bm25),
            semantic_rank: hit.semantic.and_then(|m| m.rank),
            semantic_cosine: hit.semantic.map(|m| m.cosine),
            file_name: r.file_name.clone(),
            patient_index: r.patient,
            study_index: r.study,
            series_id: r.series,
            key_slice_index: r.key_slice,
            measurement_coordinates: join_numbers(&r.recist.coordinates()),
            bounding_boxes: join_numbers(&[r.bbox.x1, r.bbox.y1, r.bbox.x2, r.bbox.y2]),
            lesion_diameters_pixel: join_numbers(&r.diameters_px),
            normalized_lesion_location: join_numbers(&[r.location.x, r.location.y, r.location.z]),
            coarse_lesion_type: r.coarse_type.code(),
            possibly_noisy: u8::from(r.possibly_noisy),
            slice_range: format!("{}, {}", r.slice_range.first, r.slice_range.last),
            spacing_mm_px: join_numbers(&[r.spacing.x_mm, r.spacing.y_mm, r.spacing.z_mm]),
            image_size: format!("{}, {}", r.image_width, r.image_height),
            dicom_windows: join_numbers(&[r.window.low, r.window.high]),
            patient_gender: r.sex.code().to_string(),
            patient_age: r.age,
            train_val_test: r.split.code(),
            key: stored.key.clone(),
            id: hit.id,
            coarse_type: r.coarse_type,
            long_mm: round1(r.long_diameter_mm()),
            short_mm: round1(r.short_diameter_mm()),
            report: stored.report.clone(),
        }
    }
}

/// `POST /api/export` with `format: json`: the provenance and every row in one document
/// (`jsonl` holds the same objects, one a line, after a `{"provenance": ...}` line).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExportReply {
    pub provenance: ExportProvenance,
    /// Rows of the result list (as `provenance.total`).
    pub total: usize,
    pub lesions: Vec<ExportRow>,
}

/// `POST /api/uploads`: the slice held in memory for viewing and searching.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Uploaded {
    /// Its id, for `upload` in a search and the upload routes.
    pub upload: String,
    pub width: usize,
    pub height: usize,
    /// hounsfield, modality or display.
    pub unit: &'static str,
    pub spacing_mm: Option<(f32, f32)>,
    /// The file's own window `[low, high]`, when it states one.
    pub window: Option<[f32; 2]>,
}

/// A file part of a multipart form.
pub struct FilePart;

impl JsonSchema for FilePart {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FilePart".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "format": "binary"})
    }
}

/// `POST /api/uploads` as multipart/form-data: one part.
#[derive(JsonSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// DICOM, 16-bit PNG, PNG or JPEG slice.
    pub image: FilePart,
}

/// `POST /api/search` as multipart/form-data: a slice to search with, the search as parts.
/// Any other field of the JSON body may be sent as a part of its own (numbers and booleans
/// as text), and any filter field (`types`, `sex`, `age`, `size_mm`, ...) flat.
#[derive(JsonSchema)]
#[allow(dead_code)]
pub struct SearchForm {
    /// DICOM, 16-bit PNG, PNG or JPEG slice.
    pub image: Option<FilePart>,
    /// `x1,y1,x2,y2` in pixels of the slice.
    #[schemars(rename = "box")]
    pub bbox: Option<String>,
    pub text: Option<String>,
    pub k: Option<String>,
    /// The filters as a JSON object.
    pub filters: Option<String>,
    /// The rest of the search as a JSON object (the JSON body's fields).
    pub query: Option<String>,
}

/// `POST /api/lesions` as multipart/form-data (admin): a slice, the lesion's box on it and
/// what is known of it. Every part but `image` is text.
#[derive(JsonSchema)]
#[allow(dead_code)]
pub struct AddLesionForm {
    /// DICOM, 16-bit PNG or PNG slice in HU.
    pub image: FilePart,
    /// `x1,y1,x2,y2` in pixels.
    #[schemars(rename = "box")]
    pub bbox: String,
    pub patient: String,
    pub study: String,
    /// Default 1.
    pub series: Option<String>,
    /// The key slice's index in its series (default 1).
    pub slice: Option<String>,
    /// bone, abdomen, mediastinum, liver, lung, kidney, soft_tissue, pelvis or unknown.
    #[schemars(rename = "type")]
    pub coarse_type: Option<String>,
    /// `F` or `M`.
    pub sex: Option<String>,
    pub age: Option<String>,
    /// Pixel spacing when the file does not state it.
    pub spacing_mm: Option<String>,
    pub slice_interval_mm: Option<String>,
    /// Normalized `x,y,z` (each 0..1).
    pub location: Option<String>,
    /// The report text to index.
    pub report: Option<String>,
    /// train, validation or test.
    pub split: Option<String>,
    /// A named window or `low,high` in HU.
    pub window: Option<String>,
}
