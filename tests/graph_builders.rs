//! Either graph builder through a real index's life: a build records it, search through its
//! graph finds what the exact scan finds, and adds and deletes rebuild with it.

mod common;

use lesion_search::archive::{add, build, delete, AddOptions, Archive, BuildOptions};
use lesion_search::embed::bundled_lesion_cnn;
use lesion_search::index::{GraphBuilder, GraphParams, Plan, VectorIndex, RECALL_TARGET};

/// Recall@10 of the graph walk at the calibrated `ef` against the exact scan, every live
/// lesion's vector a query; no deleted id may come back.
fn graph_recall(vectors: &VectorIndex) -> f32 {
    let (mut hit, mut total) = (0, 0);
    for id in vectors.live_ids() {
        let query = vectors.vector(id);
        let truth = vectors
            .flat()
            .search(query, 10, None, Some(vectors.deleted_ids()));
        let (found, _) = vectors.search_with(query, 10, None, Plan::Graph { ef: vectors.ef() });
        assert!(
            found.iter().all(|h| !vectors.is_deleted(h.id)),
            "a deleted id"
        );
        hit += truth
            .iter()
            .filter(|t| found.iter().any(|f| f.id == t.id))
            .count();
        total += truth.len();
    }
    hit as f32 / total as f32
}

/// What the served generation records and holds: its manifest's builder, the builder of its
/// graph, and the graph's recall.
fn check_served(dir: &std::path::Path, builder: GraphBuilder, lesions: usize, what: &str) {
    let archive = Archive::open(dir).unwrap();
    assert_eq!(archive.manifest.graph_builder, builder, "{what}: manifest");
    assert!(archive.manifest.has_graph, "{what}: no graph");
    assert_eq!(
        archive.vectors.graph_builder(),
        Some(builder),
        "{what}: the graph was built by another builder"
    );
    assert_eq!(archive.vectors.graph().unwrap().covers(), lesions, "{what}");
    let recall = graph_recall(&archive.vectors);
    assert!(recall >= RECALL_TARGET, "{what}: recall@10 {recall}");
    assert_eq!(archive.verify().unwrap(), Vec::<String>::new(), "{what}");
}

fn build_search_add_and_delete_with(builder: GraphBuilder, seed: u64) {
    let archive = common::synth_archive(80, seed, true);
    let (older, newer) = common::split_archive(archive.path(), 60);
    let model = bundled_lesion_cnn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A graph even at 60 lesions, where a write would otherwise leave exact scans alone.
    let options = BuildOptions {
        dataset: older.path().to_path_buf(),
        reports: None,
        model: &model,
        graph: GraphParams {
            builder,
            exact_below: 0,
            ..GraphParams::default()
        },
        labels: None,
    };
    build(dir.path(), &options, &|_| {}).unwrap();
    check_served(dir.path(), builder, 60, "built");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("gen-000001/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["graph_builder"], builder.name(), "{manifest}");

    // Changes pass the default parameters, as the server and the CLI do: the builder the
    // index records must win. 20 added of 80 and 10 deleted of 80 both force a rebuild.
    let added = add(
        dir.path(),
        &AddOptions {
            dataset: newer.path().to_path_buf(),
            reports: None,
            model: &model,
            graph: GraphParams::default(),
        },
        &|_| {},
    )
    .unwrap();
    assert!(added.graph_rebuilt, "adding a quarter rebuilds the graph");
    check_served(dir.path(), builder, 80, "after the add");

    let keys: Vec<String> = {
        let archive = Archive::open(dir.path()).unwrap();
        (0..10)
            .map(|id| archive.records.get(id * 3).unwrap().unwrap().key)
            .collect()
    };
    let deleted = delete(dir.path(), &keys, GraphParams::default()).unwrap();
    assert!(
        deleted.graph_rebuilt,
        "deleting an eighth rebuilds the graph"
    );
    assert_eq!(deleted.live, 70);
    check_served(dir.path(), builder, 80, "after the delete");
}

#[test]
fn the_native_builder_is_recorded_searched_and_kept_through_changes() {
    build_search_add_and_delete_with(GraphBuilder::Native, 51);
}

#[test]
fn the_hnsw_rs_builder_is_recorded_searched_and_kept_through_changes() {
    build_search_add_and_delete_with(GraphBuilder::HnswRs, 52);
}

/// Manifests written before the builder was recorded read as built by the native routine.
#[test]
fn a_manifest_without_a_builder_reads_as_native() {
    let archive = common::synth_archive(12, 53, true);
    let model = bundled_lesion_cnn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = BuildOptions {
        dataset: archive.path().to_path_buf(),
        reports: None,
        model: &model,
        graph: GraphParams {
            builder: GraphBuilder::HnswRs,
            ..GraphParams::default()
        },
        labels: None,
    };
    build(dir.path(), &options, &|_| {}).unwrap();
    let path = dir.path().join("gen-000001/manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(manifest["graph_builder"], "hnsw-rs");
    manifest.as_object_mut().unwrap().remove("graph_builder");
    std::fs::write(&path, serde_json::to_string(&manifest).unwrap()).unwrap();
    assert_eq!(
        Archive::current_manifest(dir.path()).unwrap().graph_builder,
        GraphBuilder::Native
    );
}
