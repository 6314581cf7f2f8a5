//! `lesion-bench vectors`: the vector index alone (flat scan, graph walk and the planned
//! path, unfiltered and with 10% and 1% filters, then a recall/speed sweep along `ef`) on
//! generated vectors or on a TEXMEX / `.npy` set.

use std::process::ExitCode;
use std::time::Instant;

use lesion_search::index::{
    clustered_unit_vectors, load_vector_index, read_ivecs, read_vectors, save_vector_index,
    Calibration, Connectivity, FlatIndex, GraphBuilder, GraphParams, IdSet, Plan, Scored,
    VectorIndex,
};
use lesion_search::synth::Rng;
use serde_json::json;

#[derive(Clone, Copy, clap::ValueEnum)]
enum Builder {
    Native,
    HnswRs,
}

impl From<Builder> for GraphBuilder {
    fn from(builder: Builder) -> Self {
        match builder {
            Builder::Native => GraphBuilder::Native,
            Builder::HnswRs => GraphBuilder::HnswRs,
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Vectors in the index.
    #[arg(long, default_value_t = 100_000)]
    vectors: usize,
    #[arg(long, default_value_t = 256)]
    dim: usize,
    /// Held-out queries drawn with the generated vectors.
    #[arg(long, default_value_t = 1000)]
    query_count: usize,
    /// Clusters of the generated data.
    #[arg(long, default_value_t = 200)]
    clusters: usize,
    #[arg(long, default_value_t = 24)]
    m: usize,
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
    /// Which routine inserts the vectors (hnsw-rs: the reference build).
    #[arg(long, value_enum, default_value_t = Builder::Native)]
    builder: Builder,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long)]
    json: bool,
    /// Keep the built index in DIR and, when DIR already holds one from a run with the same
    /// arguments, load it instead of building (for tuning the search without rebuilding).
    #[arg(long, value_name = "DIR")]
    reuse: Option<std::path::PathBuf>,
    /// Index these vectors instead of generated ones: TEXMEX `.fvecs` or `.npy` (float32,
    /// 2-D). Rows are scaled to unit length; the index ranks by inner product (cosine).
    #[arg(long, value_name = "FILE", requires = "queries_file")]
    base: Option<std::path::PathBuf>,
    /// Query vectors for `--base` (same formats).
    #[arg(long = "queries", value_name = "FILE", requires = "base")]
    queries_file: Option<std::path::PathBuf>,
    /// Exact neighbours of each query (`.ivecs`, best first, inner product on unit vectors);
    /// computed with the exact scan (top 100) when absent.
    #[arg(long, value_name = "FILE", requires = "base")]
    truth: Option<std::path::PathBuf>,
    /// The `ef` values of the recall/speed sweep.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024])]
    ef: Vec<usize>,
    /// Each sweep point repeats the query set until this long has passed, so that small
    /// sets are timed over more than a few milliseconds.
    #[arg(long, default_value_t = 0.3)]
    min_seconds: f64,
}

