//! Hybrid search: one request mixing text, an image example, a lesion ("more like this"),
//! positive and negative examples and metadata filters, answered by fusing a vector list and
//! a BM25 list; facets, a type suggestion and follow-ups beside it.
//!
//! This module knows no HTTP: the web crate maps its wire format onto [`SearchRequest`].

mod catalog;
mod followup;
mod input;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use catalog::{Catalog, Facets, Filter, LesionFacts, Range};
pub use followup::{FollowUp, FollowUps, MatcherSummary, StudyCandidates};
pub use input::{
    parse_bounds, parse_sex, parse_split, parse_type, range, Bounds, FilterInput, LesionRef,
};

use crate::archive::Published;
use crate::backend::{Allowed, BackendChoice, BackendInfo, SearchBackend};
use crate::dataset::{CoarseType, PixelBox};
use crate::embed::{l2_normalised, Embedder};
use crate::error::{Error, Result};
use crate::imaging::{
    check_file_spacing, check_pixel_spacing, extract_patch, CtImage, PatchGeometry, SliceStack,
};
use crate::index::{IdSet, Plan};
use crate::store::StoredLesion;
use crate::text::Snippet;
use crate::util::Cancel;

/// Reciprocal rank fusion's constant (Cormack et al. 2009 use 60).
pub const RRF_K: f32 = 60.0;
/// Largest `k` a request may ask for (exports of whole cohorts included).
pub const MAX_K: usize = 10_000;
/// Pixel spacing assumed for an uploaded slice that states none (DeepLesion's median is
/// about 0.78 mm).
pub const ASSUMED_SPACING_MM: f32 = 0.8;
/// Rocchio weights for refining with liked and disliked results.
const POSITIVE_WEIGHT: f32 = 0.75;
const NEGATIVE_WEIGHT: f32 = 0.25;
/// Neighbours that vote on the suggested type.
const SUGGESTION_NEIGHBOURS: usize = 10;

/// An uploaded slice and the box drawn on it.
#[derive(Debug, Clone)]
pub struct ImageQuery {
    pub image: CtImage,
    pub bbox: PixelBox,
    /// Overrides the spacing the file states (or the lack of one).
    pub spacing_mm: Option<f32>,
}

/// How the image and text lists become one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum Fusion {
    /// Reciprocal rank fusion with k = 60: robust to the lists' unlike score scales.
    Rrf,
    /// Each list's scores scaled to 0..1 over its candidates, then
    /// `image_weight * image + (1 - image_weight) * text`.
    Weighted { image_weight: f32 },
}

/// One search.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub text: Option<String>,
    pub image: Option<ImageQuery>,
    /// "More like this": a lesion of the archive as the example.
    pub lesion: Option<u32>,
    /// Liked and disliked results (refine).
    pub positives: Vec<u32>,
    pub negatives: Vec<u32>,
    pub filter: Filter,
    /// Leave out the patients of the example lesions (their other lesions are not news).
    pub exclude_query_patient: bool,
    pub k: usize,
    pub offset: usize,
    /// One hit per patient, the best.
    pub group_by_patient: bool,
    pub fusion: Fusion,
    /// Budget of the image path; past it the answer is text-only and flagged degraded.
    pub image_deadline: Option<Duration>,
    /// The whole request's deadline: checked between the steps, so a search its caller has
    /// given up on stops instead of running on.
    pub cancel: Cancel,
}

impl Default for SearchRequest {
    fn default() -> Self {
        SearchRequest {
            text: None,
            image: None,
            lesion: None,
            positives: Vec::new(),
            negatives: Vec::new(),
            filter: Filter::default(),
            exclude_query_patient: true,
            k: 20,
            offset: 0,
            group_by_patient: true,
            fusion: Fusion::Rrf,
            image_deadline: None,
            cancel: Cancel::never(),
        }
    }
}

/// The image side of a hit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ImageMatch {
    /// 1-based rank in the image list.
    pub rank: usize,
    pub cosine: f32,
}

/// The text side of a hit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextMatch {
    pub rank: usize,
    pub bm25: f32,
    /// The passage of the report that matched, with the matched ranges.
    pub snippet: Snippet,
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

/// One result, explaining itself.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub id: u32,
    pub key: String,
    pub score: f32,
    pub matched: Matched,
    pub image: Option<ImageMatch>,
    pub text: Option<TextMatch>,
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

