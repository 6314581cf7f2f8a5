//! The hybrid search engine on a generated index: every query kind, filters, grouping,
//! facets, suggestion, follow-ups.

mod common;

use std::borrow::Cow;
use std::sync::OnceLock;

use lesion_search::archive::{build, BuildOptions, Published};
use lesion_search::backend::{Allowed, BackendChoice, BackendInfo, SearchBackend};
use lesion_search::dataset::{CoarseType, Dataset};
use lesion_search::embed::bundled_lesion_cnn;
use lesion_search::filter::{Filter, Range};
use lesion_search::index::{GraphParams, Plan, Scored};
use lesion_search::search::{Engine, Fusion, ImageQuery, Matched, SearchRequest};
use lesion_search::text::{RankedText, Snippet};

struct Fixture {
    _archive: tempfile::TempDir,
    index: tempfile::TempDir,
    engine: Engine,
    dataset: Dataset,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let archive = common::synth_archive(160, 71, true);
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
            index,
            engine,
        }
    })
}

#[test]
fn more_like_this_excludes_the_query_patient_and_groups_by_patient() {
    let f = fixture();
    let query = f.engine.facts(10).unwrap().clone();
    let response = f
        .engine
        .search(&SearchRequest {
            lesion: Some(10),
            k: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(response.hits.len(), 10);
    let patients: Vec<u32> = response
        .hits
        .iter()
        .map(|h| f.engine.facts(h.id).unwrap().patient)
        .collect();
    assert!(patients.iter().all(|&p| p != query.patient));
    let mut unique = patients.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), patients.len(), "one hit per patient");
    assert!(response.hits.iter().all(|h| h.matched == Matched::Image));
    let cosines: Vec<f32> = response
        .hits
        .iter()
        .map(|h| h.image.unwrap().cosine)
        .collect();
    assert!(cosines.windows(2).all(|w| w[0] >= w[1]));
    let suggestion = response.suggestion.expect("typed neighbours vote");
    let shares: f32 = suggestion.votes.iter().map(|v| v.1).sum();
    assert!((shares - 1.0).abs() < 1e-4);

    // Without grouping and with the patient allowed, the lesion finds itself first.
    let own = f
        .engine
        .search(&SearchRequest {
            lesion: Some(10),
            exclude_query_patient: false,
            group_by_patient: false,
            k: 5,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(own.hits[0].id, 10);
}

#[test]
fn filters_hold_for_every_hit_and_facets_leave_out_their_own_filter() {
    let f = fixture();
    let filter = Filter {
        types: vec![CoarseType::Lung, CoarseType::Liver],
        long_mm: Range {
            min: Some(5.0),
            max: Some(60.0),
        },
        ..Default::default()
    };
    let response = f
        .engine
        .search(&SearchRequest {
            lesion: Some(3),
            filter: filter.clone(),
            group_by_patient: false,
            k: 50,
            ..Default::default()
        })
        .unwrap();
    assert!(!response.hits.is_empty());
    for hit in &response.hits {
        assert!(filter.accepts(f.engine.facts(hit.id).unwrap()));
    }
    // Each facet leaves its own filter out: the types facet counts every type within the
    // size range, the ticked ones adding up to the total.
    let ticked: usize = ["lung", "liver"]
        .iter()
        .filter_map(|t| response.facets.types.get(*t))
        .sum();
    assert_eq!(ticked, response.facets.total);
    assert_eq!(response.facets.total, response.total);
    assert!(response
        .facets
        .types
        .keys()
        .any(|t| t != "lung" && t != "liver"));
}

#[test]
fn text_search_highlights_and_hybrid_fusion_explains_both_signals() {
    let f = fixture();
    let text = f.engine.search(&SearchRequest {
        text: Some("lung nodule".into()),
        group_by_patient: false,
        ..Default::default()
    });
    let text = text.unwrap();
    assert!(!text.hits.is_empty());
    let first = text.hits[0].text.as_ref().unwrap();
    let matched: Vec<String> = first.snippet.matched().map(str::to_lowercase).collect();
    assert!(
        matched
            .iter()
            .any(|w| w.starts_with("lung") || w.starts_with("nodul")),
        "{:?}",
        first.snippet
    );
    assert!(text.text_matches.unwrap() >= text.hits.len());

    let hybrid = f
        .engine
        .search(&SearchRequest {
            text: Some("lung nodule".into()),
            lesion: Some(text.hits[0].id),
            exclude_query_patient: false,
            group_by_patient: false,
            k: 30,
            fusion: Fusion::Weighted { image_weight: 0.5 },
            ..Default::default()
        })
        .unwrap();
    let top = &hybrid.hits[0];
    assert_eq!(top.id, text.hits[0].id);
    assert_eq!(top.matched, Matched::Both);
    assert!(hybrid.hits.iter().any(|h| h.matched != Matched::Both));
}

#[test]
fn an_uploaded_slice_with_a_box_finds_its_own_lesion() {
    let f = fixture();
    let lesion = f.engine.lesion(25).unwrap().unwrap();
    let image = f.dataset.load_key_slice(&lesion.record).unwrap();
    let response = f
        .engine
        .search(&SearchRequest {
            image: Some(ImageQuery {
                image,
                bbox: lesion.record.bbox,
                spacing_mm: Some(lesion.record.spacing.x_mm),
            }),
            group_by_patient: false,
            k: 3,
            ..Default::default()
        })
        .unwrap();
    assert!(response.degraded.is_none());
    assert!(
        response.hits.iter().any(|h| h.id == 25),
        "{:?}",
        response.hits
    );
}

#[test]
fn paging_continues_where_the_last_page_stopped_and_no_query_lists_the_cohort() {
    let f = fixture();
    let request = SearchRequest {
        lesion: Some(0),
        group_by_patient: false,
        k: 10,
        ..Default::default()
    };
    let all = f
        .engine
        .search(&SearchRequest {
            k: 20,
            ..request.clone()
        })
        .unwrap();
    let second = f
        .engine
        .search(&SearchRequest {
            offset: 10,
            ..request
        })
        .unwrap();
    let ids: Vec<u32> = second.hits.iter().map(|h| h.id).collect();
    let expected: Vec<u32> = all.hits[10..].iter().map(|h| h.id).collect();
    assert_eq!(ids, expected);

    let cohort = f
        .engine
        .search(&SearchRequest {
            filter: Filter {
                sex: Some(lesion_search::dataset::Sex::Female),
                ..Default::default()
            },
            group_by_patient: false,
            k: 500,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(cohort.hits.len(), cohort.facets.total);
    assert!(cohort.hits.iter().all(|h| h.matched == Matched::Filter));
}

#[test]
fn followups_stay_in_the_patient_and_order_by_study() {
    let f = fixture();
    // A lesion whose patient has more than one study.
    let id = (0..160u32)
        .find(|&id| {
            let facts = f.engine.facts(id).unwrap();
            f.engine
                .lesions_of_patient(facts.patient)
                .iter()
                .any(|&o| f.engine.facts(o).unwrap().study != facts.study)
        })
        .expect("the archive has follow-up studies");
    let followups = f.engine.followups(id).unwrap();
    let patient = f.engine.facts(id).unwrap().patient;
    assert_eq!(followups.series.iter().filter(|s| s.id == id).count(), 1);
    for s in &followups.series {
        assert_eq!(f.engine.facts(s.id).unwrap().patient, patient);
    }
    assert!(followups.series.windows(2).all(|w| w[0].study < w[1].study));
    assert_eq!(followups.query().id, id);
    assert!(!followups.studies.is_empty());
    for study in &followups.studies {
        let total: f32 = study
            .candidates
            .iter()
            .map(|c| c.probability.unwrap())
            .sum::<f32>()
            + study.no_match_probability;
        assert!((total - 1.0).abs() < 1e-3, "{study:?}");
        assert!(study
            .candidates
            .windows(2)
            .all(|w| w[0].probability >= w[1].probability));
        // A match is the most probable candidate and is on the chart.
        if let Some(m) = study.matched {
            assert_eq!(study.candidates[0].id, m);
            assert_eq!(
                followups.series.iter().any(|s| s.id == m),
                !study.same_study
            );
        }
    }
    assert!(f.engine.followups(9_999).is_err());

    // The outlook draws on other patients' matched follow-ups only.
    let outlook = f.engine.outlook(id).unwrap();
    assert!(outlook.reference_size > 0 && !outlook.similar.is_empty());
    assert!(outlook
        .similar
        .iter()
        .all(|s| f.engine.facts(s.from).unwrap().patient != patient));
    assert_eq!(
        outlook.grew + outlook.stable + outlook.shrank,
        outlook.similar.len()
    );
    let b = outlook.base_rates;
    assert!((b.grew + b.stable + b.shrank - 1.0).abs() < 1e-4);
    assert!(outlook
        .similar
        .windows(2)
        .all(|w| w[0].distance <= w[1].distance));
}

#[test]
fn bad_requests_name_their_field() {
    let f = fixture();
    let k = f
        .engine
        .search(&SearchRequest {
            k: 0,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
    assert!(k.contains("k"), "{k}");
    let lesion = f
        .engine
        .search(&SearchRequest {
            lesion: Some(100_000),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
    assert!(lesion.contains("lesion"), "{lesion}");
}

#[test]
fn an_image_path_past_its_deadline_degrades_to_text_results() {
    let f = fixture();
    let lesion = f.engine.lesion(30).unwrap().unwrap();
    let image = f.dataset.load_key_slice(&lesion.record).unwrap();
    let response = f
        .engine
        .search(&SearchRequest {
            text: Some("lymph node".into()),
            image: Some(ImageQuery {
                image,
                bbox: lesion.record.bbox,
                spacing_mm: None,
            }),
            image_deadline: Some(std::time::Duration::ZERO),
            group_by_patient: false,
            ..Default::default()
        })
        .unwrap();
    let reason = response.degraded.expect("flagged degraded");
    assert!(reason.contains("deadline"), "{reason}");
    assert!(!response.hits.is_empty());
    assert!(response.hits.iter().all(|h| h.matched == Matched::Text));
    assert_eq!(
        response.assumed_spacing_mm,
        Some(0.8),
        "a PNG states no spacing"
    );
}

/// The embedded stores with the depth cap of an engine like Milvus (its `topk`).
struct CappedBackend {
    inner: Box<dyn SearchBackend>,
    deepest: usize,
}

impl SearchBackend for CappedBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "capped".into(),
            ..self.inner.info()
        }
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn vector(&self, id: u32) -> lesion_search::Result<Cow<'_, [f32]>> {
        self.inner.vector(id)
    }
    fn nearest(
        &self,
        query: &[f32],
        k: usize,
        allowed: Allowed<'_>,
    ) -> lesion_search::Result<(Vec<Scored>, Plan)> {
        let (mut hits, plan) = self.inner.nearest(query, k.min(self.deepest), allowed)?;
        hits.truncate(self.deepest);
        Ok((hits, plan))
    }
    fn deepest_vector_list(&self) -> Option<usize> {
        Some(self.deepest)
    }
    fn ranked_text(
        &self,
        text: &str,
        depth: usize,
        allowed: Allowed<'_>,
        allowed_share: f32,
    ) -> lesion_search::Result<(Vec<RankedText>, usize)> {
        self.inner.ranked_text(text, depth, allowed, allowed_share)
    }
    fn snippets(&self, text: &str, hits: &[RankedText]) -> lesion_search::Result<Vec<Snippet>> {
        self.inner.snippets(text, hits)
    }
    fn text_matches(&self, text: &str) -> lesion_search::Result<Vec<u32>> {
        self.inner.text_matches(text)
    }
    fn did_you_mean(&self, text: &str) -> lesion_search::Result<Option<String>> {
        self.inner.did_you_mean(text)
    }
    fn verify(&self, published: &Published) -> lesion_search::Result<Vec<String>> {
        self.inner.verify(published)
    }
}

#[test]
fn a_page_deeper_than_the_backend_ranks_is_refused_by_name_not_answered_short() {
    let f = fixture();
    let (published, inner) =
        lesion_search::backend::open(f.index.path(), &BackendChoice::Embedded).unwrap();
    let deepest = 30;
    let engine = Engine::with_backend(
        published,
        Box::new(CappedBackend { inner, deepest }),
        std::sync::Arc::new(bundled_lesion_cnn().unwrap()),
    )
    .unwrap();
    let by_lesion = |offset: usize, k: usize| SearchRequest {
        lesion: Some(3),
        offset,
        k,
        group_by_patient: false,
        ..Default::default()
    };
    // Within the cap, the pages are those of the uncapped engine.
    let within = engine.search(&by_lesion(20, 10)).unwrap();
    let uncapped = f.engine.search(&by_lesion(20, 10)).unwrap();
    let ids =
        |r: &lesion_search::search::SearchResponse| r.hits.iter().map(|h| h.id).collect::<Vec<_>>();
    assert_eq!(ids(&within), ids(&uncapped));
    assert_eq!(within.total, uncapped.total);
    // Past it: an error naming the page and the backend, never a short list.
    let past = engine.search(&by_lesion(25, 10)).unwrap_err().to_string();
    assert!(
        past.contains("offset") && past.contains("capped") && past.contains("30"),
        "{past}"
    );
    // Grouped by patient, the capped list covers fewer patients than lesions: each page is
    // the uncapped engine's, or refused by name once the ranking it needs is past the cap.
    let grouped = |offset: usize| SearchRequest {
        lesion: Some(3),
        offset,
        k: 5,
        group_by_patient: true,
        ..Default::default()
    };
    let patients = f.engine.search(&grouped(0)).unwrap().total;
    let mut refused = 0;
    for offset in (0..patients).step_by(5) {
        let uncapped = f.engine.search(&grouped(offset)).unwrap();
        match engine.search(&grouped(offset)) {
            Ok(page) => assert_eq!(ids(&page), ids(&uncapped), "offset {offset}"),
            Err(e) => {
                assert!(e.to_string().contains("offset"), "{e}");
                refused += 1;
            }
        }
    }
    assert!(
        refused > 0,
        "no grouped page of {patients} patients needed more than {deepest} lesions"
    );
    // Text lists are not the vector engine's: they page to their end.
    let text = SearchRequest {
        text: Some("lesion".into()),
        offset: 40,
        k: 10,
        ..Default::default()
    };
    assert_eq!(
        ids(&engine.search(&text).unwrap()),
        ids(&f.engine.search(&text).unwrap())
    );
}
