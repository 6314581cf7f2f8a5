//! The server against careless and hostile clients: percent-encoded paths against the keys,
//! foreign Host headers, queries nested to overflow a parser, decompression bombs, MR slices
//! sent as CT, floods of heavy work, oversized lists and forms, formula cells in exports.
//! Each case is a request that once did harm, or a close relative of one.

use std::io::Write;

use actix_web::http::StatusCode;
use actix_web::test;
use lesion_web::access::Access;
use lesion_web::{app, Config};
use serde_json::json;

mod common;
use common::*;

fn keyed(read: bool, admin: bool) -> Config {
    Config {
        read_key: read.then(|| READ_KEY.to_string()),
        admin_key: admin.then(|| ADMIN_KEY.to_string()),
        ..Default::default()
    }
}

/// Whether a request presenting `key` may use a route needing `level` under `config`.
fn may(config: &Config, key: Option<&str>, level: Access) -> bool {
    let holds = |wanted: &Option<String>| wanted.as_deref().is_some_and(|w| Some(w) == key);
    match level {
        Access::Open => true,
        Access::Read => {
            config.read_key.is_none() || holds(&config.read_key) || holds(&config.admin_key)
        }
        Access::Admin => config.admin_key.is_some() && holds(&config.admin_key),
    }
}

/// The path with one character percent-encoded, for every character but the slashes, in
/// upper and lower case hex; plus the whole path encoded.
fn encodings(path: &str) -> Vec<String> {
    let encode = |c: char, lower: bool| {
        let hex = format!("%{:02X}", c as u32);
        if lower {
            hex.to_lowercase()
        } else {
            hex
        }
    };
    let mut out = vec![path.to_string()];
    for (i, c) in path.char_indices() {
        if c == '/' {
            continue;
        }
        for lower in [false, true] {
            out.push(format!(
                "{}{}{}",
                &path[..i],
                encode(c, lower),
                &path[i + c.len_utf8()..]
            ));
        }
    }
    out.push(
        path.chars()
            .map(|c| {
                if c == '/' {
                    "/".to_string()
                } else {
                    encode(c, false)
                }
            })
            .collect(),
    );
    out
}

