//! DICOM slices through dicom-rs: native, RLE, JPEG lossless and JPEG 2000, multi-frame.
//!
//! Some real files carry almost every attribute with VR "UN" (their writer dropped the
//! VRs). A decoder that trusts the VR reads such values as raw bytes and produces garbage;
//! this module re-types the attributes the pixel pipeline needs from the standard
//! dictionary before decoding, and refuses values no CT scanner produces.

use std::io::Cursor;
use std::path::Path;

use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};

use super::dicom_scan::{scan, DicomSummary, ScanProblem};
use super::{BudgetReservation, CtImage, DecodeLimits, PixelUnit, Window};
use crate::error::{Error, Result};

/// HU outside this range means the values were decoded wrongly (air is -1000, dense metal
/// stays well below +30000 on 16-bit scanners).
const PLAUSIBLE_HU: std::ops::RangeInclusive<f32> = -4096.0..=32767.0;

/// Loads one frame (0 for single-frame files) of a DICOM file.
pub fn load_dicom(path: &Path, frame: u32) -> Result<CtImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_dicom_frame(&bytes, path, frame)
}

pub(crate) fn decode_dicom(bytes: &[u8], label: &Path, limits: &DecodeLimits) -> Result<CtImage> {
    decode_dicom_frame_within(bytes, label, 0, limits)
}

/// Decodes one frame of an in-memory DICOM file; `label` names it in errors.
pub fn decode_dicom_frame(bytes: &[u8], label: &Path, frame: u32) -> Result<CtImage> {
    decode_dicom_frame_within(bytes, label, frame, &DecodeLimits::default())
}

/// [`decode_dicom_frame`] after a bounded scan of the file's structure and declared image
/// size (see `dicom_scan`), so nothing past `limits` is ever allocated.
pub fn decode_dicom_frame_within(
    bytes: &[u8],
    label: &Path,
    frame: u32,
    limits: &DecodeLimits,
) -> Result<CtImage> {
    // The order is the order of refusals: the scan's bounds before anything is allocated,
    // the budget before dicom-rs parses, its reading checked against the scan's before any
    // decoder runs.
    let summary = scan_structure(bytes, label, limits)?;
    let _reservation = reserve_decode_peak(bytes.len(), &summary, label)?;
    let object = open_as_scanned(bytes, label, &summary)?;
    let stored = decode_stored_frame(&object, label, frame)?;

    let modality = text(&object, tags::MODALITY).unwrap_or_default();
    let unit = pixel_unit(&modality);
    let pixels = modality_values(&object, stored.values, unit, label)?;
    Ok(CtImage {
        width: stored.width,
        height: stored.height,
        pixels,
        unit,
        spacing_mm: pixel_spacing(&object),
        window: display_window(&object),
        modality: (!modality.is_empty())
            .then_some(modality)
            .or(summary.modality),
    })
}

/// A refusal of the file `label` names.
fn dicom_error(label: &Path, message: String) -> Error {
    Error::Dicom {
        path: label.to_path_buf(),
        message,
    }
}

/// The bounded walk of the file's structure (`dicom_scan`), its problems as typed errors.
fn scan_structure(bytes: &[u8], label: &Path, limits: &DecodeLimits) -> Result<DicomSummary> {
    scan(bytes, limits).map_err(|problem| match problem {
        ScanProblem::Malformed(message) => {
            dicom_error(label, format!("cannot parse DICOM: {message}"))
        }
        ScanProblem::TooLarge(message) => Error::ImageTooLarge {
            path: label.to_path_buf(),
            message,
        },
        ScanProblem::Codestream(message) => dicom_error(label, message),
    })
}

