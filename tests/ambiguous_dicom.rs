//! DICOM files that read two ways: the bounded pre-scan and dicom-rs must agree on the
//! transfer syntax and the geometry, or every bound the scan checked means nothing. Each
//! file in `tests/data/hostile/` was written by the attacks of issue 25's second round
//! (generated, no patient data) and once got past the checks:
//! - `meta-two-transfer-syntaxes.dcm`: a second TransferSyntaxUID after the meta group's
//!   declared length; the scan took the later (encapsulated uncompressed, no checks),
//!   dicom-rs the first (deflated frames, inflated without a ceiling: 768 MiB from 783 KB);
//! - `rows-two-values-rle.dcm`: Rows and Columns with two values each, read as 0 by the
//!   scan and as 2100 by dicom-rs, past a 2048 limit;
//! - `big-endian-un-rows.dcm`: Rows with VR UN in explicit big endian, 255 one way and
//!   65280 the other;
//! - `window-width-1e39.dcm`: a window past f32, which became an infinite window and failed
//!   the write that stored it.

use std::path::{Path, PathBuf};

use lesion_search::imaging::{decode_image_within, DecodeLimits};
use lesion_search::Error;

fn hostile(name: &str) -> (PathBuf, Vec<u8>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/hostile")
        .join(name);
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

#[test]
fn files_the_scan_and_the_parser_read_differently_are_refused() {
    let limits = DecodeLimits::for_slices(2048);
    for (name, wanted) in [
        ("meta-two-transfer-syntaxes.dcm", "two transfer syntaxes"),
        ("rows-two-values-rle.dcm", "2100"),
        ("big-endian-un-rows.dcm", "Rows reads as"),
    ] {
        let (path, bytes) = hostile(name);
        match decode_image_within(&bytes, &path, &limits) {
            Ok(image) => panic!("{name}: decoded as {}x{}", image.width, image.height),
            Err(e @ (Error::Dicom { .. } | Error::ImageTooLarge { .. })) => {
                assert!(e.to_string().contains(wanted), "{name}: {e}");
            }
            Err(other) => panic!("{name}: refused for another reason: {other}"),
        }
    }
}

#[test]
fn a_window_past_f32_is_dropped_not_stored() {
    let (path, bytes) = hostile("window-width-1e39.dcm");
    let image = decode_image_within(&bytes, &path, &DecodeLimits::for_slices(2048)).unwrap();
    assert!(
        image
            .window
            .is_none_or(|w| w.low.is_finite() && w.high.is_finite()),
        "{:?}",
        image.window
    );
}
