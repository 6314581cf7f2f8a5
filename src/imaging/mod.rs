//! CT images: loading slices in Hounsfield units, windowing, patches and thumbnails.
//!
//! [`CtImage`] is the one in-memory form every loader produces: a row-major `f32` grid in
//! Hounsfield units (or, for 8-bit images that were windowed before export, display values),
//! with the spacing and window the file carried.

mod dicom;
mod patch;
mod png16;
mod thumbnail;
mod window;

use std::path::Path;

pub use self::dicom::{decode_dicom_frame, dicom_frame_count, load_dicom};
pub use patch::{
    check_box, extract_patch, slice_offset, ChannelSpec, FieldOfView, Patch, PatchGeometry,
    PatchSpec, SliceStack,
};
pub use png16::{decode_png16, encode_png16, load_png16};
pub use thumbnail::{render_thumbnail, Thumbnail, ThumbnailSpec};
pub use window::{Window, WindowChoice, WindowPreset};

use crate::error::{Error, Result};

/// What the pixel values of a [`CtImage`] mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PixelUnit {
    /// Hounsfield units: any window can be applied.
    Hounsfield,
    /// Rescaled values of a non-CT modality (MR): only the file's own window is meaningful.
    Modality,
    /// Display gray levels 0..255 of an image that was windowed before export; windows
    /// cannot be changed, they are applied as the identity.
    Display,
}

/// One CT slice in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct CtImage {
    pub width: usize,
    pub height: usize,
    /// Row-major, `width * height` values.
    pub pixels: Vec<f32>,
    pub unit: PixelUnit,
    /// Pixel spacing (x, y) in mm when the file states it.
    pub spacing_mm: Option<(f32, f32)>,
    /// The window the file recommends (DICOM WindowCenter/Width), when it has one.
    pub window: Option<Window>,
}

impl CtImage {
    pub fn new_hounsfield(width: usize, height: usize, pixels: Vec<f32>) -> Self {
        debug_assert_eq!(pixels.len(), width * height);
        CtImage {
            width,
            height,
            pixels,
            unit: PixelUnit::Hounsfield,
            spacing_mm: None,
            window: None,
        }
    }

    #[inline]
    pub fn get(&self, x: usize, y: usize) -> f32 {
        self.pixels[y * self.width + x]
    }

    /// Smallest and largest value.
    pub fn range(&self) -> (f32, f32) {
        self.pixels
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            })
    }

    /// Display intensity in 0..1 of one value under a window.
    #[inline]
    pub fn display(&self, value: f32, window: &Window) -> f32 {
        match self.unit {
            PixelUnit::Hounsfield | PixelUnit::Modality => window.apply(value),
            PixelUnit::Display => (value / 255.0).clamp(0.0, 1.0),
        }
    }
}

/// The kinds of file a slice can come in, told apart by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
    Dicom,
}

impl ImageFormat {
    /// Sniffs the format from the leading bytes (DICOM: "DICM" after the 128-byte preamble).
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageFormat::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageFormat::Jpeg)
        } else if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
            Some(ImageFormat::Dicom)
        } else {
            None
        }
    }
}

/// Loads any supported slice: 16-bit PNG (HU + 32768), DICOM, or 8-bit PNG/JPEG (display).
pub fn load_image(path: &Path) -> Result<CtImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes, path)
}

/// Decodes a slice from memory; `label` names it in errors (an upload's field name, a path).
pub fn decode_image(bytes: &[u8], label: &Path) -> Result<CtImage> {
    match ImageFormat::sniff(bytes) {
        Some(ImageFormat::Dicom) => dicom::decode_dicom(bytes, label),
        Some(ImageFormat::Png) if png16::is_png16_gray(bytes) => decode_png16(bytes, label),
        Some(ImageFormat::Png) | Some(ImageFormat::Jpeg) => decode_display_image(bytes, label),
        None => Err(Error::Image {
            path: label.to_path_buf(),
            message: "not a PNG, JPEG or DICOM file (unrecognised leading bytes)".into(),
        }),
    }
}

/// An 8-bit (or colour) PNG or JPEG: already windowed, read as gray display values.
fn decode_display_image(bytes: &[u8], label: &Path) -> Result<CtImage> {
    let decoded = image::load_from_memory(bytes).map_err(|e| Error::Image {
        path: label.to_path_buf(),
        message: format!("cannot decode image: {e}"),
    })?;
    let gray = decoded.into_luma8();
    let (width, height) = (gray.width() as usize, gray.height() as usize);
    Ok(CtImage {
        width,
        height,
        pixels: gray.into_raw().into_iter().map(f32::from).collect(),
        unit: PixelUnit::Display,
        spacing_mm: None,
        window: None,
    })
}
