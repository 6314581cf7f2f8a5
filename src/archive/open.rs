//! A published generation opened for reading.

use std::path::{Path, PathBuf};

use super::manifest::{current_generation, read_manifest};
use super::{index_error, Manifest, REPORT_VECTORS_DIR};
use crate::dataset::Dataset;
use crate::embed::Embedder;
use crate::error::Result;
use crate::index::{load_vector_index, VectorIndex};
use crate::store::{PublishedRecords, StoredLesion};
use crate::text::TextIndex;

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
/// backend serves the vectors and the text. The report vectors (semantic retrieval) are
/// here too: a small exact store that every backend leaves to the engine.
pub struct Published {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub records: PublishedRecords,
    /// Report vectors by lesion id, when the generation was built with a text encoder.
    pub report_vectors: Option<VectorIndex>,
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
    /// Report vectors by lesion id, when the generation was built with a text encoder.
    pub report_vectors: Option<VectorIndex>,
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
        let report_vectors = match &manifest.text_encoder {
            None => None,
            Some(card) => {
                let path = dir.join(REPORT_VECTORS_DIR);
                let reports = load_vector_index(&path)?;
                if !reports.is_empty() && reports.dim() != card.dim {
                    return Err(index_error(
                        &path,
                        format!(
                            "report vectors have {} dimensions, the text encoder card ({}) says {}",
                            reports.dim(),
                            card.name,
                            card.dim
                        ),
                    ));
                }
                Some(reports)
            }
        };
        Ok(Archive {
            records: PublishedRecords::open(&dir)?,
            report_vectors,
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
            report_vectors: self.report_vectors,
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
}
