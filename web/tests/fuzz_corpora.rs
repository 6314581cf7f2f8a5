//! Replays the committed fuzz corpora of the web targets (`fuzz/corpus/search_*`) through
//! the targets' own bodies on the stable toolchain.

use std::path::Path;

/// Panics seen anywhere in the process, caught or not: a decoder fenced with
/// `catch_unwind` must not panic on these inputs either (the fuzzer counts those too).
static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            default(info);
        }));
    });
}

fn replay(target: &str, harness: fn(&[u8])) {
    count_panics();
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
        let before = PANICS.load(std::sync::atomic::Ordering::SeqCst);
        let outcome = std::panic::catch_unwind(|| harness(&bytes));
        assert!(outcome.is_ok(), "{} panicked", input.display());
        assert_eq!(
            PANICS.load(std::sync::atomic::Ordering::SeqCst),
            before,
            "{} panicked inside a fence",
            input.display()
        );
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
