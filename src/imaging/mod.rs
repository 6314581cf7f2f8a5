//! CT images: loading slices in Hounsfield units, windowing, patches and thumbnails.
//!
//! [`CtImage`] is the one in-memory form every loader produces: a row-major `f32` grid in
//! Hounsfield units (or, for 8-bit images that were windowed before export, display values),
//! with the spacing and window the file carried.

mod codestream;
mod dicom;
mod dicom_scan;
mod dicom_summary;
mod geometry;
#[doc(hidden)]
pub mod lies;
mod nifti;
mod nrrd;
mod patch;
mod png16;
mod thumbnail;
mod window;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use self::dicom::{
    decode_dicom_frame, decode_dicom_frame_within, dicom_frame_count, load_dicom,
};
pub use codestream::MAX_J2K_TILES;
pub use dicom_scan::{
    scan as scan_dicom, DicomSummary, ScanProblem, MAX_ELEMENTS, MAX_SEQUENCE_DEPTH,
};
pub use dicom_summary::Encapsulated;
pub use geometry::{
    check_box, check_context_mm, check_file_spacing, check_pixel_spacing, PixelBox, Point,
    CONTEXT_MM, PIXEL_SPACING_MM,
};
pub use nifti::{decode_nifti, load_nifti, AffineSource, AxialSlice, NiftiDatatype, NiftiVolume};
pub use nrrd::{decode_nrrd, encode_nrrd_i16, load_nrrd, Volume, MAX_VOXELS};
pub use patch::{
    extract_patch, slice_offset, ChannelSpec, FieldOfView, Patch, PatchGeometry, PatchSpec,
    SliceStack,
};
pub use png16::{decode_png16, decode_png16_within, encode_png16, load_png16};
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
    /// The DICOM Modality (`CT`, `MR`, ...), when the file states one.
    pub modality: Option<String>,
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
            modality: None,
        }
    }

    /// Refuses an image of another modality (MR, PET...): its values are not Hounsfield
    /// units, so neither CT windows nor a CT model mean anything on it. Display images
    /// (8-bit PNG/JPEG, windowed before export) pass: they carry no modality to check.
    pub fn require_ct(&self, label: &Path) -> Result<()> {
        match self.unit {
            PixelUnit::Modality => Err(Error::NotCt {
                path: label.to_path_buf(),
                modality: self.modality.clone().unwrap_or_else(|| "unknown".into()),
            }),
            PixelUnit::Hounsfield | PixelUnit::Display => Ok(()),
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

/// How large an image a decoder may produce, checked against the file's header before any
/// pixel buffer is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest width or height.
    pub max_side: usize,
    /// Largest number of frames of a multi-frame DICOM.
    pub max_frames: u32,
    /// Largest decoded pixel data (rows x columns x frames x samples x bytes per sample).
    pub max_decoded_bytes: usize,
    /// Largest size a deflated DICOM dataset may inflate to.
    pub max_inflated_bytes: usize,
}

impl Default for DecodeLimits {
    /// Generous enough for any CT slice or series file; the server sets tighter ones.
    fn default() -> Self {
        DecodeLimits {
            max_side: 8192,
            max_frames: 4096,
            max_decoded_bytes: 1 << 30,
            max_inflated_bytes: 1 << 30,
        }
    }
}

impl DecodeLimits {
    /// Limits for single slices of at most `side` x `side` pixels.
    pub fn for_slices(side: usize) -> Self {
        DecodeLimits {
            max_side: side,
            max_frames: 1024,
            // 16-bit samples of one full-size slice, or a stack of smaller frames.
            max_decoded_bytes: (side * side * 2).max(64 << 20),
            max_inflated_bytes: (side * side * 4).max(64 << 20),
        }
    }

    /// Refuses `width` x `height` when either side is past the limit.
    pub fn check_side(&self, width: usize, height: usize, label: &Path) -> Result<()> {
        if width > self.max_side || height > self.max_side {
            return Err(Error::ImageTooLarge {
                path: label.to_path_buf(),
                message: format!(
                    "{width}x{height} pixels is larger than the {0}x{0} allowed",
                    self.max_side
                ),
            });
        }
        Ok(())
    }
}

/// The process-wide budget of decoding in flight, in bytes: every decode reserves its
/// estimated peak (decoded samples, the `f32` buffers, copies of the input) before it
/// starts and gives it back when it ends, so that many concurrent uploads, each within
/// its own [`DecodeLimits`], cannot together exhaust memory. A decode that would pass the
/// budget is refused with [`Error::DecodeBudgetExhausted`] (the server answers 503 busy),
/// except when nothing else is in flight: a lone decode is bounded by its limits alone, so
/// a command-line job on one large file never starves.
#[derive(Debug)]
pub struct DecodeBudget {
    capacity: AtomicUsize,
    in_flight: AtomicUsize,
}

/// 2 GiB: about forty concurrent worst-case decodes under the server's
/// [`DecodeLimits::for_slices`]`(2048)` (around 60 MB each), a small share of a server's memory.
pub const DEFAULT_DECODE_BUDGET: usize = 2 << 30;

static DECODE_BUDGET: DecodeBudget = DecodeBudget {
    capacity: AtomicUsize::new(DEFAULT_DECODE_BUDGET),
    in_flight: AtomicUsize::new(0),
};

/// Sets the process-wide decoding budget (bytes); decodes in flight keep their reservations.
pub fn set_decode_budget(bytes: usize) {
    DECODE_BUDGET.capacity.store(bytes, Ordering::SeqCst);
}

/// The process-wide decoding budget: (bytes reserved now, capacity).
pub fn decode_budget_usage() -> (usize, usize) {
    (
        DECODE_BUDGET.in_flight.load(Ordering::SeqCst),
        DECODE_BUDGET.capacity.load(Ordering::SeqCst),
    )
}

/// Bytes of the global budget held by one decode; given back on drop.
#[derive(Debug)]
pub struct BudgetReservation {
    bytes: usize,
}

impl DecodeBudget {
    fn reserve(&'static self, bytes: usize, label: &Path) -> Result<BudgetReservation> {
        let capacity = self.capacity.load(Ordering::SeqCst);
        let mut current = self.in_flight.load(Ordering::SeqCst);
        loop {
            if current != 0 && current.saturating_add(bytes) > capacity {
                return Err(Error::DecodeBudgetExhausted {
                    path: label.to_path_buf(),
                    needed: bytes,
                    in_flight: current,
                    capacity,
                });
            }
            match self.in_flight.compare_exchange(
                current,
                current.saturating_add(bytes),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Ok(BudgetReservation { bytes }),
                Err(now) => current = now,
            }
        }
    }
}

impl Drop for BudgetReservation {
    fn drop(&mut self) {
        DECODE_BUDGET
            .in_flight
            .fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// Reserves `bytes` of the process-wide decoding budget for the decode of `label`.
pub fn reserve_decode(bytes: usize, label: &Path) -> Result<BudgetReservation> {
    DECODE_BUDGET.reserve(bytes, label)
}

/// Loads any supported slice: 16-bit PNG (HU + 32768), DICOM, or 8-bit PNG/JPEG (display).
pub fn load_image(path: &Path) -> Result<CtImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes, path)
}

/// Decodes a slice from memory; `label` names it in errors (an upload's field name, a path).
pub fn decode_image(bytes: &[u8], label: &Path) -> Result<CtImage> {
    decode_image_within(bytes, label, &DecodeLimits::default())
}

/// [`decode_image`] refusing, from the file's header and before decoding, any image past
/// `limits`: the entry point for bytes from outside (uploads).
pub fn decode_image_within(bytes: &[u8], label: &Path, limits: &DecodeLimits) -> Result<CtImage> {
    match ImageFormat::sniff(bytes) {
        Some(ImageFormat::Dicom) => dicom::decode_dicom(bytes, label, limits),
        Some(ImageFormat::Png) if png16::is_png16_gray(bytes) => {
            png16::decode_png16_within(bytes, label, limits)
        }
        Some(ImageFormat::Png) | Some(ImageFormat::Jpeg) => {
            decode_display_image(bytes, label, limits)
        }
        None => Err(Error::Image {
            path: label.to_path_buf(),
            message: "not a PNG, JPEG or DICOM file (unrecognised leading bytes)".into(),
        }),
    }
}

/// An 8-bit (or colour) PNG or JPEG: already windowed, read as gray display values.
fn decode_display_image(bytes: &[u8], label: &Path, limits: &DecodeLimits) -> Result<CtImage> {
    let image_error = |message: String| Error::Image {
        path: label.to_path_buf(),
        message,
    };
    // A JPEG's frame headers are read here, all of them up to EOI: the size is judged
    // whatever the decoder does with a stream that ends early, and a later SOF that
    // declares another frame than the first is refused.
    if bytes.starts_with(&[0xFF, 0xD8]) {
        match codestream::jpeg_file_frame(bytes) {
            Ok(Some(frame)) => {
                limits.check_side(usize::from(frame.width), usize::from(frame.height), label)?
            }
            Ok(None) => {}
            Err(problem) => return Err(image_error(format!("JPEG {problem}"))),
        }
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| image_error(format!("cannot read image: {e}")))?;
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| image_error(format!("cannot decode image header: {e}")))?;
    limits.check_side(width as usize, height as usize, label)?;
    // Peak: the decoded image (up to 4 bytes a pixel, RGBA), its gray copy and the f32s.
    let pixels = width as usize * height as usize;
    let _reservation = reserve_decode(pixels * 9 + bytes.len(), label)?;
    reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| image_error(format!("cannot read image: {e}")))?;
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(limits.max_side as u32);
    image_limits.max_image_height = Some(limits.max_side as u32);
    image_limits.max_alloc = Some(limits.max_decoded_bytes as u64 * 4);
    reader.limits(image_limits);
    let decoded = reader
        .decode()
        .map_err(|e| image_error(format!("cannot decode image: {e}")))?;
    let gray = decoded.into_luma8();
    let (width, height) = (gray.width() as usize, gray.height() as usize);
    Ok(CtImage {
        width,
        height,
        pixels: gray.into_raw().into_iter().map(f32::from).collect(),
        unit: PixelUnit::Display,
        spacing_mm: None,
        window: None,
        modality: None,
    })
}
