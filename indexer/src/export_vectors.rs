//! `lesion-indexer export-vectors`: an index's vectors as TEXMEX `.fvecs`.

use std::path::PathBuf;
use std::process::ExitCode;

use lesion_search::archive::Archive;

#[derive(clap::Args)]
pub struct ExportVectorsArgs {
    #[arg(long)]
    index: PathBuf,
    /// Where to write the live lesions' embeddings, in id order (TEXMEX `.fvecs`).
    #[arg(long)]
    out: PathBuf,
}

/// Dumps an index's vectors so that real model outputs become vector-bench sets.
pub fn run(args: ExportVectorsArgs) -> anyhow::Result<ExitCode> {
    let archive = Archive::open(&args.index)?;
    let vectors = &archive.vectors;
    let dim = vectors.dim();
    let values: Vec<f32> = (0..vectors.len() as u32)
        .filter(|&id| !vectors.is_deleted(id))
        .flat_map(|id| vectors.vector(id).iter().copied())
        .collect();
    let set = lesion_search::index::VectorSet { dim, values };
    lesion_search::index::write_fvecs(&args.out, &set)?;
    println!(
        "{}: {} vectors x {dim} ({}) from {}",
        args.out.display(),
        set.rows(),
        archive.manifest.model.name,
        args.index.display()
    );
    Ok(ExitCode::SUCCESS)
}
