//! An index folder: immutable generations, each holding records (sled), vectors (flat and
//! HNSW), text (tantivy) and a manifest; `CURRENT` names the one served and is replaced by a
//! single atomic rename, so readers keep the previous generation until a build is complete.
//!
//! ```text
//! IDX/CURRENT            "gen-000002"
//! IDX/gen-000002/        manifest.json, records/ (sled), records.table, vectors/, text/
//! IDX/staging/           embeddings computed so far (a killed build resumes from them)
//! IDX/LOCK               flock-ed by the one writer (its pid inside, for people)
//! ```

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::{read_lesanet_labels, read_reports, Dataset, LesionRecord};
use crate::embed::{Embedder, ModelCard};
use crate::error::{Error, Result};
use crate::imaging::{extract_patch, render_thumbnail, ThumbnailSpec};
use crate::index::{load_vector_index, GraphParams, VectorIndex};
use crate::store::{PublishedRecords, StoredLesion};
use crate::text::TextIndex;
use crate::util::sha256_file;
use draft::{Draft, Incoming};

mod change;
mod draft;
mod lesion;
mod shard;
pub use change::{add, add_locked, delete, delete_locked, AddOptions, ChangeSummary};
pub use lesion::{add_lesion, add_lesion_locked, lesion_record, LesionInput};
pub use shard::{embed_shard, Shard, ShardSummary};

/// Version of the on-disk layout; a reader refuses others.
pub const SCHEMA_VERSION: u32 = 1;
const CURRENT: &str = "CURRENT";
const MANIFEST: &str = "manifest.json";
/// Below this many lesions the exact scan is all an index needs.
pub const GRAPH_FROM: usize = crate::index::EXACT_SCAN_BELOW;

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
}

/// Where `add_lesion` keeps each added slice, as a one-lesion DeepLesion folder.
pub(crate) const ADDED_DIR: &str = "added";

