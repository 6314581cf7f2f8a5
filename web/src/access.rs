//! Who may call what. Access is decided by the handler the router matched, never by the raw
//! path: a handler takes [`ReadAccess`] or [`AdminAccess`] as its first argument, and the
//! extractor checks the key that was presented. The route table ([`crate::api::ROUTES`])
//! states each route's level, and a test holds every handler to it under percent-encoding.
//!
//! Before routing, [`host_allowed`] refuses requests whose `Host` is not this machine while
//! no read key protects the archive, so a web page that rebinds its DNS name to 127.0.0.1
//! cannot read the archive through the user's browser.

use std::future::{ready, Ready};

use actix_web::dev::{Payload, ServiceRequest};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, FromRequest, HttpRequest};

use crate::error::ApiError;
use crate::state::AppState;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health, the OpenAPI document and the UI's static files.
    Open,
    /// Reading the archive: the read key (or the admin key) when a read key is set.
    Read,
    /// Changing the archive: the admin key, always; without one configured, writes are off.
    Admin,
}

/// The key a request presents: `Authorization: Bearer KEY` or `X-Api-Key: KEY`.
fn presented_key(req: &HttpRequest) -> Option<&str> {
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, key) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(key)
        });
    bearer
        .or_else(|| headers.get("X-Api-Key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

/// Compares in time independent of where the strings differ.
fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn holds(wanted: &Option<String>, presented: Option<&str>) -> bool {
    matches!((wanted, presented), (Some(w), Some(p)) if same_key(w, p))
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// Whether `req` may use a route that needs `needed`.
pub fn check(state: &AppState, req: &HttpRequest, needed: Access) -> Result<(), ApiError> {
    let config = &state.config;
    let key = presented_key(req);
    match needed {
        Access::Open => Ok(()),
        Access::Read => {
            if config.read_key.is_none()
                || holds(&config.read_key, key)
                || holds(&config.admin_key, key)
            {
                Ok(())
            } else {
                Err(unauthorized(
                    "this route needs the read key (Authorization: Bearer KEY)",
                ))
            }
        }
        Access::Admin => match &config.admin_key {
            None => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "writes_disabled",
                "write routes are off: start the server with an admin key (LESION_WEB_ADMIN_KEY)",
            )),
            Some(_) if holds(&config.admin_key, key) => Ok(()),
            Some(_) => Err(unauthorized(
                "this route needs the admin key (Authorization: Bearer KEY)",
            )),
        },
    }
}

fn state_of(req: &HttpRequest) -> Result<&AppState, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .map(|data| data.get_ref())
        .ok_or_else(|| ApiError::internal("the server state is missing"))
}

/// Proof that the request may read the archive; the first argument of every read handler.
pub struct ReadAccess;

impl FromRequest for ReadAccess {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(state_of(req).and_then(|state| check(state, req, Access::Read).map(|_| ReadAccess)))
    }
}

/// Proof that the request presented the admin key; the first argument of every write handler.
pub struct AdminAccess;

impl FromRequest for AdminAccess {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(state_of(req).and_then(|state| check(state, req, Access::Admin).map(|_| AdminAccess)))
    }
}

/// The host name of a `Host` header value, without the port; brackets kept for IPv6.
fn host_name(value: &str) -> &str {
    let value = value.trim();
    if value.starts_with('[') {
        return value.find(']').map_or(value, |end| &value[..=end]);
    }
    value.rsplit_once(':').map_or(value, |(name, _)| name)
}

fn is_loopback_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "[::1]"
}

/// Whether the request's `Host` may be answered: any host once a read key protects the
/// archive; without one, loopback names and the configured `--allowed-host` names only.
/// Only the `Host` header (or the HTTP/2 authority) counts: forwarding headers can be set by
/// the very page the check keeps out.
pub fn host_allowed(state: &AppState, req: &ServiceRequest) -> Result<(), ApiError> {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{0}"))
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let Some(host) = host else {
        // HTTP/1.0 without Host: no browser sends that, so no rebinding page either.
        return Ok(());
    };
    let name = host_name(host);
    let config = &state.config;
    if config.read_key.is_some()
        || is_loopback_name(name)
        || config
            .allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
    {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "host_not_allowed",
        "this server answers loopback host names only (start it with --allowed-host NAME, or with a read key)",
    )
    .with_field("Host"))
}

