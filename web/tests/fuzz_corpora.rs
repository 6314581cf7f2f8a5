//! Replays the committed fuzz corpora of the web targets (`fuzz/corpus/search_*`) through
//! the targets' own bodies on the stable toolchain.

use std::path::Path;

fn replay(target: &str, harness: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    lesion_search::fuzz_harness::replay_corpus(&dir, harness);
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
