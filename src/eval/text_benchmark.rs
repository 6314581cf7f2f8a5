//! The LesaNet text benchmark: the 500 hand-labeled report phrases are the corpus, every
//! ontology term that labels at least one phrase is a query (by its name and by each
//! synonym), and a phrase is relevant when its `expanded_terms` hold the term. nDCG@10 and
//! recall are measured with and without ontology expansion.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::dataset::{
    CoarseType, LesionRecord, NormalizedLocation, PixelBox, Point, Recist, Sex, SliceRange,
    Spacing, Split,
};
use crate::error::{Error, Result};
use crate::imaging::Window;
use crate::ontology::Ontology;
use crate::text::{TextEntry, TextIndex, TextIndexWriter};

#[derive(Debug, Clone, Deserialize)]
struct Phrase {
    text: String,
    expanded_terms: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TextScores {
    pub ndcg_at_10: f32,
    pub recall_at_10: f32,
    pub recall_at_100: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct TextBenchmark {
    pub phrases: usize,
    pub terms: usize,
    pub queries: usize,
    pub with_expansion: TextScores,
    pub without_expansion: TextScores,
}

fn placeholder_record(i: usize) -> LesionRecord {
    let p = Point { x: 0.0, y: 0.0 };
    LesionRecord {
        file_name: format!("{:06}_01_01_001.png", i + 1),
        patient: i as u32 + 1,
        study: 1,
        series: 1,
        key_slice: 1,
        recist: Recist {
            long_axis: [p, p],
            short_axis: [p, p],
        },
        bbox: PixelBox::new(0.0, 0.0, 1.0, 1.0),
        diameters_px: [1.0, 1.0],
        location: NormalizedLocation {
            x: 0.5,
            y: 0.5,
            z: 0.5,
        },
        coarse_type: CoarseType::Unknown,
        possibly_noisy: false,
        slice_range: SliceRange { first: 1, last: 1 },
        spacing: Spacing {
            x_mm: 1.0,
            y_mm: 1.0,
            z_mm: 1.0,
        },
        image_width: 1,
        image_height: 1,
        window: Window {
            low: -160.0,
            high: 240.0,
        },
        sex: Sex::Unknown,
        age: None,
        split: Split::Test,
    }
}

/// Runs the benchmark on `hand_labeled_test_set.json`, indexing into `work_dir`.
pub fn run_text_benchmark(phrases_path: &Path, work_dir: &Path) -> Result<TextBenchmark> {
    let text = std::fs::read_to_string(phrases_path).map_err(|e| Error::io(phrases_path, e))?;
    let phrases: Vec<Phrase> = serde_json::from_str(&text).map_err(|e| Error::Index {
        path: phrases_path.to_path_buf(),
        message: format!("not LesaNet's hand-labeled phrases: {e}"),
    })?;
    let dir = work_dir.join("text-benchmark");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    let mut writer = TextIndexWriter::create(&dir)?;
    for (i, phrase) in phrases.iter().enumerate() {
        let record = placeholder_record(i);
        writer.add(&TextEntry {
            id: i as u32,
            key: &record.file_name,
            record: &record,
            report: &phrase.text,
            tags: &[],
        })?;
    }
    writer.commit()?;
    let index = TextIndex::open(&dir)?;

    let ontology = Ontology::lesanet();
    let mut terms: Vec<String> = phrases
        .iter()
        .flat_map(|p| p.expanded_terms.iter().cloned())
        .collect();
    terms.sort();
    terms.dedup();
    let mut queries: Vec<(String, Vec<u32>)> = Vec::new();
    for term in &terms {
        let relevant: Vec<u32> = phrases
            .iter()
            .enumerate()
            .filter(|(_, p)| p.expanded_terms.contains(term))
            .map(|(i, _)| i as u32)
            .collect();
        let mut names = vec![term.clone()];
        if let Some(entry) = ontology.find(term) {
            names.extend(entry.synonyms.iter().cloned());
        }
        names.sort();
        names.dedup();
        for name in names {
            queries.push((name, relevant.clone()));
        }
    }
    let score = |expanded: bool| -> Result<TextScores> {
        let mut scores = TextScores::default();
        for (query, relevant) in &queries {
            let (hits, _) = if expanded {
                index.search(query, 100, &|_| true)?
            } else {
                index.search_unexpanded(query, 100, &|_| true)?
            };
            let gains: Vec<bool> = hits.iter().map(|h| relevant.contains(&h.id)).collect();
            scores.ndcg_at_10 += super::ndcg_at_10(&gains, relevant.len());
            let found = |k: usize| gains.iter().take(k).filter(|g| **g).count() as f32;
            scores.recall_at_10 += found(10) / relevant.len().clamp(1, 10) as f32;
            scores.recall_at_100 += found(100) / relevant.len().max(1) as f32;
        }
        let n = queries.len().max(1) as f32;
        scores.ndcg_at_10 /= n;
        scores.recall_at_10 /= n;
        scores.recall_at_100 /= n;
        Ok(scores)
    };
    Ok(TextBenchmark {
        phrases: phrases.len(),
        terms: terms.len(),
        queries: queries.len(),
        with_expansion: score(true)?,
        without_expansion: score(false)?,
    })
}
