//! The arguments that name one lesion on one slice, shared by `patch` and `embed`.

use std::path::PathBuf;

use anyhow::anyhow;
use lesion_search::dataset::PixelBox;
use lesion_search::imaging::{load_dicom, load_image, CtImage, PatchGeometry};

#[derive(clap::Args)]
pub struct SliceArgs {
    /// A slice: DICOM, 16-bit DeepLesion PNG, or an 8-bit PNG/JPEG.
    #[arg(long)]
    pub image: PathBuf,
    /// The lesion's box in pixels.
    #[arg(long = "box", value_name = "x1,y1,x2,y2")]
    pub bbox: String,
    /// Pixel spacing in mm when the file does not state it (PNG, JPEG).
    #[arg(long)]
    pub spacing: Option<f32>,
    /// Frame of a multi-frame DICOM file (0-based).
    #[arg(long, default_value_t = 0)]
    pub frame: u32,
}

impl SliceArgs {
    /// The slice and the geometry of the boxed lesion on it.
    pub fn load(&self) -> anyhow::Result<(CtImage, PatchGeometry)> {
        let bbox = PixelBox::parse(&self.bbox).map_err(|e| anyhow!("--box: {e}"))?;
        let image = if self.frame > 0 {
            load_dicom(&self.image, self.frame)?
        } else {
            load_image(&self.image)?
        };
        let spacing_mm = self
            .spacing
            .map(|s| (s, s))
            .or(image.spacing_mm)
            .ok_or_else(|| {
                anyhow!(
                    "{} states no pixel spacing; pass --spacing MM",
                    self.image.display()
                )
            })?;
        let geometry = PatchGeometry {
            bbox,
            spacing_mm,
            slice_interval_mm: 0.0,
            own_window: image.window,
        };
        Ok((image, geometry))
    }
}
