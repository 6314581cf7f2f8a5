//! Changes to a published index: adding lesions and deleting them. Each change copies the
//! served generation's records and text into a new one, applies itself there and publishes
//! it like a build, so a reader never sees half a change and a failed change loses nothing.
//!
//! Lesion ids are stable: a deleted lesion's id stays reserved (a tombstone in the vectors,
//! gone from records and text), and added lesions take ids after the last one.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::draft::{Draft, Incoming};
use super::{current_generation, index_error, read_manifest, BuildEvent, WriteLock};
use crate::embed::Embedder;
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

/// What a change did.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeSummary {
    pub generation: u64,
    /// `(id, key)` of each lesion added or deleted.
    pub changed: Vec<(u32, String)>,
    /// Searchable lesions after the change.
    pub live: usize,
    pub graph_rebuilt: bool,
    pub has_graph: bool,
    pub ef: usize,
    pub self_recall: f32,
}

/// Keeps the served generation and the one before it (a reader may still hold that one).
/// An old generation is first renamed to `gen-NNNNNN.removing`, so a crash midway leaves
/// a name nobody opens, and the next pruning finishes it.
pub(super) fn prune_old_generations(dir: &Path, served: u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name.starts_with("gen-") && name.ends_with(".removing") {
            let _ = fs::remove_dir_all(entry.path());
            continue;
        }
        let number = name
            .strip_prefix("gen-")
            .and_then(|n| n.parse::<u64>().ok());
        if number.is_some_and(|n| n + 1 < served) {
            let doomed = dir.join(format!("{name}.removing"));
            if fs::rename(entry.path(), &doomed).is_ok() {
                crate::fault::point("pruning");
                let _ = fs::remove_dir_all(&doomed);
            }
        }
    }
}

/// Removes what killed writers left behind, once a write has published `served`: embedding
/// staging files (a killed write resumes from its own only when it is the next write to
/// run; the price of a later resume is embedding again, never a wrong vector, since a
/// staging file is keyed by weights and table) and `added/` folders that neither the served
/// generation nor the one before it refers to (staged by an add that died before it
/// published, or belonging to lesions deleted since). Runs under the write lock, and slices
/// are staged under it, so no other writer's input is in flight.
pub(super) fn remove_leftovers(dir: &Path, served: u64) {
    let staging = dir.join("staging");
    if let Ok(entries) = fs::read_dir(&staging) {
        for entry in entries.flatten() {
            let _ = fs::remove_file(entry.path());
        }
    }
    let added = dir.join(super::ADDED_DIR);
    let Ok(entries) = fs::read_dir(&added) else {
        return;
    };
    let mut referenced = HashSet::new();
    for generation in [served.checked_sub(1), Some(served)].into_iter().flatten() {
        let table = dir
            .join(format!("gen-{generation:06}"))
            .join(crate::store::RECORDS_TABLE);
        if !table.exists() {
            continue;
        }
        // A table that cannot be read keeps every folder: a leftover costs disk, a folder
        // removed by mistake costs a lesion's image.
        let Ok(records) = crate::store::RecordTable::open(&table).and_then(|t| t.all()) else {
            return;
        };
        // By folder name, not by path: a source recorded under another spelling of the
        // index folder (relative, moved, copied) still keeps its folder.
        for source in records.into_iter().filter_map(|(_, lesion)| lesion.source) {
            match source.file_name() {
                Some(name) => referenced.insert(name.to_os_string()),
                None => return,
            };
        }
    }
    for entry in entries.flatten() {
        if !referenced.contains(&entry.file_name()) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Adds the lesions of a DeepLesion-format folder to the index as a new generation. Keys
/// already in the index are refused, all of them named; the model must be the index's.
pub fn add(
    dir: &Path,
    options: &AddOptions,
    progress: &(dyn Fn(BuildEvent) + Sync),
) -> Result<ChangeSummary> {
    add_locked(&WriteLock::acquire(dir)?, options, progress)
}

/// [`add`] for a writer that holds the index's lock already (one that staged its input
/// under it, or a service writer that holds it for several writes).
pub fn add_locked(
    lock: &WriteLock,
    options: &AddOptions,
    progress: &(dyn Fn(BuildEvent) + Sync),
) -> Result<ChangeSummary> {
    let dir = lock.dir();
    let (_, current) = current_generation(dir)?.ok_or_else(|| {
        index_error(
            dir,
            "no published generation (CURRENT is missing): build the index first",
        )
    })?;
    read_manifest(&current)?
        .model
        .check_same_model(options.model.card())?;

    // Embedding is the slow part; it runs (and resumes) before anything is copied.
    let incoming = Incoming::read(&options.dataset, options.reports.as_deref())?;
    let mut embedded = incoming.embed(dir, options.model, progress)?;
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
    }
    draft.finish(graph, ids)
}
