//! Semantic retrieval end to end on generated archives of a few dozen lesions, with a tiny
//! BERT sentence encoder (seeded random weights in all-MiniLM-L6-v2's on-disk layout,
//! loaded by the real `SentenceEncoder::load`): a build keeps a report vector per lesion;
//! a text query with `semantic` matches the BM25 matches and the reports whose cosine
//! reaches the threshold, with an exact total, pages that are prefixes of one order (the
//! RRF of the two lists the product's `rrf` makes) and facets over those matches; adds embed
//! the new reports, deletes tombstone them, `verify` counts them; an archive built without
//! a text encoder refuses `semantic` by name and behaves as before. One test runs the
//! imported all-MiniLM-L6-v2 and skips, saying so, when it is not imported.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;

use lesion_search::archive::{add_lesion, Archive, BuildOptions, LesionInput};
use lesion_search::backend::BackendChoice;
use lesion_search::dataset::{CoarseType, Dataset, PixelBox};
use lesion_search::embed::{
    bundled_lesion_cnn, default_cache_dir, load_minilm, write_tiny_sentence_encoder, Embedder,
    SentenceEncoder, MINILM_MODEL,
};
use lesion_search::filter::Filter;
use lesion_search::index::GraphParams;
use lesion_search::search::{
    rrf, Engine, SearchInput, SearchLimits, SearchRequest, SearchResponse, MAX_K,
    SEMANTIC_MIN_COSINE,
};
use lesion_search::service::{Index, Writer};
use lesion_search::Error;

const LESIONS: usize = 40;

/// Queries tried in turn; the test needs one whose semantic matches add to its BM25 matches.
const QUERIES: [&str; 8] = [
    "lymph node",
    "liver lesion",
    "cyst in the pancreas",
    "lung nodule",
    "enlarged node",
    "hypoattenuation mass",
    "bone lesion",
    "kidney",
];

fn model() -> Arc<dyn Embedder> {
    Arc::new(bundled_lesion_cnn().unwrap())
}

/// A tiny encoder in a cache folder, under the imported model's folder name.
fn tiny_encoder(cache: &Path) -> Arc<SentenceEncoder> {
    let dir = cache.join(MINILM_MODEL);
    write_tiny_sentence_encoder(&dir, 11).unwrap();
    Arc::new(SentenceEncoder::load(&dir).unwrap())
}

fn archive(seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let options = lesion_search::synth::SynthOptions {
        lesions: LESIONS,
        seed,
        label_train: true,
        image_size: 128,
        ..Default::default()
    };
    lesion_search::synth::generate(dir.path(), &options, &|_, _| {}).unwrap();
    dir
}

fn build(dataset: &Path, index: &Path, encoder: Option<Arc<SentenceEncoder>>) {
    let model = model();
    let mut writer = Writer::create(index, &BackendChoice::Embedded).unwrap();
    if let Some(encoder) = encoder {
        writer = writer.with_text_encoder(encoder);
    }
    let options = BuildOptions {
        dataset: dataset.to_path_buf(),
        reports: None,
        model: model.as_ref(),
        graph: GraphParams::default(),
        labels: None,
    };
    writer.build(&options, &[], &|_| {}).unwrap();
}

fn search(engine: &Engine, request: SearchRequest) -> SearchResponse {
    engine.search(&request).unwrap()
}

fn text_request(text: &str, semantic: bool) -> SearchRequest {
    SearchRequest {
        text: Some(text.into()),
        semantic,
        group_by_patient: false,
        k: MAX_K,
        ..Default::default()
    }
}

fn ids(response: &SearchResponse) -> Vec<u32> {
    response.hits.iter().map(|h| h.id).collect()
}

