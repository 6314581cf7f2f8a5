//! The single-page UI, compiled into the binary: no CDN, no fonts, works offline.

use actix_web::http::{header, Method};
use actix_web::{web, HttpResponse};

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

/// The page and its two assets, each for GET and HEAD.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for method in [Method::GET, Method::HEAD] {
        cfg.route("/", web::route().method(method.clone()).to(index))
            .route(
                "/assets/app.js",
                web::route()
                    .method(method.clone())
                    .to(|| asset(APP_JS, "text/javascript; charset=utf-8")),
            )
            .route(
                "/assets/app.css",
                web::route()
                    .method(method)
                    .to(|| asset(APP_CSS, "text/css; charset=utf-8")),
            );
    }
}

async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        // Everything the page loads comes from this server, and no other page may frame it
        // (the one cross-site request let through is a top-level navigation to it).
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ))
        .body(INDEX_HTML)
}

async fn asset(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}
