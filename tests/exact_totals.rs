//! Exact, stable numbers and facets over the matches, on a generated index of 300 lesions:
//! `total` is the same on every page and equals the rows the pages hold together, every
//! result list (text, image, hybrid, no query; grouped by patient or not) pages to its end
//! with each row once and in one order, and facets equal counts made by brute force over
//! the matches with each dimension's own filter clause left out.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use lesion_search::archive::{build, BuildOptions};
use lesion_search::dataset::{CoarseType, Dataset, Sex};
use lesion_search::embed::bundled_lesion_cnn;
use lesion_search::filter::{Filter, Range};
use lesion_search::index::GraphParams;
use lesion_search::search::{
    Engine, Facets, Fusion, Hit, ImageQuery, LesionFacts, Matched, SearchRequest, SearchResponse,
    MAX_K,
};

const LESIONS: usize = 300;

struct Fixture {
    _archive: tempfile::TempDir,
    _index: tempfile::TempDir,
    engine: Engine,
    dataset: Dataset,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let archive = common::synth_archive(LESIONS, 93, true);
        let model = bundled_lesion_cnn().unwrap();
        let index = tempfile::tempdir().unwrap();
        let options = BuildOptions {
            dataset: archive.path().to_path_buf(),
            reports: None,
            model: &model,
            graph: GraphParams::default(),
            labels: None,
        };
        build(index.path(), &options, &|_| {}).unwrap();
        let engine = Engine::open(index.path(), std::sync::Arc::new(model)).unwrap();
        Fixture {
            dataset: Dataset::new(archive.path()),
            _archive: archive,
            _index: index,
            engine,
        }
    })
}

fn facts(id: u32) -> &'static LesionFacts {
    fixture().engine.facts(id).unwrap()
}

/// Every live lesion the filter allows, by brute force over the facts.
fn allowed(filter: &Filter) -> Vec<u32> {
    let engine = &fixture().engine;
    (0..engine.capacity() as u32)
        .filter(|&id| engine.facts(id).is_some_and(|f| filter.accepts(f)))
        .collect()
}

fn patients(ids: &[u32]) -> usize {
    ids.iter()
        .map(|&id| facts(id).patient)
        .collect::<HashSet<_>>()
        .len()
}

/// The first row of each patient, in the list's order.
fn first_per_patient(ids: &[u32]) -> Vec<u32> {
    let mut seen = HashSet::new();
    ids.iter()
        .copied()
        .filter(|&id| seen.insert(facts(id).patient))
        .collect()
}

fn ids(hits: &[Hit]) -> Vec<u32> {
    hits.iter().map(|h| h.id).collect()
}

/// Pages of `k` from offset 0 until one comes back empty: every page states the same
/// total, counts and facets, holds `k` rows until the last, and the pages together are
/// the total's rows, each once, in the order one request for all of them gives.
fn page_through(request: &SearchRequest, k: usize) -> (Vec<Hit>, SearchResponse) {
    let engine = &fixture().engine;
    let first = engine
        .search(&SearchRequest {
            offset: 0,
            k,
            ..request.clone()
        })
        .unwrap();
    let mut hits = Vec::new();
    let mut offset = 0;
    loop {
        let page = engine
            .search(&SearchRequest {
                offset,
                k,
                ..request.clone()
            })
            .unwrap();
        assert_eq!(page.total, first.total, "total moved at offset {offset}");
        assert_eq!(page.matched_lesions, first.matched_lesions);
        assert_eq!(page.text_matches, first.text_matches);
        assert_eq!(page.facets, first.facets, "facets moved at offset {offset}");
        assert_eq!(
            page.hits.len(),
            k.min(first.total.saturating_sub(offset)),
            "page at offset {offset} of {}",
            first.total
        );
        if page.hits.is_empty() {
            break;
        }
        hits.extend(page.hits);
        offset += k;
    }
    assert_eq!(hits.len(), first.total, "the pages hold every row");
    let unique: HashSet<u32> = hits.iter().map(|h| h.id).collect();
    assert_eq!(unique.len(), hits.len(), "no row twice");
    let whole = engine
        .search(&SearchRequest {
            offset: 0,
            k: first.total.clamp(1, MAX_K),
            ..request.clone()
        })
        .unwrap();
    assert_eq!(ids(&whole.hits), ids(&hits), "pages cut one list");
    for (a, b) in whole.hits.iter().zip(&hits) {
        assert_eq!(a.score, b.score, "lesion {}", a.id);
    }
    if request.group_by_patient {
        assert_eq!(patients(&ids(&hits)), hits.len(), "one row per patient");
    }
    (hits, first)
}

