//! What the `lesion-bench` tests share: running the binary, and archives and indexes made
//! with the library, as `lesion-indexer synth` and `build` would make them.

#![allow(dead_code)] // Each test file uses its own part.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lesion_search::archive::{build, BuildOptions};
use lesion_search::embed::bundled_lesion_cnn;
use lesion_search::index::GraphParams;
use lesion_search::synth::{generate, SynthOptions};

pub fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lesion-bench"))
        .args(args)
        .output()
        .expect("run lesion-bench")
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A generated archive of `lesions` lesions in `dir`/archive.
pub fn archive(dir: &Path, lesions: usize, seed: u64) -> PathBuf {
    let archive = dir.join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    generate(
        &archive,
        &SynthOptions {
            lesions,
            seed,
            ..Default::default()
        },
        &|_, _| {},
    )
    .unwrap();
    archive
}

/// An index in `dir`/index over a generated archive, built with the bundled model.
pub fn index(dir: &Path, lesions: usize, seed: u64) -> PathBuf {
    let archive = archive(dir, lesions, seed);
    let model = bundled_lesion_cnn().unwrap();
    let index = dir.join("index");
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
    index
}
