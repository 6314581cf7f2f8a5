//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the fuzz targets'
//! own bodies on the stable toolchain: every input that once found new code must still be
//! handled without a panic. The fuzzers themselves run locally (see `fuzz/README.md`).

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
        .join("fuzz/corpus")
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
fn dl_info_corpus() {
    replay("dl_info", lesion_search::fuzz_harness::dl_info);
}

#[test]
fn png16_corpus() {
    replay("png16", lesion_search::fuzz_harness::png16);
}

#[test]
fn dicom_corpus() {
    replay("dicom", lesion_search::fuzz_harness::dicom);
}

#[test]
fn index_load_corpus() {
    replay("index_load", lesion_search::fuzz_harness::index_load);
}
