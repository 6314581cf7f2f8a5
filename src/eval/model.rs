//! A model judged on an archive without an index (`evaluate-model --dataset`): the archive's
//! typed lesions embedded from their slices, then the one retrieval protocol
//! ([`protocol::measure`]) that `eval` applies to an index of the same archive.

use std::path::Path;

use rayon::prelude::*;

use super::protocol::{self, JudgedLesion, RetrievalFigures};
use crate::dataset::{Dataset, DlInfoReader, LesionRecord, Split};
use crate::embed::Embedder;
use crate::error::Result;
use crate::imaging::Patch;
use crate::index::{FlatIndex, VectorIndex};

/// Embeds the typed lesions of the archive at `dataset_dir` with `model` and measures
/// retrieval with the queries of `query_split`.
pub fn evaluate_model(
    model: &dyn Embedder,
    dataset_dir: &Path,
    query_split: Split,
) -> Result<RetrievalFigures> {
    let dataset = Dataset::new(dataset_dir);
    let records: Vec<LesionRecord> = DlInfoReader::open(&dataset.table_path())?
        .map(|row| row.map(|r| r.record))
        .collect::<Result<_>>()?;
    let lesions: Vec<Option<JudgedLesion>> = records
        .iter()
        .map(|r| Some(JudgedLesion::of_record(r)))
        .collect();
    let vectors = gallery_vectors(model, &dataset, &records, &lesions)?;
    protocol::measure(&lesions, &vectors, query_split)
}

/// One vector per table row, so that ids are rows as in an index built from the table.
/// Only the gallery is embedded (every query is in it); the other rows hold zeros that no
/// search reads.
fn gallery_vectors(
    model: &dyn Embedder,
    dataset: &Dataset,
    records: &[LesionRecord],
    lesions: &[Option<JudgedLesion>],
) -> Result<VectorIndex> {
    let judged: Vec<usize> = (0..records.len())
        .filter(|&i| lesions[i].is_some_and(|l| l.in_gallery()))
        .collect();
    let spec = &model.card().patch;
    let patches: Vec<Patch> = judged
        .par_iter()
        .map(|&i| dataset.lesion_patch(&records[i], spec))
        .collect::<Result<_>>()?;
    let dim = model.card().output_dim;
    let mut data = vec![0f32; records.len() * dim];
    let mut rows = judged.iter();
    for chunk in patches.chunks(64) {
        for (vector, &row) in model.embed(chunk)?.iter().zip(&mut rows) {
            data[row * dim..(row + 1) * dim].copy_from_slice(vector);
        }
    }
    Ok(VectorIndex::exact(FlatIndex::from_data(dim, data)))
}