#[derive(Debug, Clone, Serialize)]
pub struct SearchResponse {
    pub hits: Vec<Hit>,
    /// Results available for paging (after grouping), at most the candidate depth.
    pub total: usize,
    /// BM25 matches in the filtered set, when there was text.
    pub text_matches: Option<usize>,
    pub facets: Facets,
    pub suggestion: Option<TypeSuggestion>,
    /// Why the image path was dropped, when it was.
    pub degraded: Option<String>,
    pub plan: Option<Plan>,
    /// Set when an uploaded slice stated no pixel spacing and none was given.
    pub assumed_spacing_mm: Option<f32>,
    /// For an image example: what became of the most similar lesions seen again.
    pub outlook: Option<crate::followup::Outlook>,
    pub timings: Timings,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// An open archive, its metadata in memory and the model that built it.
/// What a request may return: its effective filter, the ids it allows, and the patients
/// of its example lesions.
struct Scope {
    filter: Filter,
    allowed: IdSet,
    query_patients: HashSet<u32>,
}

pub struct Engine {
    /// Records and manifest of the served generation.
    pub(crate) published: Published,
    /// What ranks vectors and text.
    pub(crate) backend: Box<dyn SearchBackend>,
    pub(crate) catalog: Catalog,
    model: Arc<dyn Embedder>,
    /// The archive's matched forward follow-ups, for outlooks (built on first use).
    trajectories: std::sync::OnceLock<Vec<crate::followup::Trajectory>>,
    collecting: std::sync::Mutex<()>,
}

impl Engine {
    /// Opens the served generation of `index_dir` with the embedded backend; `model` must
    /// be the one that built it.
    pub fn open(index_dir: &Path, model: Arc<dyn Embedder>) -> Result<Self> {
        Engine::open_with(index_dir, model, &BackendChoice::Embedded)
    }

    /// Opens the served generation of `index_dir` with the chosen backend.
    pub fn open_with(
        index_dir: &Path,
        model: Arc<dyn Embedder>,
        choice: &BackendChoice,
    ) -> Result<Self> {
        let (published, backend) = crate::backend::open(index_dir, choice)?;
        Engine::with_backend(published, backend, model)
    }

    /// An engine over published records whose vectors and text `backend` serves.
    pub fn with_backend(
        published: Published,
        backend: Box<dyn SearchBackend>,
        model: Arc<dyn Embedder>,
    ) -> Result<Self> {
        published.check_model(model.as_ref())?;
        let expected = published.manifest.model.output_dim;
        if backend.dim() != expected {
            return Err(Error::Index {
                path: published.dir.clone(),
                message: format!(
                    "the {} backend holds {}-dimensional vectors, the model card ({}) says {expected}",
                    backend.info().name,
                    backend.dim(),
                    published.manifest.model.name
                ),
            });
        }
        let catalog = Catalog::load(&published.records, published.manifest.lesions)?;
        Ok(Engine {
            published,
            backend,
            catalog,
            model,
            trajectories: Default::default(),
            collecting: Default::default(),
        })
    }

    pub fn model(&self) -> &Arc<dyn Embedder> {
        &self.model
    }

    pub fn lesion(&self, id: u32) -> Result<Option<StoredLesion>> {
        if self.catalog.get(id).is_none() {
            return Ok(None);
        }
        self.published.records.get(id)
    }

    /// Looks a lesion up by key (`File_name`, `#n` for the n-th on a slice).
    pub fn id_of(&self, key: &str) -> Result<Option<u32>> {
        self.published.records.id_of(key)
    }

    /// Whether `id` names a lesion that is searchable (not deleted, not past the end).
    pub fn is_live(&self, id: u32) -> bool {
        self.catalog.get(id).is_some()
    }

    /// The filterable facts of a live lesion.
    pub fn facts(&self, id: u32) -> Option<&LesionFacts> {
        self.catalog.get(id)
    }

    /// Live lesions.
    pub fn live(&self) -> usize {
        self.catalog.live()
    }

    /// Ids ever given (live and deleted): every id is below it.
    pub fn capacity(&self) -> usize {
        self.catalog.capacity()
    }

    /// The live lesions of one patient, in id order.
    pub fn lesions_of_patient(&self, patient: u32) -> Vec<u32> {
        self.catalog.of_patient(patient)
    }

