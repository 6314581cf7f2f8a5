//! The retrieval protocol pinned: `eval` states it in its report's first line, its counts are
//! what the archive's table says they must be, and `evaluate-model` measures the same figures
//! on the same archive and model (issue 26: a P@5 that moved with the gallery, not the model).

use std::path::Path;
use std::process::{Command, Output};

use lesion_search::dataset::{DlInfoReader, Split};

fn indexer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lesion-indexer"))
        .args(args)
        .output()
        .expect("run lesion-indexer")
}

fn succeeded(output: Output) -> String {
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// Typed lesions per split and untyped lesions, counted from the table itself.
struct TableCounts {
    typed_validation: usize,
    typed_test: usize,
    untyped: usize,
    untyped_train: usize,
}

fn count(archive: &Path) -> TableCounts {
    let mut counts = TableCounts {
        typed_validation: 0,
        typed_test: 0,
        untyped: 0,
        untyped_train: 0,
    };
    for row in DlInfoReader::open(&archive.join("DL_info.csv")).unwrap() {
        let record = row.unwrap().record;
        match (record.coarse_type.is_known(), record.split) {
            (true, Split::Validation) => counts.typed_validation += 1,
            (true, Split::Test) => counts.typed_test += 1,
            (true, Split::Train) => panic!("synth types no training row by default"),
            (false, split) => {
                counts.untyped += 1;
                counts.untyped_train += usize::from(split == Split::Train);
            }
        }
    }
    counts
}

#[test]
fn eval_states_the_protocol_and_evaluate_model_measures_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, index, report) = (
        dir.path().join("archive"),
        dir.path().join("index"),
        dir.path().join("report"),
    );
    let (a, i, r) = (
        archive.to_str().unwrap(),
        index.to_str().unwrap(),
        report.to_str().unwrap(),
    );
    succeeded(indexer(&[
        "synth",
        "--out",
        a,
        "--lesions",
        "150",
        "--seed",
        "26",
    ]));
    let counts = count(&archive);
    // The archive must tell the protocols apart: untyped training rows, typed validation
    // rows that a test query may find, typed test rows of other patients it may find too.
    assert!(counts.untyped_train > 0 && counts.typed_validation > 0 && counts.typed_test > 1);
    succeeded(indexer(&["build", "--dataset", a, "--index", i]));
    succeeded(indexer(&[
        "eval",
        "--dataset",
        a,
        "--index",
        i,
        "--out",
        r,
        "--image-queries",
        "1",
    ]));

    let gallery = counts.typed_validation + counts.typed_test;
    let statement = format!(
        "Protocol: queries: the typed lesions of the test split (n = {}); gallery: the typed lesions of every split (n = {gallery}: validation {}, test {}), each query's own patient excluded; untyped lesions (n = {}) neither query nor judge.",
        counts.typed_test, counts.typed_validation, counts.typed_test, counts.untyped
    );
    let markdown = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert_eq!(markdown.lines().next(), Some(statement.as_str()));

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap();
    let retrieval = &json["retrieval"];
    let protocol = &retrieval["protocol"];
    assert_eq!(protocol["query_split"], "test");
    assert_eq!(protocol["queries"], counts.typed_test);
    assert_eq!(protocol["gallery"], gallery);
    assert_eq!(
        protocol["gallery_by_split"],
        serde_json::json!([
            ["validation", counts.typed_validation],
            ["test", counts.typed_test]
        ])
    );
    assert_eq!(protocol["untyped"], counts.untyped);
    assert_eq!(retrieval["typed_queries"], counts.typed_test);
    assert_eq!(retrieval["database"], gallery);

    // evaluate-model embeds the archive itself: same protocol, same queries, same figures.
    let model = succeeded(indexer(&["evaluate-model", "--dataset", a, "--json"]));
    let model: serde_json::Value = serde_json::from_str(model.trim()).unwrap();
    assert_eq!(model["protocol"], *protocol);
    for figure in ["p_at_5", "mmv_at_5"] {
        let (by_index, by_model) = (
            retrieval[figure].as_f64().unwrap(),
            model[figure].as_f64().unwrap(),
        );
        assert!(
            (by_index - by_model).abs() < 1e-6,
            "{figure}: eval {by_index}, evaluate-model {by_model}"
        );
    }
    let text = succeeded(indexer(&["evaluate-model", "--dataset", a]));
    assert_eq!(text.lines().next(), Some(statement.as_str()));
}
