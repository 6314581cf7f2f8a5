use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use lesion_search::dataset::{lesion_keys, Dataset, DlInfoReader, LesionKey};
use lesion_search::imaging::{render_thumbnail, ThumbnailSpec, WindowChoice};

#[derive(clap::Args)]
pub struct Args {
    /// The archive.
    #[arg(long)]
    dataset: PathBuf,
    /// Lesion key: File_name, with #n for the n-th lesion on that slice.
    #[arg(long)]
    lesion: String,
    /// Window: soft, lung, liver, bone, brain, mediastinum, abdomen, own, or low,high.
    #[arg(long, default_value = "own")]
    window: String,
    /// Show a square of this many mm around the box instead of the whole slice.
    #[arg(long)]
    around_mm: Option<f32>,
    /// Longest side of the thumbnail in pixels.
    #[arg(long, default_value_t = 256)]
    size: usize,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let key = LesionKey::parse(&args.lesion).map_err(|e| anyhow!("--lesion: {e}"))?;
    let window = WindowChoice::parse(&args.window).map_err(|e| anyhow!("--window: {e}"))?;
    let dataset = Dataset::new(&args.dataset);
    let records: Vec<_> = DlInfoReader::open(&dataset.dl_info_path())?
        .map(|row| row.map(|r| r.record))
        .collect::<Result<_, _>>()?;
    let keys = lesion_keys(&records);
    let record = keys
        .iter()
        .position(|k| *k == key)
        .map(|i| &records[i])
        .ok_or_else(|| {
            anyhow!(
                "--lesion: no lesion {key} in {}",
                dataset.dl_info_path().display()
            )
        })?;
    let image = dataset.load_key_slice(record)?;
    let spec = ThumbnailSpec {
        size_px: args.size,
        around_box_mm: args.around_mm,
        draw_box: true,
    };
    let thumbnail = render_thumbnail(
        &image,
        &window.resolve(Some(record.window)),
        Some(&record.bbox),
        (record.spacing.x_mm, record.spacing.y_mm),
        &spec,
    )?;
    std::fs::write(&args.out, thumbnail.to_png()?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{key}: {} written to {}",
        record.coarse_type,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
