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

use super::{
    current_generation, embed_lesions, fresh_partial, index_error, publish, read_manifest,
    reports_of, thumbnail_of, BuildEvent, Embedded, Manifest, WriteLock,
};
use crate::dataset::{lesion_keys, Dataset, DlInfoReader, LesionRecord};
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::fsutil::copy_dir;
use crate::index::{load_vector_index, save_vector_index, GraphParams, VectorIndex};
use crate::store::{RecordStore, StoredLesion};
use crate::text::{TextEntry, TextIndexWriter};
use crate::util::sha256_file;

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

/// The served generation's stores, copied into a new partial generation and open for writing.
struct Draft {
    dir: PathBuf,
    partial: PathBuf,
    manifest: Manifest,
    records: RecordStore,
    text: TextIndexWriter,
    vectors: VectorIndex,
}

impl Draft {
    fn begin(dir: &Path) -> Result<Self> {
        let (number, current) = current_generation(dir)?.ok_or_else(|| {
            index_error(
                dir,
                "no published generation (CURRENT is missing): build the index first",
            )
        })?;
        let mut manifest = read_manifest(&current)?;
        manifest.generation = number + 1;
        let partial = fresh_partial(dir, number + 1)?;
        copy_dir(&current.join("records"), &partial.join("records"))?;
        copy_dir(&current.join("text"), &partial.join("text"))?;
        Ok(Draft {
            dir: dir.to_path_buf(),
            records: RecordStore::open(&partial.join("records"))?,
            text: TextIndexWriter::open(&partial.join("text"))?,
            vectors: load_vector_index(&current.join("vectors"))?,
            manifest,
            partial,
        })
    }

    /// Commits every store, rebuilds the graph when it is due, and publishes.
    fn finish(self, graph: GraphParams, changed: Vec<(u32, String)>) -> Result<ChangeSummary> {
        let Draft {
            dir,
            partial,
            mut manifest,
            records,
            text,
            mut vectors,
        } = self;
        records.flush()?;
        text.commit()?;
        crate::fault::point("records-flushed");
        records.freeze(&partial.join(crate::store::RECORDS_TABLE))?;
        manifest.records_sha256 = records.checksum()?;
        drop(records);
        let graph_rebuilt = vectors.needs_rebuild();
        if graph_rebuilt {
            vectors.rebuild(graph);
        }
        let vectors_dir = partial.join("vectors");
        fs::create_dir_all(&vectors_dir).map_err(|e| Error::io(&vectors_dir, e))?;
        save_vector_index(&vectors, &vectors_dir)?;
        crate::fault::point("vectors-written");
        manifest.lesions = vectors.len();
        manifest.deleted = vectors.tombstones.len();
        manifest.has_graph = vectors.graph.is_some();
        manifest.ef = vectors.ef;
        manifest.self_recall = vectors.self_recall;
        manifest.graph_outcome = vectors.outcome;
        manifest.vectors_sha256 = sha256_file(&vectors_dir.join("vectors.bin"))?;
        publish(&dir, &partial, &manifest)?;
        prune_old_generations(&dir, manifest.generation);
        Ok(ChangeSummary {
            generation: manifest.generation,
            changed,
            live: vectors.live(),
            graph_rebuilt,
            has_graph: manifest.has_graph,
            ef: manifest.ef,
            self_recall: manifest.self_recall,
        })
    }
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

/// Adds the lesions of a DeepLesion-format folder to the index as a new generation. Keys
/// already in the index are refused, all of them named; the model must be the index's.
pub fn add(
    dir: &Path,
    options: &AddOptions,
    progress: &(dyn Fn(BuildEvent) + Sync),
) -> Result<ChangeSummary> {
    let _lock = WriteLock::acquire(dir)?;
    let (_, current) = current_generation(dir)?.ok_or_else(|| {
        index_error(
            dir,
            "no published generation (CURRENT is missing): build the index first",
        )
    })?;
    read_manifest(&current)?
        .model
        .check_same_model(options.model.card())?;

    let root = fs::canonicalize(&options.dataset).map_err(|e| Error::io(&options.dataset, e))?;
    let dataset = Dataset::new(&root);
    let mut rows: Vec<(usize, LesionRecord)> = Vec::new();
    for row in DlInfoReader::open(&dataset.dl_info_path())? {
        let row = row?;
        rows.push((row.row_index, row.record));
    }
    let records: Vec<LesionRecord> = rows.iter().map(|(_, r)| r.clone()).collect();
    let keys = lesion_keys(&records);
    let reports = reports_of(&dataset, options.reports.as_deref())?;

    // Embedding is the slow part; it runs (and resumes) before anything is copied.
    let table_sha256 = sha256_file(&dataset.dl_info_path())?;
    let Embedded {
        vectors,
        mut thumbnails,
        cache,
        ..
    } = embed_lesions(
        dir,
        &dataset,
        &records,
        options.model,
        &table_sha256,
        progress,
    )?;
    progress(BuildEvent::Writing);

    let mut draft = Draft::begin(dir)?;
    let mut taken = Vec::new();
    for key in &keys {
        if draft.records.id_of(&key.to_string())?.is_some() {
            taken.push(key.to_string());
        }
    }
    if !taken.is_empty() {
        let _ = fs::remove_dir_all(&draft.partial);
        return Err(Error::AlreadyInIndex { keys: taken });
    }
    let ids = draft.vectors.append(&vectors);
    let mut changed = Vec::with_capacity(records.len());
    for (i, id) in ids.enumerate() {
        let (row_index, record) = &rows[i];
        let key = &keys[i];
        let lesion = StoredLesion {
            key: key.to_string(),
            row_index: *row_index,
            record: record.clone(),
            report: reports
                .get(&(key.file_name.clone(), key.ordinal))
                .cloned()
                .unwrap_or_default(),
            tags: Vec::new(),
            source: Some(root.clone()),
        };
        let thumb = match thumbnails[i].take() {
            Some(t) => t,
            None => thumbnail_of(&dataset.load_key_slice(record)?, record)?,
        };
        draft.records.insert(id, &lesion, Some(&thumb))?;
        draft.text.add(&TextEntry {
            id,
            key: &lesion.key,
            record,
            report: &lesion.report,
            tags: &lesion.tags,
        })?;
        changed.push((id, lesion.key));
    }
    let summary = draft.finish(options.graph, changed)?;
    let _ = fs::remove_file(&cache);
    Ok(summary)
}

/// Deletes lesions by key (`File_name`, or `File_name#n` for the n-th lesion of a slice) as
/// a new generation. Unknown keys are refused, all of them named, and nothing changes.
pub fn delete(dir: &Path, keys: &[String], graph: GraphParams) -> Result<ChangeSummary> {
    let _lock = WriteLock::acquire(dir)?;
    let mut draft = Draft::begin(dir)?;
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
        let _ = fs::remove_dir_all(&draft.partial);
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
