//! DeepLesion's slice format: 16-bit grayscale PNG holding HU + 32768.

use std::io::Cursor;
use std::path::Path;

use super::{CtImage, DecodeLimits};
use crate::error::{Error, Result};

/// Offset DeepLesion adds to HU so that values fit an unsigned 16-bit PNG.
pub const HU_OFFSET: f32 = 32768.0;

/// Loads a DeepLesion slice, refusing anything but a 16-bit grayscale PNG.
pub fn load_png16(path: &Path) -> Result<CtImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_png16(&bytes, path)
}

/// Width and height as IHDR declares them.
fn ihdr_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let height = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((width, height))
}

pub(crate) fn is_png16_gray(bytes: &[u8]) -> bool {
    // IHDR is always first: signature (8) + length (4) + "IHDR" (4) + width, height (8),
    // then bit depth and colour type.
    bytes.len() > 25 && &bytes[12..16] == b"IHDR" && bytes[24] == 16 && bytes[25] == 0
}

pub fn decode_png16(bytes: &[u8], label: &Path) -> Result<CtImage> {
    decode_png16_within(bytes, label, &DecodeLimits::default())
}

/// [`decode_png16`] refusing, from IHDR and before the pixel buffer exists, a slice past
/// `limits`; the decompressor itself is capped at the bytes such a slice needs.
pub fn decode_png16_within(bytes: &[u8], label: &Path, limits: &DecodeLimits) -> Result<CtImage> {
    let image_error = |message: String| Error::Image {
        path: label.to_path_buf(),
        message,
    };
    if let Some((width, height)) = ihdr_size(bytes) {
        limits.check_side(width as usize, height as usize, label)?;
    }
    let decoder = png::Decoder::new_with_limits(
        Cursor::new(bytes),
        png::Limits {
            bytes: limits.max_decoded_bytes,
        },
    );
    let mut reader = decoder
        .read_info()
        .map_err(|e| image_error(format!("not a readable PNG: {e}")))?;
    let info = reader.info();
    if info.bit_depth != png::BitDepth::Sixteen || info.color_type != png::ColorType::Grayscale {
        return Err(Error::WrongPixelFormat {
            path: label.to_path_buf(),
            found: format!("{:?}-bit {:?}", info.bit_depth as u8, info.color_type),
        });
    }
    let (width, height) = (info.width as usize, info.height as usize);
    limits.check_side(width, height, label)?;
    // Peak: the 16-bit samples and their f32 values.
    let _reservation = super::reserve_decode(width * height * 6, label)?;
    let mut buffer = vec![0u8; width * height * 2];
    reader
        .next_frame(&mut buffer)
        .map_err(|e| image_error(format!("truncated or corrupt PNG data: {e}")))?;
    let pixels = buffer
        .chunks_exact(2)
        .map(|b| f32::from(u16::from_be_bytes([b[0], b[1]])) - HU_OFFSET)
        .collect();
    Ok(CtImage::new_hounsfield(width, height, pixels))
}

/// Encodes HU as a DeepLesion 16-bit PNG (values clamped to the representable range).
pub fn encode_png16(width: usize, height: usize, hu: &[f32]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(hu.len() * 2);
    for &v in hu {
        let stored = (v + HU_OFFSET).round().clamp(0.0, 65535.0) as u16;
        raw.extend_from_slice(&stored.to_be_bytes());
    }
    let mut out = Vec::with_capacity(raw.len() / 2);
    {
        let mut encoder = png::Encoder::new(&mut out, width as u32, height as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Sixteen);
        encoder.set_compression(png::Compression::Fast);
        // Writing into a Vec cannot fail and the header matches the data length.
        let mut writer = encoder.write_header().expect("in-memory PNG header");
        writer.write_image_data(&raw).expect("in-memory PNG data");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_hounsfield_units() {
        let hu: Vec<f32> = (0..12).map(|i| i as f32 * 200.0 - 1024.0).collect();
        let bytes = encode_png16(4, 3, &hu);
        let image = decode_png16(&bytes, Path::new("t.png")).unwrap();
        assert_eq!((image.width, image.height), (4, 3));
        assert_eq!(image.pixels, hu);
    }

    #[test]
    fn refuses_truncated_files_with_the_path() {
        let hu = vec![0.0; 64 * 64];
        let bytes = encode_png16(64, 64, &hu);
        let err = decode_png16(&bytes[..bytes.len() / 2], Path::new("cut.png")).unwrap_err();
        assert!(err.to_string().starts_with("cut.png: "), "{err}");
    }
}
