//! Query understanding on report text: synonyms in proportion, abbreviations, compounds,
//! misspellings, did-you-mean, highlights of whatever matched, and a match set that equals
//! the ranked list. The reports are written here, one per lesion, in the style of
//! DeepLesion's report phrases.

use lesion_search::dataset::{
    CoarseType, LesionRecord, NormalizedLocation, PixelBox, Point, Recist, Sex, SliceRange,
    Spacing, Split,
};
use lesion_search::imaging::Window;
use lesion_search::text::{QueryFeatures, TextEntry, TextIndex, TextIndexWriter};

const REPORTS: &[&str] = &[
    // 0..=9: rib lesions, the common "lesion" word the synonym must not drown in.
    "Lytic lesion of the right 5th rib",
    "Lytic lesion of the left 7th rib",
    "Sclerotic lesion of the rib",
    "Expansile lesion of the posterior rib",
    "Lytic lesion of the rib with soft tissue component",
    "Lesion of the left 9th rib",
    "Lytic lesion of the anterior rib",
    "Healing lesion of the right rib",
    "Lytic lesion of the 3rd rib",
    "Destructive lesion of the rib",
    // 10..=12: liver, said as "liver" (never "hepatic").
    "Hypodense lesion in the liver, segment 7",
    "Liver metastasis",
    "Large liver mass with central necrosis",
    // 13..=15: kidney and other cysts.
    "Right kidney cyst",
    "Simple cyst in the left kidney",
    "Left ovarian cyst",
    // 16..=19: lymph nodes and the lungs.
    "Enlarged mediastinal lymph node",
    "Right paratracheal lymph node",
    "Ground-glass opacity in the right upper lobe",
    "Spiculated nodule in the left lower lobe",
    // 20: a lesion of the retroperitoneum.
    "Retroperitoneal soft tissue mass",
    // 21..=24: what lay words stand for, and one report that uses a lay word itself.
    "Left axillary mass",
    "Enlarged left axillary lymph node",
    "Small right pleural effusion",
    "Soft tissue lump of the left thigh",
    // 25..=26: words of other terms ("common", "artery", "bladder") in other places.
    "Thrombus in the common iliac artery",
    "Gallbladder wall thickening",
];

