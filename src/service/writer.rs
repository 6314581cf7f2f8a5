//! The one write path of an index folder, as the binaries see it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{model_of_index, text_encoder_of_index, Index};
use crate::archive::Archive;
use crate::archive::{
    add_lesion_locked, add_locked, build_from_shards_locked, build_locked, delete_locked,
    AddOptions, BuildEvent, BuildOptions, BuildSummary, ChangeSummary, LesionInput, WriteLock,
};
use crate::backend::{mirror, BackendChoice, MirrorSummary};
use crate::embed::{Embedder, SentenceEncoder};
use crate::error::{Error, Result};
use crate::imaging::CtImage;
use crate::index::GraphParams;

/// A mirror that failed after the generation was published: said so, with how to finish
/// it, since the index folder holds the new generation whatever the backend does.
fn not_mirrored(error: Error) -> Error {
    let published = "the new generation is published in the index folder but not in the backend; \
                     `lesion-indexer milvus-sync` finishes the mirror";
    match error {
        Error::Backend {
            backend,
            url,
            message,
        } => Error::Backend {
            backend,
            url,
            message: format!("{message} ({published})"),
        },
        other => other,
    }
}

/// What a write did: the archive's summary and, for an external backend, what mirroring
/// the new generation into it did.
#[derive(Debug, Clone)]
pub struct Written<S> {
    pub summary: S,
    pub mirror: Option<MirrorSummary>,
}

/// Holds an index folder's write lock for its life. Every write publishes one generation,
/// mirrors it into the backend and, for a writer taken from an [`Index`], is served
/// before the write returns.
pub struct Writer {
    lock: WriteLock,
    backend: BackendChoice,
    /// The model changes embed with; `None` until needed, then the manifest's.
    model: Option<Arc<dyn Embedder>>,
    /// The text encoder a build embeds reports with (none: no report vectors) and changes
    /// of an index with report vectors need; for changes, `None` until needed, then the one
    /// the manifest's card names.
    text_encoder: Option<Arc<SentenceEncoder>>,
    serves: Option<Arc<Index>>,
}

impl Writer {
    /// A writer of the folder `dir`, created when absent, for a build by a process that
    /// serves nothing. `Error::Locked` when another writer holds it.
    pub fn create(dir: &Path, backend: &BackendChoice) -> Result<Self> {
        Ok(Writer {
            lock: WriteLock::acquire(dir)?,
            backend: backend.clone(),
            model: None,
            text_encoder: None,
            serves: None,
        })
    }

    /// A writer of the index at `dir`, which must have a published generation (a mistyped
    /// folder is refused, never created), for changes by a process that serves nothing.
    pub fn open(dir: &Path, backend: &BackendChoice) -> Result<Self> {
        Archive::current_manifest(dir)?;
        Writer::create(dir, backend)
    }

    pub(super) fn serving(index: Arc<Index>) -> Result<Self> {
        Ok(Writer {
            lock: WriteLock::acquire(index.dir())?,
            backend: index.backend().clone(),
            model: Some(index.model().clone()),
            text_encoder: index.text_encoder(),
            serves: Some(index),
        })
    }

    /// Changes embed with `model` instead of the one the manifest names; a model other
    /// than the index's is refused by the write, with what differs.
    pub fn with_model(mut self, model: Arc<dyn Embedder>) -> Self {
        self.model = Some(model);
        self
    }

    /// Builds embed each lesion's report with `encoder` and keep the report vectors
    /// (semantic retrieval); changes embed the reports of added lesions with it (it must be
    /// the encoder the index's card names).
    pub fn with_text_encoder(mut self, encoder: Arc<SentenceEncoder>) -> Self {
        self.text_encoder = Some(encoder);
        self
    }

    pub fn dir(&self) -> &Path {
        self.lock.dir()
    }

