//! `fit-followup`, `eval-followup` and `eval-outlook`: the same-lesion matcher fitted and
//! measured on real pairs against a `DL_info.csv` table, and the outlook of similar lesions
//! measured leave-patient-out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use lesion_search::dataset::{Dataset, DlInfoReader};
use lesion_search::embed::{default_cache_dir, resolve_model};
use lesion_search::eval::read_pairs;
use lesion_search::followup::outlook::table_trajectories;
use lesion_search::followup::{
    evaluate, fit_matcher, fit_outlook, LesionTable, MatcherModel, OutlookModel,
};

#[derive(clap::Args)]
pub struct Inputs {
    /// Same-lesion pairs, DLT format (`valid.json` of the DLT benchmark).
    #[arg(long)]
    pairs: PathBuf,
    /// A DeepLesion `DL_info.csv` holding both ends of the pairs and their studies' lesions.
    #[arg(long)]
    table: PathBuf,
    /// DeepLesion-format folder with `Images_png/`: lesions whose key slice is there are
    /// compared by appearance too.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Model for appearance (name or folder), used with --dataset.
    #[arg(long, default_value = crate::DEFAULT_MODEL)]
    model: String,
}

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

struct Loaded {
    table: LesionTable,
    pairs: Vec<lesion_search::eval::FollowUpPair>,
    vectors: HashMap<usize, Vec<f32>>,
}

fn load(inputs: &Inputs) -> anyhow::Result<Loaded> {
    let pairs = read_pairs(&inputs.pairs)?;
    let mut records = Vec::new();
    for row in DlInfoReader::open(&inputs.table)? {
        records.push(row?.record);
    }
    let table = LesionTable::new(records);
    let vectors = match &inputs.dataset {
        Some(dir) => {
            let embedder = resolve_model(&inputs.model, &default_cache_dir())
                .with_context(|| format!("loading model {}", inputs.model))?;
            let (resolved, _) = lesion_search::followup::table::resolve_pairs(&table, &pairs);
            let mut rows: Vec<usize> = Vec::new();
            for p in &resolved {
                rows.push(p.source);
                rows.extend(table.candidates(p.source, table.records[p.target].study));
            }
            rows.sort_unstable();
            rows.dedup();
            lesion_search::followup::table::embed_present(
                &table,
                &rows,
                &Dataset::new(dir),
                embedder.as_ref(),
            )?
        }
        None => HashMap::new(),
    };
    Ok(Loaded {
        table,
        pairs,
        vectors,
    })
}

/// Writes beside the file and renames, so an interrupted run leaves the old file whole.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
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

pub fn fit(args: FitArgs) -> anyhow::Result<ExitCode> {
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

pub fn outlook(args: OutlookArgs) -> anyhow::Result<ExitCode> {
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
