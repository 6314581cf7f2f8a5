//! `lesion-indexer build`: a DeepLesion-format archive becomes a new generation of an index.

use std::path::PathBuf;
use std::process::ExitCode;

use lesion_search::archive::{BuildEvent, BuildOptions};
use lesion_search::index::GraphParams;
use lesion_search::service::{model_named, text_encoder_named, Writer};

use crate::backend_args::{print_mirror, BackendArgs};
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
    /// Take the embeddings from these shard files (`embed-shard`, one per shard, all of
    /// them) instead of embedding here.
    #[arg(long, num_args = 1..)]
    embeddings: Vec<PathBuf>,
    /// What builds the HNSW graph: `native` (our insertion, 3.6 to 3.9 times faster to build)
    /// or `hnsw-rs` (the hnsw_rs crate's, refined on layer 0). The manifest records it, and
    /// adds and deletes rebuild the graph with it.
    #[arg(long, default_value = "native", value_parser = ["native", "hnsw-rs"])]
    graph_builder: String,
    /// Embed each lesion's report with this sentence encoder too, for semantic retrieval
    /// (`query --semantic`, `"semantic": true`): `minilm` is all-MiniLM-L6-v2, imported by
    /// `lesion-indexer weights import minilm`. The manifest records it, and adds embed new
    /// reports with it. `none`: no report vectors (BM25 alone, as before).
    #[arg(long, default_value = "none", value_parser = ["none", "minilm"])]
    text_encoder: String,
    #[command(flatten)]
    backend: BackendArgs,
}

pub fn run(args: BuildArgs) -> anyhow::Result<ExitCode> {
    // A wrong backend setting, an unknown model or a held lock fails before the slow
    // embedding (and before the index folder is created).
    let backend = args.backend.choice()?;
    let model = model_named(&args.model)?;
    // Loaded before the folder is created: a missing import fails at once.
    let text_encoder = match args.text_encoder.as_str() {
        "none" => None,
        name => Some(text_encoder_named(name)?),
    };
    let mut writer = Writer::create(&args.index, &backend)?;
    if let Some(encoder) = &text_encoder {
        writer = writer.with_text_encoder(encoder.clone());
    }
    let options = BuildOptions {
        dataset: args.dataset,
        reports: args.reports,
        model: model.as_ref(),
        graph: GraphParams {
            builder: args.graph_builder.parse()?,
            ..GraphParams::default()
        },
        labels: args.labels,
    };
    let embedding = Progress::new("embedding lesions");
    let reports = Progress::new("embedding reports");
    let progress = |event| match event {
        BuildEvent::Embedding { done, total } => embedding.update(done, total),
        BuildEvent::EmbeddingReports { done, total } => reports.update(done, total),
        BuildEvent::Writing => eprintln!("writing records, vectors and text"),
    };
    let written = writer.build(&options, &args.embeddings, &progress)?;
    let summary = &written.summary;
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
    if let Some(encoder) = &text_encoder {
        println!(
            "report vectors: {} ({} dimensions) for semantic retrieval",
            encoder.card().name,
            encoder.dim()
        );
    }
    print_mirror(written.mirror.as_ref());
    Ok(ExitCode::SUCCESS)
}