#[actix_web::test]
async fn no_encoding_of_any_route_widens_access() {
    let configs = [keyed(false, false), keyed(true, false), keyed(true, true)];
    let keys = [
        None,
        Some(READ_KEY),
        Some(ADMIN_KEY),
        Some("wrong-key-0123456789"),
    ];
    let mut checked = 0;
    for config in configs {
        let app = test::init_service(app(state(config.clone()))).await;
        for route in lesion_web::api::ROUTES {
            let (method, level) = (route.method.as_str(), route.access);
            let path = route.path.replace("{id}", "1").replace("{upload}", "none");
            for (variant, uri) in encodings(&path).into_iter().enumerate() {
                for key in keys {
                    let allowed = may(&config, key, level);
                    // Allowed writes would change the shared index; allowed reads are
                    // checked on the plain path and one encoding.
                    if allowed && (level == Access::Admin || variant > 1) {
                        continue;
                    }
                    let mut req = match method {
                        "GET" => test::TestRequest::get(),
                        "POST" => test::TestRequest::post(),
                        _ => test::TestRequest::delete(),
                    }
                    .uri(&uri);
                    if let Some(key) = key {
                        req = req.insert_header(("Authorization", format!("Bearer {key}")));
                    }
                    let (status, body) = call(&app, req).await;
                    let text = String::from_utf8_lossy(&body);
                    if allowed {
                        assert!(
                            status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                            "{method} {uri} with {key:?} under {config:?}: {status} {text}"
                        );
                    } else {
                        assert!(
                            status == StatusCode::UNAUTHORIZED
                                || status == StatusCode::FORBIDDEN
                                || text.contains("no such route"),
                            "{method} {uri} with {key:?} under {config:?} widened access: {status} {text}"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 2_000, "only {checked} requests checked");
}

#[actix_web::test]
async fn the_read_key_cannot_write_and_a_denied_delete_changes_nothing() {
    let (_copy, state) = writable_state(keyed(true, true));
    let app = test::init_service(app(state.clone())).await;
    let before = state.engine().live();
    for (uri, key) in [
        ("/api/lesions/5", None),
        ("/%61pi/lesions/5", None),
        ("/api/%6Cesions/7", Some(READ_KEY)),
        ("/api/lesions/%37", Some(READ_KEY)),
    ] {
        let mut req = test::TestRequest::delete().uri(uri);
        if let Some(key) = key {
            req = req.insert_header(("X-Api-Key", key));
        }
        let (status, _) = call(&app, req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "DELETE {uri}");
    }
    assert_eq!(state.engine().live(), before, "nothing was deleted");
    let (status, _) = call(&app, test::TestRequest::get().uri("/%6Detrics")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn foreign_host_names_get_421_without_keys() {
    let served = test::init_service(app(state(Config::default()))).await;
    for host in [
        "localhost:8080",
        "127.0.0.1:8080",
        "[::1]:8080",
        "LOCALHOST",
    ] {
        let (status, _) = call(
            &served,
            test::TestRequest::get()
                .uri("/api/facets")
                .insert_header(("Host", host)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "Host: {host}");
    }
    for host in [
        "evil.example",
        "localhost.evil.example:8080",
        "127.0.0.1.nip.io",
    ] {
        let (status, body) = call(
            &served,
            test::TestRequest::get()
                .uri("/api/facets")
                .insert_header(("Host", host))
                .insert_header(("X-Forwarded-Host", "localhost")),
        )
        .await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "Host: {host}");
        assert_eq!(json_of(&body)["error"]["code"], "host_not_allowed");
    }
    let proxied = Config {
        allowed_hosts: vec!["search.hospital.example".into()],
        ..Default::default()
    };
    let behind_proxy = test::init_service(app(state(proxied))).await;
    let (status, _) = call(
        &behind_proxy,
        test::TestRequest::get()
            .uri("/healthz")
            .insert_header(("Host", "search.hospital.example:443")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // With a read key the key protects the archive, whatever the host.
    let app = test::init_service(app(state(keyed(true, false)))).await;
    let (status, _) = call(
        &app,
        test::TestRequest::get()
            .uri("/api/facets")
            .insert_header(("Host", "evil.example"))
            .insert_header(("Authorization", format!("Bearer {READ_KEY}"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[actix_web::test]
async fn nested_and_wordy_queries_are_refused_and_the_server_lives() {
    let app = test::init_service(app(state(Config::default()))).await;
    let deep = format!("{}liver", "(".repeat(100_000));
    let wordy = "lymph ".repeat(10_000);
    let nested = format!("{}liver{}", "(".repeat(20), ")".repeat(20));
    for text in [deep, wordy, nested] {
        let (status, body) = call(
            &app,
            test::TestRequest::post()
                .uri("/api/search")
                .set_json(json!({ "text": text })),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json_of(&body)["error"]["code"], "query_too_complex");
        assert_eq!(error_field(&body), "text");
    }
    // Deeply nested JSON is a parse error, not a crash.
    let body = format!("{{\"text\": {}", "[".repeat(100_000));
    let (status, _) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/search")
            .insert_header(("content-type", "application/json"))
            .set_payload(body),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/search")
            .set_json(json!({ "text": "liver (lesion OR mass)" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
}

/// A PNG whose IHDR declares `width` x `height` and whose data is a few kilobytes of a
/// stream that would inflate to the whole image.
fn png_bomb(width: u32, height: u32, depth: u8, colour: u8) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[depth, colour, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    zlib.write_all(&vec![0u8; 4 << 20]).unwrap();
    chunk(&mut out, b"IDAT", &zlib.finish().unwrap());
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A baseline JPEG header declaring `width` x `height` (SOF0), cut after the frame header.
fn jpeg_bomb(width: u16, height: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16];
    out.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    out.extend_from_slice(&[0xFF, 0xC0, 0, 11, 8]);
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&[1, 1, 0x11, 0]);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// An explicit-VR little-endian CT DICOM whose header declares `rows` x `columns` and
/// whose pixel data element declares `pixel_bytes` (the bytes actually there: 64).
fn dicom_bomb(rows: u16, columns: u16, pixel_bytes: u32) -> Vec<u8> {
    fn element(out: &mut Vec<u8>, group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) {
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&elem.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
    }
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    element(&mut out, 0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1\0");
    element(&mut out, 0x0008, 0x0060, b"CS", b"CT");
    element(&mut out, 0x0028, 0x0002, b"US", &1u16.to_le_bytes());
    element(&mut out, 0x0028, 0x0004, b"CS", b"MONOCHROME2 ");
    element(&mut out, 0x0028, 0x0010, b"US", &rows.to_le_bytes());
    element(&mut out, 0x0028, 0x0011, b"US", &columns.to_le_bytes());
    element(&mut out, 0x0028, 0x0100, b"US", &16u16.to_le_bytes());
    element(&mut out, 0x0028, 0x0101, b"US", &16u16.to_le_bytes());
    element(&mut out, 0x0028, 0x0102, b"US", &15u16.to_le_bytes());
    element(&mut out, 0x0028, 0x0103, b"US", &1u16.to_le_bytes());
    out.extend_from_slice(&0x7FE0u16.to_le_bytes());
    out.extend_from_slice(&0x0010u16.to_le_bytes());
    out.extend_from_slice(b"OW\0\0");
    out.extend_from_slice(&pixel_bytes.to_le_bytes());
    out.extend_from_slice(&[0u8; 64]);
    out
}

async fn upload_status(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    bytes: &[u8],
) -> (StatusCode, serde_json::Value) {
    let (content_type, body) = multipart(&[("image", Some("slice"), bytes)]);
    let (status, reply) = call(
        app,
        test::TestRequest::post()
            .uri("/api/uploads")
            .insert_header(("content-type", content_type))
            .set_payload(body),
    )
    .await;
    (status, json_of(&reply))
}

#[actix_web::test]
async fn decompression_bombs_are_refused_from_their_headers() {
    let app = test::init_service(app(state(Config::default()))).await;
    let bombs = [
        ("16-bit PNG", png_bomb(40_000, 40_000, 16, 0)),
        ("8-bit PNG", png_bomb(40_000, 40_000, 8, 0)),
        ("RGB PNG", png_bomb(30_000, 30_000, 8, 2)),
        ("JPEG", jpeg_bomb(60_000, 60_000)),
        ("DICOM", dicom_bomb(60_000, 60_000, 7_200_000_000u64 as u32)),
    ];
    for (name, bytes) in bombs {
        let (status, reply) = upload_status(&app, &bytes).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{name}: {reply}");
        assert_eq!(reply["error"]["code"], "image_too_large", "{name}: {reply}");
        assert_eq!(reply["error"]["field"], "image", "{name}");
    }
    // A declared element length past the bytes that are there: refused, nothing allocated.
    let (status, reply) = upload_status(&app, &dicom_bomb(512, 512, 0x7FFF_FFF0)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("declares"),
        "{reply}"
    );
}

#[actix_web::test]
async fn mr_slices_are_not_searched_as_ct() {
    let app = test::init_service(app(state(Config::default()))).await;
    let mr = std::fs::read(dicom_dir().join("examples_overlay.dcm")).unwrap();
    let (content_type, body) = multipart(&[
        ("image", Some("mr.dcm"), &mr),
        ("box", None, b"10,10,40,40"),
    ]);
    let (status, reply) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/search")
            .insert_header(("content-type", content_type))
            .set_payload(body),
    )
    .await;
    let reply = json_of(&reply);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
    assert_eq!(reply["error"]["code"], "not_ct");
    assert!(reply["error"]["message"].as_str().unwrap().contains("MR"));
    let (status, reply) = upload_status(&app, &mr).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
    assert_eq!(reply["error"]["code"], "not_ct");
}

#[actix_web::test]
async fn heavy_work_past_its_slots_gets_503_with_retry_after() {
    let config = Config {
        max_heavy: 1,
        heavy_wait: std::time::Duration::from_millis(20),
        ..Default::default()
    };
    let state = state(config);
    let app = test::init_service(app(state.clone())).await;
    let ct = std::fs::read(dicom_dir().join("CT_small.dcm")).unwrap();
    let search = || {
        let (content_type, body) = multipart(&[
            ("image", Some("ct.dcm"), &ct),
            ("box", None, b"40,40,80,80"),
        ]);
        test::TestRequest::post()
            .uri("/api/search")
            .insert_header(("content-type", content_type))
            .set_payload(body)
    };
    let held = state.heavy.clone().try_acquire_owned().unwrap();
    let res = test::call_service(&app, search().to_request()).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(
        json_of(&test::read_body(res).await)["error"]["code"],
        "busy"
    );
    // Text search is light work and still answers.
    let (status, _) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/search")
            .set_json(json!({"text": "liver"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    drop(held);
    let (status, _) = call(&app, search()).await;
    assert_eq!(status, StatusCode::OK);
    let (_, metrics) = call(&app, test::TestRequest::get().uri("/metrics")).await;
    assert!(String::from_utf8_lossy(&metrics).contains("lesion_heavy_requests_shed_total 1"));
}

#[actix_web::test]
async fn lists_offsets_and_forms_past_their_caps_are_refused() {
    let app = test::init_service(app(state(Config::default()))).await;
    let many: Vec<u32> = (0..100_000).collect();
    for (body, field) in [
        (
            json!({"text": "liver", "offset": 1_000_000_000u64}),
            "offset",
        ),
        (
            json!({"text": "liver", "filters": {"exclude_patients": many}}),
            "filters.exclude_patients",
        ),
        (json!({"text": "liver", "positives": many}), "positives"),
    ] {
        let (status, reply) = call(
            &app,
            test::TestRequest::post().uri("/api/search").set_json(body),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error_field(&reply), field);
    }
    let parts: Vec<(String, Vec<u8>)> =
        (0..100).map(|i| (format!("p{i}"), b"x".to_vec())).collect();
    let parts: Vec<Part> = parts
        .iter()
        .map(|(n, b)| (n.as_str(), None, b.as_slice()))
        .collect();
    let (content_type, body) = multipart(&parts);
    let (status, reply) = call(
        &app,
        test::TestRequest::post()
            .uri("/api/search")
            .insert_header(("content-type", content_type))
            .set_payload(body),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_field(&reply), "multipart");
    // Invented methods are counted under one metric label.
    for method in ["FOO", "BAR", "BAZ"] {
        let req = test::TestRequest::default()
            .method(actix_web::http::Method::from_bytes(method.as_bytes()).unwrap())
            .uri("/api/facets");
        call(&app, req).await;
    }
    let (_, metrics) = call(&app, test::TestRequest::get().uri("/metrics")).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("method=\"OTHER\""), "{metrics}");
    assert!(!metrics.contains("FOO"));
}

#[actix_web::test]
async fn the_upload_store_is_bounded_in_bytes() {
    let config = Config {
        // Room for one decoded 128x128 slice (64 KiB), not two.
        upload_store_bytes: 100 << 10,
        ..Default::default()
    };
    let app = test::init_service(app(state(config))).await;
    let ct = std::fs::read(dicom_dir().join("CT_small.dcm")).unwrap();
    let (_, first) = upload_status(&app, &ct).await;
    let (_, second) = upload_status(&app, &ct).await;
    let pixels = |reply: &serde_json::Value| {
        test::TestRequest::get().uri(&format!(
            "/api/uploads/{}/pixels",
            reply["upload"].as_str().unwrap()
        ))
    };
    let (status, _) = call(&app, pixels(&first)).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the older upload was evicted"
    );
    let (status, _) = call(&app, pixels(&second)).await;
    assert_eq!(status, StatusCode::OK);
}

#[actix_web::test]
async fn a_body_cut_inside_a_part_is_refused_not_held() {
    // Found by the search_multipart fuzzer: a part whose body ends in "\r\n" without a
    // closing boundary kept actix-multipart waiting for bytes that never come.
    let app = test::init_service(app(state(Config::default()))).await;
    for tail in ["fu\r\n", "\r\n", "\r", "--", "\r\n--fu"] {
        let body =
            format!("--fuzz\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nliver{tail}");
        let (status, reply) = call(
            &app,
            test::TestRequest::post()
                .uri("/api/search")
                .insert_header(("content-type", "multipart/form-data; boundary=fuzz"))
                .set_payload(body),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "tail {tail:?}");
        let field = error_field(&reply);
        assert!(
            field == "multipart" || field == "text",
            "tail {tail:?}: {field}"
        );
    }
}
