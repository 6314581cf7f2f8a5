//! Same-lesion pairs across a patient's studies, in the format of the DLT lesion-tracking
//! benchmark (`source recist slice` `000004_02_01/013.png`, `source recist center` `[x, y,
//! z]`, the same for `target`): read from the benchmark's files, written for generated
//! archives.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One lesion of a pair: its key slice (`File_name`) and its centre in pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairEnd {
    pub file_name: String,
    pub center: [f32; 2],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowUpPair {
    pub source: PairEnd,
    pub target: PairEnd,
}

#[derive(Deserialize)]
struct DltEntry {
    #[serde(rename = "source recist slice")]
    source_slice: String,
    #[serde(rename = "source recist center")]
    source_center: Vec<f32>,
    #[serde(rename = "target recist slice")]
    target_slice: String,
    #[serde(rename = "target recist center")]
    target_center: Vec<f32>,
}

fn end(slice: &str, center: &[f32], path: &Path, id: &str, side: &str) -> Result<PairEnd> {
    let bad = |message: String| Error::Index {
        path: path.to_path_buf(),
        message: format!("pair {id}: {side}: {message}"),
    };
    // `000004_02_01/013.png` names the slice `000004_02_01_013.png`.
    let (series, file) = slice
        .split_once('/')
        .ok_or_else(|| bad(format!("`{slice}` is not SERIES/SLICE.png")))?;
    if center.len() < 2 {
        return Err(bad("the centre needs x and y".into()));
    }
    Ok(PairEnd {
        file_name: format!("{series}_{file}"),
        center: [center[0], center[1]],
    })
}

/// Reads a DLT-format pairs file (`{"0001": {...}, ...}`); a malformed entry is named.
pub fn read_pairs(path: &Path) -> Result<Vec<FollowUpPair>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let entries: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| Error::Index {
            path: path.to_path_buf(),
            message: format!("not a pairs file (an object of pairs by id): {e}"),
        })?;
    entries
        .into_iter()
        .map(|(id, value)| {
            let entry: DltEntry = serde_json::from_value(value).map_err(|e| Error::Index {
                path: path.to_path_buf(),
                message: format!("pair {id}: {e}"),
            })?;
            Ok(FollowUpPair {
                source: end(
                    &entry.source_slice,
                    &entry.source_center,
                    path,
                    &id,
                    "source",
                )?,
                target: end(
                    &entry.target_slice,
                    &entry.target_center,
                    path,
                    &id,
                    "target",
                )?,
            })
        })
        .collect()
}

/// Writes pairs in the same format (what `synth` records of its follow-ups).
pub fn pairs_json(pairs: &[FollowUpPair]) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    for (i, pair) in pairs.iter().enumerate() {
        let slice = |file: &str| match file.rsplit_once('_') {
            Some((series, slice)) => format!("{series}/{slice}"),
            None => file.to_string(),
        };
        object.insert(
            format!("{:04}", i + 1),
            serde_json::json!({
                "source recist slice": slice(&pair.source.file_name),
                "source recist center": [pair.source.center[0], pair.source.center[1], 0.0],
                "target recist slice": slice(&pair.target.file_name),
                "target recist center": [pair.target.center[0], pair.target.center[1], 0.0],
            }),
        );
    }
    serde_json::Value::Object(object)
}
