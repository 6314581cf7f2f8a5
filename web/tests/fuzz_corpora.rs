//! Replays the committed fuzz corpora of the web targets (`fuzz/corpus/search_*`) through
//! the targets' own bodies on the stable toolchain.

use std::path::Path;

fn replay(target: &str, harness: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{}: no corpus", dir.display());
    for input in &inputs {
        let bytes = std::fs::read(input).unwrap();
        let outcome = std::panic::catch_unwind(|| harness(&bytes));
        assert!(outcome.is_ok(), "{} panicked", input.display());
    }
    eprintln!("{target}: {} inputs replayed", inputs.len());
}

#[test]
fn search_json_corpus() {
    replay("search_json", lesion_web::fuzz_harness::search_json);
}

#[test]
fn search_multipart_corpus() {
    replay(
        "search_multipart",
        lesion_web::fuzz_harness::search_multipart,
    );
}
