//! Prometheus counters and latency histograms per route pattern (never the concrete path,
//! which may carry a lesion key and so a patient number).

use lesion_search::index::{GraphOutcome, VectorIndex};
use std::collections::BTreeMap;
use std::fmt::{Display, Write};
use std::sync::Mutex;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Series {
    count: u64,
    sum_seconds: f64,
    buckets: [u64; BUCKETS.len()],
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Series>>,
    shed: std::sync::atomic::AtomicU64,
}

/// A client chooses the method: any it invents is counted under one label, so the series
/// stay bounded (routes are patterns the router matched, statuses are three digits).
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"];
    KNOWN.into_iter().find(|&m| m == method).unwrap_or("OTHER")
}

impl Metrics {
    pub fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests
                .entry((method_label(method), route.to_string(), status))
                .or_default() += 1;
        }
        if let Ok(mut latency) = self.latency.lock() {
            let series = latency.entry(route.to_string()).or_default();
            series.count += 1;
            series.sum_seconds += seconds;
            for (bucket, bound) in series.buckets.iter_mut().zip(BUCKETS) {
                if seconds <= bound {
                    *bucket += 1;
                }
            }
        }
    }

    /// A heavy request turned away with 503 because every slot was busy.
    pub fn shed(&self) {
        self.shed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The Prometheus text exposition format; the graph's gauges only when the vectors are
    /// in-process.
    pub fn render(&self, lesions: usize, generation: u64, vectors: Option<&VectorIndex>) -> String {
        let mut out = String::new();
        if let Some(vectors) = vectors {
            write_graph_gauges(&mut out, vectors);
        }
        write_single(
            &mut out,
            "lesion_heavy_requests_shed_total",
            "counter",
            "Heavy requests refused with 503 while every slot was busy.",
            self.shed.load(std::sync::atomic::Ordering::Relaxed),
        );
        write_single(
            &mut out,
            "lesion_index_lesions",
            "gauge",
            "Searchable lesions in the served generation.",
            lesions,
        );
        write_single(
            &mut out,
            "lesion_index_generation",
            "gauge",
            "Served index generation.",
            generation,
        );
        self.write_requests(&mut out);
        self.write_latency(&mut out);
        out
    }

    /// `http_requests_total`, one sample per method, route and status.
    fn write_requests(&self, out: &mut String) {
        write_description(
            out,
            "http_requests_total",
            "counter",
            "Requests by method, route and status.",
        );
        let Ok(requests) = self.requests.lock() else {
            return;
        };
        for ((method, route, status), n) in requests.iter() {
            let _ = writeln!(
                out,
                "http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
    }

    /// `http_request_duration_seconds`, one histogram per route.
    fn write_latency(&self, out: &mut String) {
        write_description(
            out,
            "http_request_duration_seconds",
            "histogram",
            "Request latency by route.",
        );
        let Ok(latency) = self.latency.lock() else {
            return;
        };
        for (route, series) in latency.iter() {
            write_histogram(out, route, series);
        }
    }
}

/// The `# HELP` and `# TYPE` lines of metric `name`.
fn write_description(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A metric of one sample without labels.
fn write_single(out: &mut String, name: &str, kind: &str, help: &str, value: impl Display) {
    write_description(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Whether the graph met its recall target, and the width it searches with.
fn write_graph_gauges(out: &mut String, vectors: &VectorIndex) {
    let (enlarged, exact) = match vectors.outcome() {
        GraphOutcome::Met => (0, 0),
        GraphOutcome::Enlarged { .. } => (1, 0),
        GraphOutcome::Exact { .. } => (0, 1),
    };
    write_single(
        out,
        "lesion_index_graph_enlarged",
        "gauge",
        "1 when the graph missed its recall target and was rebuilt larger.",
        enlarged,
    );
    write_single(
        out,
        "lesion_index_graph_exact_fallback",
        "gauge",
        "1 when even the enlarged graph missed its recall target and every query scans exactly.",
        exact,
    );
    let ef = if vectors.graph().is_some() {
        vectors.ef()
    } else {
        0
    };
    write_single(
        out,
        "lesion_index_graph_ef",
        "gauge",
        "Calibrated search width of the graph (0: no graph).",
        ef,
    );
}

/// One route's latency histogram: cumulative buckets, then `+Inf`, sum and count.
fn write_histogram(out: &mut String, route: &str, series: &Series) {
    for (bound, n) in BUCKETS.iter().zip(series.buckets) {
        let _ = writeln!(
            out,
            "http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
        series.count
    );
    let _ = writeln!(
        out,
        "http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
        series.sum_seconds
    );
    let _ = writeln!(
        out,
        "http_request_duration_seconds_count{{route=\"{route}\"}} {}",
        series.count
    );
}
