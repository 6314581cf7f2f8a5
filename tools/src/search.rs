//! `lesion-bench search`: in-process latency of text, by-lesion and image queries on
//! a built index (one thread, the full request: filters, fusion, facets, suggestion).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use lesion_search::search::{Engine, ImageQuery, SearchRequest, SearchResponse};
use lesion_search::service::Index;
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    index: PathBuf,
    #[command(flatten)]
    backend: crate::backend_args::BackendArgs,
    /// Queries per kind (image queries: a fifth of this).
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    #[arg(long, default_value_t = 20)]
    k: usize,
    #[arg(long)]
    json: bool,
}

/// Phrases a researcher types, in the words of the reports.
const PHRASES: [&str; 10] = [
    "lung nodule",
    "enlarged mediastinal lymph node",
    "hypodense liver lesion",
    "renal cyst",
    "lytic bone lesion",
    "pelvic mass",
    "soft tissue nodule",
    "adrenal nodule",
    "spiculated mass right upper lobe",
    "retroperitoneal lymphadenopathy",
];

#[derive(Serialize)]
struct KindReport {
    kind: &'static str,
    queries: usize,
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
    queries_per_second: f64,
    /// Image queries: median embedding time (patch cut and model).
    embed_p50_ms: Option<f64>,
    /// Mean time in the text index (ranking and snippets) and in the vector index.
    text_mean_ms: f64,
    vector_mean_ms: f64,
}

/// The value at quantile `q` of sorted `values`.
fn quantile(values: &[f64], q: f64) -> f64 {
    values[((values.len() - 1) as f64 * q).round() as usize]
}

/// The figures of one kind from its latencies, its embedding times and the stage times the
/// timer summed since the last kind.
fn report(
    kind: &'static str,
    mut latencies: Vec<f64>,
    mut embed: Vec<f64>,
    timer: &Timer,
) -> KindReport {
    let (text, vector, n) = timer.stages.replace((0.0, 0.0, 0));
    let n = n.max(1) as f64;
    latencies.sort_by(f64::total_cmp);
    embed.sort_by(f64::total_cmp);
    let pick = quantile;
    let total: f64 = latencies.iter().sum();
    KindReport {
        kind,
        queries: latencies.len(),
        p50_ms: pick(&latencies, 0.5),
        p99_ms: pick(&latencies, 0.99),
        mean_ms: total / latencies.len() as f64,
        queries_per_second: latencies.len() as f64 / (total / 1e3),
        embed_p50_ms: (!embed.is_empty()).then(|| pick(&embed, 0.5)),
        text_mean_ms: text / n,
        vector_mean_ms: vector / n,
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let engine = Index::open(&args.index, &args.backend.choice()?)?.engine();
    let live: Vec<u32> = (0..engine.capacity() as u32)
        .filter(|&id| engine.facts(id).is_some())
        .collect();
    anyhow::ensure!(!live.is_empty(), "the index holds no lesions");
    let (kinds, phrases) = measure(&engine, &live, &args)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "index": args.index.display().to_string(),
                "lesions": live.len(),
                "graph": engine.vectors().is_some_and(|v| v.graph().is_some()),
                "backend": engine.backend(),
                "k": args.k,
                "kinds": kinds,
                "text_phrases": phrases,
            }))?
        );
    } else {
        println!(
            "{} lesions ({} backend: {}), k {}, one thread",
            live.len(),
            engine.backend().name,
            engine.backend().vectors,
            args.k
        );
        print_table(&kinds);
        print_phrases(&phrases);
    }
    Ok(ExitCode::SUCCESS)
}

/// Times full requests on one engine, summing the time they spent in the text and the
/// vector stage.
struct Timer<'a> {
    engine: &'a Engine,
    /// Text ms, vector ms and requests since the last kind's report.
    stages: std::cell::RefCell<(f64, f64, usize)>,
}

impl Timer<'_> {
    /// The request's latency and its embedding time, in ms.
    fn time(&self, request: &SearchRequest) -> anyhow::Result<(f64, f64)> {
        let (ms, response) = self.answer(request)?;
        Ok((ms, response.timings.embed_ms))
    }

    /// The request's latency in ms, and its answer.
    fn answer(&self, request: &SearchRequest) -> anyhow::Result<(f64, SearchResponse)> {
        let t = Instant::now();
        let response = self.engine.search(request)?;
        let mut s = self.stages.borrow_mut();
        s.0 += response.timings.text_ms;
        s.1 += response.timings.vector_ms;
        s.2 += 1;
        Ok((t.elapsed().as_secs_f64() * 1e3, response))
    }

    /// `count` requests of one kind, one after the other.
    fn kind(
        &self,
        kind: &'static str,
        count: usize,
        request_of: impl Fn(usize) -> SearchRequest,
    ) -> anyhow::Result<KindReport> {
        let mut latencies = Vec::new();
        for i in 0..count {
            latencies.push(self.time(&request_of(i))?.0);
        }
        Ok(report(kind, latencies, Vec::new(), self))
    }
}

