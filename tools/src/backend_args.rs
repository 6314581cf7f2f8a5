//! `--backend`, `--milvus-url`, `--milvus-collection` and `--milvus-index` of `search` and
//! `backends`: the same flags, with the same defaults, as the `lesion-indexer` commands
//! that read an index, so that a benchmark opens an index the way they do.

use lesion_search::backend::milvus::{DEFAULT_COLLECTION, DEFAULT_URL};
use lesion_search::backend::{BackendChoice, MilvusIndex, MilvusSettings};

#[derive(clap::Args, Clone, Debug)]
pub struct BackendArgs {
    /// What serves vectors and filters: `embedded` (in-process HNSW + flat) or `milvus`
    /// (mirrored into a Milvus server on every write). Text stays in tantivy unless the
    /// server is Milvus 2.5+, which ranks it by its own BM25.
    #[arg(long, default_value = "embedded", value_parser = ["embedded", "milvus"])]
    pub backend: String,
    /// The Milvus server's gRPC address (with `--backend milvus`).
    #[arg(long, default_value = DEFAULT_URL)]
    pub milvus_url: String,
    /// Alias of the served generation in Milvus; each generation's collection is
    /// NAME_gen_NNNNNN_...
    #[arg(long, default_value = DEFAULT_COLLECTION)]
    pub milvus_collection: String,
    /// Vector index of the collections a write fills: `auto` (exact FLAT up to 200,000
    /// lesions, HNSW past it), `flat` or `hnsw`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "flat", "hnsw"])]
    pub milvus_index: String,
}

impl BackendArgs {
    pub fn choice(&self) -> anyhow::Result<BackendChoice> {
        Ok(BackendChoice::named(
            &self.backend,
            MilvusSettings {
                url: self.milvus_url.clone(),
                collection: self.milvus_collection.clone(),
                index: MilvusIndex::parse(&self.milvus_index)?,
            },
        )?)
    }
}
