//! `lesion-indexer eval`: retrieval quality, follow-up matching, text retrieval, recall of the
//! approximate index and latency, written as JSON, Markdown and SVG plots.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use lesion_search::backend::BackendChoice;
use lesion_search::dataset::{CoarseType, Split, FOLLOWUP_PAIRS_FILE};
use lesion_search::eval::plots::{grouped_bars, heat_map, latency_histograms};
use lesion_search::eval::text_benchmark::{run_text_benchmark, TextBenchmark};
use lesion_search::eval::{
    default_text_queries, evaluate, markdown, read_pairs, EvalOptions, EvalReport, TextQuery,
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

/// `--query-split` read as a split, refused with the flag named.
pub(crate) fn parse_query_split(name: &str) -> anyhow::Result<Split> {
    Split::parse(name)
        .ok_or_else(|| anyhow!("--query-split: `{name}` is not train, validation or test"))
}

/// What the evaluation is asked, and where its pairs came from (for the report).
struct Inputs {
    options: EvalOptions,
    pairs_path: Option<PathBuf>,
}

fn read_inputs(args: &Args) -> anyhow::Result<Inputs> {
    let query_split = parse_query_split(&args.query_split)?;
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
    Ok(Inputs {
        options: EvalOptions {
            query_split,
            pairs,
            text_queries,
            image_queries: args.image_queries,
        },
        pairs_path,
    })
}

fn measure_index(index: &Path, options: &EvalOptions) -> anyhow::Result<EvalReport> {
    let engine = Index::open(index, &BackendChoice::Embedded)?.engine();
    eprintln!("evaluating {} lesions", engine.live());
    Ok(evaluate(&engine, options)?)
}

/// The LesaNet phrase benchmark, or `None` (said on stderr) where its phrases are absent.
fn measure_text_benchmark(phrases: &Path) -> anyhow::Result<Option<TextBenchmark>> {
    let work = tempfile::tempdir()?;
    if phrases.is_file() {
        Ok(Some(run_text_benchmark(phrases, work.path(), None)?))
    } else {
        eprintln!("text benchmark skipped: {} not found", phrases.display());
        Ok(None)
    }
}

/// Inputs read, the index measured, then `--out` created and the reports written.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let inputs = read_inputs(&args)?;
    let report = measure_index(&args.index, &inputs.options)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let benchmark = measure_text_benchmark(&args.lesanet_phrases)?;
    let text_benchmark = benchmark.as_ref();
    let reports = ReportFolder(&args.out);
    reports.write_json(&report, text_benchmark, inputs.pairs_path.as_deref())?;
    reports.write_markdown(&report, text_benchmark)?;
    reports.write_plots(&report)?;
    print_summary(&report, text_benchmark, &args.out);
    Ok(ExitCode::SUCCESS)
}

/// The folder of `--out`, where each report file is written whole.
struct ReportFolder<'a>(&'a Path);

impl ReportFolder<'_> {
    fn write(&self, name: &str, body: String) -> anyhow::Result<()> {
        let path = self.0.join(name);
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))
    }

    fn write_json(
        &self,
        report: &EvalReport,
        text_benchmark: Option<&TextBenchmark>,
        pairs_path: Option<&Path>,
    ) -> anyhow::Result<()> {
        self.write(
            "report.json",
            serde_json::to_string_pretty(&serde_json::json!({
                "retrieval": report,
                "text_benchmark": text_benchmark,
                "pairs": pairs_path.map(|p| p.display().to_string()),
            }))?,
        )
    }

    /// `markdown`'s report (its first line the protocol), then the text benchmark's table.
    fn write_markdown(
        &self,
        report: &EvalReport,
        text_benchmark: Option<&TextBenchmark>,
    ) -> anyhow::Result<()> {
        let mut md = markdown(report);
        if let Some(t) = text_benchmark {
            md.push_str(&text_benchmark_markdown(t));
        }
        self.write("report.md", md)
    }

    fn write_plots(&self, report: &EvalReport) -> anyhow::Result<()> {
        let groups: Vec<(String, Vec<f32>)> = report
            .per_type
            .iter()
            .map(|(t, f)| (t.name().to_string(), vec![f.p_at_1, f.p_at_5, f.p_at_10]))
            .collect();
        self.write(
            "p_at_k.svg",
            grouped_bars("P@K by coarse type", &groups, &["P@1", "P@5", "P@10"]),
        )?;
        let names: Vec<&str> = CoarseType::KNOWN.iter().map(|t| t.name()).collect();
        self.write(
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
        self.write(
            "latency.svg",
            latency_histograms("Latency per query kind (ms, log scale)", &kinds),
        )
    }
}

fn text_benchmark_markdown(t: &TextBenchmark) -> String {
    t.markdown()
}

fn print_summary(report: &EvalReport, text_benchmark: Option<&TextBenchmark>, out: &Path) {
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
    if let Some(t) = text_benchmark {
        if let Some(all) = t.variants.first() {
            println!(
                "LesaNet text benchmark, {} judged queries: nDCG@10 {:.3}, recall@50 {:.3} ({})",
                t.judged_queries, all.overall.ndcg_at_10, all.overall.recall_at_50, all.variant
            );
        }
    }
    println!("report in {}", out.display());
}
