use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use lesion_search::dataset::PixelBox;
use lesion_search::imaging::{
    extract_patch, load_dicom, load_image, FieldOfView, PatchGeometry, PatchSpec, SliceStack,
};

#[derive(clap::Args)]
pub struct Args {
    /// A slice: DICOM, 16-bit DeepLesion PNG, or an 8-bit PNG/JPEG.
    #[arg(long)]
    image: PathBuf,
    /// The lesion's box in pixels.
    #[arg(long = "box", value_name = "x1,y1,x2,y2")]
    bbox: String,
    /// Pixel spacing in mm when the file does not state it (PNG, JPEG).
    #[arg(long)]
    spacing: Option<f32>,
    /// Frame of a multi-frame DICOM file (0-based).
    #[arg(long, default_value_t = 0)]
    frame: u32,
    /// Patch side in pixels.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Where to write the patch (its channels side by side, as 8-bit gray PNG).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bbox = PixelBox::parse(&args.bbox).map_err(|e| anyhow!("--box: {e}"))?;
    let image = if args.frame > 0 {
        load_dicom(&args.image, args.frame)?
    } else {
        load_image(&args.image)?
    };
    let spacing = match (image.spacing_mm, args.spacing) {
        (_, Some(s)) => (s, s),
        (Some(s), None) => s,
        (None, None) => {
            return Err(anyhow!(
                "{} states no pixel spacing; pass --spacing MM",
                args.image.display()
            ))
        }
    };
    let spec = PatchSpec::three_windows(
        args.size,
        FieldOfView::Context {
            margin: 0.5,
            min_mm: 32.0,
            max_mm: 160.0,
        },
    );
    let geometry = PatchGeometry {
        bbox,
        spacing_mm: spacing,
        slice_interval_mm: 0.0,
        own_window: image.window,
    };
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
        args.image.display(),
        patch.mm_per_px,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
