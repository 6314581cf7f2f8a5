//! `lesion-indexer verify`: records, vectors, text (and the backend) of an index agree.

use lesion_search::index::{GraphOutcome, RECALL_TARGET};
use std::path::PathBuf;
use std::process::ExitCode;

use lesion_search::archive::Archive;
use lesion_search::service::verify_backend;

use crate::backend_args::BackendArgs;

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[arg(long)]
    index: PathBuf,
    #[command(flatten)]
    backend: BackendArgs,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let archive = Archive::open(&args.index)?;
    let mut problems = archive.verify()?;
    let choice = args.backend.choice()?;
    if choice != lesion_search::backend::BackendChoice::Embedded {
        let (backend, outside) = verify_backend(&args.index, &choice)?;
        println!(
            "{}: {} against the records: {}",
            backend.name,
            backend.vectors,
            if outside.is_empty() {
                "same lesions, keys and vectors".to_string()
            } else {
                format!("{} problems", outside.len())
            }
        );
        problems.extend(
            outside
                .into_iter()
                .map(|p| format!("{}: {p}", backend.name)),
        );
    }
    for p in &problems {
        println!("error: {}: {p}", archive.dir.display());
    }
    match archive.vectors.connectivity() {
        Some(c) => println!(
            "graph: {} of {} nodes reachable from the entry point ({:.2}%), {} without in-links, ef {}, built by {}",
            c.reachable,
            c.nodes,
            100.0 * c.reachable_fraction(),
            c.without_in_links,
            archive.vectors.ef(),
            archive.manifest.graph_builder
        ),
        None => println!(
            "vectors: searched exactly (no graph; one would be built by {})",
            archive.manifest.graph_builder
        ),
    }
    if let (Some(card), Some(reports)) = (&archive.manifest.text_encoder, &archive.report_vectors) {
        println!(
            "report vectors: {} of {} lesions live ({} dimensions, text encoder {})",
            reports.live(),
            reports.len(),
            card.dim,
            card.name
        );
    }
    match archive.vectors.outcome() {
        GraphOutcome::Met => {}
        GraphOutcome::Enlarged { m, ef_construction } => println!(
            "graph: rebuilt with M {m}, ef_construction {ef_construction} to reach recall@10 {RECALL_TARGET}"
        ),
        GraphOutcome::Exact { recall_at_10 } => println!(
            "warning: the graph reached recall@10 {recall_at_10:.3} < {RECALL_TARGET} even enlarged; \
             every query is answered by the exact scan"
        ),
    }
    println!(
        "{}: generation {}, {} lesions, model {}: {}",
        args.index.display(),
        archive.manifest.generation,
        archive.manifest.lesions,
        archive.manifest.model.name,
        if problems.is_empty() {
            "records, vectors and text agree".to_string()
        } else {
            format!("{} problems", problems.len())
        }
    );
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
