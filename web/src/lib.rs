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
pub mod load;
pub mod metrics;
pub mod openapi;
pub mod soak;
pub mod state;
pub mod tasks;
pub mod ui;
pub mod wire;

use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::{web, App, HttpResponse, ResponseError};
use futures_util::future::{ready, Either, FutureExt};

pub use config::Config;
pub use state::AppState;

use crate::error::ApiError;

/// The application: routes, UI, the host allow-list, CORS, metrics, JSON errors for unknown
/// routes. Keys are checked by the matched handlers themselves (see [`access`]).
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<EitherBody<impl MessageBody>>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let guard_state = state.clone();
    App::new()
        .app_data(state.clone())
        .configure(api::configure)
        .configure(ui::configure)
        .default_service(web::to(|| async {
            ApiError::not_found("no such route (see /api/openapi.json)").error_response()
        }))
        .wrap_fn(move |req, srv| {
            use actix_web::dev::Service;
            let state = guard_state.clone();
            let access_state = guard_state.clone();
            let started = Instant::now();
            let method = req.method().clone();
            let origin = req
                .headers()
                .get(header::ORIGIN)
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let cors = state
                .config
                .cors_origin
                .clone()
                .filter(|allowed| origin.as_deref() == Some(allowed.as_str()));
            let preflight = req.method() == Method::OPTIONS && cors.is_some();
            let finish = move |mut res: ServiceResponse<EitherBody<_>>| {
                let route = res
                    .request()
                    .match_pattern()
                    .unwrap_or_else(|| "unmatched".into());
                state.metrics.record(
                    method.as_str(),
                    &route,
                    res.status().as_u16(),
                    started.elapsed().as_secs_f64(),
                );
                if let Some(allowed) = &cors {
                    let headers = res.headers_mut();
                    if let Ok(v) = header::HeaderValue::from_str(allowed) {
                        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
                    }
                    headers.insert(header::VARY, header::HeaderValue::from_static("Origin"));
                }
                res
            };
            if preflight {
                let res = req.into_response(
                    HttpResponse::NoContent()
                        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, DELETE"))
                        .insert_header((
                            header::ACCESS_CONTROL_ALLOW_HEADERS,
                            "Authorization, Content-Type, X-Api-Key",
                        ))
                        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
                        .finish()
                        .map_into_right_body(),
                );
                return Either::Left(ready(Ok(finish(res))));
            }
            if let Err(denied) = access::host_allowed(&access_state, &req) {
                let res = req.into_response(denied.error_response().map_into_right_body());
                return Either::Left(ready(Ok(finish(res))));
            }
            Either::Right(
                srv.call(req)
                    .map(move |res| res.map(|r| finish(r.map_into_left_body()))),
            )
        })
}
