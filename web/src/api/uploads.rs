//! `POST /api/uploads`: a slice to search with, decoded once and held in memory; its
//! rendering and raw pixels for the viewer.

use actix_web::{web, HttpRequest, HttpResponse};

use super::lesions::{pixels_response, render_png, window_of};
use super::{decode_upload, heavy, read_form, Shared};
use crate::access::ReadAccess;
use crate::error::{ApiError, ApiResult};
use crate::wire::{ImageQuery, Uploaded};

pub(super) async fn upload(
    _: ReadAccess,
    state: Shared,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let form = read_form(&state, &req, payload, "image").await?;
    if let Some((name, _)) = form.fields.first() {
        return Err(ApiError::bad(
            name.clone(),
            format!("{name}: unexpected part (send only `image`)"),
        ));
    }
    let (name, bytes) = form
        .file
        .ok_or_else(|| ApiError::bad("image", "image: the form has no `image` part"))?;
    let shared = state.clone();
    let image = heavy(&state, move |cancel| {
        let image = decode_upload(&shared, &bytes, &name)?;
        cancel
            .check("the decoded upload")
            .map_err(|e| ApiError::from_core(e, &name))?;
        // Uploads exist to be searched, and only CT can be.
        image
            .require_ct(std::path::Path::new(&name))
            .map_err(|e| ApiError::from_core(e, &name))?;
        Ok(image)
    })
    .await?;
    let reply = Uploaded {
        width: image.width,
        height: image.height,
        unit: match image.unit {
            lesion_search::imaging::PixelUnit::Hounsfield => "hounsfield",
            lesion_search::imaging::PixelUnit::Modality => "modality",
            lesion_search::imaging::PixelUnit::Display => "display",
        },
        spacing_mm: image.spacing_mm,
        window: image.window.map(|w| [w.low, w.high]),
        upload: String::new(),
    };
    let id = state.keep_upload(image);
    Ok(HttpResponse::Created().json(Uploaded {
        upload: id,
        ..reply
    }))
}

fn held(state: &Shared, id: &str) -> ApiResult<std::sync::Arc<lesion_search::imaging::CtImage>> {
    state.upload(id).ok_or_else(|| {
        ApiError::not_found(format!(
            "upload `{id}` is not (or no longer) held; upload the slice again"
        ))
        .with_field("upload")
    })
}

pub(super) async fn image(
    _: ReadAccess,
    state: Shared,
    path: web::Path<String>,
    query: web::Query<ImageQuery>,
) -> ApiResult<HttpResponse> {
    let slice = held(&state, &path)?;
    let window = window_of(&query.window)?;
    let query = query.into_inner();
    let bytes = heavy(&state, move |_| {
        let spacing = slice.spacing_mm.unwrap_or((1.0, 1.0));
        render_png(&slice, window, slice.window, None, spacing, &query)
    })
    .await?;
    Ok(HttpResponse::Ok().content_type("image/png").body(bytes))
}

pub(super) async fn pixels(
    _: ReadAccess,
    state: Shared,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let slice = held(&state, &path)?;
    Ok(pixels_response(&slice))
}
