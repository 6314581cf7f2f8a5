//! Admin routes: `POST /api/lesions` (a slice, its box and metadata become a new lesion) and
//! `DELETE /api/lesions/{id}` answer 202 with a task that publishes a new index generation
//! and serves it; `GET /api/tasks/{id}` follows it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use lesion_search::archive::{lesion_record, LesionInput};

use super::{decode_upload, heavy, path_lesion, read_form, Shared};
use crate::access::AdminAccess;
use crate::error::{ApiError, ApiResult};
use crate::tasks::{Landed, TaskReport};
use crate::wire::{TaskList, TaskQuery};

/// The form's parts as a [`LesionInput`], parsed by the core as `lesion-indexer add` parses
/// its flags; each bad part is named.
fn input_of(fields: &[(String, String)]) -> ApiResult<LesionInput> {
    LesionInput::from_fields(fields).map_err(|e| ApiError::from_core(e, "multipart"))
}

pub(super) async fn create(
    _: AdminAccess,
    state: Shared,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let form = read_form(&state, &req, payload, "image").await?;
    let (name, bytes) = form
        .file
        .ok_or_else(|| ApiError::bad("image", "image: the form has no `image` part"))?;
    // The input is judged now, so a bad request is answered 4xx at once; only the write waits.
    let input = input_of(&form.fields)?;
    let shared = state.clone();
    let (image, input, file_name) = heavy(&state, move |cancel| {
        let image = decode_upload(&shared, &bytes, &name)?;
        cancel
            .check("the decoded upload")
            .map_err(|e| ApiError::from_core(e, &name))?;
        image
            .require_ct(std::path::Path::new(&name))
            .map_err(|e| ApiError::from_core(e, &name))?;
        let record = lesion_record(&image, &input).map_err(|e| ApiError::from_core(e, "image"))?;
        Ok((image, input, record.file_name))
    })
    .await?;
    let engine = state.engine();
    let taken = engine
        .id_of(&file_name)
        .map_err(|e| ApiError::from_core(e, "image"))?
        .is_some_and(|id| engine.is_live(id));
    drop(engine);
    if taken {
        // The writer checks again (another write may land first); this answers the common case at once.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "exists",
            format!(
                "patient: the lesion on slice {file_name} is already in the index (delete it first to replace it)"
            ),
        )
        .with_field("patient"));
    }
    let task = state.tasks.submit("add", move |index| {
        let written = index
            .writer()
            .and_then(|mut writer| writer.add_lesion(&image, &input))
            .map_err(|e| ApiError::from_core(e, "patient"))?;
        let summary = written.summary;
        let (id, key) = summary.changed.first().cloned().unwrap_or_default();
        Ok(Landed {
            generation: summary.generation,
            result: serde_json::json!({"id": id, "key": key, "lesions": summary.live}),
        })
    })?;
    Ok(accepted(task))
}

/// 202 with the task's report and where to follow it.
fn accepted(task: TaskReport) -> HttpResponse {
    HttpResponse::Accepted()
        .insert_header((
            actix_web::http::header::LOCATION,
            format!("/api/tasks/{}", task.id),
        ))
        .json(task)
}

pub(super) async fn remove(
    _: AdminAccess,
    state: Shared,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let engine = state.engine();
    let id = path_lesion(&engine, &path)?;
    let key = engine.facts(id).map(|f| f.key.clone()).unwrap_or_default();
    drop(engine);
    let task = state.tasks.submit("delete", move |index| {
        // An earlier queued write may have deleted it meanwhile.
        let engine = index.engine();
        let live = engine
            .id_of(&key)
            .map_err(|e| ApiError::from_core(e, "id"))?
            .is_some_and(|id| engine.facts(id).is_some());
        drop(engine);
        if !live {
            return Err(ApiError::not_found(format!(
                "id: lesion {id} was deleted by an earlier write"
            ))
            .with_field("id"));
        }
        let summary = index
            .writer()
            .and_then(|writer| writer.delete(&[key]))
            .map_err(|e| ApiError::from_core(e, "id"))?
            .summary;
        Ok(Landed {
            generation: summary.generation,
            result: serde_json::json!({
                "deleted": summary.changed.iter().map(|(id, key)| serde_json::json!({"id": id, "key": key})).collect::<Vec<_>>(),
                "lesions": summary.live,
            }),
        })
    })?;
    Ok(accepted(task))
}

/// Longest `wait` a task request may ask for.
const MAX_TASK_WAIT_S: f64 = 60.0;

pub(super) async fn task(
    _: AdminAccess,
    state: Shared,
    path: web::Path<String>,
    query: web::Query<TaskQuery>,
) -> ApiResult<HttpResponse> {
    let wait = match query.wait {
        None => 0.0,
        Some(w) if (0.0..=MAX_TASK_WAIT_S).contains(&w) => w,
        Some(w) => {
            return Err(ApiError::bad(
                "wait",
                format!("wait: {w} is outside 0 to {MAX_TASK_WAIT_S} seconds"),
            ))
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(wait);
    loop {
        let report = state.tasks.report(&path).ok_or_else(|| {
            ApiError::not_found("id: no such task (reports are kept for the last 1,000 writes)")
                .with_field("id")
        })?;
        if report.state.finished() || std::time::Instant::now() >= deadline {
            return Ok(HttpResponse::Ok().json(report));
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

pub(super) async fn tasks(_: AdminAccess, state: Shared) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(TaskList {
        tasks: state.tasks.recent(100),
    }))
}
