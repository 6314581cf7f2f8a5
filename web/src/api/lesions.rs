//! `GET /api/lesions/{id}` and its image, thumbnail, pixels and follow-ups.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use lesion_search::dataset::PixelBox;
use lesion_search::imaging::{render_thumbnail, CtImage, PixelUnit, ThumbnailSpec, WindowChoice};

use super::{blocking, heavy, path_lesion, Shared};
use crate::access::ReadAccess;
use crate::error::{ApiError, ApiResult};
use crate::wire::{ImageQuery, LesionDetail, LesionSummary, OutlookOut};

pub(super) async fn detail(
    _: ReadAccess,
    state: Shared,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let engine = state.engine();
    let id = path_lesion(&engine, &path)?;
    let detail = blocking(&state, move |_| {
        let stored = engine
            .lesion(id)
            .map_err(|e| ApiError::from_core(e, "id"))?
            .ok_or_else(|| ApiError::not_found(format!("no lesion {id}")))?;
        let facts = engine
            .facts(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no lesion {id}")))?;
        let others = engine
            .lesions_of_patient(facts.patient)
            .into_iter()
            .filter(|&o| o != id)
            .filter_map(|o| engine.facts(o).map(|f| LesionSummary::of(o, f)))
            .collect();
        Ok(LesionDetail::new(id, stored, &facts, others))
    })
    .await?;
    Ok(HttpResponse::Ok().json(detail))
}

pub(super) async fn followups(
    _: ReadAccess,
    state: Shared,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let engine = state.engine();
    let id = path_lesion(&engine, &path)?;
    let followups = blocking(&state, move |_| {
        engine
            .followups(id)
            .map_err(|e| ApiError::from_core(e, "id"))
    })
    .await?;
    Ok(HttpResponse::Ok().json(followups))
}

pub(super) async fn outlook(
    _: ReadAccess,
    state: Shared,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let engine = state.engine();
    let id = path_lesion(&engine, &path)?;
    let outlook = blocking(&state, move |_| {
        let outlook = engine
            .outlook(id)
            .map_err(|e| ApiError::from_core(e, "id"))?;
        Ok(OutlookOut::new(outlook, |i| engine.facts(i).cloned()))
    })
    .await?;
    Ok(HttpResponse::Ok().json(outlook))
}

/// A stored slice that cannot be read is the server's fault (500, detail in the log); one
/// refused only because decoding is at its memory budget is a retry (503).
fn slice_error(error: lesion_search::Error) -> ApiError {
    match error {
        e @ lesion_search::Error::DecodeBudgetExhausted { .. } => ApiError::from_core(e, "id"),
        e => ApiError::server_fault(&e, "the lesion's slice cannot be read"),
    }
}

pub fn window_of(query: &Option<String>) -> ApiResult<WindowChoice> {
    match query.as_deref() {
        None | Some("") => Ok(WindowChoice::Own),
        Some(text) => {
            WindowChoice::parse(text).map_err(|e| ApiError::bad("window", format!("window: {e}")))
        }
    }
}

fn flag(value: &Option<String>, field: &str) -> ApiResult<bool> {
    match value.as_deref() {
        None => Ok(false),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => Err(ApiError::bad(
            field,
            format!("{field}: `{other}` is not 1 or 0"),
        )),
    }
}

/// A slice rendered as PNG under a window, optionally with a box and a crop.
pub fn render_png(
    slice: &CtImage,
    window: WindowChoice,
    own_window: Option<lesion_search::imaging::Window>,
    bbox: Option<&PixelBox>,
    spacing_mm: (f32, f32),
    query: &ImageQuery,
) -> ApiResult<Vec<u8>> {
    let draw_box = flag(&query.draw_box, "box")?;
    let size = query.size.unwrap_or(slice.width.max(slice.height));
    if !(8..=2048).contains(&size) {
        return Err(ApiError::bad(
            "size",
            format!("size: {size} is outside 8..2048"),
        ));
    }
    let spec = ThumbnailSpec {
        size_px: size,
        around_box_mm: query.around_mm,
        draw_box,
    };
    let window = window.resolve(own_window);
    let thumb = render_thumbnail(slice, &window, bbox, spacing_mm, &spec)
        .map_err(|e| ApiError::from_core(e, "image"))?;
    thumb.to_png().map_err(|e| ApiError::from_core(e, "image"))
}

fn png(bytes: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "image/png"))
        .insert_header((header::CACHE_CONTROL, "private, max-age=300"))
        .body(bytes)
}

pub(super) async fn image(
    _: ReadAccess,
    state: Shared,
    path: web::Path<String>,
    query: web::Query<ImageQuery>,
) -> ApiResult<HttpResponse> {
    let engine = state.engine();
    let id = path_lesion(&engine, &path)?;
    let window = window_of(&query.window)?;
    let query = query.into_inner();
    // A rendering of up to 2048 x 2048 is heavy work: it takes a slot, so a flood of them
    // queues for slots (503 past them) instead of holding 32 MB each on unbounded threads.
    let bytes = heavy(&state, move |_| {
        let stored = engine
            .lesion(id)
            .map_err(|e| ApiError::from_core(e, "id"))?
            .ok_or_else(|| ApiError::not_found(format!("no lesion {id}")))?;
        let r = &stored.record;
        let slice = engine.key_slice(&stored).map_err(slice_error)?;
        render_png(
            &slice,
            window,
            Some(r.window),
            Some(&r.bbox),
            (r.spacing.x_mm, r.spacing.y_mm),
            &query,
        )
    })
    .await?;
    Ok(png(bytes))
}

pub(super) async fn thumbnail(
    _: ReadAccess,
    state: Shared,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let engine = state.engine();
    let id = path_lesion(&engine, &path)?;
    let bytes = blocking(&state, move |_| {
        engine
            .thumbnail(id)
            .map_err(|e| ApiError::from_core(e, "id"))?
            .ok_or_else(|| ApiError::not_found(format!("lesion {id} has no thumbnail")))
    })
    .await?;
    Ok(png(bytes))
}

/// Raw pixels for windowing in the browser: little-endian i16 values (HU for CT), with the
/// size and unit in headers.
pub fn pixels_response(slice: &CtImage) -> HttpResponse {
    let mut body = Vec::with_capacity(slice.pixels.len() * 2);
    for &v in &slice.pixels {
        body.extend_from_slice(&(v.round().clamp(-32768.0, 32767.0) as i16).to_le_bytes());
    }
    let unit = match slice.unit {
        PixelUnit::Hounsfield => "hounsfield",
        PixelUnit::Modality => "modality",
        PixelUnit::Display => "display",
    };
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/octet-stream"))
        .insert_header(("X-Image-Width", slice.width.to_string()))
        .insert_header(("X-Image-Height", slice.height.to_string()))
        .insert_header(("X-Pixel-Unit", unit))
        .body(body)
}

pub(super) async fn pixels(
    _: ReadAccess,
    state: Shared,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let engine = state.engine();
    let id = path_lesion(&engine, &path)?;
    let slice = blocking(&state, move |_| {
        let stored = engine
            .lesion(id)
            .map_err(|e| ApiError::from_core(e, "id"))?
            .ok_or_else(|| ApiError::not_found(format!("no lesion {id}")))?;
        engine.key_slice(&stored).map_err(slice_error)
    })
    .await?;
    Ok(pixels_response(&slice))
}