    /// The served generation's number.
    pub fn generation(&self) -> u64 {
        self.published.manifest.generation
    }

    /// The folder name of the served generation (what `CURRENT` names while it is current).
    pub fn generation_name(&self) -> Option<&str> {
        self.published.dir.file_name().and_then(|n| n.to_str())
    }

    /// The name of the model that embedded the archive.
    pub fn model_name(&self) -> &str {
        &self.published.manifest.model.name
    }

    /// The in-process vector index (flat vectors, graph, calibration outcome), read-only,
    /// where the backend has one.
    pub fn vectors(&self) -> Option<&crate::index::VectorIndex> {
        self.backend.vector_index()
    }

    /// What serves the vectors and the text.
    pub fn backend(&self) -> BackendInfo {
        self.backend.info()
    }

    /// Whether the backend's stores answer now.
    pub fn backend_reachable(&self) -> Result<()> {
        self.backend.ping()
    }

    /// Cross-checks of the backend's stores against the served records; empty when they
    /// agree.
    pub fn verify(&self) -> Result<Vec<String>> {
        self.backend.verify(&self.published)
    }

    /// The key slice of a stored lesion, read from its dataset.
    pub fn key_slice(&self, lesion: &StoredLesion) -> Result<CtImage> {
        self.published
            .dataset_of(lesion)
            .load_key_slice(&lesion.record)
    }

    /// The stored thumbnail PNG of a lesion.
    pub fn thumbnail(&self, id: u32) -> Result<Option<Vec<u8>>> {
        self.published.records.thumbnail(id)
    }

    fn live_vector(&self, id: u32, field: &str) -> Result<std::borrow::Cow<'_, [f32]>> {
        if self.catalog.get(id).is_none() {
            return Err(Error::invalid_argument(
                field,
                format!("lesion {id} is not in the index"),
            ));
        }
        self.backend.vector(id)
    }

    /// The embedding of a boxed region of an uploaded slice.
    pub fn embed_image(&self, query: &ImageQuery) -> Result<(Vec<f32>, Option<f32>)> {
        let (spacing, assumed) = match (query.spacing_mm, query.image.spacing_mm) {
            (Some(s), _) => {
                let s = check_pixel_spacing(s, "spacing_mm")?;
                ((s, s), None)
            }
            (None, Some(stated)) => (check_file_spacing(stated)?, None),
            (None, None) => (
                (ASSUMED_SPACING_MM, ASSUMED_SPACING_MM),
                Some(ASSUMED_SPACING_MM),
            ),
        };
        let geometry = PatchGeometry {
            bbox: query.bbox,
            spacing_mm: spacing,
            slice_interval_mm: 0.0,
            own_window: query.image.window,
        };
        let card = self.model.card();
        let patch = extract_patch(&SliceStack::single(&query.image), &geometry, &card.patch)?;
        let vector = self
            .model
            .embed(&[patch])?
            .pop()
            .ok_or_else(|| Error::Model {
                path: card.name.clone().into(),
                message: "the model returned no embedding".into(),
            })?;
        Ok((vector, assumed))
    }

