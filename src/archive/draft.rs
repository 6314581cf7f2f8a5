//! The one write path. Every write (a build, an add, a delete) fills a draft generation,
//! a `gen-NNNNNN.partial` folder beside the served one, the same way, and publishes it with
//! [`super::publish`]: a build starts from empty stores, a change from a copy of the served
//! generation's. Lesions come in from a DeepLesion-format folder ([`Incoming`]), embedded
//! before anything is copied or created.

use std::collections::HashMap;

use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};

use super::embedding::{embed_lesions, thumbnail_of, Embedded};
use super::publish::{fresh_partial, publish};
use super::{
    current_generation, index_error, read_manifest, BuildEvent, Manifest, REPORT_VECTORS_DIR,
};
use crate::dataset::{lesion_keys, read_reports, Dataset, DlInfoReader, LesionKey, LesionRecord};
use crate::embed::{Embedder, SentenceEncoder};
use crate::error::{Error, Result};
use crate::fsutil::copy_dir;
use crate::index::{load_vector_index, save_vector_index, FlatIndex, GraphParams, VectorIndex};
use crate::store::{RecordStore, StoredLesion};
use crate::text::{TextEntry, TextIndexWriter};
use crate::util::sha256_file;

use super::publish::{prune_old_generations, remove_leftovers};

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

/// A generation being written: its stores open for writing in a partial folder.
pub(super) struct Draft {
    dir: PathBuf,
    pub partial: PathBuf,
    manifest: Manifest,
    pub records: RecordStore,
    pub text: TextIndexWriter,
    pub vectors: VectorIndex,
    /// Report vectors by lesion id, when the generation has a text encoder: every id of
    /// `vectors` has one (zeros for a lesion without a report), tombstoned alike.
    pub reports: Option<VectorIndex>,
}

impl Draft {
    /// A draft with empty stores: the next generation of a build. `manifest` describes the
    /// source and model; the counts and digests are filled when the draft is finished.
    pub fn empty(dir: &Path, mut manifest: Manifest) -> Result<Self> {
        manifest.generation = current_generation(dir)?.map_or(1, |(n, _)| n + 1);
        let partial = fresh_partial(dir, manifest.generation)?;
        let dim = manifest.model.output_dim;
        Ok(Draft {
            dir: dir.to_path_buf(),
            records: RecordStore::open(&partial.join("records"))?,
            text: TextIndexWriter::create(&partial.join("text"))?,
            vectors: VectorIndex::exact(FlatIndex::from_data(dim, Vec::new())),
            reports: manifest
                .text_encoder
                .as_ref()
                .map(|card| VectorIndex::exact(FlatIndex::from_data(card.dim, Vec::new()))),
            manifest,
            partial,
        })
    }

