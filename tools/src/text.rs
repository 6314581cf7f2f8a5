//! `lesion-bench text`: the text benchmark on LesaNet's hand-labelled report phrases, with
//! each query feature on and off (and semantic retrieval with `--semantic`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args as ClapArgs;
use lesion_search::embed::{default_cache_dir, load_minilm};
use lesion_search::eval::text_benchmark::{run_text_benchmark, Encode};

#[derive(ClapArgs)]
pub struct Args {
    /// LesaNet's hand-labelled report phrases.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/lesanet/hand_labeled_test_set.json"))]
    phrases: PathBuf,
    /// Folder for text-benchmark.json and text-benchmark.md.
    #[arg(long)]
    out: PathBuf,
    /// Measure semantic retrieval too, with all-MiniLM-L6-v2 (`lesion-indexer weights
    /// import minilm` first).
    #[arg(long)]
    semantic: bool,
    /// Model cache folder (default: the one `weights import` writes).
    #[arg(long)]
    cache: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let work = tempfile::tempdir()?;
    let encoder = if args.semantic {
        let cache = args.cache.clone().unwrap_or_else(default_cache_dir);
        Some(load_minilm(&cache)?)
    } else {
        None
    };
    let encode = |texts: &[&str]| encoder.as_ref().expect("semantic asked").encode(texts);
    let benchmark = run_text_benchmark(
        &args.phrases,
        work.path(),
        encoder.as_ref().map(|_| &encode as Encode<'_>),
    )?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json = args.out.join("text-benchmark.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&benchmark)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let markdown = benchmark.markdown();
    let md = args.out.join("text-benchmark.md");
    std::fs::write(&md, &markdown).with_context(|| format!("writing {}", md.display()))?;
    println!("{markdown}");
    Ok(ExitCode::SUCCESS)
}