    /// The query vector: the example (image or lesion), moved towards liked and away from
    /// disliked results (Rocchio); the liked ones alone when there is no example.
    fn query_vector(
        &self,
        request: &SearchRequest,
        response: &mut SearchResponse,
    ) -> Result<Option<Vec<f32>>> {
        let mut base: Option<Vec<f32>> = None;
        if let Some(image) = &request.image {
            let started = Instant::now();
            let outcome = self.embed_image(image);
            let took = started.elapsed();
            response.timings.embed_ms = ms(took);
            match outcome {
                Ok((vector, assumed)) => {
                    response.assumed_spacing_mm = assumed;
                    match request.image_deadline {
                        Some(deadline) if took > deadline => {
                            response.degraded = Some(format!(
                                "the image took {:.0} ms to embed, past the {:.0} ms deadline: text results only",
                                ms(took),
                                ms(deadline)
                            ));
                        }
                        _ => base = Some(vector),
                    }
                }
                // A box outside the image is the caller's mistake, not a degraded service.
                Err(e @ (Error::BoxOutsideImage { .. } | Error::InvalidArgument { .. })) => {
                    return Err(e)
                }
                Err(e) => {
                    response.degraded = Some(format!(
                        "the image could not be embedded ({e}): text results only"
                    ))
                }
            }
        }
        if let Some(id) = request.lesion {
            let v = self.live_vector(id, "lesion")?;
            base = Some(match base {
                Some(b) => b.iter().zip(v.iter()).map(|(a, b)| a + b).collect(),
                None => v.into_owned(),
            });
        }
        let mean = |ids: &[u32], field: &str| -> Result<Option<Vec<f32>>> {
            if ids.is_empty() {
                return Ok(None);
            }
            let mut sum = vec![0.0f32; self.backend.dim()];
            for &id in ids {
                for (s, x) in sum.iter_mut().zip(self.live_vector(id, field)?.iter()) {
                    *s += x;
                }
            }
            Ok(Some(sum.iter().map(|s| s / ids.len() as f32).collect()))
        };
        let positives = mean(&request.positives, "positives")?;
        let negatives = mean(&request.negatives, "negatives")?;
        let mut query = match (base, positives) {
            (Some(b), Some(p)) => b
                .iter()
                .zip(&p)
                .map(|(b, p)| b + POSITIVE_WEIGHT * p)
                .collect(),
            (Some(b), None) => b,
            (None, Some(p)) => p,
            (None, None) => return Ok(None),
        };
        if let Some(n) = negatives {
            for (q, n) in query.iter_mut().zip(&n) {
                *q -= NEGATIVE_WEIGHT * n;
            }
        }
        Ok(Some(l2_normalised(query)))
    }

    /// Answers one request, in stages: the query vector, the filtered scope, the image and
    /// text candidate lists, fusion, grouping and paging, snippets for the page.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResponse> {
        let started = Instant::now();
        if request.k == 0 || request.k > MAX_K {
            return Err(Error::invalid_argument(
                "k",
                format!("must be 1 to {MAX_K}, not {}", request.k),
            ));
        }
        let mut response = SearchResponse {
            hits: Vec::new(),
            total: 0,
            text_matches: None,
            facets: Facets::default(),
            suggestion: None,
            degraded: None,
            plan: None,
            assumed_spacing_mm: None,
            outlook: None,
            timings: Timings::default(),
        };
        request.cancel.check("the query vector")?;
        let query = self.query_vector(request, &mut response)?;
        request.cancel.check("the filter")?;
        let scope = self.scope(request);
        response.facets = self.catalog.facets_for(&scope.filter, &scope.allowed);

