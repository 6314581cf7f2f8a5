//! An index folder: immutable generations, each holding records (sled), vectors (flat and
//! HNSW), text (tantivy) and a manifest; `CURRENT` names the one served and is replaced by a
//! single atomic rename, so readers keep the previous generation until a build is complete.
//!
//! ```text
//! IDX/CURRENT            "gen-000002"
//! IDX/gen-000002/        manifest.json, records/ (sled), records.table, vectors/, text/,
//!                        report-vectors/ (when built with a text encoder)
//! IDX/staging/           embeddings computed so far (a killed build resumes from them)
//! IDX/LOCK               flock-ed by the one writer (its pid inside, for people)
//! ```

use std::path::Path;

use crate::error::Error;

mod build;
mod change;
mod draft;
mod embedding;
mod lesion;
mod lock;
mod manifest;
mod open;
mod publish;
mod shard;
mod verify;

pub use build::{
    build, build_from_shards, build_from_shards_locked, build_locked, BuildEvent, BuildOptions,
    BuildSummary,
};
pub use change::{add, add_locked, delete, delete_locked, AddOptions};
pub use draft::ChangeSummary;
pub use lesion::{add_lesion, add_lesion_locked, lesion_record, LesionInput};
pub use lock::WriteLock;
pub(crate) use manifest::{current_generation, read_manifest};
pub use manifest::{served_generation_name, Manifest};
pub use open::{Archive, Published};
pub use shard::{embed_shard, Shard, ShardSummary};
pub(crate) use verify::{verify_embedded, verify_report_vectors};

/// Version of the on-disk layout; a reader refuses others.
pub const SCHEMA_VERSION: u32 = 1;
const CURRENT: &str = "CURRENT";
const MANIFEST: &str = "manifest.json";
/// A generation's folder of report vectors (an exact flat store keyed by lesion id, as
/// `vectors/`), present when it was built with a text encoder.
pub(crate) const REPORT_VECTORS_DIR: &str = "report-vectors";
/// Below this many lesions the exact scan is all an index needs.
pub const GRAPH_FROM: usize = crate::index::EXACT_SCAN_BELOW;

/// Where `add_lesion` keeps each added slice, as a one-lesion DeepLesion folder.
pub(crate) const ADDED_DIR: &str = "added";

fn index_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Index {
        path: path.to_path_buf(),
        message: message.into(),
    }
}
