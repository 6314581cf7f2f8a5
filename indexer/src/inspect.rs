use std::path::PathBuf;
use std::process::ExitCode;

use lesion_search::dataset::{inspect, InspectOptions, InspectReport, Severity};

#[derive(clap::Args)]
pub struct Args {
    /// The archive: a folder holding DL_info.csv and Images_png/.
    #[arg(long)]
    dataset: PathBuf,
    /// Stop at the first bad row.
    #[arg(long)]
    strict: bool,
    /// Decode every key slice instead of only checking that it exists.
    #[arg(long)]
    decode: bool,
    /// Treat columns beyond the official 18 as errors.
    #[arg(long)]
    reject_extra_columns: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = InspectOptions {
        strict: args.strict,
        reject_extra_columns: args.reject_extra_columns,
        decode_images: args.decode,
    };
    let report = inspect(&args.dataset, &options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(if report.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_text(r: &InspectReport) {
    for issue in &r.issues {
        let tag = match issue.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        println!("{tag}: {}", issue.message);
    }
    if !r.issues.is_empty() {
        println!();
    }
    let counts = |m: &std::collections::BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "rows           {} ({} valid, {} malformed)",
        r.rows, r.lesions, r.bad_rows
    );
    println!("patients       {}", r.patients);
    println!("studies        {}", r.studies);
    println!("key slices     {}", r.key_slices);
    println!("types          {}", counts(&r.by_type));
    println!("splits         {}", counts(&r.by_split));
    println!("sex            {}", counts(&r.by_sex));
    if let Some(d) = r.long_diameter_mm {
        println!(
            "long diameter  {:.1} / {:.1} / {:.1} / {:.1} / {:.1} mm (min / p25 / median / p75 / max)",
            d.min, d.p25, d.median, d.p75, d.max
        );
    }
    if let Some(d) = r.age {
        println!(
            "age            {:.0} / {:.0} / {:.0} years (min / median / max)",
            d.min, d.median, d.max
        );
    }
    println!("possibly noisy {}", r.possibly_noisy);
    println!(
        "missing files  {} key slices, {} neighbour slices in {} series; {} key slices undecodable",
        r.missing_key_slices,
        r.missing_neighbour_slices,
        r.series_with_missing_neighbours,
        r.undecodable_key_slices
    );
    if let Some(lines) = r.report_lines {
        println!(
            "reports        {lines} sentences, {} lesions without one",
            r.lesions_without_report
        );
    }
    if r.stopped_early {
        println!("stopped at the first error (--strict)");
    }
    let errors = r
        .issues
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .count();
    let warnings = r.issues.len() - errors;
    println!("result         {errors} errors, {warnings} warnings");
}
