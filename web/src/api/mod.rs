//! Routes, one file per resource, each ending in a `configure` that registers its routes.

pub mod admin;
pub mod lesions;
pub mod ops;
pub mod search;
pub mod uploads;

use std::path::Path;
use std::sync::Arc;

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use lesion_search::imaging::{decode_image, CtImage};
use lesion_search::search::Engine;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::wire::LesionRef;

/// Every route: method and path, as the OpenAPI document lists them.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/api/openapi.json"),
    ("POST", "/api/search"),
    ("GET", "/api/facets"),
    ("POST", "/api/export"),
    ("POST", "/api/uploads"),
    ("GET", "/api/uploads/{upload}/image"),
    ("GET", "/api/uploads/{upload}/pixels"),
    ("GET", "/api/lesions/{id}"),
    ("GET", "/api/lesions/{id}/similar"),
    ("GET", "/api/lesions/{id}/followups"),
    ("GET", "/api/lesions/{id}/image"),
    ("GET", "/api/lesions/{id}/thumbnail"),
    ("GET", "/api/lesions/{id}/pixels"),
    ("POST", "/api/lesions"),
    ("DELETE", "/api/lesions/{id}"),
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    ops::configure(cfg);
    search::configure(cfg);
    uploads::configure(cfg);
    admin::configure(cfg);
    lesions::configure(cfg);
}

/// Runs CPU-bound work off the I/O threads, within the request time cap.
pub async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let limit = state.config.request_timeout;
    match actix_web::rt::time::timeout(limit, web::block(work)).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Err(ApiError::internal("the worker running the request failed")),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {} s", limit.as_secs()),
        )),
    }
}

/// A lesion named by id or key; `field` names the request part in errors.
pub fn resolve(engine: &Engine, reference: &LesionRef, field: &str) -> ApiResult<u32> {
    let id = match reference {
        LesionRef::Id(id) => Some(*id),
        LesionRef::Key(key) => match key.parse::<u32>() {
            Ok(id) => Some(id),
            Err(_) => engine
                .id_of(key)
                .map_err(|e| ApiError::from_core(e, field))?,
        },
    };
    match id {
        Some(id) if engine.catalog.get(id).is_some() => Ok(id),
        _ => Err(ApiError::not_found(format!(
            "{field}: no lesion {} in the index",
            match reference {
                LesionRef::Id(id) => id.to_string(),
                LesionRef::Key(key) => format!("`{key}`"),
            }
        ))
        .with_field(field)),
    }
}

/// The `{id}` of a lesion route: a dense id or a key (URL-encoded `#` as `%23`).
pub fn path_lesion(engine: &Engine, raw: &str) -> ApiResult<u32> {
    resolve(engine, &LesionRef::Key(raw.to_string()), "id")
}

/// Decodes an uploaded slice, refusing one larger than the cap.
pub fn decode_upload(state: &AppState, bytes: &[u8], field: &str) -> ApiResult<CtImage> {
    if bytes.is_empty() {
        return Err(ApiError::bad(field, format!("{field}: the file is empty")));
    }
    let image = decode_image(bytes, Path::new(field)).map_err(|e| ApiError::from_core(e, field))?;
    let side = state.config.max_image_side;
    if image.width > side || image.height > side {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "image_too_large",
            format!(
                "{field}: {}x{} pixels is larger than the {side}x{side} allowed",
                image.width, image.height
            ),
        )
        .with_field(field));
    }
    Ok(image)
}

/// A multipart form: the file part (if any) and the other parts as text.
pub struct Form {
    pub file: Option<(String, Vec<u8>)>,
    pub fields: Vec<(String, String)>,
}

/// Reads a multipart body: `file_part` may hold up to the upload cap, other parts 64 KiB.
pub async fn read_form(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    file_part: &str,
) -> ApiResult<Form> {
    let mut multipart = Multipart::new(req.headers(), payload);
    let mut form = Form {
        file: None,
        fields: Vec::new(),
    };
    while let Some(field) = multipart.next().await {
        let mut field = field
            .map_err(|e| ApiError::bad("multipart", format!("malformed multipart body: {e}")))?;
        let name = field
            .name()
            .ok_or_else(|| ApiError::bad("multipart", "a part has no name"))?
            .to_string();
        let limit = if name == file_part {
            state.config.max_upload_bytes
        } else {
            64 << 10
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad(
                    name.clone(),
                    format!("{name}: malformed multipart part: {e}"),
                )
            })?;
            if bytes.len() + chunk.len() > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("{name}: larger than the {limit} bytes allowed"),
                )
                .with_field(name));
            }
            bytes.extend_from_slice(&chunk);
        }
        if name == file_part {
            form.file = Some((name, bytes));
        } else {
            let text = String::from_utf8(bytes)
                .map_err(|_| ApiError::bad(name.clone(), format!("{name}: not UTF-8 text")))?;
            form.fields.push((name, text));
        }
    }
    Ok(form)
}

/// A JSON body, parse errors naming line and column.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    mut payload: web::Payload,
    limit: usize,
) -> ApiResult<T> {
    let mut bytes = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad("body", format!("body: {e}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("body: larger than the {limit} bytes allowed"),
            )
            .with_field("body"));
        }
        bytes.extend_from_slice(&chunk);
    }
    parse_json(&bytes)
}

pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        let message = e.to_string();
        // serde names the offending field in backquotes ("unknown field `x`", "invalid type ... for `k`").
        let field = message
            .split('`')
            .nth(1)
            .filter(|_| message.contains("field"))
            .unwrap_or("body")
            .to_string();
        ApiError::bad(field, format!("body: {message}"))
    })
}

pub fn is_multipart(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/"))
}

pub type Shared = web::Data<AppState>;

pub fn engine_of(state: &Shared) -> Arc<Engine> {
    state.engine()
}