/// Scores never rise down the list, and equal scores are in id order.
fn assert_ordered(scores: &[(u32, f32)]) {
    for w in scores.windows(2) {
        let ((a, sa), (b, sb)) = (w[0], w[1]);
        assert!(sa > sb || (sa == sb && a < b), "{a}:{sa} before {b}:{sb}");
    }
}

fn text_request(text: &str, filter: Filter, group_by_patient: bool) -> SearchRequest {
    SearchRequest {
        text: Some(text.into()),
        filter,
        group_by_patient,
        ..Default::default()
    }
}

/// Every lesion the text matches, unfiltered: the pages of an unfiltered text search.
fn text_matches(text: &str) -> Vec<u32> {
    let (hits, response) = page_through(&text_request(text, Filter::default(), false), 50);
    assert_eq!(response.text_matches, Some(hits.len()));
    let mut ids = ids(&hits);
    ids.sort_unstable();
    ids
}

fn two_dimensions() -> Filter {
    Filter {
        types: vec![CoarseType::Liver, CoarseType::Kidney, CoarseType::Lung],
        sex: Some(Sex::Female),
        ..Default::default()
    }
}

fn three_dimensions() -> Filter {
    Filter {
        types: vec![CoarseType::Lung],
        age: Range {
            min: Some(30.0),
            max: Some(75.0),
        },
        long_mm: Range {
            min: Some(8.0),
            max: None,
        },
        location_x: Range {
            min: Some(0.1),
            max: Some(0.9),
        },
        ..Default::default()
    }
}

#[test]
fn text_totals_are_the_allowed_matches_on_every_page() {
    for text in ["cyst", "nodule", "lymph node"] {
        let matches = text_matches(text);
        assert!(matches.len() > 10, "{text}: {} matches", matches.len());
        for filter in [Filter::default(), two_dimensions(), three_dimensions()] {
            let expected: Vec<u32> = matches
                .iter()
                .copied()
                .filter(|&id| filter.accepts(facts(id)))
                .collect();
            for k in [7, 40] {
                let (hits, response) = page_through(&text_request(text, filter.clone(), false), k);
                assert_eq!(response.total, expected.len(), "{text} {filter:?}");
                assert_eq!(response.text_matches, Some(expected.len()));
                assert_eq!(response.matched_lesions, expected.len());
                assert_eq!(response.facets.total, expected.len());
                let mut got = ids(&hits);
                got.sort_unstable();
                assert_eq!(got, expected, "the pages are the allowed matches");
                // The backend ranked every match (none was added unranked), by score then id.
                for (i, hit) in hits.iter().enumerate() {
                    let text = hit.text.as_ref().expect("a text hit");
                    assert_eq!(text.rank, i + 1);
                    assert!(text.bm25 > 0.0, "lesion {} ranked", hit.id);
                    assert_eq!(hit.matched, Matched::Text);
                }
                let scores: Vec<(u32, f32)> = hits
                    .iter()
                    .map(|h| (h.id, h.text.as_ref().unwrap().bm25))
                    .collect();
                assert_ordered(&scores);

                let (grouped, response) =
                    page_through(&text_request(text, filter.clone(), true), k);
                assert_eq!(response.total, patients(&expected), "{text} {filter:?}");
                assert_eq!(response.matched_lesions, expected.len());
                assert_eq!(ids(&grouped), first_per_patient(&ids(&hits)));
            }
        }
    }
}

