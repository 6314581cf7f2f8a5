//! `lesion-bench backends`: the embedded and the Milvus backend over one index, in
//! one run: whether full requests give the same top k, how close each backend's vector
//! search comes to the exact scan, and the latency and throughput of each.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use lesion_search::backend::BackendChoice;
use lesion_search::dataset::{CoarseType, Sex};
use lesion_search::filter::{Filter, Range};
use lesion_search::index::{dot, Scored};
use lesion_search::search::{Engine, SearchRequest};
use lesion_search::service::{self, Index};
use serde::Serialize;

use crate::backend_args::BackendArgs;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    index: PathBuf,
    /// By-lesion queries per kind (lesions picked evenly across the archive).
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Threads of the throughput pass (each backend, the same by-lesion requests).
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Where Milvus is (`--backend` is ignored: both are measured).
    #[command(flatten)]
    milvus: BackendArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Default)]
struct Agreement {
    kind: &'static str,
    queries: usize,
    /// Same ids in the same order.
    same_top_k: usize,
    /// Same ids, any order.
    same_set: usize,
    mean_overlap: f64,
}

#[derive(Serialize)]
struct Latency {
    backend: String,
    kind: &'static str,
    queries: usize,
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
    /// One thread, back to back.
    queries_per_second: f64,
    /// Mean time in the vector stage (the backend's nearest-neighbour call).
    vector_mean_ms: f64,
}

#[derive(Serialize)]
struct Recall {
    backend: String,
    queries: usize,
    k: usize,
    /// Of the exact top k (flat scan over the generation's vectors).
    recall: f64,
}

#[derive(Serialize)]
struct Throughput {
    backend: String,
    threads: usize,
    queries: usize,
    queries_per_second: f64,
}

/// Filters a user sets, cycled through the filtered queries.
fn filters() -> Vec<Filter> {
    vec![
        Filter {
            sex: Some(Sex::Female),
            age: Range {
                min: Some(40.0),
                max: Some(70.0),
            },
            ..Filter::default()
        },
        Filter {
            types: vec![CoarseType::Lung, CoarseType::Liver],
            ..Filter::default()
        },
        Filter {
            long_mm: Range {
                min: Some(20.0),
                max: None,
            },
            location_z: Range {
                min: Some(0.3),
                max: Some(0.7),
            },
            ..Filter::default()
        },
    ]
}

/// The kinds of requests compared, all by lesion: alone, with a filter, with text.
const KINDS: [&str; 3] = ["lesion", "lesion+filter", "lesion+text"];

/// The requests of every kind, the i-th on the i-th picked lesion.
struct Requests {
    live: Vec<u32>,
    filters: Vec<Filter>,
    k: usize,
}

impl Requests {
    /// The i-th lesion, spread evenly across the live ones.
    fn pick(&self, i: usize) -> u32 {
        self.live[(i as u64 * 2_654_435_761 % self.live.len() as u64) as usize]
    }