/// Base vectors, queries, dimension and where they came from.
fn vector_sets(args: &Args) -> anyhow::Result<(Vec<f32>, Vec<f32>, usize, String)> {
    match (&args.base, &args.queries_file) {
        (Some(base_path), Some(queries_path)) => {
            let mut base = read_vectors(base_path)?;
            base.normalise(base_path)?;
            let mut queries = read_vectors(queries_path)?;
            queries.normalise(queries_path)?;
            anyhow::ensure!(
                base.dim == queries.dim,
                "{} has {} dimensions, {} has {}",
                base_path.display(),
                base.dim,
                queries_path.display(),
                queries.dim
            );
            let dim = base.dim;
            Ok((
                base.values,
                queries.values,
                dim,
                base_path.display().to_string(),
            ))
        }
        _ => {
            let (n, d) = (args.vectors, args.dim);
            let mut data =
                clustered_unit_vectors(n + args.query_count, d, args.clusters, args.seed);
            let queries = data.split_off(n * d);
            Ok((data, queries, d, format!("generated (seed {})", args.seed)))
        }
    }
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// How many of the true ids a search found.
fn found_of(truth: &[u32], found: &[Scored]) -> usize {
    truth
        .iter()
        .filter(|t| found.iter().any(|f| f.id == **t))
        .count()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (data, queries, d, source) = vector_sets(&args)?;
    let n = data.len() / d;
    let query_count = queries.len() / d;
    let given_truth = given_truth(&args, query_count, n)?;
    let built = build_or_reuse(&args, data, d)?;
    let (index, load_s) = save_and_reload(built.index)?;
    let filters = filters(n, args.seed);
    let (rows, unfiltered_truth) = measure_paths(&index, &queries, &filters, given_truth.as_ref());
    let sweep = ef_sweep(&index, &queries, &unfiltered_truth, &args);
    let Built {
        calibration,
        build_s,
        graph_reused,
        connectivity,
        joined_islands,
        graph_bytes,
        resident_growth,
        ..
    } = built;
    let report = json!({
        "source": source, "vectors": n, "dim": d, "queries": query_count, "m": args.m, "ef_construction": args.ef_construction,
        "builder": format!("{:?}", GraphBuilder::from(args.builder)).to_lowercase(),
        "build_seconds": build_s, "graph_reused": graph_reused, "load_seconds": load_s,
        "vector_bytes": n * d * 4, "graph_bytes": graph_bytes, "resident_growth_bytes": resident_growth,
        "calibrated_ef": calibration.ef, "calibration_recall_at_10": calibration.recall_at_10, "self_recall": calibration.self_recall,
        "threads_for_queries": 1, "connectivity": connectivity, "joined_islands": joined_islands, "results": rows, "ef_sweep": sweep,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{n} vectors x {d}: graph build {build_s:.1} s (M {}, ef_construction {}), load {load_s:.2} s, vectors {:.0} MB, graph {:.0} MB, RSS +{:.0} MB",
        args.m,
        args.ef_construction,
        (n * d * 4) as f64 / 1e6,
        graph_bytes as f64 / 1e6,
        resident_growth as f64 / 1e6
    );
    println!("vectors: {source}, {query_count} queries");
    if let Some(c) = connectivity {
        println!(
            "layer 0: {} of {} nodes reachable from the entry point ({:.4}), {} without in-links; {joined_islands} were stranded after refinement and joined",
            c.reachable,
            c.nodes,
            c.reachable_fraction(),
            c.without_in_links
        );
    }
    println!(
        "calibrated ef {} (recall@10 {:.3} on perturbed stored vectors), self-recall {:.3}",
        calibration.ef, calibration.recall_at_10, calibration.self_recall
    );
    print_tables(&rows, &sweep);
    Ok(ExitCode::SUCCESS)
}

/// `--truth`, checked against the queries and the base: at least 10 ids per query, none
/// past the base.
fn given_truth(args: &Args, query_count: usize, n: usize) -> anyhow::Result<Option<Vec<Vec<u32>>>> {
    let Some(path) = &args.truth else {
        return Ok(None);
    };
    let truth = read_ivecs(path)?;
    anyhow::ensure!(
        truth.len() == query_count && truth.iter().all(|t| t.len() >= 10),
        "{}: {} rows (at least 10 ids each) for {query_count} queries",
        path.display(),
        truth.len()
    );
    anyhow::ensure!(
        truth.iter().flatten().all(|&id| (id as usize) < n),
        "{}: an id past the {n} base vectors",
        path.display()
    );
    Ok(Some(truth))
}

/// The index and what its build cost.
struct Built {
    index: VectorIndex,
    calibration: Calibration,
    /// With a reused index, its load and calibration only.
    build_s: f64,
    graph_reused: bool,
    connectivity: Option<Connectivity>,
    joined_islands: usize,
    graph_bytes: usize,
    resident_growth: u64,
}

/// Builds the index over `data`, or loads the one `--reuse` kept from a run on the same
/// vectors (and keeps a new build there).
fn build_or_reuse(args: &Args, data: Vec<f32>, d: usize) -> anyhow::Result<Built> {
    let n = data.len() / d;
    let rss_before = resident_bytes();
    let flat = FlatIndex::from_data(d, data);
    let params = GraphParams {
        m: args.m,
        ef_construction: args.ef_construction,
        builder: args.builder.into(),
        ..GraphParams::default()
    };
    let started = Instant::now();
    let reused = args.reuse.as_deref().and_then(|dir| {
        let index = load_vector_index(dir).ok()?;
        (index.flat().len() == n
            && index.flat().dim() == d
            && index.flat().vector(0) == flat.vector(0))
        .then_some(index)
    });
    let graph_reused = reused.is_some();
    let (index, calibration) = match reused {
        Some(mut index) => {
            let calibration = index.calibrate(lesion_search::index::RECALL_TARGET);
            (index, calibration)
        }
        None => {
            let built = VectorIndex::with_graph(flat, params);
            if let Some(dir) = &args.reuse {
                std::fs::create_dir_all(dir)?;
                save_vector_index(&built.0, dir)?;
            }
            built
        }
    };
    let build_s = started.elapsed().as_secs_f64();
    Ok(Built {
        connectivity: index.graph().map(|g| g.connectivity()),
        joined_islands: index.graph().map_or(0, |g| g.joined_islands()),
        graph_bytes: index.graph().map_or(0, |g| g.memory_bytes()),
        resident_growth: resident_bytes().saturating_sub(rss_before),
        index,
        calibration,
        build_s,
        graph_reused,
    })
}

/// Saves the index to a temporary folder and loads it back: the index searched, as a
/// server would load it, and the seconds the load took.
fn save_and_reload(index: VectorIndex) -> anyhow::Result<(VectorIndex, f64)> {
    let dir = tempfile::tempdir()?;
    save_vector_index(&index, dir.path())?;
    drop(index);
    let started = Instant::now();
    let index = load_vector_index(dir.path())?;
    Ok((index, started.elapsed().as_secs_f64()))
}

/// No filter, then random 10% and 1% of the ids.
fn filters(n: usize, seed: u64) -> Vec<(&'static str, Option<IdSet>)> {
    let mut rng = Rng::new(seed ^ 0xF17);
    vec![
        ("none", None),
        (
            "10%",
            Some(IdSet::from_ids(
                n,
                (0..n as u32).filter(|_| rng.chance(0.1)),
            )),
        ),
        (
            "1%",
            Some(IdSet::from_ids(
                n,
                (0..n as u32).filter(|_| rng.chance(0.01)),
            )),
        ),
    ]
}

/// Each path (flat, hnsw, planned) under each filter, against the exact top 10 (or the
/// given truth, unfiltered): one JSON row each, and the unfiltered truth for the sweep.
fn measure_paths(
    index: &VectorIndex,
    queries: &[f32],
    filters: &[(&str, Option<IdSet>)],
    given_truth: Option<&Vec<Vec<u32>>>,
) -> (Vec<serde_json::Value>, Vec<Vec<u32>>) {
    let d = index.flat().dim();
    let mut rows = Vec::new();
    let mut unfiltered_truth = Vec::new();
    for (name, allowed) in filters {
        let allowed = allowed.as_ref();
        let truth: Vec<Vec<u32>> = match (given_truth, allowed) {
            (Some(given), None) => given.iter().map(|t| t[..10].to_vec()).collect(),
            _ => queries
                .chunks_exact(d)
                .map(|q| {
                    index
                        .flat()
                        .search(q, 10, allowed, None)
                        .iter()
                        .map(|s| s.id)
                        .collect()
                })
                .collect(),
        };
        for path in ["flat", "hnsw", "planned"] {
            rows.push(time_path(index, queries, &truth, path, name, allowed));
        }
        if allowed.is_none() {
            unfiltered_truth = truth;
        }
    }
    (rows, unfiltered_truth)
}

/// One path under one filter, one query at a time: latency percentiles, throughput,
/// recall@10 and, for the unfiltered flat scan, the bandwidth it reached.
fn time_path(
    index: &VectorIndex,
    queries: &[f32],
    truth: &[Vec<u32>],
    path: &str,
    filter: &str,
    allowed: Option<&IdSet>,
) -> serde_json::Value {
    let (n, d) = (index.flat().len(), index.flat().dim());
    let mut latencies = Vec::with_capacity(truth.len());
    let mut hit = 0usize;
    let mut total = 0usize;
    let mut plan_used = Plan::Exact;
    for (q, truth) in queries.chunks_exact(d).zip(truth) {
        let t = Instant::now();
        let (found, plan) = match path {
            "flat" => (index.flat().search(q, 10, allowed, None), Plan::Exact),
            "hnsw" => {
                let candidates = allowed.map_or(n, IdSet::len);
                let ef = ((index.ef() as f64) * n as f64 / candidates as f64).ceil() as usize;
                index.search_with(q, 10, allowed, Plan::Graph { ef: ef.min(4096) })
            }
            _ => index.search(q, 10, allowed),
        };
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        plan_used = plan;
        hit += found_of(truth, &found);
        total += truth.len();
    }
    let mean = latencies.iter().sum::<f64>() / latencies.len() as f64;
    latencies.sort_by(f64::total_cmp);
    json!({
        "path": path, "filter": filter, "plan": plan_used,
        "p50_ms": percentile(&latencies, 0.5), "p99_ms": percentile(&latencies, 0.99),
        "queries_per_second": 1e3 / mean, "recall_at_10": hit as f64 / total.max(1) as f64,
        "scan_gb_per_s": if path == "flat" && allowed.is_none() { (n * d * 4) as f64 / (mean / 1e3) / 1e9 } else { 0.0 },
    })
}

/// Recall against speed along ef, unfiltered: the curve to set beside other engines'.
fn ef_sweep(
    index: &VectorIndex,
    queries: &[f32],
    truth: &[Vec<u32>],
    args: &Args,
) -> Vec<serde_json::Value> {
    let d = index.flat().dim();
    let query_count = queries.len() / d;
    let mut sweep = Vec::new();
    for &ef in &args.ef {
        let mut hit = 0usize;
        let mut passes = 0usize;
        let started = Instant::now();
        while passes == 0 || started.elapsed().as_secs_f64() < args.min_seconds {
            hit = 0;
            for (q, truth) in queries.chunks_exact(d).zip(truth) {
                let (found, _) = index.search_with(q, 10, None, Plan::Graph { ef });
                hit += found_of(truth, &found);
            }
            passes += 1;
        }
        let seconds = started.elapsed().as_secs_f64();
        sweep.push(json!({
            "ef": ef,
            "recall_at_10": hit as f64 / (10 * query_count).max(1) as f64,
            "queries_per_second": (passes * query_count) as f64 / seconds,
        }));
    }
    sweep
}

/// The rows and the sweep as text tables.
fn print_tables(rows: &[serde_json::Value], sweep: &[serde_json::Value]) {
    println!(
        "{:<8} {:<7} {:<16} {:>9} {:>9} {:>10} {:>9} {:>8}",
        "path", "filter", "plan", "p50 ms", "p99 ms", "queries/s", "recall@10", "GB/s"
    );
    for r in rows {
        println!(
            "{:<8} {:<7} {:<16} {:>9.3} {:>9.3} {:>10.0} {:>9.3} {:>8}",
            r["path"].as_str().unwrap_or(""),
            r["filter"].as_str().unwrap_or(""),
            r["plan"].to_string().replace('"', ""),
            r["p50_ms"].as_f64().unwrap_or(0.0),
            r["p99_ms"].as_f64().unwrap_or(0.0),
            r["queries_per_second"].as_f64().unwrap_or(0.0),
            r["recall_at_10"].as_f64().unwrap_or(0.0),
            match r["scan_gb_per_s"].as_f64() {
                Some(v) if v > 0.0 => format!("{v:.1}"),
                _ => "-".into(),
            }
        );
    }
    println!("graph alone, no filter:");
    println!("{:>6} {:>10} {:>9}", "ef", "queries/s", "recall@10");
    for point in sweep {
        println!(
            "{:>6} {:>10.0} {:>9.3}",
            point["ef"].as_u64().unwrap_or(0),
            point["queries_per_second"].as_f64().unwrap_or(0.0),
            point["recall_at_10"].as_f64().unwrap_or(0.0)
        );
    }
}