#[test]
fn image_lists_rank_every_allowed_lesion_once() {
    let f = fixture();
    let query = 12u32;
    let own = facts(query).patient;
    for filter in [Filter::default(), two_dimensions()] {
        let effective = Filter {
            exclude_patients: vec![own],
            ..filter.clone()
        };
        let expected = allowed(&effective);
        assert!(expected.len() > 20);
        let request = SearchRequest {
            lesion: Some(query),
            filter: filter.clone(),
            group_by_patient: false,
            ..Default::default()
        };
        for k in [9, 64] {
            let (hits, response) = page_through(&request, k);
            assert_eq!(response.total, expected.len());
            assert_eq!(response.matched_lesions, expected.len());
            let mut got = ids(&hits);
            got.sort_unstable();
            assert_eq!(got, expected, "paged to its end: every allowed lesion once");
            for (i, hit) in hits.iter().enumerate() {
                assert_eq!(hit.image.unwrap().rank, i + 1);
                assert_eq!(hit.matched, Matched::Image);
            }
            let cosines: Vec<(u32, f32)> = hits
                .iter()
                .map(|h| (h.id, h.image.unwrap().cosine))
                .collect();
            assert_ordered(&cosines);

            let (grouped, response) = page_through(
                &SearchRequest {
                    group_by_patient: true,
                    ..request.clone()
                },
                k,
            );
            assert_eq!(response.total, patients(&expected));
            assert_eq!(ids(&grouped), first_per_patient(&ids(&hits)));
        }
        // Weighted fusion of the image list alone keeps its order.
        let (weighted, _) = page_through(
            &SearchRequest {
                fusion: Fusion::Weighted { image_weight: 0.7 },
                ..request.clone()
            },
            30,
        );
        let (plain, _) = page_through(&request, 30);
        assert_eq!(ids(&weighted), ids(&plain));
    }

    // An uploaded slice: the same whole list, its total the whole archive.
    let lesion = f.engine.lesion(40).unwrap().unwrap();
    let image = f.dataset.load_key_slice(&lesion.record).unwrap();
    let request = SearchRequest {
        image: Some(ImageQuery {
            image,
            bbox: lesion.record.bbox,
            spacing_mm: Some(lesion.record.spacing.x_mm),
        }),
        group_by_patient: false,
        ..Default::default()
    };
    let (hits, response) = page_through(&request, 100);
    assert_eq!(response.total, f.engine.live());
    assert!(response.degraded.is_none());
    let mut got = ids(&hits);
    got.sort_unstable();
    assert_eq!(got, allowed(&Filter::default()));
}

#[test]
fn hybrid_lists_rank_every_allowed_lesion_and_fuse_both_lists() {
    let query = 77u32;
    let own = facts(query).patient;
    for fusion in [Fusion::Rrf, Fusion::Weighted { image_weight: 0.4 }] {
        for filter in [Filter::default(), three_dimensions()] {
            let effective = Filter {
                exclude_patients: vec![own],
                ..filter.clone()
            };
            let expected = allowed(&effective);
            let matched: HashSet<u32> = text_matches("cyst")
                .into_iter()
                .filter(|&id| effective.accepts(facts(id)))
                .collect();
            let request = SearchRequest {
                text: Some("cyst".into()),
                lesion: Some(query),
                filter: filter.clone(),
                fusion,
                group_by_patient: false,
                ..Default::default()
            };
            let (hits, response) = page_through(&request, 11);
            assert_eq!(response.total, expected.len(), "{fusion:?} {filter:?}");
            assert_eq!(response.text_matches, Some(matched.len()));
            let mut got = ids(&hits);
            got.sort_unstable();
            assert_eq!(got, expected);
            let fused: Vec<(u32, f32)> = hits.iter().map(|h| (h.id, h.score)).collect();
            assert_ordered(&fused);
            for hit in &hits {
                assert!(
                    hit.image.is_some(),
                    "every allowed lesion is ranked by image"
                );
                assert_eq!(hit.text.is_some(), matched.contains(&hit.id));
                assert_eq!(
                    hit.matched,
                    if matched.contains(&hit.id) {
                        Matched::Both
                    } else {
                        Matched::Image
                    }
                );
            }
            let text_ranks: HashSet<usize> = hits
                .iter()
                .filter_map(|h| h.text.as_ref().map(|t| t.rank))
                .collect();
            assert_eq!(text_ranks, (1..=matched.len()).collect());

            let (grouped, response) = page_through(
                &SearchRequest {
                    group_by_patient: true,
                    ..request.clone()
                },
                11,
            );
            assert_eq!(response.total, patients(&expected));
            assert_eq!(ids(&grouped), first_per_patient(&ids(&hits)));
        }
    }
}

