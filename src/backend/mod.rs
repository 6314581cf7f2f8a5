//! The seam between the search engine and the stores that answer its vector and text
//! queries. The engine keeps the records, the catalog of filterable facts and the planning
//! of a request; a backend ranks vectors and report text among the ids a request allows.
//!
//! [`InProcess`] is the default: the in-process vector index (flat + HNSW) and tantivy, both
//! read from the published generation on disk. [`milvus::MilvusBackend`] keeps the vectors
//! and filterable facts in a Milvus collection per generation. Both implement the same
//! trait, so the server, the CLI, the evaluation and every response stay the same; which one
//! serves is configuration ([`BackendChoice`]).

pub mod milvus;

use std::borrow::Cow;
use std::path::Path;

use serde::Serialize;

use crate::archive::{verify_embedded, Archive, Published};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::index::{IdSet, Plan, Scored, VectorIndex};
use crate::text::{QueryFeatures, RankedText, Snippet, TextIndex};

pub use milvus::{MilvusIndex, MilvusSettings, MirrorSummary};

/// Which backend serves an index's vectors and text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// The in-process stores of the generation (the default).
    #[default]
    Embedded,
    /// A Milvus server, mirrored from the generation on every publish.
    Milvus(MilvusSettings),
}

impl BackendChoice {
    /// From a `--backend` name and the Milvus settings (used only for `milvus`).
    pub fn named(name: &str, milvus: MilvusSettings) -> Result<Self> {
        match name {
            "embedded" => Ok(BackendChoice::Embedded),
            "milvus" => Ok(BackendChoice::Milvus(milvus)),
            other => Err(Error::invalid_argument(
                "backend",
                format!("`{other}` is not a backend (embedded or milvus)"),
            )),
        }
    }
}

/// Opens the served generation of `index_dir`: its records, and the backend that serves its
/// vectors and text.
pub fn open(
    index_dir: &Path,
    choice: &BackendChoice,
) -> Result<(Published, Box<dyn SearchBackend>)> {
    let (published, vectors, text) = Archive::open(index_dir)?.into_parts();
    let backend: Box<dyn SearchBackend> = match choice {
        BackendChoice::Embedded => Box::new(InProcess::new(vectors, text)),
        BackendChoice::Milvus(settings) => {
            drop(vectors);
            Box::new(milvus::MilvusBackend::open(settings, &published, text)?)
        }
    };
    Ok((published, backend))
}

/// Brings the backend up to the generation `index_dir` serves, after a write published it
/// (nothing to do for the embedded backend, which reads the generation itself).
pub fn mirror(index_dir: &Path, choice: &BackendChoice) -> Result<Option<MirrorSummary>> {
    match choice {
        BackendChoice::Embedded => Ok(None),
        BackendChoice::Milvus(settings) => {
            let (published, vectors, _text) = Archive::open(index_dir)?.into_parts();
            milvus::Connection::connect(settings)?
                .mirror(&published, &vectors)
                .map(Some)
        }
    }
}

/// The lesions a request may return: the exact id set, and the metadata filter it came
/// from where there is one (an external engine turns that into its own filter expression;
/// the id set stays the authority). Evaluation sets and the like come without a filter.
#[derive(Clone, Copy)]
pub struct Allowed<'a> {
    pub ids: &'a IdSet,
    pub filter: Option<&'a Filter>,
}

impl<'a> Allowed<'a> {
    pub fn ids(ids: &'a IdSet) -> Self {
        Allowed { ids, filter: None }
    }

    pub fn filtered(ids: &'a IdSet, filter: &'a Filter) -> Self {
        Allowed {
            ids,
            filter: Some(filter),
        }
    }
}

/// What serves a request's vectors and text, as `/healthz` and `verify` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendInfo {
    /// `embedded` or the external engine's name.
    pub name: String,
    /// What ranks vectors (e.g. `hnsw+flat`).
    pub vectors: String,
    /// What ranks report text (e.g. `tantivy-bm25`).
    pub text: String,
}

/// Vector and text retrieval among allowed ids. Ids are the archive's dense lesion ids;
/// deleted lesions are never returned.
pub trait SearchBackend: Send + Sync {
    fn info(&self) -> BackendInfo;

    /// Dimension of the stored vectors.
    fn dim(&self) -> usize;

    /// The stored vector of a lesion; an error names the id when it has none.
    fn vector(&self, id: u32) -> Result<Cow<'_, [f32]>>;

