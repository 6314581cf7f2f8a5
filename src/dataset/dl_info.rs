//! Streaming reader and writer of `DL_info.csv`.
//!
//! The reader checks the header once, then yields one typed [`LesionRecord`] per row, or an
//! [`Error::MalformedRow`] listing every field at fault with its line, so a caller can report
//! bad rows and carry on.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::fields::{self, join_numbers};
use super::record::*;
use crate::error::{Error, FieldProblem, Result};
use crate::imaging::{Window, PIXEL_SPACING_MM};

/// Slices further apart than this are not one CT series (DeepLesion's are 0.6 to 5 mm).
const MAX_SLICE_INTERVAL_MM: f32 = 50.0;

/// The 18 official columns, in their official order.
pub const COLUMNS: [&str; 18] = [
    "File_name",
    "Patient_index",
    "Study_index",
    "Series_ID",
    "Key_slice_index",
    "Measurement_coordinates",
    "Bounding_boxes",
    "Lesion_diameters_Pixel_",
    "Normalized_lesion_location",
    "Coarse_lesion_type",
    "Possibly_noisy",
    "Slice_range",
    "Spacing_mm_px_",
    "Image_size",
    "DICOM_windows",
    "Patient_gender",
    "Patient_age",
    "Train_Val_Test",
];

/// One parsed row with where it came from.
#[derive(Debug, Clone)]
pub struct LesionRow {
    /// 1-based line of the row in the file.
    pub line: u64,
    /// 0-based index among the data rows (LesaNet keys its labels by it).
    pub row_index: usize,
    pub record: LesionRecord,
}

/// Streaming `DL_info.csv` reader.
pub struct DlInfoReader<R: Read> {
    rows: csv::StringRecordsIntoIter<R>,
    path: PathBuf,
    column_of: [usize; 18],
    extra_columns: Vec<String>,
    next_row_index: usize,
    field_count: usize,
}

impl DlInfoReader<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Self::from_reader(BufReader::with_capacity(1 << 16, file), path)
    }
}

impl<R: Read> DlInfoReader<R> {
    /// `label` names the source in errors.
    pub fn from_reader(reader: R, label: &Path) -> Result<Self> {
        let path = label.to_path_buf();
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(reader);
        let header = csv.headers().map_err(|e| table_error(&path, &e))?.clone();
        let names: Vec<String> = header
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').trim().to_string())
            .collect();
        let mut column_of = [0usize; 18];
        for (slot, wanted) in column_of.iter_mut().zip(COLUMNS) {
            *slot = match names.iter().position(|n| n == wanted) {
                Some(i) => i,
                None => {
                    let hint = names
                        .iter()
                        .find(|n| {
                            n.eq_ignore_ascii_case(wanted)
                                || n.trim_end_matches('_') == wanted.trim_end_matches('_')
                        })
                        .map(|n| format!(" (found `{n}`; column names are case-sensitive)"))
                        .unwrap_or_default();
                    return Err(Error::MissingColumn {
                        path,
                        column: wanted.to_string(),
                        hint,
                    });
                }
            };
        }
        let extra_columns = names
            .iter()
            .filter(|n| !COLUMNS.contains(&n.as_str()))
            .cloned()
            .collect();
        Ok(DlInfoReader {
            rows: csv.into_records(),
            path,
            column_of,
            extra_columns,
            next_row_index: 0,
            field_count: names.len(),
        })
    }

    /// Columns beyond the official 18 (such as `sources`); the caller decides whether they
    /// are acceptable, see [`DlInfoReader::reject_extra_columns`].
    pub fn extra_columns(&self) -> &[String] {
        &self.extra_columns
    }