/// Reserves from the process-wide decoding budget the peak the header declares.
fn reserve_decode_peak(
    file_bytes: usize,
    summary: &DicomSummary,
    label: &Path,
) -> Result<BudgetReservation> {
    // The codestreams agree with the header (checked by the scan), so the header bounds
    // what the decoders allocate: dicom-rs's object (about the file), the joined fragments,
    // the decoded frames twice over (decoder output and its copy) and three f32 buffers of
    // one frame.
    let frame_pixels = summary.rows as usize * summary.columns as usize;
    let decoded_bytes = frame_pixels
        * summary.frames.max(1) as usize
        * summary.samples_per_pixel.max(1) as usize
        * (summary.bits_allocated.max(8) as usize).div_ceil(8);
    super::reserve_decode(
        file_bytes * 2 + decoded_bytes * 2 + frame_pixels * 12,
        label,
    )
}

/// dicom-rs's object of the file, with pixel data, its pixel attributes typed, and read as
/// the scan read it.
fn open_as_scanned(
    bytes: &[u8],
    label: &Path,
    summary: &DicomSummary,
) -> Result<DefaultDicomObject> {
    let mut object = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Auto)
        .from_reader(Cursor::new(bytes))
        .map_err(|e| dicom_error(label, format!("cannot parse DICOM: {e}")))?;
    if object
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .is_none()
    {
        return Err(Error::NoPixelData {
            path: label.to_path_buf(),
        });
    }
    retype_unknown_vrs(&mut object);
    same_reading(&object, summary).map_err(|message| dicom_error(label, message))?;
    Ok(object)
}

/// One frame's stored values (before the modality LUT), row-major.
struct StoredFrame {
    width: usize,
    height: usize,
    values: Vec<f32>,
}

/// Decodes the pixel data and converts `frame` to its stored values, sign-extended where
/// the codestream mislabelled signed data.
fn decode_stored_frame(
    object: &DefaultDicomObject,
    label: &Path,
    frame: u32,
) -> Result<StoredFrame> {
    let fail = |message: String| dicom_error(label, message);
    // dicom-rs 0.10's RLE decoder indexes past the end of truncated fragments; a corrupt
    // upload must come back as an error, so its panics stop here.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        object.decode_pixel_data().map(|d| d.to_owned())
    }))
    .map_err(|_| fail("pixel data is corrupt or truncated (decoder failed)".into()))?
    .map_err(|e| fail(format!("cannot decode pixel data: {e}")))?;
    if decoded.samples_per_pixel() != 1 {
        return Err(fail(format!(
            "{} samples per pixel: only grayscale (CT/MR) images are supported",
            decoded.samples_per_pixel()
        )));
    }
    let frames = decoded.number_of_frames();
    if frame >= frames {
        return Err(Error::invalid_argument(
            "frame",
            format!("frame {frame} requested, {} has {frames}", label.display()),
        ));
    }
    let (width, height) = (decoded.columns() as usize, decoded.rows() as usize);
    let stored: Vec<f32> = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decoded.to_vec_frame_with_options(
            frame,
            &ConvertOptions::new().with_modality_lut(ModalityLutOption::None),
        )
    }))
    .map_err(|_| fail("pixel data is corrupt or truncated (conversion failed)".into()))?
    .map_err(|e| fail(format!("cannot convert pixel values: {e}")))?;
    if stored.len() != width * height {
        return Err(fail(format!(
            "decoded {} values for a {width}x{height} frame",
            stored.len()
        )));
    }
    Ok(StoredFrame {
        width,
        height,
        values: sign_extend_if_needed(stored, &decoded),
    })
}

/// CT (or no modality given) is in Hounsfield units; anything else in its modality's own.
fn pixel_unit(modality: &str) -> PixelUnit {
    if modality.eq_ignore_ascii_case("CT") || modality.is_empty() {
        PixelUnit::Hounsfield
    } else {
        PixelUnit::Modality
    }
}

