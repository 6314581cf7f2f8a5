//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the fuzz targets'
//! own bodies on the stable toolchain: every input that once found new code must still be
//! handled without a panic. The fuzzers themselves run locally (see `fuzz/README.md`).

use std::path::Path;

fn replay(target: &str, harness: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    lesion_search::fuzz_harness::replay_corpus(&dir, harness);
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

#[test]
fn record_table_corpus() {
    replay("record_table", lesion_search::fuzz_harness::record_table);
}

#[test]
fn lying_images_corpus() {
    replay("lying_images", lesion_search::fuzz_harness::lying_images);
}
