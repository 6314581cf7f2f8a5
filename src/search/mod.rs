//! Hybrid search: one request mixing text, an image example, a lesion ("more like this"),
//! positive and negative examples and metadata filters, answered by fusing a vector list and
//! a BM25 list; facets, a type suggestion and follow-ups beside it.
//!
//! This module knows no HTTP. Both edges fill in a [`SearchInput`] (the server from its
//! wire format, the command line from its flags) and [`SearchInput::into_request`] checks it
//! once, with the shared [`SearchLimits`] and defaults, into the [`SearchRequest`] that
//! [`Engine::search`] answers.
//!
//! - `engine.rs`: the [`Engine`] facade (open, accessors);
//! - `request.rs`: requests, their defaults and caps, image queries, fusion;
//! - `input.rs`, `lesion_fields.rs`: what users type (filters, lesion references, a lesion
//!   to add);
//! - `query_vector.rs`: image and lesion embeddings, Rocchio refinement;
//! - `fusion.rs`: reciprocal rank fusion and the semantic match rule, which the text
//!   benchmark measures;
//! - `pipeline.rs`: the selection (exact totals, facets over the matches), result lists
//!   that page to their end, fusion, grouping, paging, the type suggestion, the degraded
//!   text-only path;
//! - `response.rs`: hits and timings;
//! - `catalog.rs`: every live lesion's filterable facts, filters and the one-pass facet
//!   count; `followup.rs`: follow-ups and outlooks.

mod catalog;
mod engine;
mod followup;
mod fusion;
mod input;
mod lesion_fields;
mod pipeline;
mod query_vector;
mod request;
mod response;

pub use catalog::{Catalog, Facets, LesionFacts, Selection};
pub use engine::Engine;
pub use followup::{FollowUp, FollowUps, MatcherSummary, StudyCandidates};
pub use fusion::{rrf, rrf_share, semantic_ranking, RRF_K, SEMANTIC_MIN_COSINE};
pub use input::{
    parse_bounds, parse_sex, parse_split, parse_type, range, Bounds, FilterInput, LesionRef,
};
pub use lesion_fields::LESION_FIELDS;
pub use request::{
    Fusion, ImageQuery, SearchInput, SearchLimits, SearchRequest, ASSUMED_SPACING_MM,
    DEFAULT_IMAGE_WEIGHT, DEFAULT_K, MAX_K,
};
pub use response::{
    Hit, ImageMatch, Matched, SearchResponse, SemanticMatch, TextMatch, Timings, TypeSuggestion,
};
