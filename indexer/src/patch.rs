use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use lesion_search::imaging::{extract_patch, FieldOfView, PatchSpec, SliceStack};

use crate::slice_args::SliceArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    slice: SliceArgs,
    /// Patch side in pixels.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Where to write the patch (its channels side by side, as 8-bit gray PNG).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (image, geometry) = args.slice.load()?;
    let spec = PatchSpec::three_windows(
        args.size,
        FieldOfView::Context {
            margin: 0.5,
            min_mm: 32.0,
            max_mm: 160.0,
        },
    );
    let patch = extract_patch(&SliceStack::single(&image), &geometry, &spec)?;
    let (n, c) = (patch.size_px, patch.channels);
    let mut gray = vec![0u8; n * n * c];
    for ch in 0..c {
        for y in 0..n {
            for x in 0..n {
                gray[y * n * c + ch * n + x] = (patch.channel(ch)[y * n + x] * 255.0).round() as u8;
            }
        }
    }
    image::save_buffer(
        &args.out,
        &gray,
        (n * c) as u32,
        n as u32,
        image::ExtendedColorType::L8,
    )
    .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{}: {c} channels of {n}x{n} px at {:.2} mm/px written to {}",
        args.slice.image.display(),
        patch.mm_per_px,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
