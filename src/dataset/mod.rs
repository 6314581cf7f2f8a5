//! DeepLesion-format archives: the `DL_info.csv` table, the slice folders, report text.
//!
//! [`DlInfoReader`] streams typed [`LesionRecord`]s; [`Dataset`] knows where each slice
//! lives and cuts patches for a lesion; [`inspect`] validates a whole archive.

mod dl_info;
pub mod fields;
mod inspect;
mod labels;
pub mod pairs;
mod patches;
mod record;
mod reports;

pub use dl_info::{write_dl_info, DlInfoReader, LesionRow, COLUMNS};
pub use inspect::{inspect, InspectOptions, InspectReport, Issue, Severity};
pub use labels::{read_lesanet_labels, LesionLabels};
pub use patches::{geometry_of, Dataset, LesionSlices};
pub use record::*;
pub use reports::{read_reports, write_reports, ReportEntry};

/// Name of the lesion table inside a dataset folder.
pub const DL_INFO_FILE: &str = "DL_info.csv";
/// Name of the report-text file inside a dataset folder.
pub const REPORTS_FILE: &str = "reports.jsonl";
/// Same-lesion pairs across studies that `synth` writes (DLT benchmark format).
pub const FOLLOWUP_PAIRS_FILE: &str = "followup_pairs.json";