    /// A draft holding a copy of the served generation: the next generation of a change.
    pub fn copy_of_served(dir: &Path) -> Result<Self> {
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
            reports: match manifest.text_encoder {
                Some(_) => Some(load_vector_index(&current.join(REPORT_VECTORS_DIR))?),
                None => None,
            },
            manifest,
            partial,
        })
    }

    /// Stores a lesion under `id` (its vector is already in `vectors`): record, thumbnail
    /// and text.
    pub fn put(&mut self, id: u32, lesion: &StoredLesion, thumbnail: &[u8]) -> Result<()> {
        self.records.insert(id, lesion, Some(thumbnail))?;
        self.text.add(&TextEntry {
            id,
            key: &lesion.key,
            record: &lesion.record,
            report: &lesion.report,
            tags: &lesion.tags,
        })
    }

    /// Gives up: the partial folder goes, the served generation stays as it was.
    pub fn abandon(self) {
        let _ = fs::remove_dir_all(&self.partial);
    }

    /// Commits every store, builds or rebuilds the graph when it is due, and publishes.
    pub fn finish(self, graph: GraphParams, changed: Vec<(u32, String)>) -> Result<ChangeSummary> {
        let Draft {
            dir,
            partial,
            mut manifest,
            records,
            text,
            mut vectors,
            reports,
        } = self;
        records.flush()?;
        text.commit()?;
        crate::fault::point("records-flushed");
        records.freeze(&partial.join(crate::store::RECORDS_TABLE))?;
        manifest.records_sha256 = records.checksum()?;
        drop(records);
        // The builder the index records wins: a change rebuilds with the one that built it.
        let graph = GraphParams {
            builder: manifest.graph_builder,
            ..graph
        };
        let graph_rebuilt = vectors.needs_rebuild(graph);
        if graph_rebuilt {
            vectors.rebuild(graph);
        }
        let vectors_dir = partial.join("vectors");
        fs::create_dir_all(&vectors_dir).map_err(|e| Error::io(&vectors_dir, e))?;
        save_vector_index(&vectors, &vectors_dir)?;
        crate::fault::point("vectors-written");
        manifest.lesions = vectors.len();
        manifest.deleted = vectors.deleted();
        manifest.has_graph = vectors.graph().is_some();
        manifest.ef = vectors.ef();
        manifest.self_recall = vectors.self_recall();
        manifest.graph_outcome = vectors.outcome();
        manifest.vectors_sha256 = sha256_file(&vectors_dir.join("vectors.bin"))?;
        if let Some(reports) = &reports {
            // Same ids in both stores, the same ones deleted: checked before publishing.
            if reports.len() != vectors.len() || reports.deleted() != vectors.deleted() {
                return Err(index_error(
                    &partial,
                    format!(
                        "{} report vectors ({} deleted) for {} lesions ({} deleted)",
                        reports.len(),
                        reports.deleted(),
                        vectors.len(),
                        vectors.deleted()
                    ),
                ));
            }
            let reports_dir = partial.join(REPORT_VECTORS_DIR);
            fs::create_dir_all(&reports_dir).map_err(|e| Error::io(&reports_dir, e))?;
            save_vector_index(reports, &reports_dir)?;
            manifest.report_vectors_sha256 = sha256_file(&reports_dir.join("vectors.bin"))?;
        }
        publish(&dir, &partial, &manifest)?;
        prune_old_generations(&dir, manifest.generation);
        remove_leftovers(&dir, manifest.generation);
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

/// Lesions read from a DeepLesion-format folder: rows, keys and reports.
pub(super) struct Incoming {
    /// The folder, absolute, so that images are found whatever the reader's working directory.
    pub root: PathBuf,
    pub dataset: Dataset,
    pub records: Vec<LesionRecord>,
    /// 0-based row of each record in its table.
    pub row_indices: Vec<usize>,
    pub keys: Vec<LesionKey>,
    reports: HashMap<(String, u32), String>,
    pub table_sha256: String,
}

impl Incoming {
    pub fn read(dataset: &Path, reports: Option<&Path>) -> Result<Self> {
        let root = fs::canonicalize(dataset).map_err(|e| Error::io(dataset, e))?;
        let dataset = Dataset::new(&root);
        let mut records = Vec::new();
        let mut row_indices = Vec::new();
        for row in DlInfoReader::open(&dataset.dl_info_path())? {
            let row = row?;
            row_indices.push(row.row_index);
            records.push(row.record);
        }
        Ok(Incoming {
            keys: lesion_keys(&records),
            reports: reports_of(&dataset, reports)?,
            table_sha256: sha256_file(&dataset.dl_info_path())?,
            root,
            dataset,
            records,
            row_indices,
        })
    }

    /// Embeds every lesion (resuming from the staging file of `dir`).
    pub fn embed(
        &self,
        dir: &Path,
        model: &dyn Embedder,
        progress: &(dyn Fn(BuildEvent) + Sync),
    ) -> Result<Embedded> {
        embed_lesions(
            dir,
            &self.dataset,
            &self.records,
            model,
            &self.table_sha256,
            progress,
        )
    }

    /// The report of the `i`-th incoming lesion (empty when it has none).
    fn report_of(&self, i: usize) -> String {
        let key = &self.keys[i];
        self.reports
            .get(&(key.file_name.clone(), key.ordinal))
            .cloned()
            .unwrap_or_default()
    }

    /// Report vectors of every incoming lesion, row-major in table order, for a generation
    /// with a text encoder: the reports embedded in batches; a lesion without a report gets
    /// zeros, which no query's cosine reaches a threshold with.
    pub fn embed_reports(
        &self,
        encoder: &SentenceEncoder,
        progress: &(dyn Fn(BuildEvent) + Sync),
    ) -> Result<Vec<f32>> {
        /// Reports embedded between two progress events.
        const CHUNK: usize = 512;
        let reports: Vec<String> = (0..self.records.len()).map(|i| self.report_of(i)).collect();
        let written: Vec<&str> = reports
            .iter()
            .map(String::as_str)
            .filter(|r| !r.trim().is_empty())
            .collect();
        let mut embedded = Vec::with_capacity(written.len());
        for chunk in written.chunks(CHUNK) {
            embedded.extend(encoder.encode(chunk)?);
            progress(BuildEvent::EmbeddingReports {
                done: embedded.len(),
                total: written.len(),
            });
        }
        let dim = encoder.dim();
        // One vector of the encoder's width per written report, or the generation's report
        // vectors would fall out of step with its lesions.
        if embedded.len() != written.len() || embedded.iter().any(|v| v.len() != dim) {
            return Err(Error::Model {
                path: encoder.dir().to_path_buf(),
                message: format!(
                    "the text encoder gave {} vectors for {} reports (each should have {dim} dimensions)",
                    embedded.len(),
                    written.len()
                ),
            });
        }
        let mut vectors = embedded.into_iter();
        let mut out = Vec::with_capacity(reports.len() * dim);
        for report in &reports {
            if report.trim().is_empty() {
                out.resize(out.len() + dim, 0.0);
            } else {
                out.extend(vectors.next().unwrap_or_default());
            }
        }
        Ok(out)
    }

    /// Appends the embedded lesions to the draft's vectors (and their report vectors, which
    /// a draft with a text encoder needs) and stores each under the id it got, with
    /// `tags(row)` and `source`. Answers `(id, key)` of each.
    pub fn put_into(
        &self,
        draft: &mut Draft,
        embedded: &mut Embedded,
        report_vectors: Option<&[f32]>,
        tags: impl Fn(usize) -> Vec<String>,
        source: Option<PathBuf>,
    ) -> Result<Vec<(u32, String)>> {
        if let Some(reports) = draft.reports.as_mut() {
            let vectors = report_vectors.ok_or_else(|| {
                index_error(&draft.partial, "the generation has report vectors, but the new lesions' reports were not embedded")
            })?;
            let ids = reports.append(vectors);
            if ids.start as usize != draft.vectors.len() || ids.len() != self.records.len() {
                return Err(index_error(
                    &draft.partial,
                    "report vectors and lesion vectors disagree on the new lesions' ids",
                ));
            }
        }
        let ids = draft.vectors.append(&embedded.vectors);
        let mut changed = Vec::with_capacity(self.records.len());
        for (i, id) in ids.enumerate() {
            let (record, key, row_index) = (&self.records[i], &self.keys[i], self.row_indices[i]);
            let lesion = StoredLesion {
                key: key.to_string(),
                row_index,
                record: record.clone(),
                report: self.report_of(i),
                tags: tags(row_index),
                source: source.clone(),
            };
            // Thumbnails of lesions whose embedding was resumed are rendered now.
            let thumbnail = match embedded.thumbnails[i].take() {
                Some(t) => t,
                None => thumbnail_of(&self.dataset.load_key_slice(record)?, record)?,
            };
            draft.put(id, &lesion, &thumbnail)?;
            changed.push((id, lesion.key));
        }
        Ok(changed)
    }
}