/// The cosine of `text` to every live lesion's report, by brute force (zero for a lesion
/// without a report, as the product stores zeros for it).
fn cosines(engine: &Engine, encoder: &SentenceEncoder, text: &str) -> Vec<(u32, f32)> {
    let query = encoder.encode(&[text]).unwrap().pop().unwrap();
    (0..engine.capacity() as u32)
        .filter(|&id| engine.is_live(id))
        .map(|id| {
            let report = engine.lesion(id).unwrap().unwrap().report;
            let cosine = if report.trim().is_empty() {
                0.0
            } else {
                let v = encoder.encode(&[report.as_str()]).unwrap().pop().unwrap();
                v.iter().zip(&query).map(|(a, b)| a * b).sum()
            };
            (id, cosine)
        })
        .collect()
}

/// What the search must answer for `text` with `semantic` under `filter`: the BM25 list
/// (from the search without it) and the semantic list over the matches, fused by RRF.
fn expected(
    engine: &Engine,
    encoder: &SentenceEncoder,
    text: &str,
    filter: &Filter,
) -> (Vec<u32>, Vec<(u32, f32)>, usize) {
    let bm25 = ids(&search(
        engine,
        SearchRequest {
            filter: filter.clone(),
            ..text_request(text, false)
        },
    ));
    let bm25_set: HashSet<u32> = bm25.iter().copied().collect();
    let allowed = |id: u32| engine.facts(id).is_some_and(|f| filter.accepts(f));
    let scored = cosines(engine, encoder, text);
    let mut semantic: Vec<(u32, f32)> = scored
        .iter()
        .copied()
        .filter(|&(id, c)| allowed(id) && (c >= SEMANTIC_MIN_COSINE || bm25_set.contains(&id)))
        .collect();
    semantic.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let semantic_ids: Vec<u32> = semantic.iter().map(|s| s.0).collect();
    let fused: Vec<u32> = rrf(&[&bm25, &semantic_ids])
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let extra = semantic_ids
        .iter()
        .filter(|id| !bm25_set.contains(id))
        .count();
    (fused, semantic, extra)
}