fn index_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Index {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Held while writing an index folder; a second writer is refused. An OS file lock on
/// `LOCK` (flock), so it dies with its holder, whatever the way: no stale lock after a
/// crash, no lock stolen by a process that merely sees another pid namespace. The file itself
/// stays; only the lock on it matters.
pub struct WriteLock {
    _file: fs::File,
    dir: PathBuf,
}

impl WriteLock {
    pub fn acquire(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join("LOCK");
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = match holder.trim() {
                    "" => "a writer".to_string(),
                    pid => format!("process {pid}"),
                };
                return Err(Error::Locked { path, holder });
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        // For people reading the folder; the lock, not this number, is what counts.
        let _ = file.set_len(0);
        let _ = write!(file, "{}", std::process::id());
        let _ = file.sync_all();
        Ok(WriteLock {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// The index folder this lock holds.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

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
    Embedding { done: usize, total: usize },
    Writing,
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

/// Report sentences by (File_name, ordinal): from `explicit`, else the dataset's
/// `reports.jsonl` when present, else none.
fn reports_of(
    dataset: &Dataset,
    explicit: Option<&Path>,
) -> Result<std::collections::HashMap<(String, u32), String>> {
    let path = explicit.map_or_else(|| dataset.reports_path(), Path::to_path_buf);
    if path.exists() {
        read_reports(&path)
    } else {
        Ok(Default::default())
    }
}

/// Embeddings and thumbnails of a list of lesions.
struct Embedded {
    vectors: Vec<f32>,
    /// `None` for lesions whose embedding was resumed from the staging file.
    thumbnails: Vec<Option<Vec<u8>>>,
    resumed: usize,
    /// The staging file; removed once the generation is published.
    cache: PathBuf,
}

const THUMBNAIL: ThumbnailSpec = ThumbnailSpec {
    size_px: 128,
    around_box_mm: Some(80.0),
    draw_box: true,
};

/// The stored thumbnail of a lesion: its key slice around the box, in its own window.
fn thumbnail_of(key_slice: &crate::imaging::CtImage, record: &LesionRecord) -> Result<Vec<u8>> {
    render_thumbnail(
        key_slice,
        &record.window,
        Some(&record.bbox),
        (record.spacing.x_mm, record.spacing.y_mm),
        &THUMBNAIL,
    )?
    .to_png()
}

/// The vectors (concatenated) and thumbnails of a batch of lesions: patches are cut in
/// parallel, then embedded together.
fn embed_batch(
    dataset: &Dataset,
    records: &[LesionRecord],
    model: &dyn Embedder,
) -> Result<(Vec<f32>, Vec<Vec<u8>>)> {
    let spec = &model.card().patch;
    let outcomes: Vec<(crate::imaging::Patch, Vec<u8>)> = records
        .par_iter()
        .map(|r| {
            let slices = dataset.load_slices(r, spec)?;
            let patch = extract_patch(&slices.stack(), &crate::dataset::geometry_of(r), spec)?;
            Ok((patch, thumbnail_of(&slices.key, r)?))
        })
        .collect::<Result<_>>()?;
    let (patches, thumbnails): (Vec<_>, Vec<_>) = outcomes.into_iter().unzip();
    let vectors = model.embed(&patches)?.into_iter().flatten().collect();
    Ok((vectors, thumbnails))
}

/// Embeds `records` batch by batch, appending each batch to a staging file under `dir` so
/// that a killed run resumes where it stopped. The file is named by model weights and table
/// digest, so a different model or table never resumes from it.
fn embed_lesions(
    dir: &Path,
    dataset: &Dataset,
    records: &[LesionRecord],
    model: &dyn Embedder,
    table_sha256: &str,
    progress: &(dyn Fn(BuildEvent) + Sync),
) -> Result<Embedded> {
    let card = model.card();
    let dim = card.output_dim;
    let staging = dir.join("staging");
    fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    let cache = staging.join(format!(
        "embeddings-{}-{}.f32",
        &card.weights_sha256[..12.min(card.weights_sha256.len())],
        &table_sha256[..12.min(table_sha256.len())]
    ));
    let existing = fs::read(&cache).unwrap_or_default();
    let resumed = (existing.len() / (dim * 4)).min(records.len());
    let mut vectors: Vec<f32> = existing[..resumed * dim * 4]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut thumbnails: Vec<Option<Vec<u8>>> = vec![None; records.len()];
    let mut out = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&cache)
        .map_err(|e| Error::io(&cache, e))?;
    // A batch half-written when the process died is cut off.
    out.set_len((resumed * dim * 4) as u64)
        .map_err(|e| Error::io(&cache, e))?;
    out.seek(SeekFrom::End(0))
        .map_err(|e| Error::io(&cache, e))?;
    let batch = 64;
    let mut done = resumed;
    while done < records.len() {
        let end = (done + batch).min(records.len());
        let (embedded, batch_thumbnails) = embed_batch(dataset, &records[done..end], model)?;
        let bytes: Vec<u8> = embedded.iter().flat_map(|v| v.to_le_bytes()).collect();
        out.write_all(&bytes)
            .and_then(|_| out.sync_data())
            .map_err(|e| Error::io(&cache, e))?;
        crate::fault::point("staged-batch");
        for (i, thumb) in batch_thumbnails.into_iter().enumerate() {
            thumbnails[done + i] = Some(thumb);
        }
        vectors.extend(embedded);
        done = end;
        progress(BuildEvent::Embedding {
            done,
            total: records.len(),
        });
    }
    Ok(Embedded {
        vectors,
        thumbnails,
        resumed,
        cache,
    })
}

/// An empty `gen-NNNNNN.partial` folder for the next generation. Leftovers of a killed
/// writer are discarded: a partial folder, and a complete `gen-NNNNNN` that was renamed but
/// never named by `CURRENT` (its writer died between the two steps, so nobody was told it
/// was published and no reader opened it).
fn fresh_partial(dir: &Path, generation: u64) -> Result<PathBuf> {
    let partial = dir.join(format!("gen-{generation:06}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    }
    let orphan = dir.join(format!("gen-{generation:06}"));
    let served = current_generation(dir)?.map(|(n, _)| n);
    if orphan.exists() && served.is_none_or(|n| n < generation) {
        fs::remove_dir_all(&orphan).map_err(|e| Error::io(&orphan, e))?;
    }
    fs::create_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    Ok(partial)
}

/// Writes the manifest into a complete `partial` generation, renames it to its final name
/// and points `CURRENT` at it: readers see the old generation or the new one, whole.
fn publish(dir: &Path, partial: &Path, manifest: &Manifest) -> Result<()> {
    let name = format!("gen-{:06}", manifest.generation);
    let manifest_path = partial.join(MANIFEST);
    let text = serde_json::to_string_pretty(manifest)
        .map_err(|e| index_error(&manifest_path, e.to_string()))?;
    crate::fsutil::write_atomically(&manifest_path, |w| w.write_all(text.as_bytes()))?;
    crate::fault::point("manifest-written");
    let published = dir.join(&name);
    crate::fsutil::sync_tree(partial)?;
    fs::rename(partial, &published).map_err(|e| Error::io(&published, e))?;
    crate::fsutil::sync_dir(dir)?;
    crate::fault::point("published-before-current");
    crate::fsutil::write_atomically(&dir.join(CURRENT), |w| w.write_all(name.as_bytes()))
}

/// Builds a new generation from a DeepLesion-format archive and publishes it.
pub fn build(
    dir: &Path,
    options: &BuildOptions,
    progress: &(dyn Fn(BuildEvent) + Sync),
) -> Result<BuildSummary> {
    build_locked(&WriteLock::acquire(dir)?, options, progress)
}

/// [`build`] for a writer that holds the index's lock already.
pub fn build_locked(
    lock: &WriteLock,
    options: &BuildOptions,
    progress: &(dyn Fn(BuildEvent) + Sync),
) -> Result<BuildSummary> {
    build_with(lock, options, &[], progress)
}

/// Builds a new generation from a DeepLesion-format archive whose lesions were embedded as
/// shards ([`embed_shard`]), one file per shard, instead of embedding them here.
pub fn build_from_shards(
    dir: &Path,
    options: &BuildOptions,
    shard_files: &[PathBuf],
    progress: &(dyn Fn(BuildEvent) + Sync),
) -> Result<BuildSummary> {
    build_from_shards_locked(&WriteLock::acquire(dir)?, options, shard_files, progress)
}

/// [`build_from_shards`] for a writer that holds the index's lock already.
pub fn build_from_shards_locked(
    lock: &WriteLock,
    options: &BuildOptions,
    shard_files: &[PathBuf],
    progress: &(dyn Fn(BuildEvent) + Sync),
) -> Result<BuildSummary> {
    if shard_files.is_empty() {
        return Err(Error::invalid_argument(
            "embeddings",
            "no shard files given",
        ));
    }
    build_with(lock, options, shard_files, progress)
}

fn build_with(
    lock: &WriteLock,
    options: &BuildOptions,
    shard_files: &[PathBuf],
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
        },
    )?;
    let changed = incoming.put_into(
        &mut draft,
        &mut embedded,
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

fn read_manifest(generation_dir: &Path) -> Result<Manifest> {
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

/// The folder holding a lesion's slices: where it was added from, else the archive's.
fn dataset_of(manifest: &Manifest, lesion: &StoredLesion) -> Dataset {
    Dataset::new(
        lesion
            .source
            .clone()
            .unwrap_or_else(|| PathBuf::from(&manifest.dataset)),
    )
}

/// The records side of a published generation: what the engine keeps in-process whichever
/// backend serves the vectors and the text.
pub struct Published {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub records: PublishedRecords,
}

impl Published {
    /// The folder holding a lesion's slices.
    pub fn dataset_of(&self, lesion: &StoredLesion) -> Dataset {
        dataset_of(&self.manifest, lesion)
    }

    /// Refuses a model other than the one that built the index, saying what differs.
    pub fn check_model(&self, model: &dyn Embedder) -> Result<()> {
        self.manifest.model.check_same_model(model.card())
    }
}

/// A published generation, open for reading, with its embedded vector and text stores.
pub struct Archive {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub records: PublishedRecords,
    pub vectors: VectorIndex,
    pub text: TextIndex,
}

impl Archive {
    pub fn open(index_dir: &Path) -> Result<Self> {
        let (_, dir) = current_generation(index_dir)?.ok_or_else(|| {
            index_error(
                index_dir,
                "no published generation (CURRENT is missing): build the index first",
            )
        })?;
        let manifest = read_manifest(&dir)?;
        let vectors = load_vector_index(&dir.join("vectors"))?;
        if !vectors.is_empty() && vectors.dim() != manifest.model.output_dim {
            return Err(index_error(
                &dir.join("vectors"),
                format!(
                    "vectors have {} dimensions, the model card ({}) says {}",
                    vectors.dim(),
                    manifest.model.name,
                    manifest.model.output_dim
                ),
            ));
        }
        Ok(Archive {
            records: PublishedRecords::open(&dir)?,
            vectors,
            text: TextIndex::open(&dir.join("text"))?,
            manifest,
            dir,
        })
    }

    /// The manifest of the served generation, read without opening the stores.
    pub fn current_manifest(index_dir: &Path) -> Result<Manifest> {
        let (_, dir) = current_generation(index_dir)?.ok_or_else(|| {
            index_error(
                index_dir,
                "no published generation (CURRENT is missing): build the index first",
            )
        })?;
        read_manifest(&dir)
    }

    /// The records side alone and the embedded stores beside it.
    pub fn into_parts(self) -> (Published, VectorIndex, TextIndex) {
        let published = Published {
            dir: self.dir,
            manifest: self.manifest,
            records: self.records,
        };
        (published, self.vectors, self.text)
    }

    /// Refuses a model other than the one that built the index, saying what differs.
    pub fn check_model(&self, model: &dyn Embedder) -> Result<()> {
        self.manifest.model.check_same_model(model.card())
    }

    /// The folder holding a lesion's slices.
    pub fn dataset_of(&self, lesion: &StoredLesion) -> Dataset {
        dataset_of(&self.manifest, lesion)
    }

    /// Counts, ids and checksums agree across the three stores; every disagreement listed.
    pub fn verify(&self) -> Result<Vec<String>> {
        verify_embedded(
            (&self.dir, &self.manifest, &self.records),
            &self.vectors,
            &self.text,
        )
    }
}

/// Counts, ids and checksums of the embedded vector and text stores agree with the
/// published records and manifest; every disagreement listed.
pub(crate) fn verify_embedded(
    (dir, manifest, records): (&Path, &Manifest, &PublishedRecords),
    vectors: &VectorIndex,
    text: &TextIndex,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let n = manifest.lesions;
    let live = n - manifest.deleted.min(n);
    let counts = [
        ("records", records.len(), live),
        ("vectors", vectors.len(), n),
        ("deleted vectors", vectors.deleted(), manifest.deleted),
        ("text documents", text.len() as usize, live),
    ];
    for (what, count, expected) in counts {
        if count != expected {
            problems.push(format!("{what}: {count}, manifest says {expected}"));
        }
    }
    for (id, lesion) in records.all()? {
        if id as usize >= n {
            problems.push(format!("record id {id} is beyond the {n} lesions"));
        }
        if vectors.is_deleted(id) {
            problems.push(format!(
                "record {id} ({}) is deleted from the vectors but not from the records",
                lesion.key
            ));
        }
        if records.id_of(&lesion.key)? != Some(id) {
            problems.push(format!("key {} does not map back to id {id}", lesion.key));
        }
    }
    if let Some(graph) = vectors.graph() {
        let c = graph.connectivity();
        if c.reachable < c.nodes {
            problems.push(format!(
                "graph: {} of {} nodes cannot be reached from the entry point (no ef finds them)",
                c.nodes - c.reachable,
                c.nodes
            ));
        }
    }
    let records_sha = records.checksum()?;
    if records_sha != manifest.records_sha256 {
        problems.push(format!(
            "records checksum {records_sha} differs from the manifest's {}",
            manifest.records_sha256
        ));
    }
    let vectors_sha = sha256_file(&dir.join("vectors/vectors.bin"))?;
    if vectors_sha != manifest.vectors_sha256 {
        problems.push(format!(
            "vectors.bin checksum {vectors_sha} differs from the manifest's {}",
            manifest.vectors_sha256
        ));
    }
    if vectors.dim() != manifest.model.output_dim {
        problems.push(format!(
            "vectors have {} dimensions, the model {}",
            vectors.dim(),
            manifest.model.output_dim
        ));
    }
    Ok(problems)
}
