//! Health, metrics, facets and the OpenAPI document.

use actix_web::HttpResponse;

use super::Shared;
use crate::access::ReadAccess;
use crate::error::ApiResult;
use crate::wire::{Health, HealthBackend, HealthLimits};

/// How long `/healthz` waits for the backend to answer.
const BACKEND_PING: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) async fn healthz(state: Shared) -> HttpResponse {
    let engine = state.engine();
    let backend = engine.backend();
    let pinged = engine.clone();
    let reachable = matches!(
        actix_web::rt::time::timeout(
            BACKEND_PING,
            actix_web::web::block(move || pinged.backend_reachable())
        )
        .await,
        Ok(Ok(Ok(())))
    );
    let mut reply = if reachable {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    reply.json(Health {
        status: if reachable { "ok" } else { "degraded" },
        version: lesion_search::version(),
        generation: engine.generation(),
        lesions: engine.live(),
        model: engine.model_name().to_string(),
        text_encoder: engine.text_encoder_card().map(|card| card.name.clone()),
        semantic: engine.supports_semantic(),
        semantic_default: state.config.semantic_default && engine.supports_semantic(),
        graph_builder: engine.graph_builder().name(),
        writes: state.config.admin_key.is_some(),
        writes_pending: state.tasks.pending(),
        backend: HealthBackend {
            name: backend.name,
            vectors: backend.vectors,
            text: backend.text,
            reachable,
        },
        limits: HealthLimits {
            max_k: state.config.max_k,
            max_offset: state.config.max_offset,
            max_export: state.config.max_export,
            max_ranked_by_likeness: engine.deepest_vector_list(),
        },
    })
}

pub(super) async fn metrics(_: ReadAccess, state: Shared) -> HttpResponse {
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

pub(super) async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}

pub(super) async fn facets(_: ReadAccess, state: Shared) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(state.engine().facets()))
}