fn record(i: usize) -> LesionRecord {
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

fn index() -> (tempfile::TempDir, TextIndex) {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = TextIndexWriter::create(dir.path()).unwrap();
    for (i, report) in REPORTS.iter().enumerate() {
        let key = format!("lesion-{i}");
        writer
            .add(&TextEntry {
                id: i as u32,
                key: &key,
                record: &record(i),
                report,
                tags: &[],
            })
            .unwrap();
    }
    writer.commit().unwrap();
    let index = TextIndex::open(dir.path()).unwrap();
    (dir, index)
}

fn ids(index: &TextIndex, text: &str) -> Vec<u32> {
    let (hits, _) = index.search(text, 50, &|_| true).unwrap();
    hits.iter().map(|h| h.id).collect()
}

#[test]
fn a_synonym_beside_a_plain_word_keeps_its_share() {
    let (_dir, index) = index();
    let hits = ids(&index, "hepatic lesion");
    assert!(!hits.is_empty());
    for (rank, id) in hits.iter().take(3).enumerate() {
        assert!(
            (10..=12).contains(id),
            "rank {rank}: lesion {id} in {hits:?}"
        );
    }
    let hits = ids(&index, "renal lesion");
    assert!((13..=14).contains(&hits[0]), "{hits:?}");
    assert!(
        !hits.contains(&15),
        "an ovarian cyst is not renal: {hits:?}"
    );
}

#[test]
fn a_synonym_only_match_highlights_the_word_that_matched() {
    let (_dir, index) = index();
    let (hits, _) = index.search("hepatic", 10, &|_| true).unwrap();
    assert!(!hits.is_empty());
    for hit in &hits {
        let marked = hit.snippet.marked("[", "]").to_lowercase();
        assert!(marked.contains("[liver]"), "{marked}");
    }
}

#[test]
fn abbreviations_and_compounds_find_what_they_stand_for() {
    let (_dir, index) = index();
    for query in ["LN", "lymphnode"] {
        let hits = ids(&index, query);
        assert!(
            hits.contains(&16) && hits.contains(&17),
            "{query}: {hits:?}"
        );
    }
    assert!(ids(&index, "mediastinal LN").contains(&16));
    let hits = ids(&index, "GGO");
    assert_eq!(hits.first(), Some(&18), "{hits:?}");
    let hits = ids(&index, "RUL");
    assert_eq!(hits.first(), Some(&18), "{hits:?}");
    let hits = ids(&index, "retro peritoneal mass");
    assert_eq!(hits.first(), Some(&20), "{hits:?}");
}

#[test]
fn a_term_is_not_matched_by_the_words_of_other_terms() {
    let (_dir, index) = index();
    // "common carotid artery" is the carotid: not the common iliac artery, though its
    // words "common" and "artery" are there.
    let hits = ids(&index, "common carotid artery");
    assert!(!hits.contains(&25), "{hits:?}");
    // A gallbladder report lists "gall bladder" among its terms' synonyms: not the
    // urinary bladder.
    let hits = ids(&index, "urinary bladder");
    assert!(!hits.contains(&26), "{hits:?}");
}

#[test]
fn lay_words_find_the_clinical_words_they_stand_for() {
    let (_dir, index) = index();
    // Armpit names the axilla exactly; a lump only suggests a mass, so the axillary node
    // is found too, below the axillary mass.
    let hits = ids(&index, "a lump in the armpit");
    assert_eq!(hits.first(), Some(&21), "{hits:?}");
    assert!(hits.contains(&22), "{hits:?}");
    for id in &hits {
        assert!(
            REPORTS[*id as usize].to_lowercase().contains("axillary"),
            "the armpit is required: {id} in {hits:?}"
        );
    }
    // A broad lay word beside an anatomy word does not make a narrower term of them: a
    // liver lump is any liver lesion, the liver mass first.
    let hits = ids(&index, "liver lump");
    assert_eq!(hits.first(), Some(&12), "{hits:?}");
    assert!(hits.contains(&10) && hits.contains(&11), "{hits:?}");
    // Phrases with stop words inside are read before the stop words go.
    assert_eq!(ids(&index, "water on the lung"), vec![23]);
    // A lay word a report uses as written is searched as written too.
    let hits = ids(&index, "lump");
    assert!(hits.contains(&24) && hits.contains(&21), "{hits:?}");
    let no_lay_terms = QueryFeatures {
        lay_terms: false,
        ..QueryFeatures::ALL
    };
    let (hits, _) = index
        .search_with("a lump in the armpit", 50, &|_| true, no_lay_terms)
        .unwrap();
    let hits: Vec<u32> = hits.iter().map(|h| h.id).collect();
    assert!(!hits.contains(&21), "without lay terms: {hits:?}");
}

#[test]
fn misspellings_match_below_exact_words_and_are_offered_respelt() {
    let (_dir, index) = index();
    let hits = ids(&index, "kidny cyst");
    assert!((13..=14).contains(&hits[0]), "{hits:?}");
    assert_eq!(
        index.did_you_mean("kidny cyst").unwrap().as_deref(),
        Some("kidney cyst")
    );
    assert_eq!(index.did_you_mean("kidney cyst").unwrap(), None);
    let hits = ids(&index, "spiculted nodule");
    assert_eq!(hits.first(), Some(&19), "{hits:?}");
    let (hits, _) = index.search("kidny", 10, &|_| true).unwrap();
    let marked = hits[0].snippet.marked("[", "]").to_lowercase();
    assert!(marked.contains("[kidney]"), "{marked}");
    // Short words are never read as misspellings ("rib" is not "rim").
    assert!(ids(&index, "rim").is_empty());
}

#[test]
fn every_concept_is_required_when_some_lesion_has_them_all() {
    let (_dir, index) = index();
    // Lesions with "lytic" and "rib" only, though "rib" alone matches ten.
    let hits = ids(&index, "lytic rib");
    assert!(!hits.is_empty());
    for id in &hits {
        assert!(
            REPORTS[*id as usize].to_lowercase().contains("lytic"),
            "{id}"
        );
    }
    // No report holds both: any word will do, the rarer first.
    let hits = ids(&index, "ovarian nodule");
    assert!(hits.contains(&15) && hits.contains(&19), "{hits:?}");
}

#[test]
fn the_match_set_is_the_ranked_list_in_full() {
    let (_dir, index) = index();
    for query in [
        "lesion",
        "hepatic lesion",
        "LN",
        "kidny cyst",
        "liver OR kidney",
    ] {
        let mut ranked = ids(&index, query);
        ranked.sort_unstable();
        let matching = index.matching_ids(query, QueryFeatures::ALL).unwrap();
        assert_eq!(ranked, matching, "{query}");
        let (_, total) = index.search(query, 1, &|_| true).unwrap();
        assert_eq!(total, matching.len(), "{query}");
    }
}

#[test]
fn each_feature_can_be_turned_off() {
    let (_dir, index) = index();
    let without = |features: QueryFeatures, text: &str| -> Vec<u32> {
        let (hits, _) = index.search_with(text, 50, &|_| true, features).unwrap();
        hits.iter().map(|h| h.id).collect()
    };
    let no_abbreviations = QueryFeatures {
        abbreviations: false,
        ..QueryFeatures::ALL
    };
    assert!(without(no_abbreviations, "GGO").is_empty());
    let no_fuzzy = QueryFeatures {
        fuzzy: false,
        ..QueryFeatures::ALL
    };
    // Without corrections "kidny" matches nothing and only "cyst" is left to rank.
    let mut cysts = without(no_fuzzy, "kidny cyst");
    cysts.sort_unstable();
    assert_eq!(cysts, vec![13, 14, 15]);
    let kidney_cysts = without(QueryFeatures::ALL, "kidny cyst");
    assert!(
        kidney_cysts.contains(&14) && !kidney_cysts.contains(&15),
        "{kidney_cysts:?}"
    );
    assert!(without(QueryFeatures::NONE, "hepatic").is_empty());
}

#[test]
fn stop_words_and_empty_queries_find_nothing_harmful() {
    let (_dir, index) = index();
    assert!(ids(&index, "the of a").is_empty());
    let hits = ids(&index, "a lesion in the liver that got bigger");
    assert!((10..=12).contains(&hits[0]), "{hits:?}");
}
