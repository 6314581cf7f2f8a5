use lesion_search::index::{GraphOutcome, RECALL_TARGET};
use std::path::PathBuf;
use std::process::ExitCode;

use lesion_search::archive::{
    add, build, delete, AddOptions, Archive, BuildEvent, BuildOptions, ChangeSummary,
};
use lesion_search::embed::{default_cache_dir, resolve_model};
use lesion_search::index::GraphParams;

use crate::progress::Progress;

#[derive(clap::Args)]
pub struct BuildArgs {
    /// A DeepLesion-format archive.
    #[arg(long)]
    dataset: PathBuf,
    /// The index folder (created if absent; a new generation is published in it).
    #[arg(long)]
    index: PathBuf,
    #[arg(long, default_value = crate::DEFAULT_MODEL)]
    model: String,
    /// Report sentences (default: DATASET/reports.jsonl when present).
    #[arg(long)]
    reports: Option<PathBuf>,
    /// LesaNet text-mined labels (text_mined_labels_171_and_split.json), keyed by row of the
    /// full DL_info.csv.
    #[arg(long)]
    labels: Option<PathBuf>,
}

pub fn run_build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let model = resolve_model(&args.model, &default_cache_dir())?;
    let options = BuildOptions {
        dataset: args.dataset,
        reports: args.reports,
        model: model.as_ref(),
        graph: GraphParams::default(),
        labels: args.labels,
    };
    let embedding = Progress::new("embedding lesions");
    let summary = build(&args.index, &options, &|event| match event {
        BuildEvent::Embedding { done, total } => embedding.update(done, total),
        BuildEvent::Writing => eprintln!("writing records, vectors and text"),
    })?;
    println!(
        "generation {} of {} published: {} lesions ({} embeddings resumed), {}",
        summary.generation,
        args.index.display(),
        summary.lesions,
        summary.resumed_embeddings,
        if summary.has_graph {
            format!(
                "HNSW graph with ef {} (self-recall {:.3})",
                summary.ef, summary.self_recall
            )
        } else {
            "exact vector search".to_string()
        }
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[arg(long)]
    index: PathBuf,
}

pub fn run_verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let archive = Archive::open(&args.index)?;
    let problems = archive.verify()?;
    for p in &problems {
        println!("error: {}: {p}", archive.dir.display());
    }
    match archive.vectors.graph.as_ref().map(|g| g.connectivity()) {
        Some(c) => println!(
            "graph: {} of {} nodes reachable from the entry point ({:.2}%), {} without in-links, ef {}",
            c.reachable,
            c.nodes,
            100.0 * c.reachable_fraction(),
            c.without_in_links,
            archive.vectors.ef
        ),
        None => println!("vectors: searched exactly (no graph)"),
    }
    match archive.vectors.outcome {
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

#[derive(clap::Args)]
pub struct AddArgs {
    /// The index folder (a new generation is published in it).
    #[arg(long)]
    index: PathBuf,
    /// A DeepLesion-format folder holding the new lesions (DL_info.csv, Images_png/).
    #[arg(long)]
    dataset: PathBuf,
    /// Report sentences (default: DATASET/reports.jsonl when present).
    #[arg(long)]
    reports: Option<PathBuf>,
    /// Default: the model that built the index (another one is refused).
    #[arg(long)]
    model: Option<String>,
}

pub fn run_add(args: AddArgs) -> anyhow::Result<ExitCode> {
    let name = match args.model {
        Some(name) => name,
        None => Archive::current_manifest(&args.index)?.model.name,
    };
    let model = resolve_model(&name, &default_cache_dir())?;
    let options = AddOptions {
        dataset: args.dataset,
        reports: args.reports,
        model: model.as_ref(),
        graph: GraphParams::default(),
    };
    let embedding = Progress::new("embedding lesions");
    let summary = add(&args.index, &options, &|event| match event {
        BuildEvent::Embedding { done, total } => embedding.update(done, total),
        BuildEvent::Writing => eprintln!("writing records, vectors and text"),
    })?;
    print_change("added", &args.index, &summary);
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// The index folder (a new generation is published in it).
    #[arg(long)]
    index: PathBuf,
    /// Lesion keys: the `File_name`, with `#n` for the n-th lesion of a slice (from 2).
    #[arg(required = true)]
    keys: Vec<String>,
}

pub fn run_delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let summary = delete(&args.index, &args.keys, GraphParams::default())?;
    print_change("deleted", &args.index, &summary);
    Ok(ExitCode::SUCCESS)
}

fn print_change(verb: &str, index: &std::path::Path, summary: &ChangeSummary) {
    for (id, key) in &summary.changed {
        println!("{verb} {key} (id {id})");
    }
    println!(
        "generation {} of {} published: {} lesions searchable{}",
        summary.generation,
        index.display(),
        summary.live,
        if summary.graph_rebuilt {
            format!(
                "; HNSW graph rebuilt (ef {}, self-recall {:.3})",
                summary.ef, summary.self_recall
            )
        } else {
            String::new()
        }
    );
}

#[derive(clap::Args)]
pub struct ExportVectorsArgs {
    #[arg(long)]
    index: PathBuf,
    /// Where to write the live lesions' embeddings, in id order (TEXMEX `.fvecs`).
    #[arg(long)]
    out: PathBuf,
}

/// Dumps an index's vectors so that real model outputs become vector-bench sets.
pub fn run_export_vectors(args: ExportVectorsArgs) -> anyhow::Result<ExitCode> {
    let archive = Archive::open(&args.index)?;
    let vectors = &archive.vectors;
    let dim = vectors.flat.dim();
    let values: Vec<f32> = (0..vectors.len() as u32)
        .filter(|&id| !vectors.tombstones.contains(id))
        .flat_map(|id| vectors.flat.vector(id).iter().copied())
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