        // Deep enough that grouping by patient and paging still fill the page.
        let wanted = request.offset + request.k;
        let depth = (wanted * if request.group_by_patient { 6 } else { 2 }).clamp(100, 4 * MAX_K);
        let image_list = match &query {
            Some(q) => self.image_candidates(q, depth, &scope, request, &mut response)?,
            None => Vec::new(),
        };
        request.cancel.check("the text candidates")?;
        let text = request.text.as_deref().filter(|t| !t.trim().is_empty());
        let text_list = match text {
            Some(text) => self.text_candidates(text, depth, &scope, &mut response)?,
            None => Vec::new(),
        };
        let fused = if query.is_none() && text.is_none() {
            // No query at all: the filtered set itself, in id order (a cohort).
            scope
                .allowed
                .iter()
                .map(|id| (id, 0.0, None, None))
                .collect::<Vec<_>>()
        } else {
            let scored: Vec<(u32, f32)> = text_list.iter().map(|h| (h.id, h.score)).collect();
            fuse(&image_list, &scored, request.fusion)
        };
        request.cancel.check("the page")?;
        self.fill_page(fused, request, &mut response);
        if let Some(text) = text {
            self.attach_snippets(text, &text_list, &mut response)?;
        }
        response.timings.total_ms = ms(started.elapsed());
        Ok(response)
    }

    /// The request's filter, widened to leave out the example lesions' own patients when
    /// asked, and the ids it allows.
    fn scope(&self, request: &SearchRequest) -> Scope {
        let mut filter = request.filter.clone();
        let mut query_patients = HashSet::new();
        for id in request.lesion.iter().chain(&request.positives) {
            if let Some(facts) = self.catalog.get(*id) {
                query_patients.insert(facts.patient);
            }
        }
        if request.exclude_query_patient {
            filter
                .exclude_patients
                .extend(query_patients.iter().copied());
        }
        let allowed = self.catalog.allowed(&filter);
        Scope {
            filter,
            allowed,
            query_patients,
        }
    }

    /// Nearest allowed lesions to the query vector, with the type suggestion and, for an
    /// uploaded image, the outlook of similar lesions.
    fn image_candidates(
        &self,
        query: &[f32],
        depth: usize,
        scope: &Scope,
        request: &SearchRequest,
        response: &mut SearchResponse,
    ) -> Result<Vec<crate::index::Scored>> {
        let t = Instant::now();
        let (hits, plan) = self.backend.nearest(
            query,
            depth,
            Allowed::filtered(&scope.allowed, &scope.filter),
        )?;
        response.plan = Some(plan);
        response.suggestion = self.suggest_type(query, &scope.query_patients)?;
        response.timings.vector_ms = ms(t.elapsed());
        if let Some(image) = request.image.as_ref().filter(|_| request.lesion.is_none()) {
            response.outlook = Some(self.outlook_of(&self.uploaded_profile(
                image,
                query,
                &request.filter,
                response.suggestion.as_ref(),
            ))?);
        }
        Ok(hits)
    }

    /// BM25 hits among the allowed lesions, counting all matches.
    fn text_candidates(
        &self,
        text: &str,
        depth: usize,
        scope: &Scope,
        response: &mut SearchResponse,
    ) -> Result<Vec<crate::text::RankedText>> {
        let t = Instant::now();
        let allowed = &scope.allowed;
        let share = allowed.len() as f32 / self.catalog.live().max(1) as f32;
        let (hits, total) = self.backend.ranked_text(
            text,
            depth,
            Allowed::filtered(allowed, &scope.filter),
            share,
        )?;
        response.text_matches = Some(total.min(allowed.len()));
        response.timings.text_ms = ms(t.elapsed());
        Ok(hits)
    }

    /// One hit per patient when asked, then the requested page.
    fn fill_page(&self, fused: Vec<Fused>, request: &SearchRequest, response: &mut SearchResponse) {
        let mut seen_patients = HashSet::new();
        let grouped: Vec<_> = fused
            .into_iter()
            .filter(|(id, ..)| {
                !request.group_by_patient
                    || self
                        .catalog
                        .get(*id)
                        .is_some_and(|f| seen_patients.insert(f.patient))
            })
            .collect();
        response.total = grouped.len();
        for (id, score, image, text) in grouped.into_iter().skip(request.offset).take(request.k) {
            let key = self
                .catalog
                .get(id)
                .map(|f| f.key.clone())
                .unwrap_or_default();
            let matched = match (&image, &text) {
                (Some(_), Some(_)) => Matched::Both,
                (Some(_), None) => Matched::Image,
                (None, Some(_)) => Matched::Text,
                (None, None) => Matched::Filter,
            };
            response.hits.push(Hit {
                id,
                key,
                score,
                matched,
                image,
                text,
            });
        }
    }

    /// Snippets only for the page shown (each reads a stored document).
    fn attach_snippets(
        &self,
        text: &str,
        text_list: &[crate::text::RankedText],
        response: &mut SearchResponse,
    ) -> Result<()> {
        let t = Instant::now();
        let on_page: Vec<crate::text::RankedText> = response
            .hits
            .iter()
            .filter(|h| h.text.is_some())
            .filter_map(|h| text_list.iter().find(|r| r.id == h.id).copied())
            .collect();
        let snippets = self.backend.snippets(text, &on_page)?;
        for (ranked, snippet) in on_page.iter().zip(snippets) {
            if let Some(m) = response
                .hits
                .iter_mut()
                .find(|h| h.id == ranked.id)
                .and_then(|h| h.text.as_mut())
            {
                m.snippet = snippet;
            }
        }
        response.timings.text_ms += ms(t.elapsed());
        Ok(())
    }

    /// Majority of the typed nearest neighbours from other patients.
    fn suggest_type(
        &self,
        query: &[f32],
        own_patients: &HashSet<u32>,
    ) -> Result<Option<TypeSuggestion>> {
        let allowed = self.catalog.typed_except(own_patients.iter().copied());
        let voters = Filter {
            types: CoarseType::KNOWN.to_vec(),
            exclude_patients: own_patients.iter().copied().collect(),
            ..Filter::default()
        };
        let (hits, _) = self.backend.nearest(
            query,
            SUGGESTION_NEIGHBOURS,
            Allowed::filtered(&allowed, &voters),
        )?;
        let mut counts: HashMap<CoarseType, usize> = HashMap::new();
        for hit in &hits {
            if let Some(f) = self.catalog.get(hit.id) {
                *counts.entry(f.coarse_type).or_default() += 1;
            }
        }
        let total: usize = counts.values().sum();
        if total == 0 {
            return Ok(None);
        }
        let mut votes: Vec<(CoarseType, f32)> = counts
            .into_iter()
            .map(|(t, c)| (t, c as f32 / total as f32))
            .collect();
        votes.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(Some(TypeSuggestion {
            coarse_type: votes[0].0,
            votes,
            neighbours: total,
        }))
    }

    /// Facet counts over every live lesion.
    pub fn facets(&self) -> Facets {
        self.catalog
            .facets(&self.catalog.allowed(&Filter::default()))
    }

    /// The backend's `k` nearest lesions to a unit vector among `allowed`, best first.
    pub fn nearest(
        &self,
        query: &[f32],
        k: usize,
        allowed: &IdSet,
    ) -> Result<(Vec<crate::index::Scored>, Plan)> {
        self.backend.nearest(query, k, Allowed::ids(allowed))
    }

    /// Live ids passing a filter.
    pub fn allowed(&self, filter: &Filter) -> IdSet {
        self.catalog.allowed(filter)
    }
}

