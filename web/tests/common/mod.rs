//! What the web test binaries share: one generated archive and index, the app over it,
//! multipart bodies and request helpers.
#![allow(dead_code)]

pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use actix_web::http::StatusCode;
use actix_web::{test, web};
use lesion_search::archive::{build, BuildOptions};
use lesion_search::embed::{bundled_lesion_cnn, Embedder};
use lesion_search::index::GraphParams;
use lesion_search::synth::{generate, SynthOptions};
use lesion_web::{AppState, Config};
use serde_json::Value;

pub const ADMIN_KEY: &str = "admin-key-for-tests-0123456789";
pub const READ_KEY: &str = "read-key-for-tests-0123456789";

/// One generated archive and index shared by the tests; each test copies the index when it
/// writes.
pub fn fixture() -> &'static (tempfile::TempDir, PathBuf) {
    static FIXTURE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        std::fs::create_dir_all(&archive).unwrap();
        let options = SynthOptions {
            lesions: 120,
            seed: 5,
            label_train: true,
            ..Default::default()
        };
        generate(&archive, &options, &|_, _| {}).unwrap();
        let model = bundled_lesion_cnn().unwrap();
        let index = dir.path().join("index");
        build(
            &index,
            &BuildOptions {
                dataset: archive,
                reports: None,
                model: &model,
                graph: GraphParams::default(),
                labels: None,
            },
            &|_| {},
        )
        .unwrap();
        (dir, index)
    })
}

pub fn model() -> Arc<dyn Embedder> {
    Arc::new(bundled_lesion_cnn().unwrap())
}

/// The fixture's engine, opened once (sled admits one opener of a generation per process).
pub fn shared_engine() -> Arc<lesion_search::search::Engine> {
    static ENGINE: OnceLock<Arc<lesion_search::search::Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            Arc::new(lesion_search::search::Engine::open(&fixture().1, model()).unwrap())
        })
        .clone()
}

pub fn state(config: Config) -> web::Data<AppState> {
    web::Data::new(AppState::with_engine(
        shared_engine(),
        fixture().1.clone(),
        config,
    ))
}

/// A writable copy of the fixture index.
pub fn writable_state(config: Config) -> (tempfile::TempDir, web::Data<AppState>) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&fixture().1, copy.path());
    let state = web::Data::new(AppState::open(copy.path().to_path_buf(), model(), config).unwrap());
    (copy, state)
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

pub fn dicom_dir() -> PathBuf {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/dicom");
    if shared.join("CT_small.dcm").is_file() {
        shared
    } else {
        eprintln!("../shared/data/dicom absent: using the copies committed under data/dicom");
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/dicom")
    }
}

/// A form part: name, file name (for a file part), bytes.
pub type Part<'a> = (&'a str, Option<&'a str>, &'a [u8]);

/// A multipart body from its parts.
pub fn multipart(parts: &[Part]) -> (String, Vec<u8>) {
    let boundary = "xTestBoundaryx";
    let mut body = Vec::new();
    for (name, filename, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub async fn call(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    req: test::TestRequest,
) -> (StatusCode, Vec<u8>) {
    let res = test::call_service(app, req.to_request()).await;
    let status = res.status();
    let body = test::read_body(res).await.to_vec();
    (status, body)
}

/// Status, media type and body of a response.
pub async fn call_typed(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    req: test::TestRequest,
) -> (StatusCode, String, Vec<u8>) {
    let res = test::call_service(app, req.to_request()).await;
    let status = res.status();
    let media = res
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = test::read_body(res).await.to_vec();
    (status, media, body)
}

pub fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

pub fn error_field(body: &[u8]) -> String {
    json_of(body)["error"]["field"]
        .as_str()
        .unwrap_or("")
        .to_string()
}
