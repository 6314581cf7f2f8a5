//! `lesion-indexer milvus-sync`: the served generation copied into Milvus.

use std::path::PathBuf;
use std::process::ExitCode;

use lesion_search::service::Writer;

use crate::backend_args::{print_mirror, BackendArgs};

#[derive(clap::Args)]
pub struct MilvusSyncArgs {
    #[arg(long)]
    index: PathBuf,
    /// The Milvus server's gRPC address.
    #[arg(long, default_value = lesion_search::backend::milvus::DEFAULT_URL)]
    milvus_url: String,
    /// Alias of the served generation (collections are NAME_gen_NNNNNN_...).
    #[arg(long, default_value = lesion_search::backend::milvus::DEFAULT_COLLECTION)]
    milvus_collection: String,
    /// Vector index of the collection: auto (FLAT up to 200,000 lesions, else HNSW), flat
    /// or hnsw.
    #[arg(long, default_value = "auto", value_parser = ["auto", "flat", "hnsw"])]
    milvus_index: String,
}

pub fn run(args: MilvusSyncArgs) -> anyhow::Result<ExitCode> {
    let backend = BackendArgs {
        backend: "milvus".into(),
        milvus_url: args.milvus_url,
        milvus_collection: args.milvus_collection,
        milvus_index: args.milvus_index,
    }
    .choice()?;
    let mirror = Writer::open(&args.index, &backend)?.mirror_served()?;
    print_mirror(mirror.as_ref());
    Ok(ExitCode::SUCCESS)
}
