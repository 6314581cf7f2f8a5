//! Report text in tantivy: stemming, ontology synonyms and parents, snippets, filters.

mod common;

use lesion_search::dataset::{lesion_keys, read_reports, DlInfoReader};
use lesion_search::text::{expand_with_ontology, TextEntry, TextIndex, TextIndexWriter};

#[test]
fn ontology_expansion_adds_synonyms_and_parents() {
    let expanded = expand_with_ontology("Right renal hypodensity; cyst");
    for word in ["kidney", "right kidney", "cyst", "hypoattenuation"] {
        assert!(expanded.contains(word), "`{word}` missing from: {expanded}");
    }
    assert!(expand_with_ontology("Right lower lobe solid nodule").contains("lung"));
}

#[test]
fn reports_are_found_by_synonym_parent_and_stem_with_highlights() {
    let archive = common::synth_archive(80, 31, true);
    let records: Vec<_> = DlInfoReader::open(&archive.path().join("DL_info.csv"))
        .unwrap()
        .map(|r| r.unwrap().record)
        .collect();
    let keys = lesion_keys(&records);
    let reports = read_reports(&archive.path().join("reports.jsonl")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut writer = TextIndexWriter::create(dir.path()).unwrap();
    let texts: Vec<String> = keys
        .iter()
        .map(|k| reports[&(k.file_name.clone(), k.ordinal)].clone())
        .collect();
    for (id, ((record, key), text)) in records.iter().zip(&keys).zip(&texts).enumerate() {
        let key = key.to_string();
        writer
            .add(&TextEntry {
                id: id as u32,
                key: &key,
                record,
                report: text,
                tags: &[],
            })
            .unwrap();
    }
    writer.commit().unwrap();
    let index = TextIndex::open(dir.path()).unwrap();
    assert_eq!(index.len(), records.len() as u64);

    let kidney: Vec<usize> = texts
        .iter()
        .enumerate()
        .filter(|(_, t)| t.to_lowercase().contains("kidney"))
        .map(|(i, _)| i)
        .collect();
    assert!(!kidney.is_empty(), "no kidney report in the archive");
    // "renal" appears in no report as written; the ontology makes it find kidney lesions.
    let (hits, _) = index.search("renal", 50, &|_| true).unwrap();
    for i in &kidney {
        assert!(
            hits.iter().any(|h| h.id as usize == *i),
            "kidney report {i} not found by `renal`"
        );
    }
    // Stemming: "nodules" finds "nodule", with the word highlighted.
    let (hits, total) = index.search("nodules", 5, &|_| true).unwrap();
    assert!(total > 0);
    assert!(
        hits[0]
            .snippet
            .marked("[", "]")
            .to_lowercase()
            .contains("[nodule"),
        "{:?}",
        hits[0].snippet
    );
    for hit in &hits {
        let ranges = &hit.snippet.highlights;
        assert!(
            ranges.windows(2).all(|w| w[0].end < w[1].start),
            "{ranges:?}"
        );
        assert!(ranges
            .iter()
            .all(|r| r.start < r.end && r.end <= hit.snippet.text.len()));
    }
    // Filters apply and k is still honoured when possible.
    let (hits, _) = index.search("mm", 5, &|id| id % 2 == 0).unwrap();
    assert_eq!(hits.len(), 5);
    assert!(hits.iter().all(|h| h.id % 2 == 0));
    // A malformed query still searches.
    assert!(index.search("mass (left", 5, &|_| true).is_ok());
}
