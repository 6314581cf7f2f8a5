//! `lesion-indexer delete`: lesions leave an index by key.

use std::path::PathBuf;
use std::process::ExitCode;

use lesion_search::service::Writer;

use crate::backend_args::{print_mirror, BackendArgs};

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
    let written = Writer::open(&args.index, &args.backend.choice()?)?.delete(&args.keys)?;
    crate::change_report::print_change("deleted", &args.index, &written.summary);
    print_mirror(written.mirror.as_ref());
    Ok(ExitCode::SUCCESS)
}
