//! `fit-followup`, `eval-followup` and `eval-outlook`: the same-lesion matcher fitted and
//! measured on real pairs against a `DL_info.csv` table, and the outlook of similar lesions
//! measured leave-patient-out.

mod eval_followup;
mod eval_outlook;
mod fit_followup;

pub use eval_followup::{run as eval, EvalArgs};
pub use eval_outlook::{run as outlook, OutlookArgs};
pub use fit_followup::{run as fit, FitArgs};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use lesion_search::dataset::{Dataset, DlInfoReader};
use lesion_search::embed::{default_cache_dir, resolve_model};
use lesion_search::eval::read_pairs;
use lesion_search::followup::LesionTable;

#[derive(clap::Args)]
pub struct Inputs {
    /// Same-lesion pairs, DLT format (`valid.json` of the DLT benchmark).
    #[arg(long)]
    pairs: PathBuf,
    /// A DeepLesion `DL_info.csv` holding both ends of the pairs and their studies' lesions.
    #[arg(long)]
    table: PathBuf,
    /// DeepLesion-format folder with `Images_png/`: lesions whose key slice is there are
    /// compared by appearance too.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Model for appearance (name or folder), used with --dataset.
    #[arg(long, default_value = crate::DEFAULT_MODEL)]
    model: String,
}

pub struct Loaded {
    pub table: LesionTable,
    pub pairs: Vec<lesion_search::eval::FollowUpPair>,
    pub vectors: HashMap<usize, Vec<f32>>,
}

pub fn load(inputs: &Inputs) -> anyhow::Result<Loaded> {
    let pairs = read_pairs(&inputs.pairs)?;
    let mut records = Vec::new();
    for row in DlInfoReader::open(&inputs.table)? {
        records.push(row?.record);
    }
    let table = LesionTable::new(records);
    let vectors = match &inputs.dataset {
        Some(dir) => {
            let embedder = resolve_model(&inputs.model, &default_cache_dir())
                .with_context(|| format!("loading model {}", inputs.model))?;
            let (resolved, _) = lesion_search::followup::table::resolve_pairs(&table, &pairs);
            let mut rows: Vec<usize> = Vec::new();
            for p in &resolved {
                rows.push(p.source);
                rows.extend(table.candidates(p.source, table.records[p.target].study));
            }
            rows.sort_unstable();
            rows.dedup();
            lesion_search::followup::table::embed_present(
                &table,
                &rows,
                &Dataset::new(dir),
                embedder.as_ref(),
            )?
        }
        None => HashMap::new(),
    };
    Ok(Loaded {
        table,
        pairs,
        vectors,
    })
}

/// Writes beside the file and renames, so an interrupted run leaves the old file whole.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)
}

pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
