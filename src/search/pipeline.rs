//! How the engine answers a request, stage by stage: the query vector, the filtered scope,
//! what the query and filters select (its exact size and facets), the image and text
//! lists, fusion, grouping by patient and paging, snippets for the page. When the image
//! path fails or passes its deadline the answer is text-only, flagged `degraded`.
//!
//! Every result list is the prefix of one total order, so pages cut from it at any offset
//! agree, and it can be paged to its end:
//!
//! - no query: every allowed lesion, in id order;
//! - text only: the lesions whose text matches and the filter allows, by text score, then
//!   id (ties at a page's edge are fetched whole before the cut);
//! - an image (or lesion, or liked results), with or without text: every allowed lesion,
//!   ranked by the exact scan, then fused with the text list of every allowed match;
//! - text with `semantic`: the matches are the BM25 matches and the semantic ones (a
//!   report whose sentence vector's cosine to the text's reaches `SEMANTIC_MIN_COSINE`),
//!   the allowed ones of both lists fused whole (RRF by default), ties by id.
//!
//! `total` counts the list's rows (patients when grouped), whatever page is asked for.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::catalog::Selection;
use super::fusion::{rrf_share, semantic_ranking, SEMANTIC_MIN_COSINE};
use super::response::ms;
use super::{
    Engine, Fusion, Hit, ImageMatch, Matched, SearchRequest, SearchResponse, SemanticMatch,
    TextMatch, TypeSuggestion, MAX_K,
};
use crate::backend::Allowed;
use crate::dataset::CoarseType;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::index::{exact_depth, IdSet, Scored};
use crate::text::RankedText;

/// Neighbours that vote on the suggested type.
const SUGGESTION_NEIGHBOURS: usize = 10;

/// What a request may return: its effective filter and the patients of its example
/// lesions.
struct Scope {
    filter: Filter,
    query_patients: HashSet<u32>,
}

/// The text side of a request: what it matches under the filter, and the share of the
/// index's matches that the filter lets through (how deep the backend fetches before
/// filtering).
struct TextSide<'a> {
    text: &'a str,
    selection: Selection,
    share: f32,
    /// With semantic matches in the selection: the allowed BM25 matches alone, and how
    /// many (the BM25 list ranks these; without semantic matches it ranks the selection).
    bm25: Option<(IdSet, usize)>,
}

impl TextSide<'_> {
    /// What the BM25 list ranks: its allowed matches and their number.
    fn bm25_ids(&self) -> (&IdSet, usize) {
        match &self.bm25 {
            Some((ids, len)) => (ids, *len),
            None => (&self.selection.ids, self.selection.lesions),
        }
    }
}

/// The text's sentence vector against every live report: the cosine of each (by id) and
/// the semantic matches (cosine at least [`SEMANTIC_MIN_COSINE`]), by cosine then id.
struct SemanticSide {
    cosines: Vec<f32>,
    matches: Vec<Scored>,
}

impl SemanticSide {
    fn cosine(&self, id: u32) -> Option<f32> {
        self.cosines
            .get(id as usize)
            .copied()
            .filter(|c| !c.is_nan())
    }
}

/// One row of a result list before it becomes a hit: id, fused score, the image side, and
/// the position of its text side in the text list.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fused {
    id: u32,
    score: f32,
    image: Option<ImageMatch>,
    text: Option<usize>,
    /// Position in the semantic list.
    semantic: Option<usize>,
}

impl Fused {
    /// A row of a list with no query: the lesion alone.
    fn cohort(id: u32) -> Self {
        Fused {
            id,
            score: 0.0,
            image: None,
            text: None,
            semantic: None,
        }
    }
}

