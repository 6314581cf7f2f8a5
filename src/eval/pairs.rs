//! Same-lesion pairs across a patient's studies, in the format of the DLT lesion-tracking
//! benchmark (`source recist slice` `000004_02_01/013.png`, `source recist center` `[x, y,
//! z]`, the same for `target`), resolved to lesions of an index and used to score
//! follow-up matching.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::FollowUpFigures;
use crate::error::{Error, Result};
use crate::search::Engine;

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

/// The index lesion on the pair end's slice whose box centre is nearest (within 10 px).
fn resolve(engine: &Engine, end: &PairEnd) -> Result<Option<u32>> {
    let mut best: Option<(f32, u32)> = None;
    for ordinal in 0..8 {
        let key = if ordinal == 0 {
            end.file_name.clone()
        } else {
            format!("{}#{ordinal}", end.file_name)
        };
        let Some(id) = engine.id_of(&key)? else {
            break;
        };
        let Some(lesion) = engine.lesion(id)? else {
            continue;
        };
        let c = lesion.record.bbox.center();
        let d = ((c.x - end.center[0]).powi(2) + (c.y - end.center[1]).powi(2)).sqrt();
        if d <= 10.0 && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, id));
        }
    }
    Ok(best.map(|(_, id)| id))
}

/// Accuracy@1 of follow-up matching: the most probable candidate in the target's study is
/// the target.
pub fn evaluate_followups(engine: &Engine, pairs: &[FollowUpPair]) -> Result<FollowUpFigures> {
    let (mut resolved, mut correct) = (0usize, 0usize);
    for pair in pairs {
        let (Some(source), Some(target)) = (
            resolve(engine, &pair.source)?,
            resolve(engine, &pair.target)?,
        ) else {
            continue;
        };
        resolved += 1;
        let target_study = engine.catalog.get(target).map(|f| f.study);
        let followups = engine.followups(source)?;
        let proposed = followups
            .studies
            .iter()
            .find(|s| Some(s.study) == target_study)
            .and_then(|s| s.candidates.first())
            .map(|f| f.id);
        if proposed == Some(target) {
            correct += 1;
        }
    }
    Ok(FollowUpFigures {
        pairs: pairs.len(),
        resolved,
        accuracy_at_1: correct as f32 / resolved.max(1) as f32,
    })
}
