//! Health, metrics, facets and the OpenAPI document.

use actix_web::{web, HttpResponse};

use super::Shared;
use crate::access::ReadAccess;
use crate::error::ApiResult;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics))
        .route("/api/openapi.json", web::get().to(openapi))
        .route("/api/facets", web::get().to(facets));
}

/// The OpenAPI document; a test checks that its paths are exactly the registered routes.
pub const OPENAPI: &str = include_str!("../../openapi.json");

async fn healthz(state: Shared) -> HttpResponse {
    let engine = state.engine();
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "version": lesion_search::version(),
        "generation": engine.generation(),
        "lesions": engine.live(),
        "model": engine.model_name(),
        "writes": state.config.admin_key.is_some(),
        "writes_pending": state.tasks.pending(),
    }))
}

async fn metrics(_: ReadAccess, state: Shared) -> HttpResponse {
    let engine = state.engine();
    let mut text = state
        .metrics
        .render(engine.live(), engine.generation(), engine.vectors());
    text.push_str(&format!(
        "# HELP lesion_write_tasks_pending Admin writes queued or running.\n# TYPE lesion_write_tasks_pending gauge\nlesion_write_tasks_pending {}\n",
        state.tasks.pending()
    ));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

async fn facets(_: ReadAccess, state: Shared) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(state.engine().facets()))
}
