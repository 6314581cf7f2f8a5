//! Validation of a whole DeepLesion-format archive: a summary and every problem found.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use super::patches::Dataset;
use super::record::{CoarseType, LesionRecord};
use super::{DlInfoReader, LesionRow};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct InspectOptions {
    /// Stop at the first bad row.
    pub strict: bool,
    /// Refuse columns beyond the official 18.
    pub reject_extra_columns: bool,
    /// Decode every key slice (slow on a full archive) instead of only checking it exists.
    pub decode_images: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem, formatted `file:line: column: what is wrong` where those are known.
#[derive(Debug, Clone, Serialize)]
pub struct Issue {
    pub severity: Severity,
    pub message: String,
}

/// Five-number summary of a distribution.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Distribution {
    pub min: f32,
    pub p25: f32,
    pub median: f32,
    pub p75: f32,
    pub max: f32,
}

impl Distribution {
    fn of(values: &mut [f32]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f32::total_cmp);
        let q = |p: f32| values[((values.len() - 1) as f32 * p).round() as usize];
        Some(Distribution {
            min: values[0],
            p25: q(0.25),
            median: q(0.5),
            p75: q(0.75),
            max: values[values.len() - 1],
        })
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct InspectReport {
    pub rows: usize,
    pub lesions: usize,
    pub bad_rows: usize,
    pub patients: usize,
    pub studies: usize,
    pub key_slices: usize,
    pub extra_columns: Vec<String>,
    pub by_type: BTreeMap<String, usize>,
    pub by_split: BTreeMap<String, usize>,
    pub by_sex: BTreeMap<String, usize>,
    pub possibly_noisy: usize,
    pub long_diameter_mm: Option<Distribution>,
    pub age: Option<Distribution>,
    pub missing_key_slices: usize,
    pub missing_neighbour_slices: usize,
    pub series_with_missing_neighbours: usize,
    pub undecodable_key_slices: usize,
    pub report_lines: Option<usize>,
    pub lesions_without_report: usize,
    pub issues: Vec<Issue>,
    /// Set when `strict` stopped the scan at the first error.
    pub stopped_early: bool,
}

impl InspectReport {
    pub fn has_errors(&self) -> bool {
        self.issues.iter().any(|i| i.severity == Severity::Error)
    }

    fn error(&mut self, message: impl Into<String>) {
        self.issues.push(Issue {
            severity: Severity::Error,
            message: message.into(),
        });
    }