/// Text, by-lesion, both, and image queries (a fifth as many, at least 10), after a
/// warm-up, on lesions picked evenly across the live ones.
fn measure(
    engine: &Engine,
    live: &[u32],
    args: &Args,
) -> anyhow::Result<(Vec<KindReport>, Vec<PhraseReport>)> {
    let pick = |i: usize| live[(i as u64 * 2_654_435_761 % live.len() as u64) as usize];
    let phrase = |i: usize| Some(PHRASES[i % PHRASES.len()].to_string());
    let timer = Timer {
        engine,
        stages: std::cell::RefCell::new((0.0, 0.0, 0)),
    };
    let base = SearchRequest {
        k: args.k,
        ..Default::default()
    };
    let by_lesion = |i: usize| SearchRequest {
        lesion: Some(pick(i)),
        ..base.clone()
    };
    // Warm caches (and lazily built thread-locals) before measuring.
    for i in 0..20 {
        timer.time(&by_lesion(i))?;
    }
    // Text queries by phrase, in turn, so none is answered from the recent-query cache.
    let mut latencies = Vec::new();
    let mut by_phrase: Vec<(Vec<f64>, usize)> = vec![(Vec::new(), 0); PHRASES.len()];
    for i in 0..args.queries {
        let (ms, response) = timer.answer(&SearchRequest {
            text: phrase(i),
            ..base.clone()
        })?;
        latencies.push(ms);
        let bucket = &mut by_phrase[i % PHRASES.len()];
        bucket.0.push(ms);
        bucket.1 = response.text_matches.unwrap_or(0);
    }
    let mut kinds = vec![report("text", latencies, Vec::new(), &timer)];
    let phrases = PHRASES
        .iter()
        .zip(by_phrase)
        .map(|(phrase, (mut ms, matches))| {
            ms.sort_by(f64::total_cmp);
            PhraseReport {
                phrase,
                matches,
                p50_ms: quantile(&ms, 0.5),
                p99_ms: quantile(&ms, 0.99),
            }
        })
        .collect();
    kinds.push(timer.kind("lesion", args.queries, by_lesion)?);
    kinds.push(timer.kind("text+lesion", args.queries, |i| SearchRequest {
        text: phrase(i),
        lesion: Some(pick(i)),
        ..base.clone()
    })?);

    let mut latencies = Vec::new();
    let mut embed = Vec::new();
    for i in 0..(args.queries / 5).max(10) {
        let lesion = engine.lesion(pick(i))?.expect("live");
        let image = engine.key_slice(&lesion)?;
        let request = SearchRequest {
            image: Some(ImageQuery {
                image,
                bbox: lesion.record.bbox,
                spacing_mm: Some(lesion.record.spacing.x_mm),
            }),
            ..base.clone()
        };
        let (total, embedding) = timer.time(&request)?;
        latencies.push(total);
        embed.push(embedding);
    }
    kinds.push(report("image", latencies, embed, &timer));
    Ok((kinds, phrases))
}

/// One text phrase's latencies (uncached) and how many lesions it matches.
#[derive(Serialize)]
struct PhraseReport {
    phrase: &'static str,
    matches: usize,
    p50_ms: f64,
    p99_ms: f64,
}

fn print_phrases(phrases: &[PhraseReport]) {
    println!(
        "\n{:<34} {:>8} {:>9} {:>9}",
        "text phrase", "matches", "p50 ms", "p99 ms"
    );
    for p in phrases {
        println!(
            "{:<34} {:>8} {:>9.2} {:>9.2}",
            p.phrase, p.matches, p.p50_ms, p.p99_ms
        );
    }
}

fn print_table(kinds: &[KindReport]) {
    println!(
        "{:<12} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9}",
        "kind",
        "queries",
        "p50 ms",
        "p99 ms",
        "mean ms",
        "q/s",
        "embed p50",
        "text ms",
        "vector ms"
    );
    for k in kinds {
        println!(
            "{:<12} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.0} {:>10} {:>9.2} {:>9.2}",
            k.kind,
            k.queries,
            k.p50_ms,
            k.p99_ms,
            k.mean_ms,
            k.queries_per_second,
            k.embed_p50_ms
                .map(|e| format!("{e:.2}"))
                .unwrap_or_default(),
            k.text_mean_ms,
            k.vector_mean_ms
        );
    }
}
