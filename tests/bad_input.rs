//! Bad input: a typed error naming the file, line and field, never a panic.

mod common;

use std::fs;
use std::path::Path;

use lesion_search::dataset::{inspect, Dataset, DlInfoReader, InspectOptions, Severity, COLUMNS};
use lesion_search::imaging::{encode_png16, load_png16};
use lesion_search::Error;

const GOOD_ROW: &str = r#"000001_01_01_109.png,1,1,1,109,"233.537, 95.0204, 234.057, 106.977, 231.169, 101.605, 236.252, 101.143","226.169, 90.0204, 241.252, 111.977","11.9677, 5.10387","0.44666, 0.283794, 0.434454",3,0,"103, 115","0.488281, 0.488281, 5","512, 512","-175, 275",F,62,3"#;

fn header() -> String {
    COLUMNS.join(",")
}

fn table(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("DL_info.csv");
    fs::write(&path, text).unwrap();
    path
}

fn parse_all(text: &str) -> Vec<Result<u64, Error>> {
    let dir = tempfile::tempdir().unwrap();
    let path = table(dir.path(), text);
    DlInfoReader::open(&path)
        .unwrap()
        .map(|r| r.map(|row| row.line))
        .collect()
}

#[test]
fn a_good_row_parses_with_every_field_typed() {
    let dir = tempfile::tempdir().unwrap();
    let path = table(dir.path(), &format!("{}\n{GOOD_ROW}\n", header()));
    let row = DlInfoReader::open(&path).unwrap().next().unwrap().unwrap();
    let r = row.record;
    assert_eq!((row.line, row.row_index), (2, 0));
    assert_eq!((r.patient, r.study, r.series, r.key_slice), (1, 1, 1, 109));
    assert_eq!(r.recist.long_axis[0].x, 233.537);
    assert_eq!(r.bbox.x2, 241.252);
    assert!((r.long_diameter_mm() - 11.9677 * 0.488281).abs() < 1e-4);
    assert_eq!(
        r.coarse_type,
        lesion_search::dataset::CoarseType::Mediastinum
    );
    assert_eq!((r.slice_range.first, r.slice_range.last), (103, 115));
    assert_eq!(r.spacing.z_mm, 5.0);
    assert_eq!((r.window.low, r.window.high), (-175.0, 275.0));
    assert_eq!(r.age, Some(62.0));
    assert_eq!(r.split, lesion_search::dataset::Split::Test);
}

#[test]
fn missing_column_is_named_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n{GOOD_ROW}\n",
        header().replace("Patient_age", "Patient_Age")
    );
    let err = DlInfoReader::open(&table(dir.path(), &text)).err().unwrap();
    assert!(matches!(err, Error::MissingColumn { .. }));
    let message = err.to_string();
    assert!(
        message.contains("missing column `Patient_age`") && message.contains("found `Patient_Age`"),
        "{message}"
    );
}

#[test]
fn unknown_column_is_reported_and_refused_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{},sources\n{GOOD_ROW},somewhere\n", header());
    let reader = DlInfoReader::open(&table(dir.path(), &text)).unwrap();
    assert_eq!(reader.extra_columns(), ["sources"]);
    let err = reader.reject_extra_columns().unwrap_err();
    assert!(
        matches!(err, Error::UnknownColumn { .. }) && err.to_string().contains("`sources`"),
        "{err}"
    );
}