    /// The `k` nearest allowed lesions to a unit query by cosine, best first, and how they
    /// were found.
    fn nearest(&self, query: &[f32], k: usize, allowed: Allowed<'_>)
        -> Result<(Vec<Scored>, Plan)>;

    /// The longest list `nearest` can return, where the engine caps it (Milvus's `topk`):
    /// a deeper page is refused by name rather than answered short.
    fn deepest_vector_list(&self) -> Option<usize> {
        None
    }

    /// Up to `depth` allowed lesions whose report matches `text`, by BM25, best first, with
    /// the number of matching lesions. `allowed_share` is the allowed fraction of the
    /// archive (a hint for how deep to collect before filtering).
    fn ranked_text(
        &self,
        text: &str,
        depth: usize,
        allowed: Allowed<'_>,
        allowed_share: f32,
    ) -> Result<(Vec<RankedText>, usize)>;

    /// The matching passage of each hit's report, in the order given.
    fn snippets(&self, text: &str, hits: &[RankedText]) -> Result<Vec<Snippet>>;

    /// Every lesion whose text matches `text` (ascending ids, unfiltered): the exact set
    /// behind totals, facets and exports. tantivy's, whichever engine ranks.
    fn text_matches(&self, text: &str) -> Result<Vec<u32>>;

    /// A respelling of `text` the archive's words support, when it finds little as typed.
    fn did_you_mean(&self, text: &str) -> Result<Option<String>>;

    /// Disagreements between the backend's stores and the published records; empty when
    /// they agree.
    fn verify(&self, published: &Published) -> Result<Vec<String>>;

    /// Whether the stores answer now (an external engine's server is up); in-process
    /// stores always do.
    fn ping(&self) -> Result<()> {
        Ok(())
    }

    /// The in-process vector index, where the backend has one (metrics of the graph, its
    /// evaluation against the exact scan).
    fn vector_index(&self) -> Option<&VectorIndex> {
        None
    }
}

/// BM25 in the generation's tantivy index among the allowed ids (ontology-expanded).
fn ranked_by_tantivy(
    index: &TextIndex,
    text: &str,
    depth: usize,
    allowed: Allowed<'_>,
    allowed_share: f32,
) -> Result<(Vec<RankedText>, usize)> {
    index.ranked_with(
        text,
        depth,
        &|id| allowed.ids.contains(id),
        allowed_share,
        QueryFeatures::ALL,
    )
}

/// The in-process stores of a published generation: flat vectors with the HNSW graph over
/// them, and tantivy over the reports.
pub struct InProcess {
    vectors: VectorIndex,
    text: TextIndex,
}

impl InProcess {
    pub fn new(vectors: VectorIndex, text: TextIndex) -> Self {
        InProcess { vectors, text }
    }
}

impl SearchBackend for InProcess {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "embedded".into(),
            vectors: if self.vectors.graph().is_some() {
                "hnsw+flat".into()
            } else {
                "flat".into()
            },
            text: "tantivy-bm25".into(),
        }
    }

    fn dim(&self) -> usize {
        self.vectors.dim()
    }

    fn vector(&self, id: u32) -> Result<Cow<'_, [f32]>> {
        if (id as usize) < self.vectors.len() {
            Ok(Cow::Borrowed(self.vectors.vector(id)))
        } else {
            Err(Error::invalid_argument(
                "lesion",
                format!("lesion {id} has no stored vector"),
            ))
        }
    }

    fn nearest(
        &self,
        query: &[f32],
        k: usize,
        allowed: Allowed<'_>,
    ) -> Result<(Vec<Scored>, Plan)> {
        Ok(self.vectors.search(query, k, Some(allowed.ids)))
    }

    fn ranked_text(
        &self,
        text: &str,
        depth: usize,
        allowed: Allowed<'_>,
        allowed_share: f32,
    ) -> Result<(Vec<RankedText>, usize)> {
        ranked_by_tantivy(&self.text, text, depth, allowed, allowed_share)
    }

    fn snippets(&self, text: &str, hits: &[RankedText]) -> Result<Vec<Snippet>> {
        self.text.snippets(text, hits, QueryFeatures::ALL)
    }

    fn text_matches(&self, text: &str) -> Result<Vec<u32>> {
        self.text.matching_ids(text, QueryFeatures::ALL)
    }

    fn did_you_mean(&self, text: &str) -> Result<Option<String>> {
        self.text.did_you_mean(text)
    }

    fn verify(&self, published: &Published) -> Result<Vec<String>> {
        verify_embedded(
            (&published.dir, &published.manifest, &published.records),
            &self.vectors,
            &self.text,
        )
    }

    fn vector_index(&self) -> Option<&VectorIndex> {
        Some(&self.vectors)
    }
}
