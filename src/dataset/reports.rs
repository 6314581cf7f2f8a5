//! `reports.jsonl`: one report sentence per lesion, keyed by `File_name` and ordinal.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, FieldProblem, Result};

/// One line of `reports.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportEntry {
    pub file_name: String,
    /// 0-based ordinal of the lesion among the rows naming the same slice, in table order.
    #[serde(default)]
    pub lesion: u32,
    pub text: String,
}

/// Reads every report, keyed by (File_name, ordinal); a malformed line is an error naming it.
pub fn read_reports(path: &Path) -> Result<HashMap<(String, u32), String>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reports = HashMap::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line_no = i as u64 + 1;
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: ReportEntry = serde_json::from_str(&line).map_err(|e| Error::MalformedRow {
            path: path.to_path_buf(),
            line: line_no,
            problems: vec![FieldProblem {
                column: "(json)".into(),
                message: e.to_string(),
            }],
        })?;
        reports.insert((entry.file_name, entry.lesion), entry.text);
    }
    Ok(reports)
}

pub fn write_reports<'a, W: Write>(
    mut out: W,
    entries: impl IntoIterator<Item = &'a ReportEntry>,
) -> std::io::Result<()> {
    for entry in entries {
        serde_json::to_writer(&mut out, entry)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
