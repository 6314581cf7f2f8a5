//! A new generation from a DeepLesion-format archive, embedded here or from shard files.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::draft::{Draft, Incoming};
use super::{shard, Manifest, WriteLock, SCHEMA_VERSION};
use crate::dataset::read_lesanet_labels;
use crate::embed::{Embedder, SentenceEncoder};
use crate::error::{Error, Result};
use crate::index::GraphParams;

/// What `build` reads.
pub struct BuildOptions<'a> {
    pub dataset: PathBuf,
    /// Report sentences; `DATASET/reports.jsonl` when present and this is `None`.
    pub reports: Option<PathBuf>,
    pub model: &'a dyn Embedder,
    pub graph: GraphParams,
    /// LesaNet text-mined labels, attached as tags by 0-based row of the table.
    pub labels: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildSummary {
    pub generation: u64,
    pub lesions: usize,
    pub resumed_embeddings: usize,
    pub has_graph: bool,
    pub ef: usize,
    pub self_recall: f32,
}

/// Progress of a build.
#[derive(Debug, Clone, Copy)]
pub enum BuildEvent {
    Embedding {
        done: usize,
        total: usize,
    },
    /// Reports embedded by the text encoder, for a generation with report vectors.
    EmbeddingReports {
        done: usize,
        total: usize,
    },
    Writing,
}

/// Builds a new generation from a DeepLesion-format archive and publishes it.
pub fn build(
    dir: &Path,
    options: &BuildOptions,
    progress: &(dyn Fn(BuildEvent) + Sync),
) -> Result<BuildSummary> {
    build_locked(&WriteLock::acquire(dir)?, options, None, progress)
}

/// [`build`] for a writer that holds the index's lock already; with `text_encoder`, each
/// lesion's report is embedded too and the generation holds the report vectors.
pub fn build_locked(
    lock: &WriteLock,
    options: &BuildOptions,
    text_encoder: Option<&SentenceEncoder>,
    progress: &(dyn Fn(BuildEvent) + Sync),
) -> Result<BuildSummary> {
    build_with(lock, options, &[], text_encoder, progress)
}

/// Builds a new generation from a DeepLesion-format archive whose lesions were embedded as
/// shards ([`embed_shard`]), one file per shard, instead of embedding them here.
pub fn build_from_shards(
    dir: &Path,
    options: &BuildOptions,
    shard_files: &[PathBuf],
    progress: &(dyn Fn(BuildEvent) + Sync),
) -> Result<BuildSummary> {
    build_from_shards_locked(
        &WriteLock::acquire(dir)?,
        options,
        shard_files,
        None,
        progress,
    )
}

/// [`build_from_shards`] for a writer that holds the index's lock already (reports embedded
/// here with `text_encoder`, as [`build_locked`]).
pub fn build_from_shards_locked(
    lock: &WriteLock,
    options: &BuildOptions,
    shard_files: &[PathBuf],
    text_encoder: Option<&SentenceEncoder>,
    progress: &(dyn Fn(BuildEvent) + Sync),
) -> Result<BuildSummary> {
    if shard_files.is_empty() {
        return Err(Error::invalid_argument(
            "embeddings",
            "no shard files given",
        ));
    }
    build_with(lock, options, shard_files, text_encoder, progress)
}

fn build_with(
    lock: &WriteLock,
    options: &BuildOptions,
    shard_files: &[PathBuf],
    text_encoder: Option<&SentenceEncoder>,
    progress: &(dyn Fn(BuildEvent) + Sync),
) -> Result<BuildSummary> {
    let dir = lock.dir();
    let incoming = Incoming::read(&options.dataset, options.reports.as_deref())?;
    // Checked before the slow embedding, so a wrong file fails at once.
    let labels = match &options.labels {
        Some(path) => labels_for(path, &incoming)?,
        None => Default::default(),
    };
    let mut embedded = if shard_files.is_empty() {
        incoming.embed(dir, options.model, progress)?
    } else {
        shard::embedded_from_shards(&incoming, shard_files, options.model)?
    };
    let report_vectors = text_encoder
        .map(|encoder| incoming.embed_reports(encoder, progress))
        .transpose()?;
    progress(BuildEvent::Writing);

    let card = options.model.card().clone();
    let mut draft = Draft::empty(
        dir,
        Manifest {
            schema_version: SCHEMA_VERSION,
            generation: 0,
            lesions: 0,
            model: card,
            dataset: incoming.root.display().to_string(),
            deleted: 0,
            dl_info_sha256: incoming.table_sha256.clone(),
            has_graph: false,
            ef: 0,
            self_recall: 1.0,
            records_sha256: String::new(),
            vectors_sha256: String::new(),
            graph_outcome: Default::default(),
            graph_builder: options.graph.builder,
            text_encoder: text_encoder.map(|encoder| encoder.card().clone()),
            report_vectors_sha256: String::new(),
        },
    )?;
    let changed = incoming.put_into(
        &mut draft,
        &mut embedded,
        report_vectors.as_deref(),
        |row| labels.by_row.get(&row).cloned().unwrap_or_default(),
        None,
    )?;
    let summary = draft.finish(options.graph, changed)?;
    if !embedded.cache.as_os_str().is_empty() {
        let _ = fs::remove_file(&embedded.cache);
    }
    Ok(BuildSummary {
        generation: summary.generation,
        lesions: incoming.records.len(),
        resumed_embeddings: embedded.resumed,
        has_graph: summary.has_graph,
        ef: summary.ef,
        self_recall: summary.self_recall,
    })
}

/// LesaNet labels for the incoming table; rows past its end mean they were mined for
/// another table.
fn labels_for(path: &Path, incoming: &Incoming) -> Result<crate::dataset::LesionLabels> {
    let labels = read_lesanet_labels(path)?;
    if let Some(max) = labels.max_row() {
        if max >= incoming.records.len() {
            return Err(Error::invalid_argument(
                "labels",
                format!(
                    "{} refers to row {max}, but {} has {} rows: the labels were mined for the full DeepLesion table",
                    path.display(),
                    incoming.dataset.dl_info_path().display(),
                    incoming.records.len()
                ),
            ));
        }
    }
    Ok(labels)
}
