use std::path::PathBuf;
use std::process::ExitCode;

use lesion_search::embed::train::evaluate_on_dataset;
use lesion_search::embed::{default_cache_dir, resolve_model};

#[derive(clap::Args)]
pub struct Args {
    /// Archive whose validation and test lesions are the queries and the database.
    #[arg(long)]
    dataset: PathBuf,
    /// Models (names or folders).
    #[arg(long, num_args = 1.., default_values_t = [crate::DEFAULT_MODEL.to_string()])]
    models: Vec<String>,
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    for name in &args.models {
        let model = resolve_model(name, &default_cache_dir())?;
        let (n, p, by_type) = evaluate_on_dataset(model.as_ref(), &args.dataset)?;
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
