//! LesaNet's text-mined labels: for each split, lesion row indices into the FULL
//! `DL_info.csv` (0-based) and, per lesion, indices into a shared `term_list`.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Deserialize)]
struct Raw {
    term_list: Vec<String>,
    #[serde(default)]
    train_lesion_idxs: Vec<usize>,
    #[serde(default)]
    train_relevant_labels: Vec<Vec<usize>>,
    #[serde(default)]
    val_lesion_idxs: Vec<usize>,
    #[serde(default)]
    val_relevant_labels: Vec<Vec<usize>>,
    #[serde(default)]
    test_lesion_idxs: Vec<usize>,
    #[serde(default)]
    test_relevant_labels: Vec<Vec<usize>>,
}

/// Label terms by 0-based row index of the table they were mined for.
#[derive(Debug, Clone, Default)]
pub struct LesionLabels {
    pub by_row: HashMap<usize, Vec<String>>,
}

impl LesionLabels {
    /// The largest row index the labels refer to.
    pub fn max_row(&self) -> Option<usize> {
        self.by_row.keys().copied().max()
    }
}

/// Reads `text_mined_labels_171_and_split.json` (relevant labels; uncertain ones are left out).
pub fn read_lesanet_labels(path: &Path) -> Result<LesionLabels> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let raw: Raw = serde_json::from_slice(&bytes).map_err(|e| Error::InvalidArgument {
        name: path.display().to_string(),
        message: format!("not a LesaNet label file: {e}"),
    })?;
    let mut by_row: HashMap<usize, Vec<String>> = HashMap::new();
    for (split, rows, labels) in [
        ("train", &raw.train_lesion_idxs, &raw.train_relevant_labels),
        ("val", &raw.val_lesion_idxs, &raw.val_relevant_labels),
        ("test", &raw.test_lesion_idxs, &raw.test_relevant_labels),
    ] {
        if rows.len() != labels.len() {
            return Err(Error::invalid_argument(
                path.display().to_string(),
                format!(
                    "{split}_lesion_idxs has {} entries, {split}_relevant_labels {}",
                    rows.len(),
                    labels.len()
                ),
            ));
        }
        for (row, terms) in rows.iter().zip(labels) {
            let mut names = Vec::with_capacity(terms.len());
            for &t in terms {
                let name = raw.term_list.get(t).ok_or_else(|| {
                    Error::invalid_argument(
                        path.display().to_string(),
                        format!(
                            "label {t} of row {row} is beyond the {} terms",
                            raw.term_list.len()
                        ),
                    )
                })?;
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
            by_row.insert(*row, names);
        }
    }
    Ok(LesionLabels { by_row })
}
