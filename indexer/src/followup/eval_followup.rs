//! `lesion-indexer eval-followup`: same-lesion matching measured on real pairs.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{load, Inputs};
use lesion_search::followup::{evaluate, MatcherModel};

#[derive(clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    inputs: Inputs,
    /// Matcher weights (default: the bundled ones, fitted on DLT's valid.json).
    #[arg(long)]
    matcher: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.inputs)?;
    let model = match &args.matcher {
        Some(path) => MatcherModel::load(path)?,
        None => MatcherModel::bundled().clone(),
    };
    let report = evaluate(&loaded.table, &loaded.pairs, &model, &loaded.vectors);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "pairs {} ({} found in the table), {:.2} candidates per target study on average, {:.0}% with only one",
        report.pairs,
        report.resolved,
        report.mean_candidates,
        100.0 * report.single_candidate_share
    );
    println!(
        "accuracy@1 {:.3}  @3 {:.3}  (weights: {})",
        report.accuracy_at_1, report.accuracy_at_3, model.provenance.fitted_on
    );
    println!(
        "leave-patient-out (5 folds, refitted): accuracy@1 {:.3}  @3 {:.3}",
        report.cross_validated_accuracy_at_1, report.cross_validated_accuracy_at_3
    );
    println!(
        "for comparison: nearest by location alone {:.3}; the previous gated matcher {:.3}",
        report.nearest_location_accuracy_at_1, report.previous_gate_accuracy_at_1
    );
    let n = &report.no_match;
    println!(
        "no match (threshold {:.3}; {} decisions with the target, {} with it withheld): precision {:.3}, recall {:.3}, true follow-ups hidden {:.3}",
        n.threshold, n.present, n.withheld, n.precision, n.recall, n.false_no_match
    );
    let c = &report.calibration;
    println!(
        "calibration of the best candidate's probability (leave-patient-out, same decisions): expected error {:.3}",
        c.expected_calibration_error
    );
    for b in &c.bins {
        println!(
            "  {:.1}-{:.1}: {:>4} decisions, stated {:.3}, right {:.3}",
            b.from, b.to, b.decisions, b.mean_probability, b.share_right
        );
    }
    let a = &report.appearance;
    println!(
        "pairs with slices for appearance: {} (accuracy@1 table only {:.3}, with appearance {:.3})",
        a.pairs, a.accuracy_at_1_table_only, a.accuracy_at_1_with_appearance
    );
    for t in &report.by_type {
        println!(
            "  {:<14} {:>4} pairs  accuracy@1 {:.3}",
            format!("{:?}", t.coarse_type),
            t.pairs,
            t.accuracy_at_1
        );
    }
    Ok(ExitCode::SUCCESS)
}