type Fused = (u32, f32, Option<ImageMatch>, Option<TextMatch>);

/// One ranked list from the image and text lists, best first.
fn fuse(image: &[crate::index::Scored], text: &[(u32, f32)], fusion: Fusion) -> Vec<Fused> {
    let mut by_id: HashMap<u32, (Option<ImageMatch>, Option<TextMatch>)> = HashMap::new();
    for (rank, hit) in image.iter().enumerate() {
        by_id.entry(hit.id).or_default().0 = Some(ImageMatch {
            rank: rank + 1,
            cosine: hit.score,
        });
    }
    for (rank, &(id, bm25)) in text.iter().enumerate() {
        by_id.entry(id).or_default().1 = Some(TextMatch {
            rank: rank + 1,
            bm25,
            snippet: Snippet::default(),
        });
    }
    let scale = |scores: Vec<f32>| {
        let lo = scores.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        move |s: f32| if hi > lo { (s - lo) / (hi - lo) } else { 1.0 }
    };
    let image_scale = scale(image.iter().map(|h| h.score).collect());
    let text_scale = scale(text.iter().map(|h| h.1).collect());
    let mut fused: Vec<Fused> = by_id
        .into_iter()
        .map(|(id, (i, t))| {
            let score = match fusion {
                Fusion::Rrf => {
                    i.map_or(0.0, |m| 1.0 / (RRF_K + m.rank as f32))
                        + t.as_ref().map_or(0.0, |m| 1.0 / (RRF_K + m.rank as f32))
                }
                Fusion::Weighted { image_weight } => {
                    let w = image_weight.clamp(0.0, 1.0);
                    w * i.map_or(0.0, |m| image_scale(m.cosine))
                        + (1.0 - w) * t.as_ref().map_or(0.0, |m| text_scale(m.bm25))
                }
            };
            (id, score, i, t)
        })
        .collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Scored;

    fn text_hit(id: u32, score: f32) -> (u32, f32) {
        (id, score)
    }

    #[test]
    fn rrf_rewards_agreement_between_the_lists() {
        let image = [
            Scored { id: 1, score: 0.9 },
            Scored { id: 2, score: 0.8 },
            Scored { id: 3, score: 0.7 },
        ];
        let text = [text_hit(3, 9.0), text_hit(4, 8.0)];
        let fused = fuse(&image, &text, Fusion::Rrf);
        assert_eq!(fused[0].0, 3, "in both lists beats first in one");
        assert!((fused[0].1 - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-6);
        assert_eq!(fused.len(), 4);
    }

    #[test]
    fn weighted_fusion_follows_the_ratio() {
        let image = [Scored { id: 1, score: 0.9 }, Scored { id: 2, score: 0.1 }];
        let text = [text_hit(2, 10.0), text_hit(1, 1.0)];
        let image_only = fuse(&image, &text, Fusion::Weighted { image_weight: 1.0 });
        assert_eq!(image_only[0].0, 1);
        let text_only = fuse(&image, &text, Fusion::Weighted { image_weight: 0.0 });
        assert_eq!(text_only[0].0, 2);
    }
}
