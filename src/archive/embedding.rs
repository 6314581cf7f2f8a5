//! Lesions embedded for a generation: patches cut and embedded batch by batch, each batch
//! appended to a staging file so that a killed build resumes, and each lesion's thumbnail.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::BuildEvent;
use crate::dataset::{Dataset, LesionRecord};
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::imaging::{extract_patch, render_thumbnail, ThumbnailSpec};

/// Embeddings and thumbnails of a list of lesions.
pub(super) struct Embedded {
    pub(super) vectors: Vec<f32>,
    /// `None` for lesions whose embedding was resumed from the staging file.
    pub(super) thumbnails: Vec<Option<Vec<u8>>>,
    pub(super) resumed: usize,
    /// The staging file; removed once the generation is published.
    pub(super) cache: PathBuf,
}

const THUMBNAIL: ThumbnailSpec = ThumbnailSpec {
    size_px: 128,
    around_box_mm: Some(80.0),
    draw_box: true,
};

/// The stored thumbnail of a lesion: its key slice around the box, in its own window.
pub(super) fn thumbnail_of(
    key_slice: &crate::imaging::CtImage,
    record: &LesionRecord,
) -> Result<Vec<u8>> {
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
pub(super) fn embed_batch(
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
pub(super) fn embed_lesions(
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
