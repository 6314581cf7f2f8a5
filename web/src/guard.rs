//! What is refused about a request's body, in one place for every kind of body: a media
//! type the route does not take (415), a declared length over the cap (413, also instead of
//! `100 Continue`), a body slower than `body_timeout` (408), and bodies past the bytes all
//! requests together may hold (503 with `Retry-After`).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::HeaderMap;
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{HttpMessage, ResponseError};
use futures_util::Stream;

use crate::api::routes::{Body, Route};
use crate::config::Config;
use crate::error::ApiError;

/// Body bytes held by all requests of one server; each request reserves before it reads.
/// Runtime state, so it lives in [`crate::AppState`] (one per server, shared by its
/// workers), not in the settings.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Adds `bytes` unless that would pass `cap`.
    fn reserve(&self, bytes: usize, cap: usize) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&total| total <= cap)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.0.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes reserved now.
    pub fn bytes(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Why a body was cut off; the response is replaced by the matching error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Deadline,
    TooLarge,
    Busy,
}

/// One request's body, its reservation and what became of it, shared by the body stream
/// the handler reads and the response. The response's body keeps it until the response has
/// been sent: the reservation is released only then, and actix-http, seeing the body
/// still unread but not dropped, closes the connection (after `client_disconnect_timeout`)
/// instead of draining a chunked body for as long as its sender trickles it.
struct Hold {
    payload: RefCell<Payload>,
    in_flight: InFlight,
    cap: usize,
    held: Cell<usize>,
    cut: Cell<Option<Cut>>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.in_flight.release(self.held.get());
    }
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("body: larger than the {max} bytes a request may carry"),
    )
    .with_field("body")
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "the server holds as many request bodies as it may; retry shortly",
    )
    .with_field("body")
    .retry_after(2)
}

/// The declared `Content-Length`, when there is one that parses.
fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// 413 for a declared length over the cap: before `100 Continue` is sent (see
/// [`crate::server`]) and again before routing, for clients that do not ask.
pub fn check_declared(config: &Config, headers: &HeaderMap) -> Result<(), ApiError> {
    let max = config.max_body_bytes();
    match declared_length(headers) {
        Some(length) if length > max => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("Content-Length: {length} bytes is more than the {max} a request may carry"),
        )
        .with_field("Content-Length")),
        _ => Ok(()),
    }
}

/// What [`watch_body`] leaves for the response: the hold, if the request has a body.
pub struct BodyWatch(Option<Rc<Hold>>);

/// Wraps the request's body (any kind) in the deadline and the byte reservation against
/// `in_flight`; refuses up front a declared length over the cap (413), and later the
/// chunk that would pass what the server may hold (503).
pub fn watch_body(
    config: &Config,
    in_flight: &InFlight,
    req: &mut ServiceRequest,
) -> Result<BodyWatch, ApiError> {
    check_declared(config, req.headers())?;
    let payload = req.take_payload();
    if matches!(payload, Payload::None) {
        return Ok(BodyWatch(None));
    }
    let hold = Rc::new(Hold {
        payload: RefCell::new(payload),
        in_flight: in_flight.clone(),
        cap: config.max_body_bytes_in_flight,
        held: Cell::new(0),
        cut: Cell::new(None),
    });
    // Bytes are reserved as they arrive, never as declared: found by attack, four idle
    // connections declaring 64 MiB each held the whole cap for the body deadline while
    // sending nothing.
    let stream = Watched {
        deadline: Box::pin(actix_web::rt::time::sleep(config.body_timeout)),
        hold: hold.clone(),
        seen: 0,
        max: config.max_body_bytes(),
        ended: false,
    };
    let boxed: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(stream);
    req.set_payload(Payload::from(boxed));
    Ok(BodyWatch(Some(hold)))
}

impl BodyWatch {
    /// None: a request without a body, or one refused before its body was looked at.
    pub fn none() -> Self {
        BodyWatch(None)
    }

    /// The response, or the error the body was cut off with; the connection is closed after
    /// such an error, since the rest of the body will not be read.
    pub fn answer<B>(
        &self,
        config: &Config,
        res: ServiceResponse<EitherBody<B>>,
    ) -> ServiceResponse<EitherBody<B>> {
        let cut = self.0.as_ref().and_then(|hold| hold.cut.get());
        let Some(cut) = cut else {
            return res;
        };
        let error = match cut {
            Cut::Deadline => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "body: it took longer than {} s to arrive",
                    config.body_timeout.as_secs_f64()
                ),
            )
            .with_field("body"),
            Cut::TooLarge => too_large(config.max_body_bytes()),
            Cut::Busy => busy(),
        };
        res.into_response(closing(&error).map_into_right_body())
    }
}

/// A response's body holding the request's body until it has been sent (see [`Hold`]).
pub struct HeldBody<B> {
    body: B,
    _hold: Option<Rc<Hold>>,
}