impl Engine {
    /// Answers one request, in stages: the query vector, the filtered scope, the selection
    /// (total and facets), the image and text lists as deep as the page needs, fusion,
    /// grouping and paging, snippets for the page.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResponse> {
        let started = Instant::now();
        if request.k == 0 || request.k > MAX_K {
            return Err(Error::invalid_argument(
                "k",
                format!("must be 1 to {MAX_K}, not {}", request.k),
            ));
        }
        let mut response = SearchResponse::default();
        request.cancel.check("the query vector")?;
        let query = self.query_vector(request, &mut response)?;
        request.cancel.check("the filter")?;
        let scope = self.scope(request);
        let text = request.text.as_deref().filter(|t| !t.trim().is_empty());
        let semantic = match text.filter(|_| request.semantic) {
            Some(text) => Some(self.semantic_side(text, request, &mut response)?),
            None => None,
        };
        response.semantic = semantic.is_some();
        let text = match text {
            Some(text) => Some(self.text_side(text, semantic.as_ref(), &scope, &mut response)?),
            None => None,
        };
        // The rows of the list: the text's matches for text alone, every allowed lesion
        // when an image ranks them all or there is no query.
        let all =
            (query.is_some() || text.is_none()).then(|| self.catalog.select(&scope.filter, None));
        let rows = match (&all, &text) {
            (Some(all), _) => all,
            (None, Some(text)) => &text.selection,
            (None, None) => unreachable!("no query selects every allowed lesion"),
        };
        response.matched_lesions = rows.lesions;
        response.total = if request.group_by_patient {
            rows.patients
        } else {
            rows.lesions
        };
        let wanted = Wanted::of(
            request,
            rows,
            response.total,
            (query.is_some() && text.is_some()) || semantic.is_some(),
        );

