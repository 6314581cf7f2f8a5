//! Same-lesion pairs (the DLT format lives in `dataset::pairs`) resolved to lesions of an
//! index and used to score follow-up matching.

use super::FollowUpFigures;
use crate::error::Result;
use crate::search::Engine;

pub use crate::dataset::pairs::{pairs_json, read_pairs, FollowUpPair, PairEnd};

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