    fn warning(&mut self, message: impl Into<String>) {
        self.issues.push(Issue {
            severity: Severity::Warning,
            message: message.into(),
        });
    }
}

/// Validates the archive at `root`; only failing to open `DL_info.csv` or its header is an
/// `Err`, everything else is listed in the report.
pub fn inspect(root: &Path, options: &InspectOptions) -> Result<InspectReport> {
    let dataset = Dataset::new(root);
    let csv_path = dataset.dl_info_path();
    let reader = DlInfoReader::open(&csv_path)?;
    let mut report = InspectReport {
        extra_columns: reader.extra_columns().to_vec(),
        ..Default::default()
    };
    if options.reject_extra_columns {
        if let Err(e) = reader.reject_extra_columns() {
            report.error(e.to_string());
            report.stopped_early = options.strict;
        }
    } else if !report.extra_columns.is_empty() {
        report.warning(format!(
            "{}: ignoring columns beyond the official 18: {}",
            csv_path.display(),
            report.extra_columns.join(", ")
        ));
    }

    let mut rows: Vec<LesionRow> = Vec::new();
    if !report.stopped_early {
        for row in reader {
            report.rows += 1;
            match row {
                Ok(row) => rows.push(row),
                Err(e) => {
                    report.bad_rows += 1;
                    // A row error lists one `file:line: column: problem` per line.
                    for line in e.to_string().lines() {
                        report.error(line);
                    }
                    if options.strict {
                        report.stopped_early = true;
                        break;
                    }
                }
            }
        }
    }
    summarise(&mut report, &rows);
    check_consistency(&mut report, &rows, &csv_path);
    if !report.stopped_early {
        check_files(&mut report, &dataset, &rows, options);
        check_reports(&mut report, &dataset, &rows);
    }
    Ok(report)
}

fn summarise(report: &mut InspectReport, rows: &[LesionRow]) {
    report.lesions = rows.len();
    let records = || rows.iter().map(|r| &r.record);
    report.patients = records().map(|r| r.patient).collect::<HashSet<_>>().len();
    report.studies = records()
        .map(|r| (r.patient, r.study))
        .collect::<HashSet<_>>()
        .len();
    report.key_slices = records()
        .map(|r| r.file_name.as_str())
        .collect::<HashSet<_>>()
        .len();
    for r in records() {
        *report
            .by_type
            .entry(r.coarse_type.name().into())
            .or_default() += 1;
        *report.by_split.entry(r.split.name().into()).or_default() += 1;
        let sex = match r.sex.code() {
            "" => "unknown",
            code => code,
        };
        *report.by_sex.entry(sex.into()).or_default() += 1;
        report.possibly_noisy += usize::from(r.possibly_noisy);
    }
    report.long_diameter_mm = Distribution::of(
        &mut records()
            .map(LesionRecord::long_diameter_mm)
            .collect::<Vec<_>>(),
    );
    report.age = Distribution::of(&mut records().filter_map(|r| r.age).collect::<Vec<_>>());
}

fn check_consistency(report: &mut InspectReport, rows: &[LesionRow], csv_path: &Path) {
    let mut split_of_patient: HashMap<u32, (super::Split, u64)> = HashMap::new();
    let mut seen: HashMap<(String, [u32; 4]), u64> = HashMap::new();
    for row in rows {
        let r = &row.record;
        match split_of_patient.get(&r.patient) {
            Some(&(split, line)) if split != r.split => report.warning(format!(
                "{}:{}: Train_Val_Test: patient {} is in {} here but in {} at line {line}; splits should be by patient",
                csv_path.display(), row.line, r.patient, r.split, split
            )),
            Some(_) => {}
            None => {
                split_of_patient.insert(r.patient, (r.split, row.line));
            }
        }
        if r.split != super::Split::Train && r.coarse_type == CoarseType::Unknown {
            report.warning(format!(
                "{}:{}: Coarse_lesion_type: -1 (unknown) in the {} split, which is fully typed in DeepLesion",
                csv_path.display(), row.line, r.split
            ));
        }
        let b = r.bbox;
        let box_key = [b.x1, b.y1, b.x2, b.y2].map(|v| (v * 100.0).round() as u32);
        if let Some(first) = seen.insert((r.file_name.clone(), box_key), row.line) {
            report.warning(format!(
                "{}:{}: Bounding_boxes: same slice and box as line {first} (duplicate lesion)",
                csv_path.display(),
                row.line
            ));
        }
    }
}

fn check_files(
    report: &mut InspectReport,
    dataset: &Dataset,
    rows: &[LesionRow],
    options: &InspectOptions,
) {
    check_key_slices(report, dataset, rows, options);
    check_neighbour_slices(report, dataset, rows);
}

/// Every key slice, once each: present, and decodable when `decode_images` asks.
fn check_key_slices(
    report: &mut InspectReport,
    dataset: &Dataset,
    rows: &[LesionRow],
    options: &InspectOptions,
) {
    let mut key_slices: Vec<&LesionRow> = Vec::new();
    let mut seen = HashSet::new();
    for row in rows {
        if seen.insert(row.record.file_name.as_str()) {
            key_slices.push(row);
        }
    }
    let key_problems: Vec<(u64, Error)> = key_slices
        .par_iter()
        .filter_map(|row| {
            key_slice_problem(dataset, &row.record, options.decode_images).map(|e| (row.line, e))
        })
        .collect();
    let csv = dataset.dl_info_path();
    for (line, e) in key_problems {
        match e {
            Error::MissingSlice { .. } => report.missing_key_slices += 1,
            _ => report.undecodable_key_slices += 1,
        }
        report.error(format!("{}:{line}: File_name: {e}", csv.display()));
    }
}

/// Why a lesion's key slice fails: absent, or (when `decode` is set) not decodable.
fn key_slice_problem(dataset: &Dataset, record: &LesionRecord, decode: bool) -> Option<Error> {
    if decode {
        return dataset.load_key_slice(record).err();
    }
    let path = record.key_slice_path(dataset.root());
    (!path.is_file()).then(|| Error::MissingSlice {
        path,
        lesion: record.file_name.clone(),
    })
}

/// Neighbour slices: every slice some lesion's Slice_range names, once per series.
fn check_neighbour_slices(report: &mut InspectReport, dataset: &Dataset, rows: &[LesionRow]) {
    let mut wanted: HashMap<&str, (&LesionRecord, HashSet<u32>)> = HashMap::new();
    let key_set: HashSet<(&str, u32)> = rows
        .iter()
        .map(|r| (r.record.series_folder(), r.record.key_slice))
        .collect();
    for row in rows {
        let r = &row.record;
        let entry = wanted
            .entry(r.series_folder())
            .or_insert_with(|| (r, HashSet::new()));
        entry.1.extend(r.slice_range.first..=r.slice_range.last);
    }
    let missing: Vec<(String, usize)> = wanted
        .par_iter()
        .filter_map(|(folder, (record, indices))| {
            let n = indices
                .iter()
                // Missing key slices are already reported by `check_key_slices`.
                .filter(|&&i| !key_set.contains(&(*folder, i)))
                .filter(|&&i| !record.slice_path(dataset.root(), i).is_file())
                .count();
            (n > 0).then(|| (folder.to_string(), n))
        })
        .collect();
    report.missing_neighbour_slices = missing.iter().map(|(_, n)| n).sum();
    report.series_with_missing_neighbours = missing.len();
    if report.missing_neighbour_slices > 0 {
        let mut example: Vec<&String> = missing.iter().map(|(f, _)| f).collect();
        example.sort();
        report.warning(format!(
            "{} neighbour slices named by Slice_range are absent in {} series (e.g. {}); patches fall back to the nearest slice present",
            report.missing_neighbour_slices,
            report.series_with_missing_neighbours,
            dataset.root().join(super::IMAGES_DIR).join(example[0]).display()
        ));
    }
}

fn check_reports(report: &mut InspectReport, dataset: &Dataset, rows: &[LesionRow]) {
    let path = dataset.reports_path();
    if !path.exists() {
        return;
    }
    match super::read_reports(&path) {
        Ok(reports) => {
            report.report_lines = Some(reports.len());
            let mut ordinal: HashMap<&str, u32> = HashMap::new();
            for row in rows {
                let n = ordinal.entry(row.record.file_name.as_str()).or_default();
                if !reports.contains_key(&(row.record.file_name.clone(), *n)) {
                    report.lesions_without_report += 1;
                }
                *n += 1;
            }
            if report.lesions_without_report > 0 {
                report.warning(format!(
                    "{}: {} lesions have no report sentence",
                    path.display(),
                    report.lesions_without_report
                ));
            }
        }
        Err(e) => report.error(e.to_string()),
    }
}
