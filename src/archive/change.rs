//! Changes to a published index: adding lesions and deleting them. Each change copies the
//! served generation's records and text into a new one, applies itself there and publishes
//! it like a build, so a reader never sees half a change and a failed change loses nothing.
//!
//! Lesion ids are stable: a deleted lesion's id stays reserved (a tombstone in the vectors,
//! gone from records and text), and added lesions take ids after the last one.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::draft::ChangeSummary;

use super::draft::{Draft, Incoming};
use super::{current_generation, index_error, read_manifest, BuildEvent, WriteLock};
use crate::embed::{Embedder, SentenceEncoder};
use crate::error::{Error, Result};
use crate::index::GraphParams;

/// What `add` reads: a DeepLesion-format folder holding the new lesions.
pub struct AddOptions<'a> {
    pub dataset: PathBuf,
    /// Report sentences; `DATASET/reports.jsonl` when present and this is `None`.
    pub reports: Option<PathBuf>,
    /// Must be the model that built the index.
    pub model: &'a dyn Embedder,
    pub graph: GraphParams,
}

/// Adds the lesions of a DeepLesion-format folder to the index as a new generation. Keys
/// already in the index are refused, all of them named; the model must be the index's.
pub fn add(
    dir: &Path,
    options: &AddOptions,
    progress: &(dyn Fn(BuildEvent) + Sync),
) -> Result<ChangeSummary> {
    add_locked(&WriteLock::acquire(dir)?, options, None, progress)
}

/// [`add`] for a writer that holds the index's lock already (one that staged its input
/// under it, or a service writer that holds it for several writes). An index with report
/// vectors needs `text_encoder`, the one that made them, to embed the new reports.
pub fn add_locked(
    lock: &WriteLock,
    options: &AddOptions,
    text_encoder: Option<&SentenceEncoder>,
    progress: &(dyn Fn(BuildEvent) + Sync),
) -> Result<ChangeSummary> {
    let dir = lock.dir();
    let (_, current) = current_generation(dir)?.ok_or_else(|| {
        index_error(
            dir,
            "no published generation (CURRENT is missing): build the index first",
        )
    })?;
    let manifest = read_manifest(&current)?;
    manifest.model.check_same_model(options.model.card())?;
    // Refused before anything is embedded, so nothing is published without report vectors.
    let text_encoder = match &manifest.text_encoder {
        None => None,
        Some(card) => {
            let encoder = text_encoder.ok_or_else(|| Error::Model {
                path: current.clone(),
                message: format!(
                    "the index holds report vectors of the text encoder {}, which is not loaded: run `lesion-indexer weights import minilm`",
                    card.name
                ),
            })?;
            card.check_same(encoder.card())?;
            Some(encoder)
        }
    };

    // Embedding is the slow part; it runs (and resumes) before anything is copied.
    let incoming = Incoming::read(&options.dataset, options.reports.as_deref())?;
    let mut embedded = incoming.embed(dir, options.model, progress)?;
    let report_vectors = text_encoder
        .map(|encoder| incoming.embed_reports(encoder, progress))
        .transpose()?;
    progress(BuildEvent::Writing);

    let mut draft = Draft::copy_of_served(dir)?;
    let mut taken = Vec::new();
    for key in &incoming.keys {
        if draft.records.id_of(&key.to_string())?.is_some() {
            taken.push(key.to_string());
        }
    }
    if !taken.is_empty() {
        draft.abandon();
        return Err(Error::AlreadyInIndex { keys: taken });
    }
    let changed = incoming.put_into(
        &mut draft,
        &mut embedded,
        report_vectors.as_deref(),
        |_| Vec::new(),
        Some(incoming.root.clone()),
    )?;
    let summary = draft.finish(options.graph, changed)?;
    let _ = fs::remove_file(&embedded.cache);
    Ok(summary)
}

/// Deletes lesions by key (`File_name`, or `File_name#n` for the n-th lesion of a slice) as
/// a new generation. Unknown keys are refused, all of them named, and nothing changes.
pub fn delete(dir: &Path, keys: &[String], graph: GraphParams) -> Result<ChangeSummary> {
    delete_locked(&WriteLock::acquire(dir)?, keys, graph)
}

/// [`delete`] for a writer that holds the index's lock already.
pub fn delete_locked(
    lock: &WriteLock,
    keys: &[String],
    graph: GraphParams,
) -> Result<ChangeSummary> {
    let dir = lock.dir();
    let mut draft = Draft::copy_of_served(dir)?;
    let mut ids = Vec::new();
    let mut unknown = Vec::new();
    let mut seen = HashSet::new();
    for key in keys {
        match draft.records.id_of(key)? {
            Some(id) if seen.insert(id) => ids.push((id, key.clone())),
            Some(_) => {}
            None => unknown.push(key.clone()),
        }
    }
    if !unknown.is_empty() {
        draft.abandon();
        return Err(Error::invalid_argument(
            "key",
            format!(
                "not in the index: {} (a key is a File_name, with #n for the n-th lesion of a slice)",
                unknown.join(", ")
            ),
        ));
    }
    for (id, _) in &ids {
        draft.records.remove(*id)?;
        draft.text.delete(*id);
        draft.vectors.delete(*id);
        if let Some(reports) = draft.reports.as_mut() {
            reports.delete(*id);
        }
    }
    draft.finish(graph, ids)
}
