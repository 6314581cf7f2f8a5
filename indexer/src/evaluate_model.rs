//! `lesion-indexer evaluate-model`: models compared on a generated archive (held-out P@5 by
//! type) or on real CT (`--real`: re-identification, same lesion across studies, speed).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use lesion_search::embed::train::evaluate_on_dataset;
use lesion_search::embed::{default_cache_dir, resolve_model};
use lesion_search::eval::read_pairs;
use lesion_search::eval::real_ct::{evaluate_real_ct, real_ct_markdown, RealCtInputs};

#[derive(clap::Args)]
pub struct Args {
    /// Archive whose validation and test lesions are the queries and the database.
    #[arg(long, required_unless_present = "real", conflicts_with = "real")]
    dataset: Option<PathBuf>,
    /// A real DeepLesion folder (`Images_png/` and `DL_info.csv` or `DL_info_partial.csv`,
    /// such as ../shared/data/deeplesion): the lesions whose key slice is there are the
    /// database and the queries.
    #[arg(long)]
    real: Option<PathBuf>,
    /// Real same-lesion pairs (DLT `valid.json`) for --real; those with both slices present
    /// are ranked.
    #[arg(long, requires = "real")]
    pairs: Option<PathBuf>,
    /// Models (names or folders).
    #[arg(long, num_args = 1.., default_values_t = [crate::DEFAULT_MODEL.to_string()])]
    models: Vec<String>,
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(real) = &args.real {
        let inputs = RealCtInputs {
            deeplesion: real.clone(),
            pairs: match &args.pairs {
                Some(path) => read_pairs(path)?,
                None => Vec::new(),
            },
        };
        let mut all = Vec::new();
        for name in &args.models {
            let model = resolve_model(name, &default_cache_dir())
                .with_context(|| format!("loading model {name}"))?;
            all.push(evaluate_real_ct(name, model.as_ref(), &inputs)?);
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&all)?);
        } else {
            print!("{}", real_ct_markdown(&all));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let dataset = args
        .dataset
        .expect("clap requires --dataset without --real");
    for name in &args.models {
        let model = resolve_model(name, &default_cache_dir())?;
        let (n, p, by_type) = evaluate_on_dataset(model.as_ref(), &dataset)?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({"model": name, "lesions": n, "p_at_5": p, "p_at_5_by_type": by_type})
            );
        } else {
            let types: Vec<String> = by_type.iter().map(|(t, p)| format!("{t} {p:.3}")).collect();
            println!(
                "{name}: held-out P@5 {p:.3} over {n} lesions ({})",
                types.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
