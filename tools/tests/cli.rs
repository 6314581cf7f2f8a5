//! The `lesion-bench` measuring commands, run as a maintainer runs them.

mod common;

use common::{bench, text};

#[test]
fn patches_reports_a_rate() {
    let dir = tempfile::tempdir().unwrap();
    let archive = common::archive(dir.path(), 8, 1);
    let run = bench(&["patches", "--dataset", archive.to_str().unwrap(), "--json"]);
    assert!(run.status.success(), "{}", text(&run));
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(json["lesions"], 8);
    assert_eq!(json["substituted_channels"], 0);
    assert!(json["lesions_per_second"].as_f64().unwrap() > 0.0);
}

/// An index's embeddings (what `lesion-indexer export-vectors` writes) benched as a TEXMEX
/// set with and without a truth file: the JSON keeps the sweep and reports reachability.
#[test]
fn model_outputs_bench_as_a_texmex_set() {
    let dir = tempfile::tempdir().unwrap();
    let index = common::index(dir.path(), 40, 6);
    let vectors = lesion_search::archive::Archive::open(&index)
        .unwrap()
        .vectors;
    let dim = vectors.dim();
    let values: Vec<f32> = vectors
        .live_ids()
        .flat_map(|id| vectors.vector(id).iter().copied())
        .collect();
    let set = lesion_search::index::VectorSet { dim, values };
    let rows = set.rows();
    assert!(rows >= 40, "{rows} rows");
    let base = dir.path().join("base.fvecs");
    lesion_search::index::write_fvecs(&base, &set).unwrap();
    // The first five rows as queries; each finds itself first, so a truth file of
    // "itself, then anything" must give recall@10 of at least 0.1 per query.
    let queries = dir.path().join("queries.fvecs");
    let head = lesion_search::index::VectorSet {
        dim,
        values: set.values[..5 * dim].to_vec(),
    };
    lesion_search::index::write_fvecs(&queries, &head).unwrap();
    let (b, q) = (base.to_str().unwrap(), queries.to_str().unwrap());
    let run = bench(&["vectors", "--base", b, "--queries", q, "--json"]);
    assert!(run.status.success(), "{}", text(&run));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["vectors"], rows);
    assert_eq!(report["queries"], 5);
    let reach = &report["connectivity"];
    assert_eq!(reach["reachable"], reach["nodes"], "{report}");
    let sweep = report["ef_sweep"].as_array().unwrap();
    assert!(sweep.iter().all(|p| p["ef"].as_u64().is_some()
        && p["queries_per_second"].as_f64().is_some()
        && p["recall_at_10"].as_f64().unwrap() > 0.99));

    // A truth file with the wrong row count is refused, naming it.
    let truth = dir.path().join("truth.ivecs");
    let row: Vec<u8> = std::iter::once(10i32)
        .chain(0..10)
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(&truth, &row).unwrap();
    let bad = bench(&[
        "vectors",
        "--base",
        b,
        "--queries",
        q,
        "--truth",
        truth.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).contains("truth.ivecs"), "{}", text(&bad));
}

#[test]
fn load_names_a_kind_it_does_not_know() {
    let run = bench(&["load", "--kind", "nonsense"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run).contains("`nonsense` is not text, lesion, image or a /path"),
        "{}",
        text(&run)
    );
}
