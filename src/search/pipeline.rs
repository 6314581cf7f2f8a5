//! How the engine answers a request, stage by stage: the query vector, the filtered scope,
//! the image and text candidate lists, fusion, grouping by patient and paging, snippets for
//! the page. When the image path fails or passes its deadline the answer is text-only,
//! flagged `degraded`.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::response::ms;
use super::{
    Engine, Fusion, Hit, ImageMatch, Matched, SearchRequest, SearchResponse, TextMatch,
    TypeSuggestion, MAX_K,
};
use crate::backend::Allowed;
use crate::dataset::CoarseType;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::index::{IdSet, Scored};
use crate::text::{RankedText, Snippet};

/// Reciprocal rank fusion's constant (Cormack et al. 2009 use 60).
pub const RRF_K: f32 = 60.0;
/// Neighbours that vote on the suggested type.
const SUGGESTION_NEIGHBOURS: usize = 10;

/// What a request may return: its effective filter, the ids it allows, and the patients
/// of its example lesions.
struct Scope {
    filter: Filter,
    allowed: IdSet,
    query_patients: HashSet<u32>,
}

/// A fused hit: id, score, and each list's side of it.
type Fused = (u32, f32, Option<ImageMatch>, Option<TextMatch>);

impl Engine {
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
        let mut response = SearchResponse::default();
        request.cancel.check("the query vector")?;
        let query = self.query_vector(request, &mut response)?;
        request.cancel.check("the filter")?;
        let scope = self.scope(request);
        response.facets = self.catalog.facets_for(&scope.filter, &scope.allowed);

        let depth = candidate_depth(request);
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
    ) -> Result<Vec<Scored>> {
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
    ) -> Result<Vec<RankedText>> {
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
            response.hits.push(Hit {
                id,
                key,
                score,
                matched: Matched::of(image.is_some(), text.is_some()),
                image,
                text,
            });
        }
    }

    /// Snippets only for the page shown (each reads a stored document).
    fn attach_snippets(
        &self,
        text: &str,
        text_list: &[RankedText],
        response: &mut SearchResponse,
    ) -> Result<()> {
        let t = Instant::now();
        let on_page: Vec<RankedText> = response
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
}

/// Candidates fetched per list: deep enough that grouping by patient and paging still fill
/// the page.
fn candidate_depth(request: &SearchRequest) -> usize {
    let wanted = request.offset + request.k;
    (wanted * if request.group_by_patient { 6 } else { 2 }).clamp(100, 4 * MAX_K)
}

/// One ranked list from the image and text lists, best first.
fn fuse(image: &[Scored], text: &[(u32, f32)], fusion: Fusion) -> Vec<Fused> {
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
