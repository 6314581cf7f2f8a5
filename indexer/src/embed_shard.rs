//! `lesion-indexer embed-shard`: one shard of an archive embedded into a file for `build --embeddings`.

use std::path::PathBuf;
use std::process::ExitCode;

use lesion_search::archive::{embed_shard, Shard};
use lesion_search::embed::{default_cache_dir, resolve_model};

use crate::progress::Progress;

#[derive(clap::Args)]
pub struct EmbedShardArgs {
    /// A DeepLesion-format archive.
    #[arg(long)]
    dataset: PathBuf,
    /// Which shard, `I/N` (0 <= I < N): the lesions of the patients that hash to I.
    #[arg(long)]
    shard: String,
    /// The shard file to write (whole, or not at all).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = crate::DEFAULT_MODEL)]
    model: String,
}

pub fn run(args: EmbedShardArgs) -> anyhow::Result<ExitCode> {
    let shard = Shard::parse(&args.shard)?;
    let model = resolve_model(&args.model, &default_cache_dir())?;
    let started = std::time::Instant::now();
    let embedding = Progress::new("embedding the shard's lesions");
    let summary = embed_shard(
        &args.dataset,
        shard,
        model.as_ref(),
        &args.out,
        &|done, total| embedding.update(done, total),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "shard {}/{}: {} lesions of {} patients in {:.1} s ({:.1} lesions/s) -> {}",
        shard.index,
        shard.count,
        summary.lesions,
        summary.patients,
        seconds,
        summary.lesions as f64 / seconds.max(1e-9),
        summary.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