/// Stored values through the rescale slope and intercept; refused when they should be HU
/// and are not.
fn modality_values(
    object: &DefaultDicomObject,
    stored: Vec<f32>,
    unit: PixelUnit,
    label: &Path,
) -> Result<Vec<f32>> {
    let slope = first_number(object, tags::RESCALE_SLOPE).unwrap_or(1.0) as f32;
    let intercept = first_number(object, tags::RESCALE_INTERCEPT).unwrap_or(0.0) as f32;
    let pixels: Vec<f32> = stored.iter().map(|v| v * slope + intercept).collect();
    if unit == PixelUnit::Hounsfield {
        let (lo, hi) = min_max(&pixels);
        if !PLAUSIBLE_HU.contains(&lo) || !PLAUSIBLE_HU.contains(&hi) {
            return Err(dicom_error(
                label,
                format!(
                    "decoded values {lo}..{hi} are not Hounsfield units (slope {slope}, \
                     intercept {intercept}); the file's pixel attributes are inconsistent"
                ),
            ));
        }
    }
    Ok(pixels)
}

/// Pixel spacing (x, y) in mm, when the file gives a positive one.
fn pixel_spacing(object: &DefaultDicomObject) -> Option<(f32, f32)> {
    numbers(object, tags::PIXEL_SPACING)
        .filter(|s| s.len() >= 2 && s[0] > 0.0 && s[1] > 0.0)
        // PixelSpacing is (row spacing, column spacing) = (y, x).
        .map(|s| (s[1] as f32, s[0] as f32))
}

/// The file's display window, when it gives a usable one.
fn display_window(object: &DefaultDicomObject) -> Option<Window> {
    match (
        first_number(object, tags::WINDOW_CENTER),
        first_number(object, tags::WINDOW_WIDTH),
    ) {
        // Values past f32 (1e39) would become infinite windows, refused only at the write.
        (Some(center), Some(width))
            if width > 1.0 && (width as f32).is_finite() && (center as f32).is_finite() =>
        {
            Some(Window::from_width_level(width as f32, center as f32))
        }
        _ => None,
    }
}

/// Refuses a file that dicom-rs reads differently from the scan: every bound the scan
/// checked (sizes, codestream headers, deflate ceilings) holds only for the reading it
/// checked. Found by attack: a second TransferSyntaxUID past the meta group's declared
/// length (the scan took the later one, dicom-rs the first, so deflated frames inflated
/// without a ceiling), Rows as UN in big endian (read in two byte orders).
fn same_reading(
    object: &DefaultDicomObject,
    summary: &DicomSummary,
) -> std::result::Result<(), String> {
    let syntax = object
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' ']);
    if syntax != summary.transfer_syntax.trim_end_matches(['\0', ' ']) {
        return Err(format!(
            "the file meta group names two transfer syntaxes ({syntax} and {}); refused as ambiguous",
            summary.transfer_syntax
        ));
    }
    let number = |tag: Tag| first_number(object, tag).map_or(0, |v| v.max(0.0) as u64);
    let read = [
        ("Rows", number(tags::ROWS), u64::from(summary.rows)),
        ("Columns", number(tags::COLUMNS), u64::from(summary.columns)),
        (
            "BitsAllocated",
            number(tags::BITS_ALLOCATED),
            u64::from(summary.bits_allocated),
        ),
        (
            "SamplesPerPixel",
            number(tags::SAMPLES_PER_PIXEL).max(1),
            u64::from(summary.samples_per_pixel.max(1)),
        ),
        (
            "NumberOfFrames",
            number(tags::NUMBER_OF_FRAMES).max(1),
            u64::from(summary.frames.max(1)),
        ),
    ];
    for (name, parsed, scanned) in read {
        if parsed != scanned {
            return Err(format!(
                "{name} reads as {parsed} one way and {scanned} another (an ambiguous header); refused"
            ));
        }
    }
    Ok(())
}

