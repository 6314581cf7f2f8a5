//! What a generation says about itself (`manifest.json`) and which generation `CURRENT`
//! names.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{index_error, CURRENT, MANIFEST, SCHEMA_VERSION};
use crate::embed::{ModelCard, TextEncoderCard};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub generation: u64,
    pub lesions: usize,
    pub model: ModelCard,
    pub dataset: String,
    pub dl_info_sha256: String,
    pub has_graph: bool,
    pub ef: usize,
    pub self_recall: f32,
    pub records_sha256: String,
    pub vectors_sha256: String,
    /// Deleted lesions: their ids stay reserved (hidden everywhere), so `lesions - deleted`
    /// are searchable.
    #[serde(default)]
    pub deleted: usize,
    /// Whether the graph met its recall target, was rebuilt larger, or gave way to exact scans.
    #[serde(default)]
    pub graph_outcome: crate::index::GraphOutcome,
    /// What builds the graph, at the build and at every rebuild a change makes (absent in
    /// indexes written before it was recorded: they were built by the native routine).
    #[serde(default)]
    pub graph_builder: crate::index::GraphBuilder,
    /// The sentence encoder whose report vectors the generation holds
    /// (`build --text-encoder`); absent when it holds none (built without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_encoder: Option<TextEncoderCard>,
    /// sha256 of `report-vectors/vectors.bin` when there are report vectors.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub report_vectors_sha256: String,
}

/// The name of the generation `CURRENT` points at (`gen-NNNNNN`); `None` before the first
/// publish.
pub fn served_generation_name(dir: &Path) -> Result<Option<String>> {
    Ok(current_generation(dir)?.and_then(|(_, path)| {
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
    }))
}

pub(crate) fn current_generation(dir: &Path) -> Result<Option<(u64, PathBuf)>> {
    let pointer = dir.join(CURRENT);
    if !pointer.exists() {
        return Ok(None);
    }
    let name = fs::read_to_string(&pointer).map_err(|e| Error::io(&pointer, e))?;
    let name = name.trim();
    let number = name
        .strip_prefix("gen-")
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| index_error(&pointer, format!("`{name}` is not a generation name")))?;
    Ok(Some((number, dir.join(name))))
}

pub(crate) fn read_manifest(generation_dir: &Path) -> Result<Manifest> {
    let manifest_path = generation_dir.join(MANIFEST);
    let text = fs::read_to_string(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| index_error(&manifest_path, format!("not a manifest: {e}")))?;
    if manifest.schema_version != SCHEMA_VERSION {
        return Err(index_error(
            &manifest_path,
            format!(
                "schema version {} (this program reads {SCHEMA_VERSION}): rebuild the index",
                manifest.schema_version
            ),
        ));
    }
    Ok(manifest)
}
