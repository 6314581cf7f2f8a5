//! Semantic retrieval over HTTP, on a generated archive of 40 lesions built with a tiny BERT
//! sentence encoder in all-MiniLM-L6-v2's layout: `/healthz` names the text encoder, a search
//! with `"semantic": true` fuses the semantic list and shows each hit's cosine, the export
//! of that search holds exactly its list with the cosines and names the encoder in its
//! provenance, the server's `semantic_default` applies when a request does not say, an admin
//! add is embedded with the archive's encoder; an archive without report vectors answers
//! 400 naming `semantic`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use actix_web::http::StatusCode;
use actix_web::{test, web};
use common::{call, error_field, json_of, multipart, Part, ADMIN_KEY};
use lesion_search::archive::BuildOptions;
use lesion_search::backend::BackendChoice;
use lesion_search::embed::{write_tiny_sentence_encoder, SentenceEncoder, MINILM_MODEL};
use lesion_search::index::GraphParams;
use lesion_search::search::Engine;
use lesion_search::service::Writer;
use lesion_web::{app, AppState, Config};
use serde_json::{json, Value};

struct Fixture {
    _dir: tempfile::TempDir,
    archive: PathBuf,
    index: PathBuf,
    encoder: Arc<SentenceEncoder>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let options = lesion_search::synth::SynthOptions {
            lesions: 40,
            seed: 8,
            label_train: true,
            image_size: 128,
            ..Default::default()
        };
        lesion_search::synth::generate(&archive, &options, &|_, _| {}).unwrap();
        let encoder_dir = dir.path().join("cache").join(MINILM_MODEL);
        write_tiny_sentence_encoder(&encoder_dir, 3).unwrap();
        let encoder = Arc::new(SentenceEncoder::load(&encoder_dir).unwrap());
        let index = dir.path().join("index");
        let model = common::model();
        Writer::create(&index, &BackendChoice::Embedded)
            .unwrap()
            .with_text_encoder(encoder.clone())
            .build(
                &BuildOptions {
                    dataset: archive.clone(),
                    reports: None,
                    model: model.as_ref(),
                    graph: GraphParams::default(),
                    labels: None,
                },
                &[],
                &|_| {},
            )
            .unwrap();
        Fixture {
            _dir: dir,
            archive,
            index,
            encoder,
        }
    })
}

/// A server over a copy of the fixture's index (each test its own, since some write).
fn state(config: Config) -> (tempfile::TempDir, web::Data<AppState>) {
    let f = fixture();
    let copy = tempfile::tempdir().unwrap();
    common::copy_dir(&f.index, copy.path());
    let engine = Engine::open(copy.path(), common::model())
        .unwrap()
        .with_text_encoder(Some(f.encoder.clone()))
        .unwrap();
    let state = web::Data::new(AppState::with_engine(
        Arc::new(engine),
        copy.path().to_path_buf(),
        config,
    ));
    (copy, state)
}

fn post_json(uri: &str, body: &Value) -> test::TestRequest {
    test::TestRequest::post().uri(uri).set_json(body)
}

