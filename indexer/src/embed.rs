use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use lesion_search::dataset::PixelBox;
use lesion_search::embed::{default_cache_dir, resolve_model};
use lesion_search::imaging::{extract_patch, load_image, PatchGeometry, SliceStack};

#[derive(clap::Args)]
pub struct Args {
    /// A slice: DICOM, 16-bit DeepLesion PNG, or an 8-bit PNG/JPEG.
    #[arg(long)]
    image: PathBuf,
    /// The lesion's box in pixels.
    #[arg(long = "box", value_name = "x1,y1,x2,y2")]
    bbox: String,
    /// Model: a folder with card.json, or an imported model's name.
    #[arg(long, default_value = crate::DEFAULT_MODEL)]
    model: String,
    /// Pixel spacing in mm when the file does not state it.
    #[arg(long)]
    spacing: Option<f32>,
    /// Print the vector and the model card as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bbox = PixelBox::parse(&args.bbox).map_err(|e| anyhow!("--box: {e}"))?;
    let model = resolve_model(&args.model, &default_cache_dir())?;
    let image = load_image(&args.image)?;
    let spacing = args
        .spacing
        .map(|s| (s, s))
        .or(image.spacing_mm)
        .ok_or_else(|| {
            anyhow!(
                "{} states no pixel spacing; pass --spacing MM",
                args.image.display()
            )
        })?;
    let geometry = PatchGeometry {
        bbox,
        spacing_mm: spacing,
        slice_interval_mm: 0.0,
        own_window: image.window,
    };
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