impl<B> HeldBody<B> {
    pub fn new(body: B, watch: BodyWatch) -> Self {
        HeldBody {
            body,
            _hold: watch.0,
        }
    }
}

impl<B: MessageBody + Unpin> MessageBody for HeldBody<B> {
    type Error = B::Error;

    fn size(&self) -> actix_web::body::BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

/// The error's response, closing the connection: the body it refused stays unread.
pub fn closing(error: &ApiError) -> actix_web::HttpResponse {
    let mut res = error.error_response();
    res.head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    res
}

/// A request body under its deadline and reservation.
struct Watched {
    deadline: Pin<Box<actix_web::rt::time::Sleep>>,
    hold: Rc<Hold>,
    seen: usize,
    max: usize,
    ended: bool,
}

impl Watched {
    fn cut(&mut self, cut: Cut) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.hold.cut.set(Some(cut));
        self.ended = true;
        let kind = match cut {
            Cut::Deadline => std::io::ErrorKind::TimedOut,
            Cut::TooLarge | Cut::Busy => std::io::ErrorKind::OutOfMemory,
        };
        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
            kind,
            "the body was cut off",
        )))))
    }
}

impl Stream for Watched {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        // The deadline first, so that a body trickling steadily is cut all the same.
        if self.deadline.as_mut().poll(cx).is_ready() {
            return self.cut(Cut::Deadline);
        }
        let polled = Pin::new(&mut *self.hold.payload.borrow_mut()).poll_next(cx);
        match polled {
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len();
                if self.seen > self.max {
                    return self.cut(Cut::TooLarge);
                }
                let hold = self.hold.clone();
                if !hold.in_flight.reserve(chunk.len(), hold.cap) {
                    return self.cut(Cut::Busy);
                }
                hold.held.set(hold.held.get() + chunk.len());
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

/// The media types a route's request body may have, from its row of the route table.
fn accepted(body: &Body) -> (bool, bool) {
    match body {
        Body::Json(_) => (true, false),
        Body::Form(_) => (false, true),
        Body::JsonOrForm(..) => (true, true),
        // Replies only; no route takes these as a request.
        Body::CsvOrJson(_) | Body::Bytes(_) | Body::Text(_) => (false, false),
    }
}

/// Whether `value` is `application/json`, with at most a UTF-8 charset: anything else a
/// browser may send cross-site without a preflight (text/plain, a form's encoding, a Blob
/// with no type) must not reach the JSON parser.
pub fn is_json(value: &str) -> bool {
    let mut parts = value.split(';').map(str::trim);
    let essence = parts.next().unwrap_or("");
    essence.eq_ignore_ascii_case("application/json")
        && parts.all(|param| {
            param.split_once('=').is_some_and(|(name, v)| {
                name.trim().eq_ignore_ascii_case("charset")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
        })
}

/// Whether `value` is `multipart/form-data` (its boundary is the parser's business).
pub fn is_form(value: &str) -> bool {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("multipart/form-data")
}

/// 415 naming `Content-Type` unless the request's body has a media type `route` takes.
pub fn check_media_type(route: &Route, req: &ServiceRequest) -> Result<(), ApiError> {
    let Some(body) = &route.request else {
        return Ok(());
    };
    let (json, form) = accepted(body);
    let value = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let fits = value.is_some_and(|v| (json && is_json(v)) || (form && is_form(v)));
    if fits {
        return Ok(());
    }
    let wanted = match (json, form) {
        (true, true) => "application/json or multipart/form-data",
        (true, false) => "application/json",
        _ => "multipart/form-data",
    };
    let got = value.map_or_else(
        || "none".to_string(),
        |v| v.chars().take(80).collect::<String>(),
    );
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("Content-Type: this route takes {wanted}, not {got}"),
    )
    .with_field("Content-Type"))
}

/// The route middleware of every route that takes a body (see [`crate::api::configure`]):
/// it runs after routing, so it judges the route that was matched, however the path was
/// spelled. A caller without access is left to the handler's key check, so that the media
/// type is never a way to learn about a route one may not use.
pub async fn media_type<B: MessageBody>(
    route: &'static Route,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let allowed = req
        .app_data::<actix_web::web::Data<crate::AppState>>()
        .is_some_and(|state| crate::access::check(state, req.request(), route.access).is_ok());
    if allowed {
        if let Err(refused) = check_media_type(route, &req) {
            return Ok(req.into_response(refused.error_response().map_into_right_body()));
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=UTF-8"));
        assert!(is_json("application/json;charset=\"utf-8\""));
        assert!(!is_json("application/json; charset=latin1"));
        assert!(!is_json("application/json; boundary=x"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("text/plain; application/json"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json("application/jsonp"));
        assert!(is_form("multipart/form-data; boundary=x"));
        assert!(!is_form("multipart/mixed; boundary=x"));
    }
}