    /// The i-th request of `kind` (one of [`KINDS`]).
    fn of(&self, kind: &str, i: usize) -> SearchRequest {
        let request = SearchRequest {
            k: self.k,
            lesion: Some(self.pick(i)),
            ..Default::default()
        };
        match kind {
            "lesion+filter" => SearchRequest {
                filter: self.filters[i % self.filters.len()].clone(),
                ..request
            },
            "lesion+text" => SearchRequest {
                text: Some(["nodule", "lymph node", "mass", "cyst"][i % 4].into()),
                ..request
            },
            _ => request,
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let engines = open_engines(&args)?;
    let names: Vec<String> = engines
        .iter()
        .map(|e| format!("{} ({})", e.backend().name, e.backend().vectors))
        .collect();
    let live: Vec<u32> = (0..engines[0].capacity() as u32)
        .filter(|&id| engines[0].facts(id).is_some())
        .collect();
    anyhow::ensure!(!live.is_empty(), "the index holds no lesions");
    let n = args.queries.min(live.len());
    let lesions = live.len();
    let requests = Requests {
        live,
        filters: filters(),
        k: args.k,
    };
    // Warm both (connections, caches) before measuring.
    for engine in &engines {
        for i in 0..20 {
            engine.search(&requests.of(KINDS[0], i))?;
        }
    }
    let agreements = agreements(&engines, &requests, n)?;
    let latencies = latencies(&engines, &names, &requests, n)?;
    let recalls = recalls(&engines, &names, &requests, n)?;
    let throughputs = throughputs(&engines, &names, &requests, n, args.threads.max(1))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "index": args.index.display().to_string(),
                "lesions": lesions,
                "k": args.k,
                "agreement": agreements,
                "latency": latencies,
                "recall": recalls,
                "throughput": throughputs,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{lesions} lesions, k {}, {n} queries per kind; {} vs {}",
        args.k, names[0], names[1]
    );
    print_summary(args.k, &agreements, &latencies, &recalls, &throughputs);
    Ok(ExitCode::SUCCESS)
}

/// The embedded engine and the Milvus one over the same index and model.
fn open_engines(args: &Args) -> anyhow::Result<[Arc<Engine>; 2]> {
    let model = service::model_of_index(&args.index)?;
    let milvus_choice = BackendArgs {
        backend: "milvus".into(),
        ..args.milvus.clone()
    }
    .choice()?;
    let embedded = Index::open_with_model(&args.index, model.clone(), &BackendChoice::Embedded)?;
    let milvus = Index::open_with_model(&args.index, model, &milvus_choice)?;
    Ok([embedded.engine(), milvus.engine()])
}

/// Whether the two backends give the same top k to the same full requests.
fn agreements(
    engines: &[Arc<Engine>; 2],
    requests: &Requests,
    n: usize,
) -> anyhow::Result<Vec<Agreement>> {
    let mut agreements = Vec::new();
    for kind in KINDS {
        let mut agreement = Agreement {
            kind,
            queries: n,
            ..Default::default()
        };
        for i in 0..n {
            let request = requests.of(kind, i);
            let hits: Vec<Vec<u32>> = engines
                .iter()
                .map(|e| Ok(e.search(&request)?.hits.iter().map(|h| h.id).collect()))
                .collect::<anyhow::Result<_>>()?;
            let overlap = hits[0].iter().filter(|id| hits[1].contains(id)).count();
            agreement.same_top_k += usize::from(hits[0] == hits[1]);
            agreement.same_set +=
                usize::from(overlap == hits[0].len() && hits[0].len() == hits[1].len());
            agreement.mean_overlap += overlap as f64 / hits[0].len().max(1) as f64;
        }
        agreement.mean_overlap /= n.max(1) as f64;
        agreements.push(agreement);
    }
    Ok(agreements)
}

/// Latency of each kind on each backend, timed apart, one backend after the other, so
/// that neither runs beside the other.
fn latencies(
    engines: &[Arc<Engine>; 2],
    names: &[String],
    requests: &Requests,
    n: usize,
) -> anyhow::Result<Vec<Latency>> {
    let mut latencies = Vec::new();
    for (b, engine) in engines.iter().enumerate() {
        for kind in KINDS {
            let mut samples = Vec::with_capacity(n);
            let mut vector_ms = 0.0;
            for i in 0..n {
                let request = requests.of(kind, i);
                let t = Instant::now();
                let response = engine.search(&request)?;
                samples.push(t.elapsed().as_secs_f64() * 1e3);
                vector_ms += response.timings.vector_ms;
            }
            samples.sort_by(f64::total_cmp);
            let total: f64 = samples.iter().sum();
            latencies.push(Latency {
                backend: names[b].clone(),
                kind,
                queries: n,
                p50_ms: percentile(&samples, 0.5),
                p99_ms: percentile(&samples, 0.99),
                mean_ms: total / n as f64,
                queries_per_second: n as f64 / (total / 1e3),
                vector_mean_ms: vector_ms / n as f64,
            });
        }
    }
    Ok(latencies)
}

/// The approximate part alone: each backend's nearest k among all live lesions, against
/// the exact scan of the generation's vectors.
fn recalls(
    engines: &[Arc<Engine>; 2],
    names: &[String],
    requests: &Requests,
    n: usize,
) -> anyhow::Result<Vec<Recall>> {
    let k = requests.k;
    let archive_vectors = engines[0]
        .vectors()
        .ok_or_else(|| anyhow::anyhow!("the embedded backend has no in-process vectors"))?;
    let all = engines[0].allowed(&Filter::default());
    let mut found = [0usize; 2];
    let mut wanted = 0usize;
    for i in 0..n {
        let id = requests.pick(i);
        let query = archive_vectors.flat().vector(id);
        let mut exact: Vec<Scored> = all
            .iter()
            .map(|other| Scored {
                id: other,
                score: dot(query, archive_vectors.flat().vector(other)),
            })
            .collect();
        exact.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        exact.truncate(k);
        wanted += exact.len();
        for (b, engine) in engines.iter().enumerate() {
            let (hits, _) = engine.nearest(query, k, &all)?;
            found[b] += hits
                .iter()
                .filter(|h| exact.iter().any(|e| e.id == h.id))
                .count();
        }
    }
    Ok((0..2)
        .map(|b| Recall {
            backend: names[b].clone(),
            queries: n,
            k,
            recall: found[b] as f64 / wanted.max(1) as f64,
        })
        .collect())
}

/// By-lesion requests per second of each backend on `threads` threads.
fn throughputs(
    engines: &[Arc<Engine>; 2],
    names: &[String],
    requests: &Requests,
    n: usize,
    threads: usize,
) -> anyhow::Result<Vec<Throughput>> {
    let mut throughputs = Vec::new();
    for (b, engine) in engines.iter().enumerate() {
        let t = Instant::now();
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let workers: Vec<_> = (0..threads)
                .map(|w| {
                    scope.spawn(move || -> anyhow::Result<()> {
                        for i in (w..n).step_by(threads) {
                            engine.search(&requests.of(KINDS[0], i))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for worker in workers {
                worker.join().expect("a bench thread panicked")?;
            }
            Ok(())
        })?;
        throughputs.push(Throughput {
            backend: names[b].clone(),
            threads,
            queries: n,
            queries_per_second: n as f64 / t.elapsed().as_secs_f64(),
        });
    }
    Ok(throughputs)
}

fn print_summary(
    k: usize,
    agreements: &[Agreement],
    latencies: &[Latency],
    recalls: &[Recall],
    throughputs: &[Throughput],
) {
    for a in agreements {
        println!(
            "{:<14} same top {}: {:.1}% ({}/{}), same set {:.1}%, mean overlap {:.4}",
            a.kind,
            k,
            100.0 * a.same_top_k as f64 / a.queries as f64,
            a.same_top_k,
            a.queries,
            100.0 * a.same_set as f64 / a.queries as f64,
            a.mean_overlap
        );
    }
    for l in latencies {
        println!(
            "{:<14} {:<40} p50 {:.2} ms, p99 {:.2} ms, mean {:.2} ms ({:.0} q/s), vector stage {:.2} ms",
            l.kind, l.backend, l.p50_ms, l.p99_ms, l.mean_ms, l.queries_per_second, l.vector_mean_ms
        );
    }
    for r in recalls {
        println!(
            "vector recall@{} vs exact scan, {:<40} {:.4} (n = {})",
            r.k, r.backend, r.recall, r.queries
        );
    }
    for t in throughputs {
        println!(
            "throughput, {} threads, {:<40} {:.0} by-lesion requests/s",
            t.threads, t.backend, t.queries_per_second
        );
    }
}
