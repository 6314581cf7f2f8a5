//! `lesion-indexer eval-outlook`: the outlook of similar lesions measured leave-patient-out.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{file_name, load, write_atomically, Inputs};
use anyhow::Context;
use lesion_search::followup::outlook::table_trajectories;
use lesion_search::followup::{fit_outlook, OutlookModel};

#[derive(clap::Args)]
pub struct OutlookArgs {
    #[command(flatten)]
    inputs: Inputs,
    /// Outlook parameters (default: the bundled ones).
    #[arg(long)]
    outlook: Option<PathBuf>,
    /// Write the parameters with this measurement to FILE (what `data/followup/outlook.json`
    /// ships).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn run(args: OutlookArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.inputs)?;
    let model = match &args.outlook {
        Some(path) => OutlookModel::load(path)?,
        None => OutlookModel::bundled().clone(),
    };
    let trajectories = table_trajectories(&loaded.table, &loaded.pairs, &loaded.vectors);
    anyhow::ensure!(
        !trajectories.is_empty(),
        "none of the pairs in {} goes forward in time within {}",
        args.inputs.pairs.display(),
        args.inputs.table.display()
    );
    let command = format!(
        "lesion-indexer eval-outlook --pairs {} --table {}{}",
        file_name(&args.inputs.pairs),
        file_name(&args.inputs.table),
        if args.inputs.dataset.is_some() {
            " --dataset DIR"
        } else {
            ""
        }
    );
    let shipped = fit_outlook(&model, &trajectories, &command);
    let evaluation = shipped
        .evaluation
        .clone()
        .expect("a fitted outlook carries its measurement");
    if let Some(out) = &args.out {
        write_atomically(out, serde_json::to_string_pretty(&shipped)?.as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&evaluation)?);
        return Ok(ExitCode::SUCCESS);
    }
    let e = &evaluation;
    println!(
        "{} forward pairs of {} patients, nested leave-patient-out (5 folds), {} similar lesions each; pseudo-counts of base rates chosen on all pairs: {}",
        e.pairs, e.patients, model.neighbours, shipped.prior_weight
    );
    println!(
        "Brier score {:.4} (base rates {:.4}: grew {:.3}, stable {:.3}, shrank {:.3}) -> {}",
        e.brier,
        e.brier_base_rates,
        e.base_rates.grew,
        e.base_rates.stable,
        e.base_rates.shrank,
        if e.beats_base_rates {
            format!(
                "better by {:.1}%",
                100.0 * (1.0 - e.brier / e.brier_base_rates)
            )
        } else {
            "no better than the base rates: no prediction is shown".into()
        }
    );
    println!(
        "median log change of the similar lesions: mean absolute error {:.4} (no change {:.4})",
        e.mae_median_change, e.mae_no_change
    );
    Ok(ExitCode::SUCCESS)
}
