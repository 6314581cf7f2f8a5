//! The command line and the server refuse the same requests with the same messages: each
//! bad input goes through `lesion-indexer query` / `add --image` (the binary, as a user runs
//! it) and through `POST /api/search` / `POST /api/lesions` (the server in-process), and the
//! two refusals must name the same problem in the same words. The server's message is the
//! core's, after the part's name; the command line names its flag, or the same part.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::{test, web};
use lesion_web::{app, AppState, Config};
use serde_json::{json, Value};

const ADMIN_KEY: &str = "admin-key-for-same-refusals-0123";

fn indexer(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_lesion-indexer"))
        .args(args)
        .output()
        .expect("run lesion-indexer");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

fn dicom(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/dicom")
        .join(name)
}

/// A generated archive and its index, built by the command line.
fn fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let index = dir.path().join("index");
    let (a, i) = (archive.to_str().unwrap(), index.to_str().unwrap());
    let synth = indexer(&["synth", "--out", a, "--lesions", "20", "--seed", "8"]);
    assert_eq!(synth.0, Some(0), "{}", synth.1);
    let build = indexer(&["build", "--dataset", a, "--index", i]);
    assert_eq!(build.0, Some(0), "{}", build.1);
    (dir, index)
}

/// A multipart body from (name, file name, bytes) parts.
fn multipart(parts: &[(&str, Option<&str>, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = "sameRefusalsBoundary";
    let mut body = Vec::new();
    for (name, file, bytes) in parts {
        let disposition = match file {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream"),
            None => format!("form-data; name=\"{name}\""),
        };
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The server's refusal: its status, the part it names and the message after that name.
struct Refusal {
    status: StatusCode,
    field: String,
    message: String,
}

async fn refusal(response: ServiceResponse<impl MessageBody>) -> Refusal {
    let status = response.status();
    let body = test::read_body(response).await;
    let reply: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("{status}: {}", String::from_utf8_lossy(&body)));
    let field = reply["error"]["field"].as_str().unwrap_or("").to_string();
    let message = reply["error"]["message"].as_str().unwrap_or("").to_string();
    let message = message
        .strip_prefix(&format!("{field}: "))
        .unwrap_or(&message)
        .to_string();
    Refusal {
        status,
        field,
        message,
    }
}

/// Both refused `case`: the server with a 4xx naming `field`, the command line with exit
/// code 2 naming `cli_name` (when given), and the command line's message holds the server's.
fn same(
    case: &str,
    server: &Refusal,
    field: &str,
    cli: &(Option<i32>, String),
    cli_name: Option<&str>,
) {
    assert!(
        server.status.is_client_error(),
        "{case}: the server answered {} ({})",
        server.status,
        server.message
    );
    assert_eq!(server.field, field, "{case}: {}", server.message);
    assert_eq!(
        cli.0,
        Some(2),
        "{case}: the command line did not refuse: {}",
        cli.1
    );
    assert!(!server.message.is_empty(), "{case}");
    assert!(
        cli.1.contains(&server.message),
        "{case}: the server says `{}`, the command line `{}`",
        server.message,
        cli.1.trim()
    );
    if let Some(name) = cli_name {
        assert!(
            cli.1.contains(&format!("{name}: {}", server.message)),
            "{case}: the command line does not name {name}: {}",
            cli.1.trim()
        );
    }
}

/// A bad request with an image: (case, slice, box, other fields, the server's field, the
/// command line's name for it when it names one).
type ImageCase<'a> = (
    &'a str,
    &'a Path,
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a str,
    Option<&'a str>,
);

/// The server over `index`.
fn served(index: &Path, config: Config) -> web::Data<AppState> {
    let model = Arc::new(lesion_search::embed::bundled_lesion_cnn().unwrap());
    web::Data::new(AppState::open(index.to_path_buf(), model, config).unwrap())
}

#[actix_web::test]
async fn the_command_line_and_the_server_refuse_the_same_image_searches() {
    let (_dir, index) = fixture();
    let i = index.to_str().unwrap();
    let app = test::init_service(app(served(&index, Config::default()))).await;

    let ct = dicom("chest_ct_rle.dcm");
    let mr = dicom("examples_overlay.dcm");
    let image_cases: [ImageCase; 6] = [
        (
            "an MR slice",
            &mr,
            "10,10,40,40",
            &[],
            "image",
            Some("image"),
        ),
        (
            "a box off the image",
            &ct,
            "600,600,700,700",
            &[],
            "box",
            None,
        ),
        (
            "an empty box",
            &ct,
            "300,220,300,262",
            &[],
            "box",
            Some("--box"),
        ),
        (
            "an inverted box",
            &ct,
            "340,262,300,220",
            &[],
            "box",
            Some("--box"),
        ),
        (
            "spacing 0 mm",
            &ct,
            "300,220,340,262",
            &[("spacing_mm", "0")],
            "spacing_mm",
            Some("--spacing"),
        ),
        (
            "spacing 20 mm",
            &ct,
            "300,220,340,262",
            &[("spacing_mm", "20")],
            "spacing_mm",
            Some("--spacing"),
        ),
    ];
    for (case, image, bbox, extra, field, cli_name) in image_cases {
        let mut parts = vec![
            ("image", Some("slice.dcm"), std::fs::read(image).unwrap()),
            ("box", None, bbox.as_bytes().to_vec()),
        ];
        let mut args = vec![
            "query",
            "--index",
            i,
            "--image",
            image.to_str().unwrap(),
            "--box",
            bbox,
        ];
        // The query's flag for `spacing_mm` is `--spacing`, and its refusals say so.
        let flags: Vec<String> = extra
            .iter()
            .map(|(name, value)| {
                parts.push((name, None, value.as_bytes().to_vec()));
                format!("--{}={value}", name.trim_end_matches("_mm"))
            })
            .collect();
        args.extend(flags.iter().map(String::as_str));
        let (content_type, body) = multipart(&parts);
        let server = refusal(
            test::call_service(
                &app,
                test::TestRequest::post()
                    .uri("/api/search")
                    .insert_header(("content-type", content_type))
                    .set_payload(body)
                    .to_request(),
            )
            .await,
        )
        .await;
        same(case, &server, field, &indexer(&args), cli_name);
    }

    // A one-pixel box is a box: both search with it.
    let (content_type, body) = multipart(&[
        ("image", Some("slice.dcm"), std::fs::read(&ct).unwrap()),
        ("box", None, b"300,220,301,221".to_vec()),
    ]);
    let response = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/api/search")
            .insert_header(("content-type", content_type))
            .set_payload(body)
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let cli = indexer(&[
        "query",
        "--index",
        i,
        "--image",
        ct.to_str().unwrap(),
        "--box",
        "300,220,301,221",
    ]);
    assert_eq!(cli.0, Some(0), "{}", cli.1);
}

#[actix_web::test]
async fn the_command_line_and_the_server_refuse_the_same_search_parts() {
    let (_dir, index) = fixture();
    let i = index.to_str().unwrap();
    let app = test::init_service(app(served(&index, Config::default()))).await;
    // (case, JSON body, command line flags, server field, command line flag)
    let body_cases: [(&str, Value, &[&str], &str, &str); 8] = [
        (
            "image_weight 2",
            json!({"text": "nodule", "image_weight": 2.0}),
            &["--text", "nodule", "--image-weight", "2"],
            "image_weight",
            "--image-weight",
        ),
        (
            "k 0",
            json!({"text": "nodule", "k": 0}),
            &["--text", "nodule", "--k", "0"],
            "k",
            "--k",
        ),
        (
            "k over the cap",
            json!({"text": "nodule", "k": 201}),
            &["--text", "nodule", "--k", "201"],
            "k",
            "--k",
        ),
        (
            "offset past the deepest page",
            json!({"offset": 10_001}),
            &["--offset", "10001"],
            "offset",
            "--offset",
        ),
        (
            "an unknown type",
            json!({"filters": {"types": ["brain"]}}),
            &["--type", "brain"],
            "filters.types[0]",
            "--type",
        ),
        (
            "an age range reversed",
            json!({"filters": {"age": [60, 40]}}),
            &["--age", "60,40"],
            "filters.age",
            "--age",
        ),
        (
            "a liked lesion not in the index",
            json!({"positives": [99_999]}),
            &["--like", "99999"],
            "positives[0]",
            "--like",
        ),
        (
            "a box without an image",
            json!({"box": "1,1,5,5"}),
            &["--box", "1,1,5,5"],
            "image",
            "--image",
        ),
    ];
    for (case, body, flags, field, flag) in body_cases {
        let server = refusal(
            test::call_service(
                &app,
                test::TestRequest::post()
                    .uri("/api/search")
                    .insert_header(("content-type", "application/json"))
                    .set_payload(body.to_string())
                    .to_request(),
            )
            .await,
        )
        .await;
        let mut args = vec!["query", "--index", i];
        args.extend_from_slice(flags);
        same(case, &server, field, &indexer(&args), Some(flag));
    }
}

#[actix_web::test]
async fn the_command_line_and_the_server_refuse_the_same_lesions_to_add() {
    let (_dir, index) = fixture();
    let i = index.to_str().unwrap();
    let config = Config {
        admin_key: Some(ADMIN_KEY.into()),
        ..Default::default()
    };
    let app = test::init_service(app(served(&index, config))).await;

    let ct = dicom("chest_ct_rle.dcm");
    let mr = dicom("examples_overlay.dcm");
    let good_box = "300,220,340,262";
    let cases: [ImageCase; 8] = [
        ("an MR slice", &mr, "10,10,40,40", &[], "image", None),
        (
            "a box off the image",
            &ct,
            "600,600,700,700",
            &[],
            "box",
            None,
        ),
        (
            "an empty box",
            &ct,
            "300,220,300,262",
            &[],
            "box",
            Some("box"),
        ),
        (
            "spacing 0 mm",
            &ct,
            good_box,
            &[("spacing_mm", "0")],
            "spacing_mm",
            Some("spacing_mm"),
        ),
        (
            "spacing 20 mm",
            &ct,
            good_box,
            &[("spacing_mm", "20")],
            "spacing_mm",
            Some("spacing_mm"),
        ),
        (
            "an unknown type",
            &ct,
            good_box,
            &[("type", "brain")],
            "type",
            Some("type"),
        ),
        (
            "an unknown sex",
            &ct,
            good_box,
            &[("sex", "x")],
            "sex",
            Some("sex"),
        ),
        (
            "an age no patient has",
            &ct,
            good_box,
            &[("age", "200")],
            "age",
            Some("age"),
        ),
    ];
    for (case, image, bbox, extra, field, cli_name) in cases {
        let mut parts = vec![
            ("image", Some("slice.dcm"), std::fs::read(image).unwrap()),
            ("box", None, bbox.as_bytes().to_vec()),
            ("patient", None, b"990001".to_vec()),
            ("study", None, b"1".to_vec()),
        ];
        let mut args: Vec<String> = [
            "add",
            "--index",
            i,
            "--image",
            image.to_str().unwrap(),
            "--box",
            bbox,
            "--patient",
            "990001",
            "--study",
            "1",
        ]
        .map(String::from)
        .to_vec();
        for (name, value) in extra {
            parts.push((name, None, value.as_bytes().to_vec()));
            args.push(format!("--{}={value}", name.replace('_', "-")));
        }
        let (content_type, body) = multipart(&parts);
        let server = refusal(
            test::call_service(
                &app,
                test::TestRequest::post()
                    .uri("/api/lesions")
                    .insert_header(("content-type", content_type))
                    .insert_header(("Authorization", format!("Bearer {ADMIN_KEY}")))
                    .set_payload(body)
                    .to_request(),
            )
            .await,
        )
        .await;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        same(case, &server, field, &indexer(&args), cli_name);
    }
}
