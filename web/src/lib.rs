//! `lesion-web`: the HTTP API and web UI of Lesion Search over one index folder.
//!
//! [`app`] assembles the routes ([`api`]), the access check, CORS and metrics around an
//! [`AppState`]; `main.rs` only parses arguments, prepares the demo and binds. This crate
//! alone knows the wire format ([`wire`]).

pub mod api;
pub mod config;
pub mod demo;
pub mod error;
pub mod load;
pub mod metrics;
pub mod state;
pub mod ui;
pub mod wire;

use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, App, HttpResponse, ResponseError};
use futures_util::future::{ready, Either, FutureExt};

pub use config::Config;
pub use state::AppState;

use crate::error::ApiError;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Open,
    Read,
    Admin,
}

fn access_of(method: &Method, path: &str) -> Access {
    let lesion_route = path.starts_with("/api/lesions");
    if (method == Method::POST && path == "/api/lesions")
        || (method == Method::DELETE && lesion_route)
    {
        Access::Admin
    } else if path == "/metrics" || (path.starts_with("/api/") && path != "/api/openapi.json") {
        Access::Read
    } else {
        Access::Open
    }
}

fn presented_key(req: &ServiceRequest) -> Option<String> {
    let headers = req.headers();
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("X-Api-Key").and_then(|v| v.to_str().ok()))
        .map(|k| k.trim().to_string())
}

/// Compares in time independent of where the strings differ.
fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn check_access(state: &AppState, req: &ServiceRequest) -> Result<(), ApiError> {
    let needed = access_of(req.method(), req.path());
    let key = presented_key(req);
    let holds = |wanted: &Option<String>| match (wanted, &key) {
        (Some(w), Some(k)) => same_key(w, k),
        _ => false,
    };
    let denied = |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
    match needed {
        Access::Open => Ok(()),
        Access::Read
            if state.config.read_key.is_none()
                || holds(&state.config.read_key)
                || holds(&state.config.admin_key) =>
        {
            Ok(())
        }
        Access::Read => Err(denied(
            "this route needs the read key (Authorization: Bearer KEY)",
        )),
        // Without an admin key the write handlers answer 403 themselves.
        Access::Admin if state.config.admin_key.is_none() || holds(&state.config.admin_key) => {
            Ok(())
        }
        Access::Admin => Err(denied(
            "this route needs the admin key (Authorization: Bearer KEY)",
        )),
    }
}

/// The application: routes, UI, access keys, CORS, metrics, JSON errors for unknown routes.
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
            if let Err(denied) = check_access(&access_state, &req) {
                let res = req.into_response(denied.error_response().map_into_right_body());
                return Either::Left(ready(Ok(finish(res))));
            }
            Either::Right(
                srv.call(req)
                    .map(move |res| res.map(|r| finish(r.map_into_left_body()))),
            )
        })
}
