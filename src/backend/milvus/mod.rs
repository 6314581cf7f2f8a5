//! The Milvus backend: a generation's vectors and filterable facts in a Milvus collection;
//! the report text ranked by Milvus' BM25 where the server has it (2.5+), else by the
//! generation's tantivy index beside it.
//!
//! The published generation on disk stays the source of truth: records, manifest, text and
//! the local vector files are written as for the in-process backend, then
//! [`Connection::mirror`] copies the generation into its own collection
//! (`<name>_gen_NNNNNN_...`, stamped in its description with the archive, the generation,
//! the checksums and the model card), waits until readers see all of it, and switches the
//! alias `<name>` to it. A server opens exactly the collection of the generation it serves,
//! so a generation published but not yet mirrored is refused (the previous one stays
//! served), never half-served. The collection before the newest is kept for servers still
//! on it.
//!
//! The SDK is asynchronous; [`Connection`] owns a small tokio runtime and blocks on it, so
//! the engine's synchronous callers (request threads, the CLI) can use it from any thread.
//!
//! The files: `connection.rs` (the client and its blocking calls), `stamp.rs` (what a
//! collection is called and holds), `mirror.rs` (a generation into its collection, the
//! alias switch, old collections dropped) and `fill.rs` (the collection's schema, rows and
//! indexes), `search.rs` ([`MilvusBackend`]: vector and text search), `verify.rs` (a
//! collection against the published records), `expression.rs` (a `Filter` as a Milvus
//! expression).

mod connection;
mod expression;
mod fill;
mod mirror;
mod search;
mod stamp;
mod verify;

use milvus::index::IndexType;

use crate::error::{Error, Result};

pub use connection::Connection;
pub use expression::expression_of;
pub use search::MilvusBackend;

/// Where the Milvus server listens when nothing else is said.
pub const DEFAULT_URL: &str = "http://127.0.0.1:19530";
/// The alias that names the served generation's collection, and the prefix of every
/// generation's collection.
pub const DEFAULT_COLLECTION: &str = "lesion_search";

/// Up to this many lesions a collection is searched exactly (FLAT) unless told otherwise:
/// milliseconds at this size, and Milvus 2.3.5's HNSW loses true neighbours under scalar
/// filters that no `ef` brings back (BENCHMARKS.md, "Milvus backend").
pub const FLAT_UP_TO: usize = 200_000;

/// The vector index a generation's collection gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MilvusIndex {
    /// FLAT up to [`FLAT_UP_TO`] lesions, HNSW past it.
    #[default]
    Auto,
    Flat,
    Hnsw,
}

impl MilvusIndex {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "auto" => Ok(MilvusIndex::Auto),
            "flat" => Ok(MilvusIndex::Flat),
            "hnsw" => Ok(MilvusIndex::Hnsw),
            other => Err(Error::invalid_argument(
                "milvus-index",
                format!("`{other}` is not auto, flat or hnsw"),
            )),
        }
    }

    fn for_rows(self, rows: usize) -> IndexType {
        match self {
            MilvusIndex::Flat => IndexType::Flat,
            MilvusIndex::Hnsw => IndexType::HNSW,
            MilvusIndex::Auto if rows <= FLAT_UP_TO => IndexType::Flat,
            MilvusIndex::Auto => IndexType::HNSW,
        }
    }
}

/// How to reach Milvus and what to call the archive's collections there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilvusSettings {
    pub url: String,
    /// The alias of the served generation; each generation's collection is
    /// `<collection>_gen_NNNNNN_...`. Letters, digits and underscores, starting with a letter.
    pub collection: String,
    /// The vector index of collections this process fills.
    pub index: MilvusIndex,
}

impl Default for MilvusSettings {
    fn default() -> Self {
        MilvusSettings {
            url: DEFAULT_URL.into(),
            collection: DEFAULT_COLLECTION.into(),
            index: MilvusIndex::Auto,
        }
    }
}

impl MilvusSettings {
    fn check(&self) -> Result<()> {
        let name = &self.collection;
        let valid = name.len() <= 200
            && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Error::invalid_argument(
                "milvus-collection",
                format!(
                    "`{name}` is not a Milvus name (letters, digits and _, starting with a letter)"
                ),
            ));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(Error::invalid_argument(
                "milvus-url",
                format!("`{}` is not an http:// or https:// address", self.url),
            ));
        }
        Ok(())
    }
}

/// What [`Connection::mirror`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorSummary {
    pub collection: String,
    /// The alias now naming it; `None` on a server without aliases (milvus-lite), where
    /// only this program's stamp lookup finds the collection.
    pub alias: Option<String>,
    /// Seconds until the collection answered from its built index, and the recall@100
    /// of its unfiltered search against the exact scan then.
    pub settled_s: f64,
    pub recall: f64,
    pub rows: usize,
    /// The collection held this generation already (nothing was written).
    pub already: bool,
    /// Older generations' collections dropped.
    pub dropped: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_refuse_names_milvus_refuses() {
        for bad in ["", "1abc", "a-b", "a b"] {
            let settings = MilvusSettings {
                collection: bad.into(),
                ..MilvusSettings::default()
            };
            assert!(settings.check().is_err(), "{bad}");
        }
        let settings = MilvusSettings {
            url: "127.0.0.1:19530".into(),
            ..MilvusSettings::default()
        };
        assert!(settings
            .check()
            .unwrap_err()
            .to_string()
            .contains("milvus-url"));
    }
}
