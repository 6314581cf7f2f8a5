//! Values that are well-formed but lie about the world: spacings of 0, 1e-30, 1e30 and NaN,
//! context crops of zero or negative size, field-qualified text queries on fields that do
//! not exist. Each once held a thread for ever or answered 500 with the index's path; each
//! must be a 4xx naming its field, after which the server answers as before.

use actix_web::http::StatusCode;
use actix_web::test;
use lesion_web::{app, Config};
use serde_json::json;

mod common;
use common::*;

const BAD_NUMBERS: [&str; 8] = ["0", "-1", "1e-30", "1e30", "NaN", "inf", "-inf", "-0"];

#[actix_web::test]
async fn context_crops_of_degenerate_size_are_refused_by_name() {
    let app = test::init_service(app(state(Config::default()))).await;
    for around in BAD_NUMBERS {
        let (status, body) = call(
            &app,
            test::TestRequest::get().uri(&format!("/api/lesions/1/image?around_mm={around}&box=1")),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "around_mm={around}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(error_field(&body), "around_mm", "around_mm={around}");
    }
    let (status, body) = call(
        &app,
        test::TestRequest::get().uri("/api/lesions/1/image?around_mm=60&box=1"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(body.starts_with(b"\x89PNG"));
}

/// The key slice of lesion 0 of the fixture as a 16-bit DeepLesion PNG (the file states no
/// spacing, so the request's `spacing_mm` is the one used).
fn fixture_png() -> Vec<u8> {
    let engine = shared_engine();
    let stored = engine.lesion(0).unwrap().unwrap();
    let slice = engine.key_slice(&stored).unwrap();
    lesion_search::imaging::encode_png16(slice.width, slice.height, &slice.pixels)
}

#[actix_web::test]
async fn search_spacings_outside_ct_are_refused_by_name() {
    let app = test::init_service(app(state(Config::default()))).await;
    let png = fixture_png();
    for spacing in BAD_NUMBERS.into_iter().chain(["11", "0.01"]) {
        let parts: Vec<Part> = vec![
            ("image", Some("slice.png"), &png),
            ("box", None, b"100,100,140,140"),
            ("spacing_mm", None, spacing.as_bytes()),
        ];
        let (ct, body) = multipart(&parts);
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
            StatusCode::BAD_REQUEST,
            "spacing_mm={spacing}: {}",
            String::from_utf8_lossy(&reply)
        );
        assert_eq!(error_field(&reply), "spacing_mm", "spacing_mm={spacing}");
    }
}

/// `bytes` (a DICOM file) with its PixelSpacing value replaced by `value`, padded to the
/// same length so that every other element stays where it was.
fn with_pixel_spacing(bytes: &[u8], value: &str) -> Vec<u8> {
    let header = [0x28, 0x00, 0x30, 0x00, b'D', b'S'];
    let at = bytes
        .windows(6)
        .position(|w| w == header)
        .expect("the file states a PixelSpacing");
    let length = u16::from_le_bytes([bytes[at + 6], bytes[at + 7]]) as usize;
    assert!(value.len() <= length, "{value} is longer than {length}");
    let mut out = bytes.to_vec();
    let padded = format!("{value:<length$}");
    out[at + 8..at + 8 + length].copy_from_slice(padded.as_bytes());
    out
}

#[actix_web::test]
async fn admin_adds_with_lying_spacings_are_refused_and_the_writer_stays_free() {
    let config = Config {
        admin_key: Some(ADMIN_KEY.into()),
        ..Default::default()
    };
    let (_copy, state) = writable_state(config);
    let app = test::init_service(app(state.clone())).await;
    let auth = ("Authorization", format!("Bearer {ADMIN_KEY}"));
    let dicom = std::fs::read(dicom_dir().join("chest_ct_rle.dcm")).unwrap();
    let add = |image: Vec<u8>, spacing: Option<&'static str>, patient: &'static str| {
        let mut parts: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
            ("image", Some("chest.dcm"), image),
            ("box", None, b"300,220,340,262".to_vec()),
            ("patient", None, patient.as_bytes().to_vec()),
            ("study", None, b"1".to_vec()),
        ];
        if let Some(s) = spacing {
            parts.push(("spacing_mm", None, s.as_bytes().to_vec()));
        }
        let borrowed: Vec<Part> = parts
            .iter()
            .map(|(n, f, b)| (*n, *f, b.as_slice()))
            .collect();
        multipart(&borrowed)
    };
    for spacing in BAD_NUMBERS {
        let (ct, body) = add(dicom.clone(), Some(spacing), "990001");
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
            StatusCode::BAD_REQUEST,
            "spacing_mm={spacing}: {}",
            String::from_utf8_lossy(&reply)
        );
        assert_eq!(error_field(&reply), "spacing_mm");
    }
    // The file's own PixelSpacing is held to the same rule.
    for stated in ["1e30\\1e30", "1e-30\\1e-30", "20\\20"] {
        let (ct, body) = add(with_pixel_spacing(&dicom, stated), None, "990002");
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
            StatusCode::BAD_REQUEST,
            "PixelSpacing {stated}: {}",
            String::from_utf8_lossy(&reply)
        );
        let reply = json_of(&reply);
        assert_eq!(reply["error"]["field"], "spacing_mm");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("PixelSpacing"),
            "{reply}"
        );
    }
    // The writer was never held: a good add lands at once.
    let (ct, body) = add(dicom.clone(), None, "990003");
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
            .insert_header(auth.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&reply)["state"], "done", "{}", json_of(&reply));
}

#[actix_web::test]
async fn field_queries_on_fields_that_are_not_text_get_400_without_a_path() {
    let app = test::init_service(app(state(Config::default()))).await;
    for text in [
        "report:*",
        "tags:*",
        "type:lung",
        "id:3",
        "key:000001",
        "patient:1",
        "nosuchfield:liver",
        "liver AND age:[50 TO 60]",
    ] {
        let (status, body) = call(
            &app,
            test::TestRequest::post()
                .uri("/api/search")
                .set_json(json!({ "text": text })),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{text}: {}",
            String::from_utf8_lossy(&body)
        );
        let reply = json_of(&body);
        assert_eq!(reply["error"]["field"], "text", "{text}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(!message.contains('/'), "{text}: a path in `{message}`");
    }
    for text in ["report:nodule", "tags:lung", "\"size: 2 cm\" liver"] {
        let (status, body) = call(
            &app,
            test::TestRequest::post()
                .uri("/api/search")
                .set_json(json!({ "text": text })),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{text}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}
