//! A short soak in CI: `lesion-bench soak` over a small generated index for 30 seconds, with
//! writes and hostile requests mixed in. It must end with no 5xx to valid requests, no
//! hostile request served, and every acknowledged write visible. The 10-minute run and its
//! figures are in BENCHMARKS.md.

mod common;

use std::path::Path;
use std::process::Command;

/// Builds `lesion-web` beside `lesion-bench`, where `soak` finds it by default: `cargo test
/// --workspace` has built it already (then this is a no-op), `cargo test -p lesion-bench`
/// has not, and a binary left from an earlier build may be stale.
fn build_lesion_web_beside_lesion_bench() {
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_lesion-bench"))
        .parent()
        .unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
        "debug" => "dev",
        other => other,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .args([
            "build",
            "-p",
            "lesion-web",
            "--bin",
            "lesion-web",
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .expect("run cargo build -p lesion-web");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
}

#[test]
fn a_short_soak_loses_nothing_and_serves_no_5xx() {
    build_lesion_web_beside_lesion_bench();
    let dir = tempfile::tempdir().unwrap();
    let index = common::index(dir.path(), 80, 17);
    let output = common::bench(&[
        "soak",
        "--index",
        index.to_str().unwrap(),
        "--minutes",
        "0.5",
        "--readers",
        "2",
        "--write-every-s",
        "2",
        "--json",
    ]);
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