    /// Builds a new generation from a DeepLesion-format archive (embedding it, or taking
    /// the embeddings from `shard_files` when there are any) and publishes it.
    pub fn build(
        &self,
        options: &BuildOptions,
        shard_files: &[PathBuf],
        progress: &(dyn Fn(BuildEvent) + Sync),
    ) -> Result<Written<BuildSummary>> {
        let text_encoder = self.text_encoder.as_deref();
        self.write(|lock| {
            if shard_files.is_empty() {
                build_locked(lock, options, text_encoder, progress)
            } else {
                build_from_shards_locked(lock, options, shard_files, text_encoder, progress)
            }
        })
    }

    /// Adds the lesions of a DeepLesion-format folder (reports from `reports`, else the
    /// folder's `reports.jsonl`).
    pub fn add(
        &mut self,
        dataset: &Path,
        reports: Option<&Path>,
        progress: &(dyn Fn(BuildEvent) + Sync),
    ) -> Result<Written<ChangeSummary>> {
        let model = self.change_model()?;
        let text_encoder = self.change_text_encoder()?;
        let options = AddOptions {
            dataset: dataset.to_path_buf(),
            reports: reports.map(Path::to_path_buf),
            model: model.as_ref(),
            graph: GraphParams::default(),
        };
        self.write(|lock| add_locked(lock, &options, text_encoder.as_deref(), progress))
    }

    /// Adds one lesion drawn on a CT slice (kept under the index folder's `added/`).
    pub fn add_lesion(
        &mut self,
        image: &CtImage,
        input: &LesionInput,
    ) -> Result<Written<ChangeSummary>> {
        let model = self.change_model()?;
        let text_encoder = self.change_text_encoder()?;
        self.write(|lock| {
            add_lesion_locked(
                lock,
                image,
                input,
                (model.as_ref(), text_encoder.as_deref()),
                GraphParams::default(),
            )
        })
    }

    /// Deletes lesions by key; unknown keys are refused, all named, and nothing changes.
    pub fn delete(&self, keys: &[String]) -> Result<Written<ChangeSummary>> {
        self.write(|lock| delete_locked(lock, keys, GraphParams::default()))
    }

    /// Mirrors the generation served now into the backend (what every write does; this
    /// finishes one that was interrupted between publishing and mirroring).
    pub fn mirror_served(&self) -> Result<Option<MirrorSummary>> {
        Ok(self.write(|_| Ok(()))?.mirror)
    }

    fn change_model(&mut self) -> Result<Arc<dyn Embedder>> {
        if let Some(model) = &self.model {
            return Ok(model.clone());
        }
        let model = model_of_index(self.dir())?;
        self.model = Some(model.clone());
        Ok(model)
    }

    /// The text encoder an add needs: none for an index without report vectors, else the
    /// one given or held, else the one its manifest names, loaded from the weights cache
    /// (a missing import fails here, before anything is embedded or published).
    fn change_text_encoder(&mut self) -> Result<Option<Arc<SentenceEncoder>>> {
        if Archive::current_manifest(self.dir())?
            .text_encoder
            .is_none()
        {
            return Ok(None);
        }
        // One given or held is checked against the card by the write, which says what differs.
        if let Some(encoder) = &self.text_encoder {
            return Ok(Some(encoder.clone()));
        }
        let encoder = text_encoder_of_index(self.dir())?;
        self.text_encoder.clone_from(&encoder);
        Ok(encoder)
    }

    /// Runs one archive write, then mirrors and serves what it published. A served index's
    /// reload lock is held throughout, so its watcher never opens the new generation
    /// before the backend holds it.
    fn write<S>(&self, work: impl FnOnce(&WriteLock) -> Result<S>) -> Result<Written<S>> {
        let _no_reload_meanwhile = self.serves.as_ref().map(|index| index.reload_guard());
        let summary = work(&self.lock)?;
        let mirror = mirror(self.dir(), &self.backend).map_err(not_mirrored)?;
        if let Some(index) = &self.serves {
            index.reload_held()?;
        }
        Ok(Written { summary, mirror })
    }
}
