//! `lesion-web`: the HTTP API and web UI of Lesion Search over one index folder.
//!
//! [`app`] assembles the routes ([`api`]), the host check, CORS and metrics around an
//! [`AppState`]; `main.rs` only parses arguments, prepares the demo and binds. This crate
//! alone knows the wire format ([`wire`]).

pub mod access;
pub mod api;
pub mod config;
pub mod demo;
pub mod error;
#[doc(hidden)]
pub mod fuzz_harness;
pub mod guard;
pub mod metrics;
pub mod openapi;
pub mod state;
pub mod tasks;
pub mod ui;
pub mod wire;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::{web, App, HttpResponse, ResponseError};
use futures_util::future::{ready, Either, FutureExt};

pub use config::Config;
pub use state::AppState;

use crate::error::ApiError;
use crate::guard::{BodyWatch, HeldBody};

/// The response with the request's body kept until it has been sent (see [`guard`]).
fn held<B>(res: ServiceResponse<B>, body: BodyWatch) -> ServiceResponse<HeldBody<B>> {
    res.map_body(|_, b| HeldBody::new(b, body))
}

/// The HTTP server over `listener`: [`app`] on `workers` threads, with the configuration's
/// connection cap (divided among the workers; connections past it wait in the listen
/// backlog), head and keep-alive timeouts, and `Expect: 100-continue` answered 413 when the
/// declared length is over the cap. actix-web's `HttpServer` writes the `100` before any
/// middleware runs and offers no way to check it, hence actix-http's builder here.
pub fn server(
    state: web::Data<AppState>,
    listener: std::net::TcpListener,
    workers: usize,
) -> std::io::Result<actix_web::dev::Server> {
    use actix_service::{IntoServiceFactory, ServiceFactoryExt};
    use actix_web::HttpMessage;
    let workers = workers.max(1);
    let addr = listener.local_addr()?;
    let per_worker = state.config.max_connections.div_ceil(workers).max(1);
    Ok(actix_web::dev::Server::build()
        .workers(workers)
        .max_concurrent_connections(per_worker)
        .listen("lesion-web", listener, move || {
            let config = state.config.clone();
            let expect = actix_service::fn_service(move |req: actix_http::Request| {
                let declared = guard::check_declared(&config, req.headers());
                async move { declared.map(|_| req).map_err(|e| guard::closing(&e)) }
            });
            let app = app(state.clone())
                .into_factory()
                .map_err(|e: actix_web::Error| e.error_response());
            actix_http::HttpService::build()
                .client_request_timeout(state.config.header_timeout)
                // Time to send a response's last bytes to a client that stopped reading.
                .client_disconnect_timeout(std::time::Duration::from_secs(1))
                .keep_alive(state.config.keep_alive)
                .local_addr(addr)
                .expect(expect)
                .finish(actix_service::map_config(app, |_| {
                    actix_web::dev::AppConfig::default()
                }))
                .tcp()
        })?
        .run())
}

/// The application: routes, UI, the host allow-list, the refusal of other sites' pages,
/// CORS, metrics, JSON errors for unknown routes. Keys are checked by the matched handlers
/// themselves (see [`access`]).
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let outer_state = state.clone();
    App::new()
        .app_data(state)
        .configure(api::configure)
        .configure(ui::configure)
        .default_service(web::to(unknown_route))
        .wrap_fn(move |mut req, srv| {
            use actix_web::dev::Service;
            let books = Bookkeeping::of(outer_state.clone(), &req);
            match admit(&books, &mut req) {
                Admission::Answered(answer) => {
                    let res = books.finish(req.into_response(answer.map_into_right_body()));
                    Either::Left(ready(Ok(held(res, BodyWatch::none()))))
                }
                Admission::Routed(body) => Either::Right(srv.call(req).map(move |res| {
                    res.map(|r| {
                        let config = &books.state.config;
                        let answered = books.finish(body.answer(config, r.map_into_left_body()));
                        held(answered, body)
                    })
                })),
            }
        })
}

async fn unknown_route() -> HttpResponse {
    ApiError::not_found("no such route (see /api/openapi.json)").error_response()
}

/// What the outer middleware notes of a request on its way in, to finish its answer.
struct Bookkeeping {
    state: web::Data<AppState>,
    method: Method,
    started: Instant,
    /// The request's `Origin` when it is the one CORS allows.
    cors: Option<String>,
}

impl Bookkeeping {
    fn of(state: web::Data<AppState>, req: &ServiceRequest) -> Self {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        let cors = state
            .config
            .cors_origin
            .clone()
            .filter(|allowed| origin == Some(allowed.as_str()));
        Bookkeeping {
            method: req.method().clone(),
            started: Instant::now(),
            cors,
            state,
        }
    }

    /// Records the answer in the metrics (under the matched route's pattern) and adds the
    /// CORS headers when the origin is the allowed one.
    fn finish<B>(&self, mut res: ServiceResponse<B>) -> ServiceResponse<B> {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into());
        self.state.metrics.record(
            self.method.as_str(),
            &route,
            res.status().as_u16(),
            self.started.elapsed().as_secs_f64(),
        );
        if let Some(allowed) = &self.cors {
            let headers = res.headers_mut();
            if let Ok(v) = header::HeaderValue::from_str(allowed) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            }
            headers.insert(header::VARY, header::HeaderValue::from_static("Origin"));
        }
        res
    }
}

/// What becomes of a request before routing.
enum Admission {
    /// Answered there: a CORS preflight, or the refusal of the host, the origin or the body.
    Answered(HttpResponse),
    /// Routed, with the watch on its body for the routed answer to keep.
    Routed(BodyWatch),
}

fn admit(books: &Bookkeeping, req: &mut ServiceRequest) -> Admission {
    let state = &books.state;
    if req.method() == Method::OPTIONS && books.cors.is_some() {
        return Admission::Answered(preflight());
    }
    if let Err(denied) =
        access::host_allowed(state, req).and_then(|_| access::origin_allowed(state, req))
    {
        return Admission::Answered(denied.error_response());
    }
    // Every body, whatever its kind, under one deadline and the in-flight cap.
    match guard::watch_body(&state.config, state.bodies_in_flight(), req) {
        Ok(body) => Admission::Routed(body),
        Err(refused) => Admission::Answered(guard::closing(&refused)),
    }
}

/// The answer to a CORS preflight from the allowed origin.
fn preflight() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, DELETE"))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Authorization, Content-Type, X-Api-Key",
        ))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
        .finish()
}
