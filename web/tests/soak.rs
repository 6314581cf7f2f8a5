//! A short soak in CI: `lesion-web soak` over a small generated index for 30 seconds, with
//! writes and hostile requests mixed in. It must end with no 5xx to valid requests, no
//! hostile request served, and every acknowledged write visible. The 10-minute run and its
//! figures are in BENCHMARKS.md.

use std::process::Command;

use lesion_search::archive::{build, BuildOptions};
use lesion_search::embed::bundled_lesion_cnn;
use lesion_search::index::GraphParams;
use lesion_search::synth::{generate, SynthOptions};

#[test]
fn a_short_soak_loses_nothing_and_serves_no_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    generate(
        &archive,
        &SynthOptions {
            lesions: 80,
            seed: 17,
            ..Default::default()
        },
        &|_, _| {},
    )
    .unwrap();
    let model = bundled_lesion_cnn().unwrap();
    let index = dir.path().join("index");
    build(
        &index,
        &BuildOptions {
            dataset: archive,
            reports: None,
            model: &model,
            graph: GraphParams::default(),
            labels: None,
        },
        &|_| {},
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_lesion-web"))
        .args(["soak", "--index", index.to_str().unwrap()])
        .args([
            "--minutes",
            "0.5",
            "--readers",
            "2",
            "--write-every-s",
            "2",
            "--json",
        ])
        .output()
        .expect("run lesion-web soak");
    let text = String::from_utf8_lossy(&output.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_str(&text).expect("a JSON report");
    assert_eq!(report["server_errors"], 0, "{report}");
    assert_eq!(report["connection_errors"], 0, "{report}");
    assert_eq!(report["hostile_not_refused"], 0, "{report}");
    assert_eq!(report["writes_lost"], 0, "{report}");
    assert!(report["requests"].as_u64().unwrap() > 50, "{report}");
    assert!(report["hostile"].as_u64().unwrap() > 10, "{report}");
    assert!(
        report["adds_acknowledged"].as_u64().unwrap() >= 3,
        "{report}"
    );
    assert!(
        report["deletes_acknowledged"].as_u64().unwrap() >= 3,
        "{report}"
    );
    assert!(output.status.success());
}