#[test]
fn semantic_matches_join_the_bm25_matches_with_exact_totals_pages_and_facets() {
    let data = archive(3);
    let cache = tempfile::tempdir().unwrap();
    let encoder = tiny_encoder(cache.path());
    let index = tempfile::tempdir().unwrap();
    build(data.path(), index.path(), Some(encoder.clone()));
    let manifest = Archive::current_manifest(index.path()).unwrap();
    assert_eq!(manifest.text_encoder.as_ref(), Some(encoder.card()));
    assert!(Archive::open(index.path())
        .unwrap()
        .verify()
        .unwrap()
        .is_empty());

    let served = Index::open_with_models(
        index.path(),
        model(),
        Some(encoder.clone()),
        &BackendChoice::Embedded,
    )
    .unwrap();
    let engine = served.engine();
    assert!(engine.supports_semantic());

    let mut widened = 0;
    for text in QUERIES {
        let (fused, semantic, extra) = expected(&engine, &encoder, text, &Filter::default());
        let answer = search(&engine, text_request(text, true));
        assert!(answer.semantic, "{text}");
        assert_eq!(answer.total, fused.len(), "{text}: total");
        assert_eq!(answer.matched_lesions, fused.len(), "{text}");
        assert_eq!(
            answer.facets.total,
            fused.len(),
            "{text}: facets over the matches"
        );
        assert_eq!(
            ids(&answer),
            fused,
            "{text}: the RRF of the BM25 and semantic lists"
        );
        for hit in &answer.hits {
            let s = hit.semantic.expect("every hit has its cosine");
            let at = semantic.iter().position(|x| x.0 == hit.id).unwrap();
            assert_eq!(s.rank, Some(at + 1), "{text}: {}", hit.id);
            assert!(
                (s.cosine - semantic[at].1).abs() < 1e-4,
                "{text}: {}",
                hit.id
            );
        }
        // Pages of 7 are prefixes of the one list and reach its end; total never moves.
        let mut paged = Vec::new();
        for offset in (0..=fused.len()).step_by(7) {
            let page = search(
                &engine,
                SearchRequest {
                    k: 7,
                    offset,
                    ..text_request(text, true)
                },
            );
            assert_eq!(page.total, fused.len(), "{text} at {offset}");
            paged.extend(ids(&page));
        }
        assert_eq!(paged, fused, "{text}: pages");
        // Grouped: one row per patient, counted over the same matches.
        let patients: BTreeSet<u32> = fused
            .iter()
            .map(|&id| engine.facts(id).unwrap().patient)
            .collect();
        let grouped = search(
            &engine,
            SearchRequest {
                group_by_patient: true,
                ..text_request(text, true)
            },
        );
        assert_eq!(grouped.total, patients.len(), "{text}: grouped total");
        if extra > 0 {
            widened += 1;
        }
    }
    assert!(
        widened > 0,
        "no query's semantic matches went beyond its BM25 matches: the test shows nothing"
    );

    // Under a filter: the allowed matches only, facets computed over them.
    let filter = Filter {
        types: vec![
            CoarseType::Mediastinum,
            CoarseType::Pelvis,
            CoarseType::Liver,
        ],
        ..Filter::default()
    };
    let (fused, _, _) = expected(&engine, &encoder, QUERIES[0], &filter);
    let answer = search(
        &engine,
        SearchRequest {
            filter: filter.clone(),
            ..text_request(QUERIES[0], true)
        },
    );
    assert_eq!(ids(&answer), fused);
    assert_eq!(answer.total, fused.len());

    // Without `semantic` the same archive answers as BM25 alone, with no semantic side.
    let plain = search(&engine, text_request(QUERIES[0], false));
    assert!(!plain.semantic);
    assert!(plain.hits.iter().all(|h| h.semantic.is_none()));

    // Operators, quotes and fields say exactly what matches: likeness of meaning would bring
    // back what `NOT` excluded, so semantic is refused for them by name; the same query
    // without it is answered.
    for syntax in ["liver NOT cyst", "\"lymph node\"", "report:nodule"] {
        let refused = engine
            .search(&text_request(syntax, true))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("semantic"), "{syntax}: {refused}");
        engine.search(&text_request(syntax, false)).unwrap();
    }
    // An over-long text is refused before the encoder reads it.
    let long = "nodule ".repeat(400);
    let refused = engine.search(&text_request(&long, true)).unwrap_err();
    assert!(refused.to_string().contains("characters"), "{refused}");
}

