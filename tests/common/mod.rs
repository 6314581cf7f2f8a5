//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use lesion_search::synth::{generate, SynthOptions};

/// `../shared/data` beside the checkout, or `None` with a message saying the test skips.
pub fn shared_data(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if dir.join("deeplesion/DL_info_partial.csv").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP {test}: real DeepLesion data not found at {}",
            dir.display()
        );
        None
    }
}

/// A generated archive in a fresh temporary folder.
pub fn synth_archive(lesions: usize, seed: u64, label_train: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let options = SynthOptions {
        lesions,
        seed,
        label_train,
        ..Default::default()
    };
    generate(dir.path(), &options, &|_, _| {}).unwrap();
    dir
}
