//! Training `lesion-cnn` and heads: metric learning from an archive's labels ([`train`],
//! in `metric`) and label-free distillation of a `ct-resnet` trunk ([`distill`], also
//! reachable as `embed::distill`).
//!
//! Both run the one loop of `schedule` (seeded shuffles, batches, AdamW under a cosine
//! learning-rate decay, per-epoch held-out measures) over augmented views drawn by `views`,
//! from parameters that `params` seeds and publishes. Everything random draws from the
//! seed through its own stream, so a run is reproducible: the same seed gives the same
//! weights, byte for byte.

pub mod distill;
mod metric;
mod params;
mod schedule;
mod views;

use std::io::Write;
use std::path::Path;

use serde::Serialize;

pub use metric::{
    evaluate, evaluate_on_dataset, precision_at_5, train, Encoder, EpochStats, TrainEvent,
    TrainOptions, TrainReport,
};

use super::card::ResnetStage;
use super::{CtResnetEmbedder, Embedder};
use crate::dataset::{Dataset, DlInfoReader, LesionRecord};
use crate::error::{Error, Result};
use crate::imaging::{FieldOfView, Patch, PatchSpec};

/// The patch `lesion-cnn` reads: the key slice under soft-tissue, lung and bone windows, a
/// field of view three times the lesion (48 to 192 mm), 64x64 px.
pub fn lesion_cnn_patch_spec() -> PatchSpec {
    PatchSpec::three_windows(
        64,
        FieldOfView::Context {
            margin: 1.0,
            min_mm: 48.0,
            max_mm: 192.0,
        },
    )
}

fn load_records(dataset: &Dataset) -> Result<Vec<LesionRecord>> {
    DlInfoReader::open(&dataset.table_path())?
        .map(|r| r.map(|row| row.record))
        .collect()
}

/// An imported `ct-resnet` trunk from the cache; its absence is blamed on `argument`.
fn load_ct_resnet(cache: &Path, stage: ResnetStage, argument: &str) -> Result<CtResnetEmbedder> {
    let name = super::ct_resnet_model_name(stage);
    let dir = cache.join(name);
    let card = super::read_card(&dir).map_err(|_| {
        Error::invalid_argument(
            argument,
            format!(
                "{name} is not in {}; run `lesion-indexer weights import` first",
                cache.display()
            ),
        )
    })?;
    CtResnetEmbedder::load(&dir, card)
}

/// The embedder's vectors of `patches`, `batch` patches at a time.
fn embed_in_batches(
    embedder: &dyn Embedder,
    patches: &[Patch],
    batch: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut vectors = Vec::with_capacity(patches.len());
    for chunk in patches.chunks(batch) {
        vectors.extend(embedder.embed(chunk)?);
    }
    Ok(vectors)
}

/// Writes `<stem>.json` and `<stem>.md` into `dir`, each by rename.
fn write_report_files(
    dir: &Path,
    stem: &str,
    report: &impl Serialize,
    markdown: &str,
) -> Result<()> {
    let json = dir.join(format!("{stem}.json"));
    crate::fsutil::write_atomically(&json, |w| {
        w.write_all(
            serde_json::to_string_pretty(report)
                .unwrap_or_default()
                .as_bytes(),
        )
    })?;
    let path = dir.join(format!("{stem}.md"));
    crate::fsutil::write_atomically(&path, |w| w.write_all(markdown.as_bytes()))
}
