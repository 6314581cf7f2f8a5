//! `lesion-indexer delete`: lesions leave an index by key.

use std::path::PathBuf;
use std::process::ExitCode;

use lesion_search::archive::delete;
use lesion_search::index::GraphParams;

use crate::backend_args::BackendArgs;

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// The index folder (a new generation is published in it).
    #[arg(long)]
    index: PathBuf,
    /// Lesion keys: the `File_name`, with `#n` for the n-th lesion of a slice (from 2).
    #[arg(required = true)]
    keys: Vec<String>,
    #[command(flatten)]
    backend: BackendArgs,
}

pub fn run(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    args.backend.choice()?;
    let summary = delete(&args.index, &args.keys, GraphParams::default())?;
    crate::change_report::print_change("deleted", &args.index, &summary);
    args.backend.publish(&args.index)?;
    Ok(ExitCode::SUCCESS)
}