#[test]
fn no_query_lists_the_allowed_set_in_id_order() {
    for filter in [Filter::default(), two_dimensions(), three_dimensions()] {
        let expected = allowed(&filter);
        let request = SearchRequest {
            filter: filter.clone(),
            group_by_patient: false,
            ..Default::default()
        };
        let (hits, response) = page_through(&request, 13);
        assert_eq!(ids(&hits), expected);
        assert_eq!(response.total, expected.len());
        assert!(hits.iter().all(|h| h.matched == Matched::Filter));
        let (grouped, response) = page_through(
            &SearchRequest {
                group_by_patient: true,
                ..request
            },
            13,
        );
        assert_eq!(response.total, patients(&expected));
        assert_eq!(ids(&grouped), first_per_patient(&expected));
    }
}

#[test]
fn a_page_past_the_end_is_empty_with_the_same_total() {
    let engine = &fixture().engine;
    for request in [
        text_request("nodule", Filter::default(), true),
        SearchRequest {
            lesion: Some(5),
            ..Default::default()
        },
    ] {
        let first = engine.search(&request).unwrap();
        let past = engine
            .search(&SearchRequest {
                offset: first.total + 3,
                ..request.clone()
            })
            .unwrap();
        assert!(past.hits.is_empty());
        assert_eq!(past.total, first.total);
        assert_eq!(past.facets, first.facets);
        // An export asks for everything at once.
        let export = engine
            .search(&SearchRequest {
                k: MAX_K,
                ..request.clone()
            })
            .unwrap();
        assert_eq!(export.hits.len(), first.total);
    }
}

const AGE_BINS: [&str; 6] = ["0-19", "20-39", "40-59", "60-79", "80+", "unknown"];
const SIZE_BINS: [&str; 5] = ["<10", "10-19", "20-29", "30-49", "50+"];
const Z_BINS: [&str; 5] = ["0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0"];

/// The facets by their definition: dimension by dimension, the matches that pass the
/// filter with that dimension's own clause removed, counted by value.
fn brute_force_facets(matches: &[u32], filter: &Filter) -> Facets {
    type Value = fn(&LesionFacts) -> String;
    let count = |without: &dyn Fn(&mut Filter), value: Value| {
        let mut f = filter.clone();
        without(&mut f);
        let mut out = BTreeMap::new();
        for &id in matches {
            if f.accepts(facts(id)) {
                *out.entry(value(facts(id))).or_insert(0) += 1;
            }
        }
        out
    };
    Facets {
        total: matches
            .iter()
            .filter(|&&id| filter.accepts(facts(id)))
            .count(),
        types: count(&|f| f.types.clear(), |l| l.coarse_type.name().into()),
        sex: count(&|f| f.sex = None, |l| {
            match l.sex {
                Sex::Female => "F",
                Sex::Male => "M",
                Sex::Unknown => "unknown",
            }
            .into()
        }),
        age: count(&|f| f.age = Range::default(), |l| {
            AGE_BINS[l.age.map_or(5, |a| ((a.max(0.0) / 20.0) as usize).min(4))].into()
        }),
        size_mm: count(&|f| f.long_mm = Range::default(), |l| {
            let slot = [10.0, 20.0, 30.0, 50.0]
                .iter()
                .position(|&edge| l.long_mm < edge)
                .unwrap_or(4);
            SIZE_BINS[slot].into()
        }),
        split: count(&|f| f.split = None, |l| l.split.name().into()),
        location_z: count(&|f| f.location_z = Range::default(), |l| {
            Z_BINS[((l.location[2].clamp(0.0, 1.0) * 5.0) as usize).min(4)].into()
        }),
    }
}

