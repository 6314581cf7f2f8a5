//! `lesion-web --demo`: on first run, a generated archive of about 2,000 lesions and its
//! index under the demo folder; later runs reuse them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use lesion_search::archive::{served_generation_name, BuildEvent, BuildOptions};
use lesion_search::backend::BackendChoice;
use lesion_search::embed::Embedder;
use lesion_search::index::{GraphBuilder, GraphParams};
use lesion_search::service::Writer;
use lesion_search::synth::{generate, SynthOptions};

pub const DEMO_LESIONS: usize = 2_000;
const DEMO_SEED: u64 = 2026;

/// The demo index folder, generated and built first when absent (its graph, once the index
/// has one, built by `graph_builder`); its generation is mirrored into `backend` either way
/// (the demo's Milvus collection is made here too).
pub fn prepare(
    dir: &Path,
    model: &dyn Embedder,
    backend: &BackendChoice,
    graph_builder: GraphBuilder,
) -> anyhow::Result<PathBuf> {
    let archive = dir.join("archive");
    let index = dir.join("index");
    if served_generation_name(&index)?.is_some() {
        // The in-process backend reads the generation itself: no lock, no mirror to make.
        if *backend != BackendChoice::Embedded {
            Writer::open(&index, backend)?.mirror_served()?;
        }
        return Ok(index);
    }
    if !archive.join("DL_info.csv").is_file() {
        eprintln!(
            "generating a demo archive of {DEMO_LESIONS} lesions in {}",
            archive.display()
        );
        // Generated beside and renamed, so an interrupted run starts over cleanly.
        let partial = dir.join("archive.partial");
        if partial.exists() {
            std::fs::remove_dir_all(&partial)
                .with_context(|| format!("removing {}", partial.display()))?;
        }
        std::fs::create_dir_all(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let options = SynthOptions {
            lesions: DEMO_LESIONS,
            seed: DEMO_SEED,
            label_train: true,
            ..Default::default()
        };
        generate(&partial, &options, &|done, total| {
            if done % 500 == 0 || done == total {
                eprintln!("  {done}/{total} lesions drawn");
            }
        })?;
        std::fs::rename(&partial, &archive)
            .with_context(|| format!("publishing {}", archive.display()))?;
    }
    eprintln!("building the demo index in {}", index.display());
    let options = BuildOptions {
        dataset: archive,
        reports: None,
        model,
        graph: GraphParams {
            builder: graph_builder,
            ..GraphParams::default()
        },
        labels: None,
    };
    Writer::create(&index, backend)?.build(&options, &[], &|event| {
        if let BuildEvent::Embedding { done, total } = event {
            if done % 512 < 64 || done == total {
                eprintln!("  {done}/{total} lesions embedded");
            }
        }
    })?;
    Ok(index)
}
