//! `build --text-encoder minilm`, `query --semantic`, `add`, `delete` and `verify` as a user
//! runs them, with a tiny BERT standing in for the imported all-MiniLM-L6-v2 in a weights
//! cache of the test's own (`LESION_SEARCH_CACHE`); and the refusals: a build without the
//! import names the command that makes it, `--semantic` on an index built without a text
//! encoder names the flag.

use std::path::Path;
use std::process::{Command, Output};

use lesion_search::embed::{write_tiny_sentence_encoder, MINILM_MODEL};

fn indexer(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lesion-indexer"))
        .args(args)
        .env("LESION_SEARCH_CACHE", cache)
        .output()
        .unwrap()
}

fn ok(output: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn refused(output: Output) -> String {
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn synth(cache: &Path, out: &Path, lesions: &str, seed: &str) {
    ok(indexer(
        cache,
        &[
            "synth",
            "--out",
            out.to_str().unwrap(),
            "--lesions",
            lesions,
            "--seed",
            seed,
            "--image-size",
            "128",
            "--label-train",
        ],
    ));
}

fn query(cache: &Path, index: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "query",
        "--index",
        index,
        "--text",
        "lymph node",
        "--all-per-patient",
        "--k",
        "200",
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(indexer(cache, &args))).unwrap()
}

#[test]
fn build_query_add_delete_verify_with_report_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let empty_cache = dir.path().join("empty-cache");
    let archive = dir.path().join("archive");
    let more = dir.path().join("more");
    synth(&cache, &archive, "30", "2");
    synth(&cache, &more, "3", "9");
    let index = dir.path().join("index");
    let index_arg = index.to_str().unwrap();
    let build = |cache: &Path| {
        indexer(
            cache,
            &[
                "build",
                "--dataset",
                archive.to_str().unwrap(),
                "--index",
                index_arg,
                "--text-encoder",
                "minilm",
            ],
        )
    };

    // Without the import: refused before anything is written, naming the command.
    let message = refused(build(&empty_cache));
    assert!(
        message.contains("lesion-indexer weights import minilm"),
        "{message}"
    );
    assert!(!index.exists(), "nothing is created");

    write_tiny_sentence_encoder(&cache.join(MINILM_MODEL), 5).unwrap();
    let built = ok(build(&cache));
    assert!(
        built.contains("report vectors: all-minilm-l6-v2"),
        "{built}"
    );
    assert!(ok(indexer(&cache, &["verify", "--index", index_arg])).contains("agree"));

    let semantic = query(&cache, index_arg, &["--semantic"]);
    assert_eq!(semantic["semantic"], true);
    let hits = semantic["hits"].as_array().unwrap();
    assert_eq!(hits.len() as u64, semantic["total"].as_u64().unwrap());
    assert!(hits.iter().all(|h| h["semantic"]["cosine"].is_number()));
    let plain = query(&cache, index_arg, &[]);
    assert_eq!(plain["semantic"], false);
    assert!(plain["total"].as_u64() <= semantic["total"].as_u64());
    // Where the weights are not imported the index still answers by BM25; `--semantic` says
    // what to import.
    assert_eq!(query(&empty_cache, index_arg, &[])["total"], plain["total"]);
    let message = refused(indexer(
        &empty_cache,
        &[
            "query",
            "--index",
            index_arg,
            "--text",
            "lymph node",
            "--semantic",
        ],
    ));
    assert!(
        message.contains("lesion-indexer weights import minilm"),
        "{message}"
    );

    // An add embeds the new reports with the index's encoder; verify counts them.
    ok(indexer(
        &cache,
        &[
            "add",
            "--dataset",
            more.to_str().unwrap(),
            "--index",
            index_arg,
        ],
    ));
    assert!(ok(indexer(&cache, &["verify", "--index", index_arg])).contains("agree"));
    let after = query(&cache, index_arg, &["--semantic"]);
    let ids: Vec<u64> = after["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_u64().unwrap())
        .collect();
    // An add without the encoder is refused, naming the import; nothing changes.
    let message = refused(indexer(
        &empty_cache,
        &[
            "add",
            "--dataset",
            more.to_str().unwrap(),
            "--index",
            index_arg,
        ],
    ));
    assert!(
        message.contains("lesion-indexer weights import minilm"),
        "{message}"
    );

    // A delete drops the lesion from the semantic answers too.
    let first = after["hits"][0]["key"].as_str().unwrap().to_string();
    ok(indexer(&cache, &["delete", "--index", index_arg, &first]));
    assert!(ok(indexer(&cache, &["verify", "--index", index_arg])).contains("agree"));
    let gone = query(&cache, index_arg, &["--semantic"]);
    assert_eq!(gone["total"].as_u64().unwrap(), ids.len() as u64 - 1);
    assert!(gone["hits"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["key"] != first.as_str()));
}

#[test]
fn semantic_on_an_index_without_report_vectors_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let archive = dir.path().join("archive");
    synth(&cache, &archive, "12", "4");
    let index = dir.path().join("index");
    ok(indexer(
        &cache,
        &[
            "build",
            "--dataset",
            archive.to_str().unwrap(),
            "--index",
            index.to_str().unwrap(),
        ],
    ));
    let message = refused(indexer(
        &cache,
        &[
            "query",
            "--index",
            index.to_str().unwrap(),
            "--text",
            "liver",
            "--semantic",
        ],
    ));
    assert!(message.contains("--semantic:"), "{message}");
    assert!(message.contains("--text-encoder minilm"), "{message}");
    let plain = ok(indexer(
        &cache,
        &[
            "query",
            "--index",
            index.to_str().unwrap(),
            "--text",
            "liver",
        ],
    ));
    assert!(plain.contains("results"), "{plain}");
}
