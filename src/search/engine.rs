//! The engine facade both binaries use: an open generation (published records, a search
//! backend, the catalog) and the model that built it. Its stores are private to `search`; it
//! answers what the edges need (a lesion, its facts and key slice, a patient's lesions, the
//! generation, model, vectors, verify).

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use super::{Catalog, Facets, LesionFacts};
use crate::archive::Published;
use crate::backend::{Allowed, BackendChoice, BackendInfo, SearchBackend};
use crate::embed::{Embedder, SentenceEncoder, TextEncoderCard};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::imaging::CtImage;
use crate::index::{IdSet, Plan, Scored};
use crate::store::StoredLesion;

/// An open archive, its metadata in memory and the model that built it.
pub struct Engine {
    /// Records and manifest of the served generation.
    pub(crate) published: Published,
    /// What ranks vectors and text.
    pub(crate) backend: Box<dyn SearchBackend>,
    pub(crate) catalog: Catalog,
    pub(super) model: Arc<dyn Embedder>,
    /// The sentence encoder of the report vectors, when the generation has them and it is
    /// loaded (semantic retrieval).
    pub(super) text_encoder: Option<Arc<SentenceEncoder>>,
    /// The archive's matched forward follow-ups, for outlooks (built on first use).
    pub(super) trajectories: OnceLock<Vec<crate::followup::Trajectory>>,
    pub(super) collecting: Mutex<()>,
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
            text_encoder: None,
            trajectories: Default::default(),
            collecting: Default::default(),
        })
    }

    pub fn model(&self) -> &Arc<dyn Embedder> {
        &self.model
    }

    /// Serves semantic retrieval with `encoder`, which must be the one the generation's
    /// report vectors were made with (its card is checked); an encoder for a generation
    /// without report vectors is not kept.
    pub fn with_text_encoder(mut self, encoder: Option<Arc<SentenceEncoder>>) -> Result<Self> {
        self.text_encoder = match (&self.published.manifest.text_encoder, encoder) {
            (Some(card), Some(encoder)) => {
                card.check_same(encoder.card())?;
                Some(encoder)
            }
            _ => None,
        };
        Ok(self)
    }

    /// The sentence encoder loaded for the report vectors.
    pub fn text_encoder(&self) -> Option<&Arc<SentenceEncoder>> {
        self.text_encoder.as_ref()
    }

    /// The card of the encoder the generation's report vectors were made with (none: the
    /// archive was built without `--text-encoder`).
    pub fn text_encoder_card(&self) -> Option<&TextEncoderCard> {
        self.published.manifest.text_encoder.as_ref()
    }

    /// Whether a request may ask for semantic retrieval: report vectors and their encoder.
    pub fn supports_semantic(&self) -> bool {
        self.check_semantic().is_ok()
    }

    /// Whether a default of "semantic on" applies to `text`: the archive supports it and
    /// the text is plain language (operators, quotes and fields are answered by BM25 alone,
    /// and asked explicitly for semantic they are refused).
    pub fn semantic_by_default_for(&self, text: Option<&str>) -> bool {
        self.supports_semantic() && text.is_some_and(|t| !crate::text::has_syntax(t))
    }

    /// Why semantic retrieval cannot run, if it cannot: no report vectors (the caller's
    /// request is refused, naming `semantic`), or their encoder not loaded.
    pub fn check_semantic(&self) -> Result<()> {
        let Some(card) = self.text_encoder_card() else {
            return Err(Error::invalid_argument(
                "semantic",
                "this archive has no report vectors (it was built without a text encoder): rebuild it with `lesion-indexer build --text-encoder minilm` to search report text by meaning",
            ));
        };
        if self.published.report_vectors.is_none() || self.text_encoder.is_none() {
            return Err(Error::Model {
                path: self.published.dir.clone(),
                message: format!(
                    "the text encoder {} of the report vectors is not loaded (its weights are not imported, or are not the ones the archive was built with): run `lesion-indexer weights import minilm`",
                    card.name
                ),
            });
        }
        Ok(())
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

    /// What builds the index's HNSW graph, as its manifest records it.
    pub fn graph_builder(&self) -> crate::index::GraphBuilder {
        self.published.manifest.graph_builder
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

    /// The longest list the backend ranks by likeness, where it caps it (Milvus's `topk`).
    pub fn deepest_vector_list(&self) -> Option<usize> {
        self.backend.deepest_vector_list()
    }

    /// Whether the backend's stores answer now.
    pub fn backend_reachable(&self) -> Result<()> {
        self.backend.ping()
    }

    /// Cross-checks of the backend's stores against the served records; empty when they
    /// agree.
    pub fn verify(&self) -> Result<Vec<String>> {
        let p = &self.published;
        let mut problems = self.backend.verify(p)?;
        problems.extend(crate::archive::verify_report_vectors(
            (&p.dir, &p.manifest, &p.records),
            p.report_vectors.as_ref(),
        )?);
        Ok(problems)
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

    /// Facet counts over every live lesion (the archive's counts, kept from load).
    pub fn facets(&self) -> Facets {
        self.catalog.select(&Filter::default(), None).facets
    }

    /// The backend's `k` nearest lesions to a unit vector among `allowed`, best first.
    pub fn nearest(&self, query: &[f32], k: usize, allowed: &IdSet) -> Result<(Vec<Scored>, Plan)> {
        self.backend.nearest(query, k, Allowed::ids(allowed))
    }

    /// Live ids passing a filter.
    pub fn allowed(&self, filter: &Filter) -> IdSet {
        self.catalog.allowed(filter)
    }
}