    pub fn reject_extra_columns(&self) -> Result<()> {
        match self.extra_columns.first() {
            Some(column) => Err(Error::UnknownColumn {
                path: self.path.clone(),
                column: column.clone(),
            }),
            None => Ok(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One row: each column parsed on its own (every bad field is named, not just the
    /// first), then the columns checked against each other.
    fn parse_row(&self, row: &csv::StringRecord, line: u64) -> Result<LesionRecord> {
        let mut problems = Vec::new();
        if row.len() != self.field_count {
            problems.push(FieldProblem {
                column: "(row)".into(),
                message: format!(
                    "has {} fields, the header has {}",
                    row.len(),
                    self.field_count
                ),
            });
        }
        let mut p = RowParser {
            row,
            column_of: &self.column_of,
            problems: &mut problems,
        };
        let parsed = RowFields {
            file_name: p.text(0).to_string(),
            patient: p.field(1, fields::integer),
            study: p.field(2, fields::integer),
            series: p.field(3, fields::integer),
            key_slice: p.field(4, fields::integer),
            measurement: p.field(5, fields::numbers::<8>),
            bbox: p.field(6, bounding_box),
            diameters: p.field(7, diameters),
            location: p.field(8, location),
            coarse_type: p.field(9, coarse_type),
            possibly_noisy: p.field(10, noisy_flag),
            slice_range: p.field(11, slice_range),
            spacing: p.field(12, spacing),
            image_size: p.field(13, image_size),
            window: p.field(14, window),
            sex: p.field(15, sex),
            age: p.field(16, age),
            split: p.field(17, split),
        };
        parsed.cross_check(&mut problems);
        match parsed.into_record() {
            Some(record) if problems.is_empty() => Ok(record),
            _ => Err(Error::MalformedRow {
                path: self.path.clone(),
                line,
                problems,
            }),
        }
    }
}

/// A row's columns, each parsed or `None` when its text was bad (the problem is recorded).
struct RowFields {
    file_name: String,
    patient: Option<u32>,
    study: Option<u32>,
    series: Option<u32>,
    key_slice: Option<u32>,
    measurement: Option<[f32; 8]>,
    bbox: Option<PixelBox>,
    diameters: Option<[f32; 2]>,
    location: Option<NormalizedLocation>,
    coarse_type: Option<CoarseType>,
    possibly_noisy: Option<bool>,
    slice_range: Option<SliceRange>,
    spacing: Option<Spacing>,
    image_size: Option<(u32, u32)>,
    window: Option<Window>,
    sex: Option<Sex>,
    age: Option<Option<f32>>,
    split: Option<Split>,
}

impl RowFields {
    /// What no single column can tell: the file name against the indices, the key slice
    /// against the slice range, the box against the image size.
    fn cross_check(&self, problems: &mut Vec<FieldProblem>) {
        if let (Some(patient), Some(study), Some(series), Some(slice)) =
            (self.patient, self.study, self.series, self.key_slice)
        {
            let expected = LesionRecord::canonical_file_name(patient, study, series, slice);
            if self.file_name != expected {
                problems.push(FieldProblem {
                    column: COLUMNS[0].into(),
                    message: format!(
                        "`{}` does not match the indices in this row (expected `{expected}`)",
                        self.file_name
                    ),
                });
            }
        }
        if let (Some(range), Some(slice)) = (self.slice_range, self.key_slice) {
            if !range.contains(slice) {
                problems.push(FieldProblem {
                    column: COLUMNS[4].into(),
                    message: format!(
                        "key slice {slice} is outside Slice_range {}..{}",
                        range.first, range.last
                    ),
                });
            }
        }
        if let (Some(b), Some((w, h))) = (self.bbox, self.image_size) {
            // The engine's one box rule; the message keeps the table's terms.
            if crate::imaging::check_box(&b, w as usize, h as usize).is_err() {
                problems.push(FieldProblem {
                    column: COLUMNS[6].into(),
                    message: format!("box lies outside the {w}x{h} image"),
                });
            }
        }
    }

    /// The record, when every column parsed.
    fn into_record(self) -> Option<LesionRecord> {
        let (image_width, image_height) = self.image_size?;
        Some(LesionRecord {
            file_name: self.file_name,
            patient: self.patient?,
            study: self.study?,
            series: self.series?,
            key_slice: self.key_slice?,
            recist: Recist::from_coordinates(self.measurement?),
            bbox: self.bbox?,
            diameters_px: self.diameters?,
            location: self.location?,
            coarse_type: self.coarse_type?,
            possibly_noisy: self.possibly_noisy?,
            slice_range: self.slice_range?,
            spacing: self.spacing?,
            image_width,
            image_height,
            window: self.window?,
            sex: self.sex?,
            age: self.age?,
            split: self.split?,
        })
    }
}

type FieldResult<T> = std::result::Result<T, String>;

fn bounding_box(t: &str) -> FieldResult<PixelBox> {
    let [x1, y1, x2, y2] = fields::numbers::<4>(t)?;
    let b = PixelBox { x1, y1, x2, y2 };
    b.check_ordered().map(|_| b)
}

fn diameters(t: &str) -> FieldResult<[f32; 2]> {
    let d = fields::numbers::<2>(t)?;
    if d[0] <= 0.0 || d[1] < 0.0 || d[1] > d[0] * 1.001 {
        return Err(format!(
            "`{}` must be long > 0 and 0 <= short <= long",
            t.trim()
        ));
    }
    Ok(d)
}

fn location(t: &str) -> FieldResult<NormalizedLocation> {
    let [x, y, z] = fields::numbers::<3>(t)?;
    // The body-part regressor behind z can overshoot a little; far outside is an error.
    if [x, y, z].iter().any(|v| !(-0.5..=1.5).contains(v)) {
        return Err(format!("`{}` is far outside 0..1", t.trim()));
    }
    Ok(NormalizedLocation { x, y, z })
}

fn coarse_type(t: &str) -> FieldResult<CoarseType> {
    t.trim()
        .parse::<i32>()
        .ok()
        .and_then(CoarseType::from_code)
        .ok_or_else(|| format!("`{}` is not -1 or 1..8", t.trim()))
}

fn noisy_flag(t: &str) -> FieldResult<bool> {
    match t.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(format!("`{other}` is not 0 or 1")),
    }
}

fn slice_range(t: &str) -> FieldResult<SliceRange> {
    let [first, last] = fields::numbers::<2>(t)?;
    if first < 0.0 || last < first || first.fract() != 0.0 || last.fract() != 0.0 {
        return Err(format!("`{}` is not `first, last` slice indices", t.trim()));
    }
    Ok(SliceRange {
        first: first as u32,
        last: last as u32,
    })
}

fn spacing(t: &str) -> FieldResult<Spacing> {
    let [x_mm, y_mm, z_mm] = fields::numbers::<3>(t)?;
    if x_mm <= 0.0 || y_mm <= 0.0 || z_mm <= 0.0 {
        return Err(format!("`{}` must be positive", t.trim()));
    }
    // The in-plane rule every edge applies, so a table cannot carry what a form may not.
    if !(PIXEL_SPACING_MM.contains(&x_mm) && PIXEL_SPACING_MM.contains(&y_mm)) {
        return Err(format!(
            "`{}`: in-plane spacing outside {} to {} mm",
            t.trim(),
            PIXEL_SPACING_MM.start(),
            PIXEL_SPACING_MM.end()
        ));
    }
    if z_mm > MAX_SLICE_INTERVAL_MM {
        return Err(format!(
            "`{}`: slice interval past {MAX_SLICE_INTERVAL_MM} mm",
            t.trim()
        ));
    }
    Ok(Spacing { x_mm, y_mm, z_mm })
}

fn image_size(t: &str) -> FieldResult<(u32, u32)> {
    let [w, h] = fields::numbers::<2>(t)?;
    let pixels = |v: f32| v >= 1.0 && v.fract() == 0.0 && v <= 65535.0;
    if !(pixels(w) && pixels(h)) {
        return Err(format!("`{}` is not `width, height` in pixels", t.trim()));
    }
    Ok((w as u32, h as u32))
}

fn window(t: &str) -> FieldResult<Window> {
    let [low, high] = fields::numbers::<2>(t)?;
    Window::new(low, high)
}

fn sex(t: &str) -> FieldResult<Sex> {
    match t.trim() {
        "F" | "f" => Ok(Sex::Female),
        "M" | "m" => Ok(Sex::Male),
        "" | "U" | "O" => Ok(Sex::Unknown),
        other => Err(format!("`{other}` is not F or M")),
    }
}

fn age(t: &str) -> FieldResult<Option<f32>> {
    match t.trim() {
        "" | "NaN" | "nan" => Ok(None),
        text => match fields::number(text)? {
            a if (0.0..=130.0).contains(&a) => Ok(Some(a)),
            a => Err(format!("age {a} is outside 0..130")),
        },
    }
}

fn split(t: &str) -> FieldResult<Split> {
    t.trim()
        .parse::<i32>()
        .ok()
        .and_then(Split::from_code)
        .ok_or_else(|| format!("`{}` is not 1, 2 or 3", t.trim()))
}

impl<R: Read> Iterator for DlInfoReader<R> {
    type Item = Result<LesionRow>;

    fn next(&mut self) -> Option<Self::Item> {
        let row = match self.rows.next()? {
            Ok(row) => row,
            Err(e) => return Some(Err(table_error(&self.path, &e))),
        };
        let line = row.position().map(|p| p.line()).unwrap_or(0);
        let row_index = self.next_row_index;
        self.next_row_index += 1;
        Some(self.parse_row(&row, line).map(|record| LesionRow {
            line,
            row_index,
            record,
        }))
    }
}

struct RowParser<'a> {
    row: &'a csv::StringRecord,
    column_of: &'a [usize; 18],
    problems: &'a mut Vec<FieldProblem>,
}

impl RowParser<'_> {
    fn text(&self, column: usize) -> &str {
        self.row.get(self.column_of[column]).unwrap_or("")
    }

    fn field<T>(
        &mut self,
        column: usize,
        parse: impl FnOnce(&str) -> std::result::Result<T, String>,
    ) -> Option<T> {
        let text = self.row.get(self.column_of[column]);
        let outcome = match text {
            Some(text) => parse(text),
            None => Err("missing (row too short)".to_string()),
        };
        outcome
            .map_err(|message| {
                self.problems.push(FieldProblem {
                    column: COLUMNS[column].to_string(),
                    message,
                })
            })
            .ok()
    }
}

fn table_error(path: &Path, e: &csv::Error) -> Error {
    let line = e.position().map(|p| p.line()).unwrap_or(0);
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("field {} is not valid UTF-8", err.field() + 1),
        csv::ErrorKind::Io(io) => format!("read failed: {io}"),
        _ => e.to_string(),
    };
    Error::Table {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// Writes records as a `DL_info.csv` with the official header, formatted as the original.
pub fn write_dl_info<'a, W: Write>(
    out: W,
    records: impl IntoIterator<Item = &'a LesionRecord>,
) -> std::io::Result<()> {
    let mut csv = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(out);
    csv.write_record(COLUMNS)?;
    for r in records {
        csv.write_record([
            r.file_name.clone(),
            r.patient.to_string(),
            r.study.to_string(),
            r.series.to_string(),
            r.key_slice.to_string(),
            join_numbers(&r.recist.coordinates()),
            join_numbers(&[r.bbox.x1, r.bbox.y1, r.bbox.x2, r.bbox.y2]),
            join_numbers(&r.diameters_px),
            join_numbers(&[r.location.x, r.location.y, r.location.z]),
            r.coarse_type.code().to_string(),
            u8::from(r.possibly_noisy).to_string(),
            format!("{}, {}", r.slice_range.first, r.slice_range.last),
            join_numbers(&[r.spacing.x_mm, r.spacing.y_mm, r.spacing.z_mm]),
            format!("{}, {}", r.image_width, r.image_height),
            join_numbers(&[r.window.low, r.window.high]),
            r.sex.code().to_string(),
            r.age
                .map(fields::format_number)
                .unwrap_or_else(|| "NaN".into()),
            r.split.code().to_string(),
        ])?;
    }
    csv.flush()
}