#[test]
fn adds_and_deletes_keep_the_report_vectors_in_step_and_verify_counts_them() {
    let data = archive(4);
    let cache = tempfile::tempdir().unwrap();
    let encoder = tiny_encoder(cache.path());
    let index = tempfile::tempdir().unwrap();
    build(data.path(), index.path(), Some(encoder.clone()));

    // Without the encoder an add is refused, naming the import, and nothing is published.
    let dataset = Dataset::new(data.path());
    let record = lesion_search::dataset::DlInfoReader::open(&dataset.dl_info_path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .record;
    let slice = dataset.load_key_slice(&record).unwrap();
    let mut input = LesionInput::new(PixelBox::new(40.0, 40.0, 70.0, 66.0), 9_001, 1);
    input.report = "Hypoattenuation mass in the liver, 20 x 15 mm.".into();
    input.coarse_type = CoarseType::Liver;
    input.spacing_mm = Some(0.8);
    let before = Archive::current_manifest(index.path()).unwrap().generation;
    let bare = bundled_lesion_cnn().unwrap();
    let refused = add_lesion(index.path(), &slice, &input, &bare, GraphParams::default())
        .expect_err("an add without the text encoder is refused");
    assert!(
        refused
            .to_string()
            .contains("lesion-indexer weights import minilm"),
        "{refused}"
    );
    assert_eq!(
        Archive::current_manifest(index.path()).unwrap().generation,
        before
    );

    // Through the served index's writer: embedded with the generation's encoder, served.
    let served = Arc::new(
        Index::open_with_models(
            index.path(),
            model(),
            Some(encoder.clone()),
            &BackendChoice::Embedded,
        )
        .unwrap(),
    );
    let mut writer = served.writer().unwrap();
    let added = writer.add_lesion(&slice, &input).unwrap().summary;
    let (new_id, new_key) = added.changed[0].clone();
    let engine = served.engine();
    let text = "hypoattenuation mass in the liver";
    let answer = search(&engine, text_request(text, true));
    let hit = answer
        .hits
        .iter()
        .find(|h| h.id == new_id)
        .expect("the added lesion matches its own report's words");
    let own = cosines(&engine, &encoder, text)
        .into_iter()
        .find(|c| c.0 == new_id)
        .unwrap()
        .1;
    assert!((hit.semantic.unwrap().cosine - own).abs() < 1e-4);
    let archive = Archive::open(index.path()).unwrap();
    assert_eq!(archive.report_vectors.as_ref().unwrap().len(), LESIONS + 1);
    assert!(archive.verify().unwrap().is_empty());
    drop(archive);

    // A delete tombstones the report vector too: the lesion is gone from every answer.
    let gone = writer.delete(&[new_key]).unwrap().summary;
    assert_eq!(gone.live, LESIONS);
    let engine = served.engine();
    for text in QUERIES.iter().chain([&text]) {
        let answer = search(&engine, text_request(text, true));
        assert!(answer.hits.iter().all(|h| h.id != new_id), "{text}");
        let (fused, _, _) = expected(&engine, &encoder, text, &Filter::default());
        assert_eq!(ids(&answer), fused, "{text}");
    }
    drop(writer);
    let archive = Archive::open(index.path()).unwrap();
    let reports = archive.report_vectors.as_ref().unwrap();
    assert_eq!((reports.len(), reports.deleted()), (LESIONS + 1, 1));
    assert!(reports.is_deleted(new_id));
    assert!(archive.verify().unwrap().is_empty());
    assert!(engine.verify().unwrap().is_empty());
}

#[test]
fn verify_names_report_vectors_that_disagree_with_the_records() {
    let data = archive(5);
    let cache = tempfile::tempdir().unwrap();
    let encoder = tiny_encoder(cache.path());
    let index = tempfile::tempdir().unwrap();
    build(data.path(), index.path(), Some(encoder));
    let generation = Archive::open(index.path()).unwrap().dir;
    let vectors = generation.join("report-vectors/vectors.bin");
    // One bit of one vector flipped: the store's own CRC, or verify's checksum, says so.
    let mut bytes = std::fs::read(&vectors).unwrap();
    let last = bytes.len() - 9;
    bytes[last] ^= 1;
    std::fs::write(&vectors, &bytes).unwrap();
    let problems = match Archive::open(index.path()) {
        Ok(archive) => archive.verify().unwrap(),
        Err(e) => vec![e.to_string()],
    };
    assert!(
        problems.iter().any(|p| p.contains("report-vectors")),
        "{problems:?}"
    );
}

#[test]
fn an_archive_without_report_vectors_refuses_semantic_by_name_and_answers_as_before() {
    let data = archive(6);
    let index = tempfile::tempdir().unwrap();
    build(data.path(), index.path(), None);
    let manifest_text = std::fs::read_to_string(
        Archive::open(index.path())
            .unwrap()
            .dir
            .join("manifest.json"),
    )
    .unwrap();
    assert!(!manifest_text.contains("text_encoder"), "{manifest_text}");
    assert!(!Archive::open(index.path())
        .unwrap()
        .dir
        .join("report-vectors")
        .exists());

    let engine = Index::open(index.path(), &BackendChoice::Embedded)
        .unwrap()
        .engine();
    assert!(!engine.supports_semantic());
    assert!(engine.text_encoder_card().is_none());
    let input = SearchInput {
        text: Some("lymph node".into()),
        semantic: true,
        ..Default::default()
    };
    let error = input
        .into_request(&engine, &SearchLimits::DEFAULT)
        .expect_err("semantic is refused");
    match &error {
        Error::InvalidArgument { name, message } => {
            assert_eq!(name, "semantic");
            assert!(message.contains("--text-encoder minilm"), "{message}");
        }
        other => panic!("not an argument error: {other}"),
    }
    let answer = search(&engine, text_request("lymph node", false));
    assert!(answer.total > 0);
    assert!(!answer.semantic);
    assert!(answer.hits.iter().all(|h| h.semantic.is_none()));
}

#[test]
fn all_minilm_l6_v2_ranks_reports_by_meaning() {
    let cache = default_cache_dir();
    let encoder = match load_minilm(&cache) {
        Ok(encoder) => Arc::new(encoder),
        Err(e) => {
            eprintln!("SKIP all_minilm_l6_v2_ranks_reports_by_meaning: {e}");
            return;
        }
    };
    let data = archive(7);
    let index = tempfile::tempdir().unwrap();
    build(data.path(), index.path(), Some(encoder.clone()));
    let served = Index::open(index.path(), &BackendChoice::Embedded).unwrap();
    let engine = served.engine();
    assert_eq!(engine.text_encoder_card().unwrap().dim, 384);
    assert!(engine.supports_semantic());
    // The reports closest in meaning to "growth in the liver" are the liver masses.
    let text = "growth in the liver";
    let (fused, semantic, _) = expected(&engine, &encoder, text, &Filter::default());
    let answer = search(&engine, text_request(text, true));
    assert_eq!(ids(&answer), fused);
    let bm25 = search(&engine, text_request(text, false));
    assert!(answer.total >= bm25.total);
    assert!(semantic[0].1 >= SEMANTIC_MIN_COSINE, "{semantic:?}");
    let closest = engine.lesion(semantic[0].0).unwrap().unwrap().report;
    assert!(closest.to_lowercase().contains("liver"), "{closest}");
    let top = engine.lesion(answer.hits[0].id).unwrap().unwrap().report;
    assert!(top.to_lowercase().contains("liver"), "{top}");
    assert!(Archive::open(index.path())
        .unwrap()
        .verify()
        .unwrap()
        .is_empty());
}

#[test]
fn a_build_from_shard_files_embeds_the_reports_as_a_build_in_one_process() {
    let data = archive(9);
    let cache = tempfile::tempdir().unwrap();
    let encoder = tiny_encoder(cache.path());
    let whole = tempfile::tempdir().unwrap();
    build(data.path(), whole.path(), Some(encoder.clone()));

    let model = model();
    let shards = tempfile::tempdir().unwrap();
    let files: Vec<std::path::PathBuf> = (0..2)
        .map(|i| {
            let out = shards.path().join(format!("shard-{i}.bin"));
            lesion_search::archive::embed_shard(
                data.path(),
                lesion_search::archive::Shard { index: i, count: 2 },
                model.as_ref(),
                &out,
                &|_, _| {},
            )
            .unwrap();
            out
        })
        .collect();
    let sharded = tempfile::tempdir().unwrap();
    let options = BuildOptions {
        dataset: data.path().to_path_buf(),
        reports: None,
        model: model.as_ref(),
        graph: GraphParams::default(),
        labels: None,
    };
    Writer::create(sharded.path(), &BackendChoice::Embedded)
        .unwrap()
        .with_text_encoder(encoder)
        .build(&options, &files, &|_| {})
        .unwrap();
    let (a, b) = (
        Archive::open(whole.path()).unwrap(),
        Archive::open(sharded.path()).unwrap(),
    );
    assert!(b.verify().unwrap().is_empty());
    assert_eq!(
        a.manifest.report_vectors_sha256,
        b.manifest.report_vectors_sha256
    );
    assert_eq!(
        a.report_vectors.unwrap().flat().data(),
        b.report_vectors.unwrap().flat().data()
    );
}
