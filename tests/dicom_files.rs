//! Real DICOM files, committed under `data/dicom/` with their licences.
//!
//! Reference values were read with pydicom 3 and pylibjpeg (`pixel_array` then
//! `apply_rescale`): minimum, maximum, mean, the centre pixel and pixel (row 100, column 50).

use std::path::{Path, PathBuf};

use lesion_search::imaging::{
    decode_image, dicom_frame_count, load_dicom, load_image, CtImage, PixelUnit,
};
use lesion_search::Error;

fn dicom(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/dicom")
        .join(name)
}

fn load(name: &str) -> CtImage {
    load_image(&dicom(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

struct Reference {
    name: &'static str,
    size: (usize, usize),
    min: f32,
    max: f32,
    mean: f64,
    centre: f32,
    at_row100_col50: f32,
}

const REFERENCES: [Reference; 5] = [
    Reference {
        name: "CT_small.dcm",
        size: (128, 128),
        min: -896.0,
        max: 1167.0,
        mean: -119.074,
        centre: 904.0,
        at_row100_col50: 16.0,
    },
    Reference {
        name: "chest_ct_rle.dcm",
        size: (512, 512),
        min: -3024.0,
        max: 1254.0,
        mean: -871.304,
        centre: -59.0,
        at_row100_col50: -3024.0,
    },
    Reference {
        name: "J2K_pixelrep_mismatch.dcm",
        size: (512, 512),
        min: -2000.0,
        max: 1896.0,
        mean: -658.437,
        centre: 27.0,
        at_row100_col50: -2000.0,
    },
    Reference {
        name: "abdomen_ct_vr_un.dcm",
        size: (512, 512),
        min: -1024.0,
        max: 1186.0,
        mean: -670.957,
        centre: -27.0,
        at_row100_col50: -933.0,
    },
    Reference {
        name: "examples_overlay.dcm",
        size: (484, 300),
        min: 0.0,
        max: 1123.0,
        mean: 191.688,
        centre: 136.0,
        at_row100_col50: 139.0,
    },
];

#[test]
fn every_real_file_decodes_to_the_reference_values() {
    for r in &REFERENCES {
        let image = load(r.name);
        assert_eq!((image.width, image.height), r.size, "{}", r.name);
        assert_eq!(image.range(), (r.min, r.max), "{}", r.name);
        let mean =
            image.pixels.iter().map(|&v| f64::from(v)).sum::<f64>() / image.pixels.len() as f64;
        assert!((mean - r.mean).abs() < 1e-3, "{}: mean {mean}", r.name);
        assert_eq!(
            image.get(image.width / 2, image.height / 2),
            r.centre,
            "{}",
            r.name
        );
        assert_eq!(image.get(50, 100), r.at_row100_col50, "{}", r.name);
    }
}

#[test]
fn file_with_unknown_vrs_comes_out_in_hounsfield_units() {
    let image = load("abdomen_ct_vr_un.dcm");
    assert_eq!(image.unit, PixelUnit::Hounsfield);
    assert_eq!(image.range(), (-1024.0, 1186.0));
    assert_eq!(image.spacing_mm, Some((0.859375, 0.859375)));
}

#[test]
fn carries_spacing_window_and_modality() {
    let head = load("J2K_pixelrep_mismatch.dcm");
    assert_eq!(head.spacing_mm, Some((0.431, 0.431)));
    let w = head.window.expect("window from WindowCenter/WindowWidth");
    assert_eq!((w.low, w.high), (-10.0, 90.0));
    assert_eq!(load("examples_overlay.dcm").unit, PixelUnit::Modality);
}

#[test]
fn dicom_without_pixel_data_is_refused_by_name() {
    let bytes = std::fs::read(dicom("CT_small.dcm")).unwrap();
    let tag = bytes
        .windows(4)
        .rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00])
        .expect("PixelData tag");
    let err = decode_image(&bytes[..tag], Path::new("no_pixels.dcm")).unwrap_err();
    assert!(matches!(err, Error::NoPixelData { .. }), "{err}");
    assert!(err.to_string().starts_with("no_pixels.dcm: "), "{err}");
}

#[test]
fn truncated_dicom_is_an_error_not_a_panic() {
    let bytes = std::fs::read(dicom("chest_ct_rle.dcm")).unwrap();
    for cut in [200, 1000, bytes.len() / 2, bytes.len() - 10] {
        let err = decode_image(&bytes[..cut], Path::new("cut.dcm")).unwrap_err();
        assert!(
            err.to_string().starts_with("cut.dcm"),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn non_image_bytes_are_refused() {
    let err = decode_image(b"%PDF-1.7 not an image", Path::new("report.pdf")).unwrap_err();
    assert!(
        err.to_string().contains("not a PNG, JPEG or DICOM"),
        "{err}"
    );
}

#[test]
fn jpeg_lossless_gives_exactly_the_native_pixels() {
    let native = load("CT_small.dcm");
    let jpeg = load("CT_small_jpeg_lossless.dcm");
    assert_eq!(jpeg.pixels, native.pixels);
}

#[test]
fn every_frame_of_a_multi_frame_file() {
    let path = dicom("CT_small_multiframe_rle.dcm");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(dicom_frame_count(&bytes, &path).unwrap(), 3);
    let native = load("CT_small.dcm");
    let frames: Vec<CtImage> = (0..3).map(|f| load_dicom(&path, f).unwrap()).collect();
    assert_eq!(frames[0].pixels, native.pixels);
    assert!(frames[1]
        .pixels
        .iter()
        .zip(&native.pixels)
        .all(|(a, b)| a - b == 100.0));
    let w = native.width;
    for y in 0..native.height {
        for x in 0..w {
            assert_eq!(frames[2].get(x, y), native.get(w - 1 - x, y));
        }
    }
    let err = load_dicom(&path, 3).unwrap_err();
    assert!(
        err.to_string().contains("frame 3 requested") && err.to_string().contains("has 3"),
        "{err}"
    );
}

#[test]
fn eight_bit_images_are_read_as_display_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("windowed.png");
    let gray: Vec<u8> = (0..64 * 32).map(|i| (i % 256) as u8).collect();
    image::save_buffer(&path, &gray, 64, 32, image::ExtendedColorType::L8).unwrap();
    let png = load_image(&path).unwrap();
    assert_eq!(
        (png.width, png.height, png.unit),
        (64, 32, PixelUnit::Display)
    );
    assert_eq!(png.get(10, 0), 10.0);
    let jpeg_path = dir.path().join("windowed.jpg");
    image::save_buffer(&jpeg_path, &gray, 64, 32, image::ExtendedColorType::L8).unwrap();
    assert_eq!(load_image(&jpeg_path).unwrap().unit, PixelUnit::Display);
}