#[test]
fn every_bad_field_of_a_row_is_named_with_file_and_line() {
    let bad = GOOD_ROW
        .replace(
            "\"226.169, 90.0204, 241.252, 111.977\"",
            "\"226.169, abc, 241.252, 111.977\"",
        )
        .replace(",F,62,3", ",X,62,7");
    let rows = parse_all(&format!("{}\n{GOOD_ROW}\n{bad}\n{GOOD_ROW}\n", header()));
    assert!(
        rows[0].is_ok() && rows[2].is_ok(),
        "a bad row must not stop the good ones"
    );
    let err = rows[1].as_ref().unwrap_err();
    let Error::MalformedRow { line, problems, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(*line, 3);
    let columns: Vec<&str> = problems.iter().map(|p| p.column.as_str()).collect();
    assert_eq!(
        columns,
        ["Bounding_boxes", "Patient_gender", "Train_Val_Test"]
    );
    let text = err.to_string();
    assert!(
        text.contains("DL_info.csv:3: Bounding_boxes: `abc` is not a number"),
        "{text}"
    );
}

#[test]
fn short_rows_wrong_counts_and_impossible_values_are_errors() {
    let cases = [
        (GOOD_ROW.replace(",F,62,3", ",F,62"), "header has 18"),
        (
            GOOD_ROW.replace("\"11.9677, 5.10387\"", "\"11.9677\""),
            "Lesion_diameters_Pixel_: expected 2",
        ),
        (
            GOOD_ROW.replace(
                "\"226.169, 90.0204, 241.252, 111.977\"",
                "\"600, 600, 700, 700\"",
            ),
            "box lies outside the 512x512 image",
        ),
        (
            GOOD_ROW.replace("\"103, 115\"", "\"110, 115\""),
            "key slice 109 is outside Slice_range",
        ),
        (
            GOOD_ROW.replace("000001_01_01_109.png", "000001_01_01_108.png"),
            "does not match the indices",
        ),
        (
            GOOD_ROW.replace("\"-175, 275\"", "\"275, -175\""),
            "needs low < high",
        ),
        (
            GOOD_ROW.replace(",F,62,3", ",F,-4,3"),
            "Patient_age: age -4",
        ),
    ];
    for (row, expected) in cases {
        let rows = parse_all(&format!("{}\n{row}\n", header()));
        let message = rows[0].as_ref().unwrap_err().to_string();
        assert!(
            message.contains(expected),
            "expected `{expected}` in: {message}"
        );
    }
    // NaN ages are how DeepLesion spells "unknown".
    let rows = parse_all(&format!(
        "{}\n{}\n",
        header(),
        GOOD_ROW.replace(",F,62,3", ",F,NaN,3")
    ));
    assert!(rows[0].is_ok());
}

fn archive_with_one_row() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    table(dir.path(), &format!("{}\n{GOOD_ROW}\n", header()));
    dir
}

fn key_slice_path(root: &Path) -> std::path::PathBuf {
    root.join("Images_png/000001_01_01/109.png")
}

#[test]
fn missing_slice_is_named() {
    let dir = archive_with_one_row();
    let record = DlInfoReader::open(&dir.path().join("DL_info.csv"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .record;
    let err = Dataset::new(dir.path())
        .load_key_slice(&record)
        .unwrap_err();
    assert!(matches!(err, Error::MissingSlice { .. }), "{err}");
    assert!(
        err.to_string().contains("Images_png/000001_01_01/109.png"),
        "{err}"
    );
    let report = inspect(dir.path(), &InspectOptions::default()).unwrap();
    assert_eq!(report.missing_key_slices, 1);
    assert!(report.has_errors());
    assert!(
        report.issues[0]
            .message
            .contains("DL_info.csv:2: File_name"),
        "{:?}",
        report.issues
    );
}

#[test]
fn eight_bit_png_where_sixteen_bit_is_expected_is_refused() {
    let dir = archive_with_one_row();
    let path = key_slice_path(dir.path());
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::save_buffer(
        &path,
        &vec![100u8; 512 * 512],
        512,
        512,
        image::ExtendedColorType::L8,
    )
    .unwrap();
    let err = load_png16(&path).unwrap_err();
    assert!(matches!(err, Error::WrongPixelFormat { .. }), "{err}");
    assert!(
        err.to_string().contains("expected a 16-bit grayscale PNG"),
        "{err}"
    );
    let report = inspect(
        dir.path(),
        &InspectOptions {
            decode_images: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.undecodable_key_slices, 1);
}

#[test]
fn truncated_png_is_refused_with_its_path() {
    let dir = archive_with_one_row();
    let path = key_slice_path(dir.path());
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let hu: Vec<f32> = (0..512 * 512)
        .map(|i| ((i * 7919) % 2000) as f32 - 1000.0)
        .collect();
    let bytes = encode_png16(512, 512, &hu);
    fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let err = load_png16(&path).unwrap_err();
    assert!(
        err.to_string().contains("109.png") && err.to_string().contains("truncated"),
        "{err}"
    );
}

#[test]
fn wrong_image_size_is_caught_against_the_table() {
    let dir = archive_with_one_row();
    let path = key_slice_path(dir.path());
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, encode_png16(256, 256, &vec![0.0; 256 * 256])).unwrap();
    let report = inspect(
        dir.path(),
        &InspectOptions {
            decode_images: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        report.issues.iter().any(|i| i.severity == Severity::Error
            && i.message
                .contains("image is 256x256, DL_info.csv says 512x512")),
        "{:?}",
        report.issues
    );
}

#[test]
fn strict_inspection_stops_at_the_first_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    let bad = GOOD_ROW.replace(",F,62,3", ",F,sixty,3");
    table(dir.path(), &format!("{}\n{bad}\n{bad}\n", header()));
    let lenient = inspect(dir.path(), &InspectOptions::default()).unwrap();
    assert_eq!(lenient.bad_rows, 2);
    let strict = inspect(
        dir.path(),
        &InspectOptions {
            strict: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(strict.bad_rows, 1);
    assert!(strict.stopped_early);
}