        let image_list = match (&query, &all) {
            (Some(q), Some(all)) => {
                self.image_candidates(q, &wanted, all, &scope, request, &mut response)?
            }
            _ => Vec::new(),
        };
        request.cancel.check("the text candidates")?;
        let text_list = match &text {
            Some(side) => self.text_candidates(side, &wanted, &scope, &mut response)?,
            None => Vec::new(),
        };
        // The semantic list: every allowed match (BM25's and the semantic ones) by cosine,
        // whole, when the page is within the list.
        let semantic_list: Vec<Scored> = match (&semantic, &text) {
            (Some(side), Some(text)) if wanted.rows > 0 => {
                let scored = text
                    .selection
                    .ids
                    .iter()
                    .filter_map(|id| Some((id, side.cosine(id)?)));
                semantic_ranking(scored, |_| true, SEMANTIC_MIN_COSINE)
                    .into_iter()
                    .map(|(id, score)| Scored { id, score })
                    .collect()
            }
            _ => Vec::new(),
        };
        request.cancel.check("the page")?;
        let page = match (&query, &all) {
            // No query at all: the filtered set itself, in id order (a cohort).
            (None, Some(all)) => self.page_of(all.ids.iter().map(Fused::cohort), request),
            _ => self.page_of(
                fuse(&image_list, &text_list, &semantic_list, request.fusion).into_iter(),
                request,
            ),
        };
        self.check_page_complete(&page, &image_list, request, response.total)?;
        self.fill_page(&page, &text_list, semantic.as_ref(), &mut response);
        if let Some(side) = &text {
            self.attach_snippets(side.text, &page, &text_list, &mut response)?;
        }
        response.facets = match all {
            Some(all) => all.facets,
            None => text.map(|t| t.selection.facets).unwrap_or_default(),
        };
        response.timings.total_ms = ms(started.elapsed());
        Ok(response)
    }

    /// The request's filter, widened to leave out the example lesions' own patients when
    /// asked.
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
        Scope {
            filter,
            query_patients,
        }
    }

    /// The exact set the text matches under the filter, with its facets; a respelling when
    /// it is small.
    fn text_side<'a>(
        &self,
        text: &'a str,
        semantic: Option<&SemanticSide>,
        scope: &Scope,
        response: &mut SearchResponse,
    ) -> Result<TextSide<'a>> {
        let t = Instant::now();
        let mut matches = self.backend.text_matches(text)?;
        let bm25_matches = matches.len();
        let (selection, bm25) = match semantic {
            None => (self.catalog.select(&scope.filter, Some(&matches)), None),
            Some(side) => {
                let bm25 = IdSet::from_ids(self.catalog.capacity(), matches.iter().copied());
                matches.extend(side.matches.iter().map(|h| h.id));
                matches.sort_unstable();
                matches.dedup();
                let selection = self.catalog.select(&scope.filter, Some(&matches));
                let allowed = IdSet::from_ids(
                    self.catalog.capacity(),
                    selection.ids.iter().filter(|&id| bm25.contains(id)),
                );
                let len = allowed.len();
                (selection, Some((allowed, len)))
            }
        };
        response.text_matches = Some(selection.lesions);
        // A misspelt word was searched as the word it resembles: say so, so the user can
        // search that spelling itself.
        response.did_you_mean = self.backend.did_you_mean(text)?;
        response.timings.text_ms += ms(t.elapsed());
        let mut side = TextSide {
            text,
            selection,
            share: 0.0,
            bm25,
        };
        side.share = side.bm25_ids().1 as f32 / bm25_matches.max(1) as f32;
        Ok(side)
    }

    /// The text's sentence vector (embedded within the request's deadline) against every
    /// live lesion's report vector.
    fn semantic_side(
        &self,
        text: &str,
        request: &SearchRequest,
        response: &mut SearchResponse,
    ) -> Result<SemanticSide> {
        self.check_semantic()?;
        // The text's own checks (length, nesting) before the model reads a word of it.
        crate::text::check_query(text)?;
        // Operators, quotes and fields say exactly which reports match; likeness of meaning
        // would add the very reports that `NOT` or a phrase excluded.
        if crate::text::has_syntax(text) {
            return Err(Error::invalid_argument(
                "semantic",
                "semantic retrieval reads plain language: turn it off for a query with operators, quotes or fields",
            ));
        }
        let (Some(encoder), Some(reports)) = (&self.text_encoder, &self.published.report_vectors)
        else {
            return Err(Error::invalid_argument(
                "semantic",
                "semantic retrieval is not available on this archive",
            ));
        };
        request.cancel.check("the text's sentence vector")?;
        let t = Instant::now();
        let query = encoder.encode_query(text)?;
        response.timings.embed_ms += ms(t.elapsed());
        request.cancel.check("the report cosines")?;
        let t = Instant::now();
        if query.len() != reports.dim() {
            return Err(Error::Index {
                path: self.published.dir.clone(),
                message: format!(
                    "the text encoder gives {}-dimensional vectors, the report vectors have {}",
                    query.len(),
                    reports.dim()
                ),
            });
        }
        let mut cosines = vec![f32::NAN; reports.len()];
        let live = reports
            .live_ids()
            .filter(|&id| self.catalog.get(id).is_some());
        let scored: Vec<(u32, f32)> = live
            .map(|id| {
                let cosine = reports.flat().score(&query, id);
                cosines[id as usize] = cosine;
                (id, cosine)
            })
            .collect();
        let matches = semantic_ranking(scored, |_| false, SEMANTIC_MIN_COSINE)
            .into_iter()
            .map(|(id, score)| Scored { id, score })
            .collect();
        response.timings.text_ms += ms(t.elapsed());
        Ok(SemanticSide { cosines, matches })
    }

    /// The image list (every allowed lesion by exact cosine, as deep as `wanted` needs),
    /// with the type suggestion and, for an uploaded image, the outlook of similar lesions.
    fn image_candidates(
        &self,
        query: &[f32],
        wanted: &Wanted,
        all: &Selection,
        scope: &Scope,
        request: &SearchRequest,
        response: &mut SearchResponse,
    ) -> Result<Vec<Scored>> {
        let t = Instant::now();
        let allowed = Allowed::filtered(&all.ids, &scope.filter);
        let hits = wanted.list(
            all.lesions,
            |hit: &Scored| hit.id,
            self,
            |depth| {
                let depth = self.vector_depth(depth.min(all.lesions), wanted)?;
                // At least `exact_depth`: the in-process index then scans exactly, so every
                // depth gives a prefix of the same ranking (cosine, then id).
                let ask = depth.max(exact_depth(all.lesions)).min(all.lesions);
                let (mut hits, plan) = self.backend.nearest(query, ask, allowed)?;
                response.plan = Some(plan);
                hits.retain(|h| all.ids.contains(h.id));
                hits.truncate(depth);
                Ok(hits)
            },
        )?;
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

    /// How deep the backend can rank: a page past the deepest list it returns (Milvus's
    /// `topk`) is refused by name, never answered short; a grouped or fused list that would
    /// start deeper than its page needs is fetched as deep as the backend goes.
    fn vector_depth(&self, depth: usize, wanted: &Wanted) -> Result<usize> {
        match self.backend.deepest_vector_list() {
            Some(deepest) if wanted.rows > deepest => Err(Error::invalid_argument(
                "offset",
                format!(
                    "the {} backend ranks at most {deepest} lesions by likeness, and this page (or export) reaches row {}: narrow the filters, or page or export within the first {deepest}",
                    self.backend.info().name,
                    wanted.rows
                ),
            )),
            Some(deepest) => Ok(depth.min(deepest)),
            None => Ok(depth),
        }
    }

    /// A page that a capped image list left short of what `total` promises (a grouped or
    /// fused list needing more of the ranking than the backend returns) is refused by
    /// name, like a page past the cap.
    fn check_page_complete(
        &self,
        page: &[Fused],
        image_list: &[Scored],
        request: &SearchRequest,
        total: usize,
    ) -> Result<()> {
        let Some(deepest) = self.backend.deepest_vector_list() else {
            return Ok(());
        };
        let promised = request.k.min(total.saturating_sub(request.offset));
        if page.len() < promised && image_list.len() >= deepest {
            return Err(Error::invalid_argument(
                "offset",
                format!(
                    "the {} backend ranks at most {deepest} lesions by likeness, fewer than this page (or export) needs: narrow the filters, or ask for an earlier page",
                    self.backend.info().name
                ),
            ));
        }
        Ok(())
    }

    /// The text list among the allowed matches, as deep as `wanted` needs.
    fn text_candidates(
        &self,
        side: &TextSide<'_>,
        wanted: &Wanted,
        scope: &Scope,
        response: &mut SearchResponse,
    ) -> Result<Vec<RankedText>> {
        let t = Instant::now();
        let hits = wanted.list(
            side.bm25_ids().1,
            |hit: &RankedText| hit.id,
            self,
            |depth| self.text_prefix(side, depth, &scope.filter),
        )?;
        response.timings.text_ms += ms(t.elapsed());
        Ok(hits)
    }

    /// The first `depth` allowed matches by text score, then id: fetched one deeper than
    /// asked, and deeper while the last one fetched ties the cut, so the lesions that tie
    /// at the cut are all seen before they are ordered by id. Matches the backend did not
    /// rank at all (its ranking and its match set disagreeing) follow, by id, with score 0,
    /// so the list always holds every match.
    fn text_prefix(
        &self,
        side: &TextSide<'_>,
        depth: usize,
        filter: &Filter,
    ) -> Result<Vec<RankedText>> {
        let (selected, len) = side.bm25_ids();
        let depth = depth.min(len);
        if depth == 0 {
            return Ok(Vec::new());
        }
        let allowed = Allowed::filtered(selected, filter);
        let mut ask = (depth + 1).min(len);
        loop {
            let (mut hits, _) = self
                .backend
                .ranked_text(side.text, ask, allowed, side.share)?;
            let exhausted = hits.len() < ask || ask >= len;
            // The selection is the authority, and a lesion is listed once.
            let mut listed = IdSet::new(self.catalog.capacity());
            hits.retain(|h| {
                let fresh = selected.contains(h.id) && !listed.contains(h.id);
                if fresh {
                    listed.insert(h.id);
                }
                fresh
            });
            let settled = hits.len() > depth && hits[depth - 1].score > hits[hits.len() - 1].score;
            if settled || exhausted {
                if exhausted && hits.len() < len {
                    hits.extend(
                        selected
                            .iter()
                            .filter(|&id| !listed.contains(id))
                            .map(|id| RankedText::ranked_elsewhere(id, 0.0)),
                    );
                }
                hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
                hits.truncate(depth);
                return Ok(hits);
            }
            ask = (ask * 2).min(len);
        }
    }

    /// The requested page of `rows`: one row per patient (its best) when grouping, then
    /// `offset` rows skipped and `k` kept.
    fn page_of(&self, rows: impl Iterator<Item = Fused>, request: &SearchRequest) -> Vec<Fused> {
        let mut seen = IdSet::new(if request.group_by_patient {
            self.catalog.patient_count()
        } else {
            0
        });
        rows.filter(|row| {
            !request.group_by_patient
                || self.catalog.patient_slot(row.id).is_some_and(|p| {
                    let first = !seen.contains(p);
                    seen.insert(p);
                    first
                })
        })
        .skip(request.offset)
        .take(request.k)
        .collect()
    }

    /// The page's hits, each explaining itself.
    fn fill_page(
        &self,
        page: &[Fused],
        text_list: &[RankedText],
        semantic: Option<&SemanticSide>,
        response: &mut SearchResponse,
    ) {
        for row in page {
            let key = self
                .catalog
                .get(row.id)
                .map(|f| f.key.clone())
                .unwrap_or_default();
            response.hits.push(Hit {
                id: row.id,
                key,
                score: row.score,
                matched: Matched::of(
                    row.image.is_some(),
                    row.text.is_some() || row.semantic.is_some(),
                ),
                image: row.image,
                text: row.text.map(|at| TextMatch {
                    rank: at + 1,
                    bm25: text_list[at].score,
                    snippet: Default::default(),
                }),
                semantic: semantic.and_then(|side| {
                    Some(SemanticMatch {
                        rank: row.semantic.map(|at| at + 1),
                        cosine: side.cosine(row.id)?,
                    })
                }),
            });
        }
    }

    /// Snippets only for the page shown (each reads a stored document).
    fn attach_snippets(
        &self,
        text: &str,
        page: &[Fused],
        text_list: &[RankedText],
        response: &mut SearchResponse,
    ) -> Result<()> {
        let t = Instant::now();
        let on_page: Vec<(usize, RankedText)> = page
            .iter()
            .enumerate()
            .filter_map(|(i, row)| row.text.map(|at| (i, text_list[at])))
            .collect();
        let ranked: Vec<RankedText> = on_page.iter().map(|(_, r)| *r).collect();
        let snippets = self.backend.snippets(text, &ranked)?;
        for ((i, _), snippet) in on_page.into_iter().zip(snippets) {
            if let Some(m) = response.hits[i].text.as_mut() {
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
}

/// How deep a request's lists must be.
struct Wanted {
    /// Rows up to the end of the page (0 when the page is past the end).
    rows: usize,
    /// One row per patient.
    grouped: bool,
    /// Lesions per patient in the selection: how deep a grouped list starts.
    per_patient: f32,
    /// Every entry of each list is needed, whatever the page.
    whole: bool,
}

impl Wanted {
    /// What the page of `request` needs of lists whose rows are `rows` (`total` of them
    /// after grouping); `fused` when an image list and a text list are fused.
    fn of(request: &SearchRequest, rows: &Selection, total: usize, fused: bool) -> Self {
        let need = request.offset.saturating_add(request.k).min(total);
        Wanted {
            rows: if need > request.offset { need } else { 0 },
            grouped: request.group_by_patient,
            per_patient: rows.lesions as f32 / rows.patients.max(1) as f32,
            // Weighted fusion scales each list over all of it, and a hybrid's fused order
            // needs every rank of both lists.
            whole: fused || matches!(request.fusion, Fusion::Weighted { .. }),
        }
    }

    /// A list of up to `len` entries deep enough for the page: `fetch(depth)` gives its
    /// first `depth`. The whole list when `whole`; `rows` entries ungrouped; grouped, ever
    /// deeper until it holds `rows` patients or ends.
    fn list<T>(
        &self,
        len: usize,
        id: impl Fn(&T) -> u32,
        engine: &Engine,
        mut fetch: impl FnMut(usize) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        if self.rows == 0 || len == 0 {
            return Ok(Vec::new());
        }
        if self.whole {
            return fetch(len);
        }
        if !self.grouped {
            return fetch(self.rows.min(len));
        }
        let mut depth = ((self.rows as f32 * self.per_patient * 1.2) as usize + 16)
            .max(self.rows)
            .min(len);
        loop {
            let list = fetch(depth)?;
            if depth >= len || list.len() < depth {
                return Ok(list);
            }
            let mut seen = IdSet::new(engine.catalog.patient_count());
            let mut patients = 0;
            for p in list
                .iter()
                .filter_map(|x| engine.catalog.patient_slot(id(x)))
            {
                if !seen.contains(p) {
                    seen.insert(p);
                    patients += 1;
                }
            }
            if patients >= self.rows {
                return Ok(list);
            }
            depth = (depth * 2).min(len);
        }
    }
}

/// One ranked list from the image, text (BM25) and semantic lists, best first (ties by
/// id). A list alone keeps its own order; several are fused over every entry of each. Under
/// weighted fusion the text's share is split evenly between BM25 and the semantic list
/// when there is one.
fn fuse(image: &[Scored], text: &[RankedText], semantic: &[Scored], fusion: Fusion) -> Vec<Fused> {
    let scale = |scores: &mut dyn Iterator<Item = f32>| {
        let (lo, hi) = scores.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), s| {
            (lo.min(s), hi.max(s))
        });
        move |s: f32| if hi > lo { (s - lo) / (hi - lo) } else { 1.0 }
    };
    let image_scale = scale(&mut image.iter().map(|h| h.score));
    let text_scale = scale(&mut text.iter().map(|h| h.score));
    let semantic_scale = scale(&mut semantic.iter().map(|h| h.score));
    let (image_weight, text_weight) = match fusion {
        Fusion::Rrf => (1.0, 1.0),
        Fusion::Weighted { image_weight } => {
            let w = image_weight.clamp(0.0, 1.0);
            let text = if semantic.is_empty() {
                1.0 - w
            } else {
                (1.0 - w) / 2.0
            };
            (w, text)
        }
    };
    let part = |rank: usize, scaled: f32, weight: f32| match fusion {
        Fusion::Rrf => rrf_share(rank),
        Fusion::Weighted { .. } => weight * scaled,
    };
    let span = image
        .iter()
        .map(|h| h.id)
        .chain(text.iter().map(|h| h.id))
        .chain(semantic.iter().map(|h| h.id))
        .max()
        .map_or(0, |max| max as usize + 1);
    // Each id's row in `fused`, so a lesion in several lists is one row.
    let mut row_of = vec![u32::MAX; span];
    let mut fused: Vec<Fused> = Vec::with_capacity(image.len().max(text.len()));
    let mut row = |id: u32| -> usize {
        let slot = &mut row_of[id as usize];
        if *slot == u32::MAX {
            *slot = fused.len() as u32;
            fused.push(Fused::cohort(id));
        }
        *slot as usize
    };
    let mut rows = Vec::with_capacity(image.len() + text.len() + semantic.len());
    for (at, hit) in image.iter().enumerate() {
        rows.push((row(hit.id), at, 0u8));
    }
    for (at, hit) in text.iter().enumerate() {
        rows.push((row(hit.id), at, 1u8));
    }
    for (at, hit) in semantic.iter().enumerate() {
        rows.push((row(hit.id), at, 2u8));
    }
    for (r, at, list) in rows {
        let f = &mut fused[r];
        match list {
            0 => {
                let hit = image[at];
                f.score += part(at + 1, image_scale(hit.score), image_weight);
                f.image = Some(ImageMatch {
                    rank: at + 1,
                    cosine: hit.score,
                });
            }
            1 => {
                f.score += part(at + 1, text_scale(text[at].score), text_weight);
                f.text = Some(at);
            }
            _ => {
                f.score += part(at + 1, semantic_scale(semantic[at].score), text_weight);
                f.semantic = Some(at);
            }
        }
    }
    let lists = [!image.is_empty(), !text.is_empty(), !semantic.is_empty()];
    if lists.iter().filter(|&&l| l).count() > 1 {
        fused.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    }
    fused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_hit(id: u32, score: f32) -> RankedText {
        RankedText::ranked_elsewhere(id, score)
    }

    #[test]
    fn rrf_rewards_agreement_between_the_lists() {
        let image = [
            Scored { id: 1, score: 0.9 },
            Scored { id: 2, score: 0.8 },
            Scored { id: 3, score: 0.7 },
        ];
        let text = [text_hit(3, 9.0), text_hit(4, 8.0)];
        let fused = fuse(&image, &text, &[], Fusion::Rrf);
        assert_eq!(fused[0].id, 3, "in both lists beats first in one");
        assert!((fused[0].score - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-6);
        assert_eq!(fused[0].image.unwrap().rank, 3);
        assert_eq!(fused[0].text, Some(0));
        assert_eq!(fused.len(), 4);
        let ids: Vec<u32> = fused.iter().map(|f| f.id).collect();
        assert_eq!(
            ids,
            [3, 1, 2, 4],
            "2 (image rank 2) ties 4 (text rank 2): by id"
        );
    }

    #[test]
    fn weighted_fusion_follows_the_ratio() {
        let image = [Scored { id: 1, score: 0.9 }, Scored { id: 2, score: 0.1 }];
        let text = [text_hit(2, 10.0), text_hit(1, 1.0)];
        let image_only = fuse(&image, &text, &[], Fusion::Weighted { image_weight: 1.0 });
        assert_eq!(image_only[0].id, 1);
        let text_only = fuse(&image, &text, &[], Fusion::Weighted { image_weight: 0.0 });
        assert_eq!(text_only[0].id, 2);
    }

    #[test]
    fn the_semantic_list_adds_its_share_beside_bm25() {
        let text = [text_hit(1, 9.0), text_hit(2, 4.0)];
        let semantic = [Scored { id: 2, score: 0.8 }, Scored { id: 3, score: 0.6 }];
        let fused = fuse(&[], &text, &semantic, Fusion::Rrf);
        // 2 is in both lists; 1 (BM25 rank 1) beats 3 (semantic rank 2).
        assert_eq!(fused.iter().map(|f| f.id).collect::<Vec<_>>(), [2, 1, 3]);
        assert!((fused[0].score - (rrf_share(2) + rrf_share(1))).abs() < 1e-7);
        assert_eq!((fused[0].text, fused[0].semantic), (Some(1), Some(0)));
        assert_eq!((fused[2].text, fused[2].semantic), (None, Some(1)));
        // Weighted: the text's share split evenly between BM25 and the semantic list.
        let weighted = fuse(
            &[],
            &text,
            &semantic,
            Fusion::Weighted { image_weight: 0.5 },
        );
        let by_id = |id: u32| weighted.iter().find(|f| f.id == id).unwrap().score;
        assert!((by_id(1) - 0.25).abs() < 1e-6, "BM25 best, semantic absent");
        assert!((by_id(2) - 0.25).abs() < 1e-6, "BM25 worst, semantic best");
        assert!(by_id(3).abs() < 1e-6, "semantic worst");
    }

    #[test]
    fn ties_are_broken_by_id_and_a_single_list_keeps_its_order() {
        let image = [
            Scored { id: 9, score: 0.5 },
            Scored { id: 4, score: 0.4 },
            Scored { id: 7, score: 0.3 },
        ];
        let text = [text_hit(4, 2.0), text_hit(9, 1.0)];
        // 9: image 1 + text 2, 4: image 2 + text 1: equal under RRF, so by id.
        let fused = fuse(&image, &text, &[], Fusion::Rrf);
        assert_eq!(fused.iter().map(|f| f.id).collect::<Vec<_>>(), [4, 9, 7]);
        assert_eq!(fused[0].score, fused[1].score);
        let alone = fuse(&image, &[], &[], Fusion::Rrf);
        assert_eq!(alone.iter().map(|f| f.id).collect::<Vec<_>>(), [9, 4, 7]);
        let alone = fuse(&[], &text, &[], Fusion::Weighted { image_weight: 0.5 });
        assert_eq!(alone.iter().map(|f| f.id).collect::<Vec<_>>(), [4, 9]);
        assert!(alone.iter().all(|f| f.image.is_none()));
    }
}
