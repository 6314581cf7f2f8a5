//! The HTTP API on a generated index: every route, uploads of real DICOM files, errors that
//! name the request part at fault, access keys.

use actix_web::http::StatusCode;
use actix_web::test;
use lesion_search::index::GraphParams;
use lesion_web::access::Access;
use lesion_web::api::Route;
use lesion_web::{app, Config};
use serde_json::json;

mod common;
use common::*;

#[actix_web::test]
async fn text_search_returns_hits_with_ids_keys_facets() {
    let app = test::init_service(app(state(Config::default()))).await;
    let (status, body) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/search")
            .set_json(json!({"text": "lymph node", "k": 5, "filters": {"sex": "F"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let reply = json_of(&body);
    let hits = reply["hits"].as_array().unwrap();
    assert!(!hits.is_empty());
    for hit in hits {
        assert!(hit["id"].is_u64() && hit["key"].as_str().unwrap().ends_with(".png"));
        assert_eq!(hit["lesion"]["sex"], "female");
        let html = hit["text"]["snippet"].as_str().unwrap();
        assert!(html.contains("<b>"), "{html}");
        // The same matches as text and character ranges, for clients that mark up their own way.
        let text: Vec<char> = hit["text"]["snippet_text"]
            .as_str()
            .unwrap()
            .chars()
            .collect();
        let ranges = hit["text"]["highlights"].as_array().unwrap();
        assert!(!ranges.is_empty());
        for range in ranges {
            let (start, end) = (
                range[0].as_u64().unwrap() as usize,
                range[1].as_u64().unwrap() as usize,
            );
            let word: String = text[start..end].iter().collect();
            assert!(html.contains(&format!("<b>{word}</b>")), "{word} in {html}");
        }
    }
    assert!(reply["facets"]["total"].as_u64().unwrap() > 0);
    assert_eq!(reply["degraded"], false);
}

#[actix_web::test]
async fn every_lesion_route_answers() {
    let app = test::init_service(app(state(Config::default()))).await;
    let (status, body) = call(&app, test::TestRequest::get().uri("/api/lesions/3")).await;
    assert_eq!(status, StatusCode::OK);
    let detail = json_of(&body);
    let key = detail["key"].as_str().unwrap().to_string();
    assert!(detail["report"].is_string() && detail["bbox"].is_array());
    // By key too, `#` encoded.
    let (status, _) = call(
        &app,
        test::TestRequest::get().uri(&format!("/api/lesions/{}", key.replace('#', "%23"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = call(
        &app,
        test::TestRequest::get().uri("/api/lesions/3/similar?k=5"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let similar = json_of(&body);
    let patient = detail["patient"].as_u64().unwrap();
    assert!(similar["hits"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["lesion"]["patient"].as_u64() != Some(patient)));
    assert!(similar["suggestion"]["votes"].is_array());

    let (status, body) = call(
        &app,
        test::TestRequest::get().uri("/api/lesions/3/followups"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(json_of(&body)["series"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == 3));
    let followups = json_of(&body);
    assert!(followups["studies"].is_array(), "{followups}");
    assert!(
        followups["matcher"]["cross_validated_accuracy_at_1"]
            .as_f64()
            .unwrap()
            > 0.9,
        "{followups}"
    );

    let (status, body) = call(&app, test::TestRequest::get().uri("/api/lesions/3/outlook")).await;
    assert_eq!(status, StatusCode::OK);
    let outlook = json_of(&body);
    assert!(outlook["similar"].is_array() && outlook["base_rates"]["stable"].is_number());
    // The shipped measurement did not beat the base rates: evidence, no prediction.
    assert!(outlook["prediction"].is_null(), "{outlook}");
    assert!(
        outlook["statement"]
            .as_str()
            .unwrap()
            .starts_with("No prediction"),
        "{outlook}"
    );
    let (status, _) = call(
        &app,
        test::TestRequest::get().uri("/api/lesions/99999/outlook"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    for uri in [
        "/api/lesions/3/image?window=lung&box=1",
        "/api/lesions/3/image?window=dicom&size=256&around_mm=60",
        "/api/lesions/3/thumbnail",
    ] {
        let (status, body) = call(&app, test::TestRequest::get().uri(uri)).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(body.starts_with(b"\x89PNG"), "{uri}");
    }
    let res = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/api/lesions/3/pixels")
            .to_request(),
    )
    .await;
    let width: usize = res
        .headers()
        .get("X-Image-Width")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let height: usize = res
        .headers()
        .get("X-Image-Height")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(test::read_body(res).await.len(), width * height * 2);

    let (status, body) = call(
        &app,
        test::TestRequest::get().uri("/api/lesions/3/image?window=purple"),
    )
    .await;
    assert_eq!(
        (status, error_field(&body).as_str()),
        (StatusCode::BAD_REQUEST, "window")
    );
    let (status, body) = call(&app, test::TestRequest::get().uri("/api/lesions/99999")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json_of(&body)["error"]["code"], "not_found");
}

#[actix_web::test]
async fn real_dicom_uploads_with_a_box_return_hits() {
    let app = test::init_service(app(state(Config::default()))).await;
    let dir = dicom_dir();
    for name in [
        "CT_small.dcm",
        "chest_ct_rle.dcm",
        "J2K_pixelrep_mismatch.dcm",
        "abdomen_ct_vr_un.dcm",
    ] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let side = if name == "CT_small.dcm" { 128 } else { 512 };
        let c = side / 2;
        let bbox = format!(
            "{},{},{},{}",
            c - side / 8,
            c - side / 8,
            c + side / 8,
            c + side / 8
        );
        let (ct, body) = multipart(&[
            ("image", Some(name), &bytes),
            ("box", None, bbox.as_bytes()),
            ("k", None, b"5"),
        ]);
        let (status, reply) = call(
            &app,
            test::TestRequest::post()
                .uri("/api/search")
                .insert_header(("content-type", ct))
                .set_payload(body),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{name}: {}",
            String::from_utf8_lossy(&reply)
        );
        let reply = json_of(&reply);
        assert_eq!(reply["degraded"], false, "{name}");
        assert_eq!(reply["hits"].as_array().unwrap().len(), 5, "{name}");
        assert!(reply["hits"][0]["image"]["cosine"].as_f64().unwrap() > 0.0);
    }

    // Upload once, search by the held upload with text and filters combined.
    let bytes = std::fs::read(dir.join("chest_ct_rle.dcm")).unwrap();
    let (ct, body) = multipart(&[("image", Some("chest.dcm"), &bytes)]);
    let (status, reply) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/uploads")
            .insert_header(("content-type", ct))
            .set_payload(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let uploaded = json_of(&reply);
    assert_eq!(uploaded["unit"], "hounsfield");
    let upload = uploaded["upload"].as_str().unwrap();
    let (status, png) = call(
        &app,
        test::TestRequest::get().uri(&format!("/api/uploads/{upload}/image?window=lung&size=256")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(png.starts_with(b"\x89PNG"));
    let (status, reply) = call(
        &app,
        test::TestRequest::post().uri("/api/search").set_json(json!({
            "upload": upload, "box": "200,200,300,300", "text": "lung nodule", "fusion": "weighted", "image_weight": 0.7,
            "filters": {"types": ["lung", "mediastinum"]}, "k": 10
        })),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let reply = json_of(&reply);
    for hit in reply["hits"].as_array().unwrap() {
        assert!(["lung", "mediastinum"].contains(&hit["lesion"]["coarse_type"].as_str().unwrap()));
    }
}

#[actix_web::test]
async fn bad_uploads_get_a_4xx_naming_the_field() {
    let config = Config {
        max_image_side: 256,
        ..Default::default()
    };
    let app = test::init_service(app(state(config))).await;
    let dir = dicom_dir();
    let small = std::fs::read(dir.join("CT_small.dcm")).unwrap();
    let large = std::fs::read(dir.join("chest_ct_rle.dcm")).unwrap();
    let cases: Vec<(&str, Vec<Part>, &str)> = vec![
        (
            "a non-image file",
            vec![
                ("image", Some("notes.txt"), b"these are not pixels"),
                ("box", None, b"1,1,5,5"),
            ],
            "image",
        ),
        (
            "an oversized image",
            vec![
                ("image", Some("chest.dcm"), &large),
                ("box", None, b"1,1,50,50"),
            ],
            "image",
        ),
        (
            "a box outside the image",
            vec![
                ("image", Some("small.dcm"), &small),
                ("box", None, b"300,300,400,400"),
            ],
            "box",
        ),
        (
            "a malformed box",
            vec![
                ("image", Some("small.dcm"), &small),
                ("box", None, b"1,2,three"),
            ],
            "box",
        ),
        (
            "an image without a box",
            vec![("image", Some("small.dcm"), &small)],
            "box",
        ),
        (
            "an unknown part",
            vec![
                ("image", Some("small.dcm"), &small),
                ("box", None, b"10,10,40,40"),
                ("colour", None, b"red"),
            ],
            "colour",
        ),
        (
            "a bad filter part",
            vec![("text", None, b"nodule"), ("types", None, b"lung,spleen")],
            "filters.types[1]",
        ),
    ];
    for (what, parts, field) in cases {
        let (ct, body) = multipart(&parts);
        let (status, reply) = call(
            &app,
            test::TestRequest::post()
                .uri("/api/search")
                .insert_header(("content-type", ct))
                .set_payload(body),
        )
        .await;
        assert!(status.is_client_error(), "{what}: {status}");
        assert_eq!(
            error_field(&reply),
            field,
            "{what}: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    // A multipart body that is cut off.
    let (ct, mut body) = multipart(&[("image", Some("small.dcm"), &small)]);
    body.truncate(body.len() / 2);
    let (status, reply) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/search")
            .insert_header(("content-type", ct))
            .set_payload(body),
    )
    .await;
    assert!(status.is_client_error(), "{status}");
    assert!(
        !error_field(&reply).is_empty(),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // No boundary at all.
    let (status, reply) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/search")
            .insert_header(("content-type", "multipart/form-data"))
            .set_payload("x"),
    )
    .await;
    assert_eq!(
        (status, error_field(&reply).as_str()),
        (StatusCode::BAD_REQUEST, "multipart")
    );
}

#[actix_web::test]
async fn bad_json_requests_name_the_field() {
    let app = test::init_service(app(state(Config::default()))).await;
    let cases = [
        (json!({"text": "x", "k": 1000}), "k"),
        (json!({"txt": "x"}), "txt"),
        (json!({"lesion": 99999}), "lesion"),
        (json!({"positives": [1, "nope.png"]}), "positives[1]"),
        (json!({"filters": {"age": [80, 20]}}), "filters.age"),
        (json!({"filters": {"sex": "X"}}), "filters.sex"),
        (json!({"fusion": "magic"}), "fusion"),
        (json!({"image_weight": 2.0}), "image_weight"),
        (json!({"box": "1,1,2,2"}), "image"),
        (json!({"upload": "u-gone", "box": "1,1,5,5"}), "upload"),
    ];
    for (body, field) in cases {
        let (status, reply) = call(
            &app,
            test::TestRequest::post().uri("/api/search").set_json(&body),
        )
        .await;
        assert!(status.is_client_error(), "{body}: {status}");
        assert_eq!(
            error_field(&reply),
            field,
            "{body}: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    let (status, reply) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/search")
            .insert_header(("content-type", "application/json"))
            .set_payload("{\"text\": "),
    )
    .await;
    assert_eq!(
        (status, error_field(&reply).as_str()),
        (StatusCode::BAD_REQUEST, "body")
    );
    let (status, reply) = call(&app, test::TestRequest::get().uri("/api/nothing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json_of(&reply)["error"]["code"], "not_found");
}

#[actix_web::test]
async fn export_writes_csv_and_json_of_a_result_set() {
    let app = test::init_service(app(state(Config::default()))).await;
    let query =
        json!({"text": "liver", "group_by_patient": false, "filters": {"types": ["liver"]}});
    let (status, body) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/export")
            .set_json(json!({"query": query, "format": "csv", "limit": 30})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let csv = String::from_utf8(body).unwrap();
    // Provenance comes first as `# key: value` lines, then the header and the rows.
    let mut lines = csv.lines().skip_while(|l| l.starts_with('#'));
    assert!(lines.next().unwrap().starts_with("rank,score,matched"));
    let rows: Vec<&str> = lines.collect();
    assert!(!rows.is_empty() && rows.len() <= 30);
    assert!(rows.iter().all(|r| r.contains(",liver,")), "{rows:?}");
    let (status, body) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/export")
            .set_json(json!({"query": query, "format": "json"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let exported = json_of(&body);
    assert_eq!(
        exported["lesions"].as_array().unwrap().len(),
        rows.len()
            .max(exported["lesions"].as_array().unwrap().len())
    );
    assert!(exported["lesions"][0]["report"].is_string());
    let (status, body) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/export")
            .set_json(json!({"format": "xls"})),
    )
    .await;
    assert_eq!(
        (status, error_field(&body).as_str()),
        (StatusCode::BAD_REQUEST, "format")
    );
}

#[actix_web::test]
async fn openapi_lists_exactly_the_routes_and_ops_routes_answer() {
    let app = test::init_service(app(state(Config::default()))).await;
    let (status, body) = call(&app, test::TestRequest::get().uri("/api/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    let doc = json_of(&body);
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    documented.sort();
    let mut routes: Vec<(String, String)> = lesion_web::api::ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    routes.sort();
    assert_eq!(documented, routes);
    let (_, body) = call(&app, test::TestRequest::get().uri("/healthz")).await;
    let health = json_of(&body);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["backend"]["name"], "embedded", "{health}");
    assert_eq!(health["backend"]["text"], "tantivy-bm25", "{health}");
    assert_eq!(health["backend"]["reachable"], true, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    // The caps a client pages and exports within.
    assert_eq!(health["limits"]["max_offset"], 10_000, "{health}");
    assert_eq!(health["limits"]["max_export"], 50_000, "{health}");
    assert!(
        health["limits"]["max_k"].as_u64().unwrap() >= 20,
        "{health}"
    );
    let (_, body) = call(&app, test::TestRequest::get().uri("/metrics")).await;
    let metrics = String::from_utf8(body).unwrap();
    assert!(
        metrics.contains("http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("_01_"),
        "no lesion keys (patient numbers) in metrics"
    );
    // Whether the graph met its recall target is visible, never silent.
    assert!(
        metrics.contains("lesion_index_graph_exact_fallback 0")
            && metrics.contains("lesion_index_graph_enlarged "),
        "{metrics}"
    );
    let (_, body) = call(&app, test::TestRequest::get().uri("/api/facets")).await;
    assert_eq!(json_of(&body)["total"], 120);
}

#[actix_web::test]
async fn keys_guard_reads_and_writes() {
    let config = Config {
        read_key: Some(READ_KEY.into()),
        ..Default::default()
    };
    let app = test::init_service(app(state(config))).await;
    let (status, body) = call(&app, test::TestRequest::get().uri("/api/lesions/1")).await;
    assert_eq!(
        (status, json_of(&body)["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (status, _) = call(
        &app,
        test::TestRequest::get()
            .uri("/api/lesions/1")
            .insert_header(("Authorization", format!("Bearer {READ_KEY}"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&app, test::TestRequest::get().uri("/healthz")).await;
    assert_eq!(status, StatusCode::OK, "health stays open");
    // No admin key configured: writes are off.
    let (status, body) = call(
        &app,
        test::TestRequest::delete()
            .uri("/api/lesions/1")
            .insert_header(("X-Api-Key", READ_KEY)),
    )
    .await;
    assert_eq!(
        (status, json_of(&body)["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("writes_disabled"))
    );

    let open = Config {
        listen: "0.0.0.0:8080".parse().unwrap(),
        ..Default::default()
    };
    assert!(open.check().unwrap_err().contains("read key"));
}

/// The report of a task once it has finished (long-polls `GET /api/tasks/{id}`).
async fn finished_task(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    task: &str,
    auth: &(&str, String),
) -> serde_json::Value {
    let (status, reply) = call(
        app,
        test::TestRequest::get()
            .uri(&format!("/api/tasks/{task}?wait=60"))
            .insert_header(auth.clone()),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    json_of(&reply)
}

#[actix_web::test]
async fn admin_adds_a_dicom_lesion_and_deletes_it() {
    let config = Config {
        admin_key: Some(ADMIN_KEY.into()),
        ..Default::default()
    };
    let (_copy, state) = writable_state(config);
    let app = test::init_service(app(state.clone())).await;
    let bytes = std::fs::read(dicom_dir().join("chest_ct_rle.dcm")).unwrap();
    let parts: Vec<Part> = vec![
        ("image", Some("chest.dcm"), &bytes),
        ("box", None, b"300,220,340,262"),
        ("patient", None, b"990001"),
        ("study", None, b"1"),
        ("type", None, b"lung"),
        ("sex", None, b"F"),
        ("age", None, b"61"),
        ("location", None, b"0.6,0.4,0.3"),
        ("report", None, b"Spiculated right upper lobe nodule, 15 mm"),
    ];
    let (ct, body) = multipart(&parts);
    let (status, _) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/lesions")
            .insert_header(("content-type", ct.clone()))
            .set_payload(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the admin key is needed");
    let auth = ("Authorization", format!("Bearer {ADMIN_KEY}"));
    let (status, reply) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/lesions")
            .insert_header(("content-type", ct.clone()))
            .insert_header(auth.clone())
            .set_payload(body.clone()),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let queued = json_of(&reply);
    assert_eq!(queued["kind"], "add");
    let task = queued["id"].as_str().unwrap().to_string();
    let report = finished_task(&app, &task, &auth).await;
    assert_eq!(report["state"], "done", "{report}");
    let id = report["result"]["id"].as_u64().unwrap();
    assert_eq!(id, 120);
    assert_eq!(report["generation"], 2);
    // Task reports are for the admin only.
    let (status, _) = call(
        &app,
        test::TestRequest::get().uri(&format!("/api/tasks/{task}")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Served at once: found by its report and its detail reads back.
    let (_, reply) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/search")
            .set_json(json!({"text": "spiculated", "k": 5})),
    )
    .await;
    assert!(json_of(&reply)["hits"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["id"] == id));
    let (status, reply) = call(
        &app,
        test::TestRequest::get().uri(&format!("/api/lesions/{id}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&reply)["coarse_type"], "lung");
    let (status, png) = call(
        &app,
        test::TestRequest::get().uri(&format!("/api/lesions/{id}/image?window=lung")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(png.starts_with(b"\x89PNG"));

    // The same lesion again is a conflict naming the part.
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
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&reply)
    );

    let (status, reply) = call(
        &app,
        test::TestRequest::delete()
            .uri(&format!("/api/lesions/{id}"))
            .insert_header(auth.clone()),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let task = json_of(&reply)["id"].as_str().unwrap().to_string();
    let report = finished_task(&app, &task, &auth).await;
    assert_eq!(report["state"], "done", "{report}");
    assert_eq!(report["generation"], 3);
    assert_eq!(report["result"]["deleted"][0]["id"], id);
    let (status, reply) = call(
        &app,
        test::TestRequest::get()
            .uri("/api/tasks")
            .insert_header(auth.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let kinds: Vec<_> = json_of(&reply)["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["delete", "add"], "newest first");
    let (status, reply) = call(
        &app,
        test::TestRequest::get()
            .uri("/api/tasks/t999?wait=0")
            .insert_header(auth.clone()),
    )
    .await;
    assert_eq!(
        (status, error_field(&reply).as_str()),
        (StatusCode::NOT_FOUND, "id")
    );
    let (status, reply) = call(
        &app,
        test::TestRequest::get()
            .uri(&format!("/api/tasks/{task}?wait=3600"))
            .insert_header(auth.clone()),
    )
    .await;
    assert_eq!(
        (status, error_field(&reply).as_str()),
        (StatusCode::BAD_REQUEST, "wait")
    );
    let (status, _) = call(
        &app,
        test::TestRequest::get().uri(&format!("/api/lesions/{id}")),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, reply) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/search")
            .set_json(json!({"text": "spiculated", "k": 5})),
    )
    .await;
    assert!(json_of(&reply)["hits"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["id"] != id));
    assert!(state.engine().verify().unwrap().is_empty());
}

#[actix_web::test]
async fn a_generation_published_by_the_command_line_is_served_within_a_second() {
    let (copy, state) = writable_state(Config::default());
    let app = test::init_service(app(state.clone())).await;
    let (status, body) = call(&app, test::TestRequest::get().uri("/api/lesions/4")).await;
    assert_eq!(status, StatusCode::OK);
    let key = json_of(&body)["key"].as_str().unwrap().to_string();
    // What `lesion-indexer delete` does from another process.
    lesion_search::archive::delete(copy.path(), &[key], GraphParams::default()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let (status, _) = call(&app, test::TestRequest::get().uri("/api/lesions/4")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, body) = call(&app, test::TestRequest::get().uri("/healthz")).await;
    assert_eq!(json_of(&body)["generation"], 2);
}

#[actix_web::test]
async fn a_write_that_loses_a_race_reports_a_failed_task_and_changes_nothing_more() {
    let config = Config {
        admin_key: Some(ADMIN_KEY.into()),
        ..Default::default()
    };
    let (_copy, state) = writable_state(config);
    let app = test::init_service(app(state.clone())).await;
    let auth = ("Authorization", format!("Bearer {ADMIN_KEY}"));
    let before = state.engine().live();
    // Two deletes of one lesion: the second is either refused at once (the first already
    // landed) or queued behind it, and then its task fails naming the lesion.
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (status, reply) = call(
            &app,
            test::TestRequest::delete()
                .uri("/api/lesions/5")
                .insert_header(auth.clone()),
        )
        .await;
        match status {
            StatusCode::ACCEPTED => tasks.push(json_of(&reply)["id"].as_str().unwrap().to_string()),
            StatusCode::NOT_FOUND => assert_eq!(error_field(&reply), "id"),
            other => panic!("{other}: {}", String::from_utf8_lossy(&reply)),
        }
    }
    let mut outcomes = Vec::new();
    for task in &tasks {
        let report = finished_task(&app, task, &auth).await;
        if report["state"] == "failed" {
            assert!(
                report["error"]["status"].as_u64().unwrap() >= 400,
                "{report}"
            );
            assert_eq!(report["error"]["field"], "id", "{report}");
            assert!(report.get("generation").is_none(), "{report}");
        }
        outcomes.push(report["state"].as_str().unwrap().to_string());
    }
    assert_eq!(outcomes[0], "done");
    assert!(outcomes[1..].iter().all(|o| o == "failed"), "{outcomes:?}");
    assert_eq!(state.engine().live(), before - 1);
    assert!(state.engine().verify().unwrap().is_empty());
}

/// The request that should succeed on `route`, given what earlier routes answered.
fn example(route: &Route, found: &Found) -> test::TestRequest {
    let admin = ("Authorization", format!("Bearer {ADMIN_KEY}"));
    let get = |uri: &str| test::TestRequest::get().uri(uri);
    match (route.method.as_str(), route.path) {
        ("GET", "/healthz" | "/metrics" | "/api/openapi.json" | "/api/facets") => get(route.path),
        ("POST", "/api/search") => test::TestRequest::post()
            .uri(route.path)
            .set_json(json!({"text": "liver lesion", "k": 5})),
        ("POST", "/api/export") => test::TestRequest::post()
            .uri(route.path)
            .set_json(json!({"query": {"text": "liver"}, "format": "json", "limit": 10})),
        ("POST", "/api/uploads") => {
            let bytes = std::fs::read(dicom_dir().join("chest_ct_rle.dcm")).unwrap();
            let (ct, body) = multipart(&[("image", Some("chest.dcm"), &bytes)]);
            test::TestRequest::post()
                .uri(route.path)
                .insert_header(("content-type", ct))
                .set_payload(body)
        }
        ("GET", "/api/uploads/{upload}/image") => get(&format!(
            "/api/uploads/{}/image?size=64",
            found.upload.as_deref().expect("an upload")
        )),
        ("GET", "/api/uploads/{upload}/pixels") => get(&format!(
            "/api/uploads/{}/pixels",
            found.upload.as_deref().expect("an upload")
        )),
        ("GET", path) if path.starts_with("/api/lesions/{id}") => {
            let query = if path.ends_with("/image") {
                "?size=64&box=1"
            } else {
                ""
            };
            get(&format!("{}{query}", path.replace("{id}", "3")))
        }
        ("POST", "/api/lesions") => {
            let bytes = std::fs::read(dicom_dir().join("chest_ct_rle.dcm")).unwrap();
            let (ct, body) = multipart(&[
                ("image", Some("chest.dcm"), &bytes),
                ("box", None, b"300,220,340,262"),
                ("patient", None, b"990002"),
                ("study", None, b"1"),
            ]);
            test::TestRequest::post()
                .uri(route.path)
                .insert_header(("content-type", ct))
                .insert_header(admin)
                .set_payload(body)
        }
        ("DELETE", "/api/lesions/{id}") => test::TestRequest::delete()
            .uri("/api/lesions/5")
            .insert_header(admin),
        ("GET", "/api/tasks") => get(route.path).insert_header(admin),
        ("GET", "/api/tasks/{id}") => get(&format!(
            "/api/tasks/{}?wait=60",
            found.task.as_deref().expect("a task")
        ))
        .insert_header(admin),
        (method, path) => panic!("no example request for {method} {path}: add one here"),
    }
}

/// What earlier answers named, for the routes after them.
#[derive(Default)]
struct Found {
    upload: Option<String>,
    task: Option<String>,
}

/// The documented content of `status` for the operation, and whether `media` is one of its
/// media types; the JSON schema when it is JSON.
fn documented<'a>(
    operation: &'a serde_json::Value,
    status: StatusCode,
    media: &str,
) -> Option<&'a serde_json::Value> {
    let response = &operation["responses"][status.as_str()];
    let response = match response["$ref"].as_str() {
        Some(_) => return None,
        None => response,
    };
    let content = response["content"].as_object()?;
    let essence = media.split(';').next().unwrap_or("").trim();
    content
        .iter()
        .find(|(m, _)| m.split(';').next().unwrap_or("").trim() == essence)
        .map(|(_, c)| &c["schema"])
}

#[actix_web::test]
async fn every_route_answers_as_documented() {
    let config = Config {
        admin_key: Some(ADMIN_KEY.into()),
        read_key: Some(READ_KEY.into()),
        ..Default::default()
    };
    let (_copy, state) = writable_state(config);
    let app = test::init_service(app(state)).await;
    let (status, body) = call(&app, test::TestRequest::get().uri("/api/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    let doc = json_of(&body);
    assert_eq!(doc["openapi"], "3.1.0");
    let error_schema =
        doc["components"]["responses"]["Error"]["content"]["application/json"]["schema"].clone();
    let mut found = Found::default();
    for route in lesion_web::api::ROUTES {
        let operation = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
        assert!(
            operation.is_object(),
            "{} {} is not documented",
            route.method,
            route.path
        );
        let what = format!("{} {}", route.method, route.path);
        // Success, with the read key where the route needs at least that.
        let mut req = example(route, &found);
        if route.access == Access::Read {
            req = req.insert_header(("Authorization", format!("Bearer {READ_KEY}")));
        }
        let (status, media, body) = call_typed(&app, req).await;
        assert_eq!(
            status.as_u16(),
            route.status,
            "{what}: {}",
            String::from_utf8_lossy(&body)
        );
        let schema = documented(operation, status, &media)
            .unwrap_or_else(|| panic!("{what}: {status} {media} is not documented"));
        if media.starts_with("application/json") {
            let value = json_of(&body);
            let wrong = schema::mismatches(&doc, schema, &value);
            assert!(
                wrong.is_empty(),
                "{what}: the reply differs from its schema: {wrong:#?}"
            );
            if route.path == "/api/uploads" {
                found.upload = value["upload"].as_str().map(String::from);
            }
            if route.status == 202 {
                found.task = value["id"].as_str().map(String::from);
            }
        }
        // An error: without a key where one is needed, or a lesion that does not exist.
        let path = route
            .path
            .replace("{id}", "no-such-lesion")
            .replace("{upload}", "no-such-upload");
        let mut req = test::TestRequest::default()
            .method(route.method.clone())
            .uri(&path);
        if route.access == Access::Open || route.path.contains('{') {
            req = req.insert_header(("Authorization", format!("Bearer {ADMIN_KEY}")));
        }
        let (status, media, body) = call_typed(&app, req).await;
        if status.is_success() {
            continue; // an open route without a path parameter has no error to provoke
        }
        assert!(
            operation["responses"][status.as_str()].is_object(),
            "{what} answered {status}, which is not documented: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(media.starts_with("application/json"), "{what}: {media}");
        let wrong = schema::mismatches(&doc, &error_schema, &json_of(&body));
        assert!(wrong.is_empty(), "{what} {status}: {wrong:#?}");
    }
}
