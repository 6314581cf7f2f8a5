use std::process::ExitCode;

use lesion_search::embed::{default_cache_dir, resolve_model};
use lesion_search::imaging::{extract_patch, SliceStack};

use crate::slice_args::SliceArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    slice: SliceArgs,
    /// Model: `lesion-cnn`, an imported model's name, or a folder with card.json.
    #[arg(long, default_value = crate::DEFAULT_MODEL)]
    model: String,
    /// Print the vector and the model card as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let model = resolve_model(&args.model, &default_cache_dir())?;
    let (image, geometry) = args.slice.load()?;
    let patch = extract_patch(&SliceStack::single(&image), &geometry, &model.card().patch)?;
    let vector = model.embed(std::slice::from_ref(&patch))?.remove(0);
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "model": model.card(), "vector": vector })
        );
    } else {
        let text: Vec<String> = vector.iter().map(|v| format!("{v:.6}")).collect();
        println!("{}", text.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}
