//! Routes, one file per resource, each ending in a `configure` that registers its routes.

pub mod admin;
pub mod lesions;
pub mod ops;
pub mod routes;
pub mod search;
pub mod uploads;

pub use routes::{Route, ROUTES};

use std::path::Path;
use std::sync::Arc;

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use lesion_search::imaging::{decode_image_within, CtImage, DecodeLimits};
use lesion_search::search::Engine;
use lesion_search::util::Cancel;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::wire::LesionRef;

/// Registers every route of the table, each behind its method (a GET route answers HEAD
/// too; actix-http sends its headers without the body); a route that takes a body refuses
/// other media types (415) after routing, so the check follows the matched route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for route in ROUTES {
        let handler = (route.handler)().method(route.method.clone());
        if route.request.is_some() {
            cfg.route(
                route.path,
                handler.wrap(actix_web::middleware::from_fn(move |req, next| {
                    crate::guard::media_type(route, req, next)
                })),
            );
        } else {
            cfg.route(route.path, handler);
        }
        if route.method == actix_web::http::Method::GET {
            cfg.route(
                route.path,
                (route.handler)().method(actix_web::http::Method::HEAD),
            );
        }
    }
}

/// Runs light CPU-bound work (a text or by-lesion search, a rendering) off the I/O threads,
/// within the request time cap, behind a panic fence.
pub async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Cancel) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    fenced(state.config.request_timeout, work).await
}

/// `work` on a worker thread behind a panic fence, answered 503 `timeout` past `limit`.
/// The work gets the same deadline as a [`Cancel`] and checks it between its steps, so a
/// request answered `timeout` stops within one step instead of running on unseen.
pub(crate) async fn fenced<T: Send + 'static>(
    limit: std::time::Duration,
    work: impl FnOnce(&Cancel) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let cancel = Cancel::after(limit);
    let fenced = move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&cancel)))
            .unwrap_or_else(|_| Err(ApiError::internal("the request's work failed unexpectedly")))
    };
    match actix_web::rt::time::timeout(limit, web::block(fenced)).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Err(ApiError::internal("the worker running the request failed")),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {} s", limit.as_secs()),
        )
        .retry_after(5)),
    }
}

/// Runs CPU-heavy work (decoding, embedding, export, writes) when one of the configured
/// slots is free: the request waits briefly for one, then gets 503 with `Retry-After`. The
/// slot is held by the work itself, so work that outlives a timed-out request still counts
/// and the blocking pool cannot grow past the slots.
pub async fn heavy<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Cancel) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let permit = match actix_web::rt::time::timeout(
        state.config.heavy_wait,
        state.heavy.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(permit)) => permit,
        _ => {
            state.metrics.shed();
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the server is busy with other image and export work; retry shortly",
            )
            .retry_after(2));
        }
    };
    fenced(state.config.request_timeout, move |cancel| {
        let _slot = permit;
        work(cancel)
    })
    .await
}

/// A lesion named by id or key; `field` names the request part in errors (404 when none).
pub fn resolve(engine: &Engine, reference: &LesionRef, field: &str) -> ApiResult<u32> {
    engine
        .resolve(reference, field)
        .map_err(|e| ApiError::from_core(e, field))
}

/// The `{id}` of a lesion route: a dense id or a key (URL-encoded `#` as `%23`).
pub fn path_lesion(engine: &Engine, raw: &str) -> ApiResult<u32> {
    resolve(engine, &LesionRef::Key(raw.to_string()), "id")
}

/// The limits uploads are decoded under.
pub fn upload_limits(state: &AppState) -> DecodeLimits {
    DecodeLimits::for_slices(state.config.max_image_side)
}

/// Decodes an uploaded slice (call it inside [`heavy`]); an image larger than the cap is
/// refused from its header, before any pixel buffer exists.
pub fn decode_upload(state: &AppState, bytes: &[u8], field: &str) -> ApiResult<CtImage> {
    if bytes.is_empty() {
        return Err(ApiError::bad(field, format!("{field}: the file is empty")));
    }
    decode_image_within(bytes, Path::new(field), &upload_limits(state))
        .map_err(|e| ApiError::from_core(e, field))
}

/// A multipart form: the file part (if any) and the other parts as text.
pub struct Form {
    pub file: Option<(String, Vec<u8>)>,
    pub fields: Vec<(String, String)>,
}