fn with_z(filter: Filter) -> Filter {
    Filter {
        location_z: Range {
            min: Some(0.2),
            max: Some(0.8),
        },
        split: Some(lesion_search::dataset::Split::Test),
        ..filter
    }
}

#[test]
fn facets_count_the_matches_with_each_facets_own_filter_left_out() {
    let engine = &fixture().engine;
    let everything: Vec<u32> = (0..engine.capacity() as u32)
        .filter(|&id| engine.is_live(id))
        .collect();
    let filters = [
        two_dimensions(),
        three_dimensions(),
        with_z(two_dimensions()),
    ];
    let query = 33u32;
    let own = facts(query).patient;
    for filter in &filters {
        // Text: over the text's matches.
        let matches = text_matches("nodule");
        let response = engine
            .search(&text_request("nodule", filter.clone(), false))
            .unwrap();
        assert_eq!(
            response.facets,
            brute_force_facets(&matches, filter),
            "{filter:?}"
        );
        assert_eq!(response.facets.total, response.total);
        // Facets ignore grouping.
        let grouped = engine
            .search(&text_request("nodule", filter.clone(), true))
            .unwrap();
        assert_eq!(grouped.facets, response.facets);

        // Image and hybrid: every lesion is a match, the query's patient left out.
        let effective = Filter {
            exclude_patients: vec![own],
            ..filter.clone()
        };
        for text in [None, Some("cyst".to_string())] {
            let response = engine
                .search(&SearchRequest {
                    lesion: Some(query),
                    text: text.clone(),
                    filter: filter.clone(),
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(
                response.facets,
                brute_force_facets(&everything, &effective),
                "{text:?} {filter:?}"
            );
            if filter.types.len() == 1 {
                assert!(response.facets.types.len() > 1, "{:?}", response.facets);
            }
            assert_eq!(response.facets.total, response.matched_lesions);
        }
        // No query: the archive under the other filters.
        let response = engine
            .search(&SearchRequest {
                filter: filter.clone(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(response.facets, brute_force_facets(&everything, filter));
    }
    // A ticked type still shows what the other types would add.
    let kidney = Filter {
        types: vec![CoarseType::Kidney],
        ..Default::default()
    };
    let response = engine
        .search(&text_request("cyst", kidney.clone(), false))
        .unwrap();
    assert_eq!(
        response.facets,
        brute_force_facets(&text_matches("cyst"), &kidney)
    );
    assert_eq!(response.facets.types.get("kidney"), Some(&response.total));
    assert!(
        response.facets.types.len() > 1,
        "{:?}",
        response.facets.types
    );
    // The archive's own facets are the counts with no filter at all.
    assert_eq!(
        engine.facets(),
        brute_force_facets(&everything, &Filter::default())
    );
}

#[test]
fn text_that_matches_plenty_needs_no_respelling() {
    let response = fixture()
        .engine
        .search(&text_request("nodule", Filter::default(), false))
        .unwrap();
    assert!(response.text_matches.unwrap() >= 5);
    assert_eq!(response.did_you_mean, None);
}

#[test]
fn a_misspelt_word_is_searched_respelt_and_the_respelling_offered() {
    let engine = &fixture().engine;
    let misspelt = engine
        .search(&text_request("kidny cyst", Filter::default(), false))
        .unwrap();
    assert_eq!(misspelt.did_you_mean.as_deref(), Some("kidney cyst"));
    let respelt = engine
        .search(&text_request("kidney cyst", Filter::default(), false))
        .unwrap();
    assert_eq!(respelt.did_you_mean, None);
    assert!(misspelt.total > 0);
    assert_eq!(
        misspelt.total, respelt.total,
        "the correction finds what the word finds"
    );
}