/// Some JPEG 2000 encoders mark signed data as unsigned in the codestream, so the decoder
/// hands back `2^bits + v` for negative `v`. When the DICOM header says signed, no
/// correctly decoded `bits_stored`-bit value can reach `2^(bits_stored - 1)`: any that does
/// is such a wrapped value and is sign-extended.
fn sign_extend_if_needed(
    mut stored: Vec<f32>,
    decoded: &dicom_pixeldata::DecodedPixelData,
) -> Vec<f32> {
    let bits = u32::from(decoded.bits_stored());
    if decoded.pixel_representation() != dicom_pixeldata::PixelRepresentation::Signed
        || !(2..=16).contains(&bits)
    {
        return stored;
    }
    let half = (1u32 << (bits - 1)) as f32;
    let full = (1u32 << bits) as f32;
    if stored.iter().any(|&v| v >= half) {
        for v in &mut stored {
            if *v >= half {
                *v -= full;
            }
        }
    }
    stored
}

/// How many frames a DICOM file holds.
pub fn dicom_frame_count(bytes: &[u8], label: &Path) -> Result<u32> {
    let object = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Auto)
        .from_reader(Cursor::new(bytes))
        .map_err(|e| Error::Dicom {
            path: label.to_path_buf(),
            message: format!("cannot parse DICOM: {e}"),
        })?;
    Ok(first_number(&object, tags::NUMBER_OF_FRAMES).map_or(1, |n| n.max(1.0) as u32))
}

/// The attributes the pixel pipeline reads, with their standard VRs.
const PIXEL_ATTRIBUTES: [(Tag, VR); 16] = [
    (tags::ROWS, VR::US),
    (tags::COLUMNS, VR::US),
    (tags::BITS_ALLOCATED, VR::US),
    (tags::BITS_STORED, VR::US),
    (tags::HIGH_BIT, VR::US),
    (tags::PIXEL_REPRESENTATION, VR::US),
    (tags::SAMPLES_PER_PIXEL, VR::US),
    (tags::PLANAR_CONFIGURATION, VR::US),
    (tags::NUMBER_OF_FRAMES, VR::IS),
    (tags::PHOTOMETRIC_INTERPRETATION, VR::CS),
    (tags::MODALITY, VR::CS),
    (tags::RESCALE_INTERCEPT, VR::DS),
    (tags::RESCALE_SLOPE, VR::DS),
    (tags::WINDOW_CENTER, VR::DS),
    (tags::WINDOW_WIDTH, VR::DS),
    (tags::PIXEL_SPACING, VR::DS),
];

/// Replaces UN-typed pixel attributes by values typed as the dictionary says.
fn retype_unknown_vrs(object: &mut DefaultDicomObject) {
    for (tag, vr) in PIXEL_ATTRIBUTES {
        let Ok(Some(element)) = object.element_opt(tag) else {
            continue;
        };
        if element.vr() != VR::UN {
            continue;
        }
        let Ok(bytes) = element.to_bytes() else {
            continue;
        };
        let value = match vr {
            VR::US => PrimitiveValue::U16(
                bytes
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            ),
            _ => {
                let text = String::from_utf8_lossy(&bytes);
                let parts: Vec<String> = text
                    .trim_end_matches(['\0', ' '])
                    .split('\\')
                    .map(|p| p.trim().to_string())
                    .collect();
                PrimitiveValue::Strs(parts.into())
            }
        };
        object.put(DataElement::new(tag, vr, Value::Primitive(value)));
    }
}

fn text(object: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let element = object.element_opt(tag).ok().flatten()?;
    Some(element.to_str().ok()?.trim().to_string())
}

fn numbers(object: &DefaultDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let element = object.element_opt(tag).ok().flatten()?;
    element.to_multi_float64().ok().filter(|v| !v.is_empty())
}

fn first_number(object: &DefaultDicomObject, tag: Tag) -> Option<f64> {
    numbers(object, tag)
        .and_then(|v| v.first().copied())
        .filter(|v| v.is_finite())
}

fn min_max(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}
