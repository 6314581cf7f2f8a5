//! `lesion-indexer fit-followup`: the matcher's weights and threshold fitted on real pairs.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{file_name, load, write_atomically, Inputs};
use anyhow::Context;
use lesion_search::followup::fit_matcher;

#[derive(clap::Args)]
pub struct FitArgs {
    #[command(flatten)]
    inputs: Inputs,
    /// Where to write the fitted matcher (JSON).
    #[arg(long)]
    out: PathBuf,
    /// What the pairs and table are, with their licences, for the model's provenance
    /// (default: their file names).
    #[arg(long)]
    fitted_on: Option<String>,
}

pub fn run(args: FitArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.inputs)?;
    let mut command = format!(
        "lesion-indexer fit-followup --pairs {} --table {}",
        file_name(&args.inputs.pairs),
        file_name(&args.inputs.table)
    );
    if let Some(text) = &args.fitted_on {
        command.push_str(&format!(" --fitted-on {text:?}"));
    }
    if args.inputs.dataset.is_some() {
        command.push_str(&format!(
            " --dataset DIR --model {} (appearance from {} lesions' slices)",
            args.inputs.model,
            loaded.vectors.len()
        ));
    }
    let fitted_on = args.fitted_on.clone().unwrap_or_else(|| {
        format!(
            "pairs of {} looked up in {}",
            file_name(&args.inputs.pairs),
            file_name(&args.inputs.table)
        )
    });
    let (model, figures) = fit_matcher(
        &loaded.table,
        &loaded.pairs,
        &loaded.vectors,
        &command,
        &fitted_on,
    );
    write_atomically(&args.out, serde_json::to_string_pretty(&model)?.as_bytes())
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "fitted on {} pairs: leave-patient-out accuracy@1 {:.3} @3 {:.3}; threshold {:.3} gets {:.3} of decisions right (no-match precision {:.3}, recall {:.3}); written to {}",
        model.provenance.pairs,
        model.provenance.cross_validated_accuracy_at_1,
        model.provenance.cross_validated_accuracy_at_3,
        figures.threshold,
        figures.decisions_right,
        figures.precision,
        figures.recall,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
