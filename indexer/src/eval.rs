//! `lesion-indexer eval`: retrieval quality, follow-up matching, text retrieval, recall of the
//! approximate index and latency, written as JSON, Markdown and SVG plots.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use lesion_search::backend::BackendChoice;
use lesion_search::dataset::{Split, FOLLOWUP_PAIRS_FILE};
use lesion_search::eval::plots::{grouped_bars, heat_map, latency_histograms};
use lesion_search::eval::text_benchmark::run_text_benchmark;
use lesion_search::eval::{
    default_text_queries, evaluate, markdown, read_pairs, EvalOptions, TextQuery,
};
use lesion_search::service::Index;

#[derive(clap::Args)]
pub struct Args {
    /// The DeepLesion-format archive the index was built from.
    #[arg(long)]
    dataset: PathBuf,
    #[arg(long)]
    index: PathBuf,
    /// The split whose lesions are the queries; the others are the database.
    #[arg(long, default_value = "test")]
    query_split: String,
    /// Same-lesion pairs across studies, DLT format (default: DATASET/followup_pairs.json
    /// when present, as `synth` writes it).
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// Text queries, one JSON object per line: {"text": ..., "relevant": [keys]} or
    /// {"text": ..., "types": [coarse types]} (default: a phrase or two per coarse type).
    #[arg(long)]
    text_queries: Option<PathBuf>,
    /// LesaNet's hand-labeled report phrases, for the text benchmark.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/lesanet/hand_labeled_test_set.json"))]
    lesanet_phrases: PathBuf,
    /// Image queries to time (embedding included).
    #[arg(long, default_value_t = 30)]
    image_queries: usize,
    /// Folder for report.json, report.md and the SVG plots.
    #[arg(long)]
    out: PathBuf,
}

fn read_text_queries(path: &PathBuf) -> anyhow::Result<Vec<TextQuery>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| anyhow!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let split = Split::parse(&args.query_split).ok_or_else(|| {
        anyhow!(
            "--query-split: `{}` is not train, validation or test",
            args.query_split
        )
    })?;
    let pairs_path = args
        .pairs
        .clone()
        .or_else(|| Some(args.dataset.join(FOLLOWUP_PAIRS_FILE)).filter(|p| p.is_file()));
    let pairs = match &pairs_path {
        Some(path) => read_pairs(path)?,
        None => Vec::new(),
    };
    let text_queries = match &args.text_queries {
        Some(path) => read_text_queries(path)?,
        None => default_text_queries(),
    };
    let engine = Index::open(&args.index, &BackendChoice::Embedded)?.engine();
    eprintln!("evaluating {} lesions", engine.live());
    let report = evaluate(
        &engine,
        &EvalOptions {
            query_split: split,
            pairs,
            text_queries,
            image_queries: args.image_queries,
        },
    )?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let work = tempfile::tempdir()?;
    let text_benchmark = if args.lesanet_phrases.is_file() {
        Some(run_text_benchmark(&args.lesanet_phrases, work.path())?)
    } else {
        eprintln!(
            "text benchmark skipped: {} not found",
            args.lesanet_phrases.display()
        );
        None
    };

    let write = |name: &str, body: String| -> anyhow::Result<()> {
        let path = args.out.join(name);
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))
    };
    write(
        "report.json",
        serde_json::to_string_pretty(&serde_json::json!({
            "retrieval": &report,
            "text_benchmark": &text_benchmark,
            "pairs": pairs_path.map(|p| p.display().to_string()),
        }))?,
    )?;
    let mut md = markdown(&report);
    if let Some(t) = &text_benchmark {
        md.push_str(&format!(
            "\n## Text benchmark (LesaNet hand-labeled phrases)\n\n{} phrases as the corpus; {} ontology terms, {} queries (each term and its synonyms); relevant: the phrases whose `expanded_terms` hold the term.\n\n| | nDCG@10 | recall@10 (of min(10, relevant)) | recall@100 |\n|---|---:|---:|---:|\n| with ontology expansion | {:.3} | {:.3} | {:.3} |\n| without | {:.3} | {:.3} | {:.3} |\n",
            t.phrases, t.terms, t.queries,
            t.with_expansion.ndcg_at_10, t.with_expansion.recall_at_10, t.with_expansion.recall_at_100,
            t.without_expansion.ndcg_at_10, t.without_expansion.recall_at_10, t.without_expansion.recall_at_100,
        ));
    }
    write("report.md", md)?;
    let groups: Vec<(String, Vec<f32>)> = report
        .per_type
        .iter()
        .map(|(t, f)| (t.name().to_string(), vec![f.p_at_1, f.p_at_5, f.p_at_10]))
        .collect();
    write(
        "p_at_k.svg",
        grouped_bars("P@K by coarse type", &groups, &["P@1", "P@5", "P@10"]),
    )?;
    let names: Vec<&str> = lesion_search::dataset::CoarseType::KNOWN
        .iter()
        .map(|t| t.name())
        .collect();
    write(
        "confusion.svg",
        heat_map(
            "k-NN type (top 5): rows true, columns predicted",
            &names,
            &report.confusion,
        ),
    )?;
    let kinds: Vec<(String, Vec<f64>)> = report
        .latency
        .iter()
        .map(|(k, l)| (k.clone(), l.samples.clone()))
        .collect();
    write(
        "latency.svg",
        latency_histograms("Latency per query kind (ms, log scale)", &kinds),
    )?;

    println!(
        "P@1 {:.3}  P@5 {:.3}  P@10 {:.3}  mAP@10 {:.3}  mMV@5 {:.3}  k-NN type {:.3}  recall@10 {:.3}",
        report.p_at_1, report.p_at_5, report.p_at_10, report.map_at_10, report.mmv_at_5, report.knn_type_accuracy, report.recall_at_10
    );
    if let Some(f) = &report.followups {
        println!(
            "follow-up accuracy@1 {:.3} ({} of {} pairs resolved)",
            f.accuracy_at_1, f.resolved, f.pairs
        );
    }
    if let Some(t) = &report.text {
        println!("text nDCG@10 {:.3}  P@10 {:.3}", t.ndcg_at_10, t.p_at_10);
    }
    if let Some(t) = &text_benchmark {
        println!(
            "LesaNet text benchmark nDCG@10 {:.3} with ontology expansion, {:.3} without",
            t.with_expansion.ndcg_at_10, t.without_expansion.ndcg_at_10
        );
    }
    println!("report in {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
