//! The bodies of the web fuzz targets (`fuzz/`), kept here so that the corpora replay as
//! ordinary tests (`web/tests/fuzz_corpora.rs`) through the same code: a search body as
//! JSON and as a multipart form, from bytes to the core's filter and query checks.

use actix_web::http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use actix_web::web::Bytes;

use crate::api::search::body_of_form;
use crate::api::{parse_json, read_form_within};
use crate::wire::SearchBody;
use crate::Config;

/// Everything a search body is checked for before the engine sees it.
fn check(body: &SearchBody) {
    let _ = body.filters.to_filter("filters.");
    let _ = lesion_search::search::Fusion::from_input(body.fusion.as_deref(), body.image_weight);
    if let Some(text) = &body.text {
        let _ = lesion_search::text::check_query(text);
    }
}

/// `POST /api/search` with a JSON body.
pub fn search_json(data: &[u8]) {
    if let Ok(body) = parse_json::<SearchBody>(data) {
        check(&body);
    }
}

/// `POST /api/search` with a multipart body (boundary `fuzz`), delivered in small chunks.
pub fn search_multipart(data: &[u8]) {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("multipart/form-data; boundary=fuzz"),
    );
    let chunks: Vec<Result<Bytes, actix_web::error::PayloadError>> = data
        .chunks(97)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let config = Config {
        max_upload_bytes: 1 << 20,
        ..Config::default()
    };
    let form = actix_web::rt::System::new().block_on(read_form_within(
        &config,
        &headers,
        futures_util::stream::iter(chunks),
        "image",
    ));
    if let Ok(form) = form {
        if let Ok(body) = body_of_form(&form.fields) {
            check(&body);
        }
    }
}