/// Reads a multipart body: `file_part` may hold up to the upload cap, other parts 64 KiB,
/// at most `config.max_parts` parts. A body that arrives too slowly is cut off by
/// [`crate::guard`], like every other body.
pub async fn read_form(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    file_part: &str,
) -> ApiResult<Form> {
    read_form_within(&state.config, req.headers(), payload, file_part).await
}

/// [`read_form`] over any stream of body chunks, under `config`'s caps.
pub async fn read_form_within<S>(
    config: &crate::Config,
    headers: &actix_web::http::header::HeaderMap,
    payload: S,
    file_part: &str,
) -> ApiResult<Form>
where
    S: futures_util::Stream<Item = Result<actix_web::web::Bytes, actix_web::error::PayloadError>>
        + 'static,
{
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut multipart = Multipart::new(
        headers,
        EndAware {
            inner: Box::pin(payload),
            ended: ended.clone(),
        },
    );
    let mut form = Form {
        file: None,
        fields: Vec::new(),
    };
    let mut parts = 0usize;
    while let Some(field) = next_or_stalled(&mut multipart, &ended).await? {
        parts += 1;
        if parts > config.max_parts {
            return Err(ApiError::bad(
                "multipart",
                format!(
                    "multipart: more than the {} parts allowed",
                    config.max_parts
                ),
            ));
        }
        let mut field = field
            .map_err(|e| ApiError::bad("multipart", format!("malformed multipart body: {e}")))?;
        let name = field
            .name()
            .ok_or_else(|| ApiError::bad("multipart", "a part has no name"))?
            .to_string();
        let limit = if name == file_part {
            config.max_upload_bytes
        } else {
            64 << 10
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = next_or_stalled(&mut field, &ended).await? {
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
            if form.file.is_some() {
                return Err(ApiError::bad(
                    name.clone(),
                    format!("{name}: only one file part is allowed"),
                ));
            }
            form.file = Some((name, bytes));
        } else {
            let text = String::from_utf8(bytes)
                .map_err(|_| ApiError::bad(name.clone(), format!("{name}: not UTF-8 text")))?;
            form.fields.push((name, text));
        }
    }
    Ok(form)
}

/// A body stream that records when it has ended.
struct EndAware<S> {
    inner: std::pin::Pin<Box<S>>,
    ended: Arc<std::sync::atomic::AtomicBool>,
}

impl<S: futures_util::Stream> futures_util::Stream for EndAware<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        if let std::task::Poll::Ready(None) = polled {
            self.ended.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }
}

/// The next item of a multipart stream, or an error when the parser waits for bytes after
/// the body has ended (actix-multipart 0.7 does so on a body cut inside a part, and would
/// hold the request forever).
async fn next_or_stalled<T>(
    stream: &mut (impl futures_util::Stream<Item = T> + Unpin),
    ended: &std::sync::atomic::AtomicBool,
) -> ApiResult<Option<T>> {
    futures_util::future::poll_fn(|cx| match stream.poll_next_unpin(cx) {
        std::task::Poll::Ready(item) => std::task::Poll::Ready(Ok(item)),
        std::task::Poll::Pending if ended.load(std::sync::atomic::Ordering::Relaxed) => {
            std::task::Poll::Ready(Err(ApiError::bad(
                "multipart",
                "multipart: the body ends inside a part (no closing boundary)",
            )))
        }
        std::task::Poll::Pending => std::task::Poll::Pending,
    })
    .await
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

#[cfg(test)]
mod cancellation_tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[actix_web::test]
    async fn work_past_its_deadline_is_answered_503_and_stops_itself() {
        let (stopped, on_stop) = mpsc::channel();
        // Work that would run for ever but checks its token between steps.
        let answer = fenced(Duration::from_millis(50), move |cancel| loop {
            if let Err(e) = cancel.check("a step") {
                let _ = stopped.send(());
                return Err::<(), _>(ApiError::from_core(e, "body"));
            }
            std::thread::sleep(Duration::from_millis(5));
        })
        .await;
        let error = answer.unwrap_err();
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        // Returns once the work has stopped on its own; a worker that ran on would hang the
        // test here rather than pass it.
        on_stop
            .recv()
            .expect("the work stopped and said so before it ended");
    }
}