/// An origin (`scheme://host[:port]`) reduced to compare: lower case, the scheme's default
/// port dropped, a trailing slash ignored; `None` for `null` or anything else.
fn normal_origin(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = origin.split_once("://")?;
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let authority = match scheme {
        "http" => authority.strip_suffix(":80").unwrap_or(authority),
        "https" => authority.strip_suffix(":443").unwrap_or(authority),
        _ => return None,
    };
    Some(format!("{scheme}://{authority}"))
}

/// This server's origin as the request names it: the scheme (a TLS proxy's
/// `X-Forwarded-Proto` counts; a cross-site page cannot set it without a preflight, which is
/// refused) and the `Host` header.
fn own_origin(req: &ServiceRequest) -> Option<String> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))?;
    normal_origin(&format!("{}://{host}", req.connection_info().scheme()))
}

fn forbidden(code: &'static str, message: &str, field: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, code, message).with_field(field)
}

/// Whether a browser sent the request from this server's own pages (or from the configured
/// `--cors-origin`). Without it any page the user visits could send simple requests here —
/// `<img src>` GETs, `text/plain` or form POSTs — which reach a key-less server with no
/// preflight. With keys it is checked too: a cross-site page cannot present a key anyway, so
/// the rule only turns a 401 into a 403 and keeps one behaviour for both modes.
///
/// `Sec-Fetch-Site: cross-site` and `same-site` (another port on localhost is same-site) are
/// refused, as is an `Origin` that is neither the request's own nor the CORS origin
/// (`null` included). `same-origin`, `none` (typed, bookmarked) and no header at all (curl,
/// the CLI, browsers without fetch metadata) pass. One cross-site request passes: a
/// top-level navigation to the UI's page (a link from an intranet page); the page holds no
/// data, cannot be framed, and everything it then loads is same-origin.
pub fn origin_allowed(state: &AppState, req: &ServiceRequest) -> Result<(), ApiError> {
    let headers = req.headers();
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("\u{0}").trim().to_ascii_lowercase())
    };
    // The browser computes Sec-Fetch-Site and no page can forge it; it stays right behind a
    // TLS-terminating proxy, where the Origin (https://public) and the scheme and Host this
    // server sees (http://backend) differ. Origin is the fallback for browsers without it.
    let fetch_site = text("sec-fetch-site");
    if fetch_site.as_deref() == Some("same-origin") {
        return Ok(());
    }
    if let Some(origin) = text("origin") {
        let origin = normal_origin(&origin);
        let cors = state.config.cors_origin.as_deref().and_then(normal_origin);
        if origin.is_some() && origin == cors {
            // The configured caller: a real CORS request, cross-site by design.
            return Ok(());
        }
        if origin.is_none() || origin != own_origin(req) {
            return Err(forbidden(
                "cross_origin",
                "Origin: requests from other sites' pages are refused (start the server with --cors-origin ORIGIN to allow one)",
                "Origin",
            ));
        }
    }
    match fetch_site.as_deref() {
        None | Some("same-origin") | Some("none") => Ok(()),
        Some("cross-site") | Some("same-site")
            if (req.method() == Method::GET || req.method() == Method::HEAD)
                && req.path() == "/"
                && text("sec-fetch-mode").as_deref() == Some("navigate")
                && text("sec-fetch-dest").as_deref() == Some("document") =>
        {
            Ok(())
        }
        Some(_) => Err(forbidden(
            "cross_site",
            "Sec-Fetch-Site: requests from other sites' pages are refused (start the server with --cors-origin ORIGIN to allow one)",
            "Sec-Fetch-Site",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_ports() {
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("evil.example:80"), "evil.example");
        assert!(!is_loopback_name("localhost.evil.example"));
        assert!(!is_loopback_name("127.0.0.1.nip.io"));
    }

    #[test]
    fn keys_compare_whole() {
        assert!(same_key("abc", "abc"));
        assert!(!same_key("abc", "abd"));
        assert!(!same_key("abc", "abcd"));
        assert!(!holds(&None, Some("x")));
        assert!(!holds(&Some("x".into()), None));
    }

    #[test]
    fn origins_compare_normalised() {
        let n = |o: &str| normal_origin(o);
        assert_eq!(n("HTTP://LocalHost:8080"), n("http://localhost:8080"));
        assert_eq!(n("http://example.org:80"), n("http://example.org"));
        assert_eq!(n("https://example.org:443/"), n("https://example.org"));
        assert_ne!(n("https://localhost:8080"), n("http://localhost:8080"));
        assert_ne!(n("http://localhost:8081"), n("http://localhost:8080"));
        assert_eq!(n("null"), None);
        assert_eq!(n("file://"), None);
        assert_eq!(n("http://a@localhost:8080"), None);
        assert_eq!(n("ftp://localhost"), None);
    }
}