fn hit_ids(reply: &Value) -> Vec<u64> {
    reply["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_u64().unwrap())
        .collect()
}

#[actix_web::test]
async fn a_semantic_search_its_export_and_healthz_name_the_encoder_and_show_cosines() {
    let (_copy, state) = state(Config::default());
    let app = test::init_service(app(state.clone())).await;

    let (status, body) = call(&app, test::TestRequest::get().uri("/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    let health = json_of(&body);
    assert_eq!(health["text_encoder"], MINILM_MODEL);
    assert_eq!(health["semantic"], true);
    assert_eq!(health["semantic_default"], false);

    let query =
        json!({"text": "lymph node", "semantic": true, "group_by_patient": false, "k": 200});
    let (status, body) = call(&app, post_json("/api/search", &query)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let reply = json_of(&body);
    assert_eq!(reply["semantic"], true);
    let total = reply["total"].as_u64().unwrap();
    assert_eq!(reply["hits"].as_array().unwrap().len() as u64, total);
    for hit in reply["hits"].as_array().unwrap() {
        assert!(hit["semantic"]["cosine"].is_number(), "{hit}");
        assert!(hit["semantic"]["rank"].is_number(), "{hit}");
    }
    let mut plain = query.clone();
    plain["semantic"] = json!(false);
    let (_, body) = call(&app, post_json("/api/search", &plain)).await;
    let plain = json_of(&body);
    assert_eq!(plain["semantic"], false);
    assert!(plain["hits"][0]["semantic"].is_null());
    assert!(plain["total"].as_u64().unwrap() <= total);

    // The export writes exactly the search's list, with its cosines, and says how it ranked.
    let export = json!({"query": query, "format": "json"});
    let (status, body) = call(&app, post_json("/api/export", &export)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let file = json_of(&body);
    let provenance = &file["provenance"];
    assert_eq!(provenance["semantic"], true);
    assert_eq!(provenance["text_encoder"]["name"], MINILM_MODEL);
    assert_eq!(
        provenance["text_encoder"]["weights_sha256"],
        fixture().encoder.card().weights_sha256
    );
    let rows = file["lesions"].as_array().unwrap();
    let exported: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(exported, hit_ids(&reply));
    for (row, hit) in rows.iter().zip(reply["hits"].as_array().unwrap()) {
        assert_eq!(row["semantic_cosine"], hit["semantic"]["cosine"]);
        assert_eq!(row["semantic_rank"], hit["semantic"]["rank"]);
    }
    let csv = json!({"query": query, "format": "csv"});
    let (status, body) = call(&app, post_json("/api/export", &csv)).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    let header = text.lines().find(|l| !l.starts_with('#')).unwrap();
    assert!(
        header.starts_with("rank,score,matched,image_rank,image_cosine,text_rank,text_bm25,semantic_rank,semantic_cosine,File_name"),
        "{header}"
    );
    assert!(text.contains("# semantic: true"), "{text}");
}

#[actix_web::test]
async fn the_server_s_default_applies_when_a_request_does_not_say() {
    let config = Config {
        semantic_default: true,
        ..Default::default()
    };
    let (_copy, state) = state(config);
    let app = test::init_service(app(state)).await;
    let (_, body) = call(
        &app,
        post_json("/api/search", &json!({"text": "liver mass"})),
    )
    .await;
    assert_eq!(json_of(&body)["semantic"], true);
    let (_, body) = call(
        &app,
        post_json(
            "/api/search",
            &json!({"text": "liver mass", "semantic": false}),
        ),
    )
    .await;
    assert_eq!(json_of(&body)["semantic"], false);
    // A query with operators is answered by BM25 alone under the default, and refused
    // naming `semantic` when semantic is asked for.
    let (status, body) = call(
        &app,
        post_json("/api/search", &json!({"text": "liver NOT cyst"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["semantic"], false);
    let (status, body) = call(
        &app,
        post_json(
            "/api/search",
            &json!({"text": "liver NOT cyst", "semantic": true}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_field(&body), "semantic");
    let (_, body) = call(&app, test::TestRequest::get().uri("/healthz")).await;
    assert_eq!(json_of(&body)["semantic_default"], true);
}

#[actix_web::test]
async fn an_archive_without_report_vectors_answers_400_naming_semantic() {
    let config = Config {
        semantic_default: true,
        ..Default::default()
    };
    let app = test::init_service(app(common::state(config))).await;
    let (status, body) = call(
        &app,
        post_json("/api/search", &json!({"text": "liver", "semantic": true})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_field(&body), "semantic");
    let message = json_of(&body)["error"]["message"].to_string();
    assert!(message.contains("--text-encoder minilm"), "{message}");
    // A server default never fails a request on an archive that cannot honour it.
    let (status, body) = call(&app, post_json("/api/search", &json!({"text": "liver"}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["semantic"], false);
    let (_, body) = call(&app, test::TestRequest::get().uri("/healthz")).await;
    let health = json_of(&body);
    assert!(health["text_encoder"].is_null());
    assert_eq!(health["semantic"], false);
}

/// A slice of the fixture's archive as a 16-bit PNG file.
fn some_slice(archive: &Path) -> Vec<u8> {
    let series = std::fs::read_dir(archive.join("Images_png"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let slice = std::fs::read_dir(series).unwrap().next().unwrap().unwrap();
    std::fs::read(slice.path()).unwrap()
}

#[actix_web::test]
async fn an_admin_add_is_embedded_with_the_archive_s_text_encoder() {
    let config = Config {
        admin_key: Some(ADMIN_KEY.into()),
        ..Default::default()
    };
    let (_copy, state) = state(config);
    let app = test::init_service(app(state.clone())).await;
    let png = some_slice(&fixture().archive);
    let parts: Vec<Part> = vec![
        ("image", Some("slice.png"), &png),
        ("box", None, b"40,40,70,66"),
        ("patient", None, b"990001"),
        ("study", None, b"1"),
        ("type", None, b"liver"),
        ("spacing_mm", None, b"0.8"),
        ("report", None, b"Hypoattenuation liver mass, 20 x 15 mm."),
    ];
    let (ct, body) = multipart(&parts);
    let auth = ("Authorization", format!("Bearer {ADMIN_KEY}"));
    let (status, reply) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/lesions")
            .insert_header(("content-type", ct))
            .insert_header(auth.clone())
            .set_payload(body),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let task = json_of(&reply)["id"].as_str().unwrap().to_string();
    let (status, reply) = call(
        &app,
        test::TestRequest::get()
            .uri(&format!("/api/tasks/{task}?wait=60"))
            .insert_header(auth),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let report = json_of(&reply);
    assert_eq!(report["state"], "done", "{report}");
    let id = report["result"]["id"].as_u64().unwrap();
    assert_eq!(id, 40);
    let engine = state.engine();
    assert!(engine.verify().unwrap().is_empty());
    let query = json!({"text": "hypoattenuation liver mass", "semantic": true, "group_by_patient": false, "k": 200});
    let (_, body) = call(&app, post_json("/api/search", &query)).await;
    let reply = json_of(&body);
    let hit = reply["hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == id)
        .unwrap_or_else(|| panic!("the added lesion is not found: {reply}"));
    let own = fixture()
        .encoder
        .encode(&[
            "hypoattenuation liver mass",
            "Hypoattenuation liver mass, 20 x 15 mm.",
        ])
        .unwrap();
    let cosine: f32 = own[0].iter().zip(&own[1]).map(|(a, b)| a * b).sum();
    let served = hit["semantic"]["cosine"].as_f64().unwrap() as f32;
    assert!((served - cosine).abs() < 1e-4, "{served} {cosine}");
}

#[actix_web::test]
async fn without_its_text_encoder_the_archive_is_served_by_bm25_and_semantic_is_503() {
    let f = fixture();
    let copy = tempfile::tempdir().unwrap();
    common::copy_dir(&f.index, copy.path());
    // Opened with no encoder (the weights are not imported where the server runs).
    let engine = Engine::open(copy.path(), common::model()).unwrap();
    let config = Config {
        semantic_default: true,
        ..Default::default()
    };
    let state = web::Data::new(AppState::with_engine(
        Arc::new(engine),
        copy.path().to_path_buf(),
        config,
    ));
    let app = test::init_service(app(state)).await;
    let (status, body) = call(
        &app,
        post_json("/api/search", &json!({"text": "liver", "semantic": true})),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_field(&body), "semantic");
    let message = json_of(&body)["error"]["message"].to_string();
    assert!(message.contains("weights import minilm"), "{message}");
    let (status, body) = call(&app, post_json("/api/search", &json!({"text": "liver"}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["semantic"], false);
    let (_, body) = call(&app, test::TestRequest::get().uri("/healthz")).await;
    let health = json_of(&body);
    assert_eq!(health["text_encoder"], MINILM_MODEL);
    assert_eq!(health["semantic"], false);
}
