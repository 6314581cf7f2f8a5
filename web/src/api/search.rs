//! `POST /api/search` (JSON, or multipart with an `image` part and a `box`), `GET
//! /api/lesions/{id}/similar`, `POST /api/export`.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use lesion_search::imaging::CtImage;
use lesion_search::search::{Engine, SearchLimits, SearchRequest, DEFAULT_K};
use lesion_search::util::Cancel;
use serde_json::{Map, Value};

use super::{blocking, decode_upload, heavy, is_multipart, read_form, read_json, Shared};
use crate::access::ReadAccess;
use crate::error::{ApiError, ApiResult};
use crate::wire::{
    ExportBody, ExportReply, ExportRow, LesionRef, SearchBody, SearchReply, SimilarQuery,
};

const FILTER_PARTS: [&str; 9] = [
    "types",
    "sex",
    "age",
    "size_mm",
    "location_x",
    "location_y",
    "location_z",
    "split",
    "exclude_patients",
];

/// A form part's text as JSON: numbers, booleans and JSON arrays as such, `a,b` lists for
/// the list-valued filters, anything else as a string.
fn part_value(name: &str, text: &str) -> Value {
    let text = text.trim();
    let listy = matches!(
        name,
        "types"
            | "age"
            | "size_mm"
            | "location_x"
            | "location_y"
            | "location_z"
            | "exclude_patients"
            | "positives"
            | "negatives"
    );
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        if !listy || v.is_array() {
            return v;
        }
    }
    if listy {
        return Value::Array(
            text.split(',')
                .map(|t| t.trim())
                .map(|t| {
                    if t.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_str::<Value>(t).unwrap_or_else(|_| Value::String(t.into()))
                    }
                })
                .collect(),
        );
    }
    Value::String(text.into())
}

/// An uploaded file not yet decoded: its part name and bytes.
pub type RawImage = (String, Vec<u8>);

/// The request's search body and the uploaded file, if any (decoded later, in a heavy slot).
async fn read_search(
    state: &Shared,
    req: &HttpRequest,
    payload: web::Payload,
) -> ApiResult<(SearchBody, Option<RawImage>)> {
    if !is_multipart(req) {
        return Ok((read_json(payload, 1 << 20).await?, None));
    }
    let form = read_form(state, req, payload, "image").await?;
    let search = body_of_form(&form.fields)?;
    Ok((search, form.file))
}

/// The search body a multipart form's text parts describe.
pub fn body_of_form(fields: &[(String, String)]) -> ApiResult<SearchBody> {
    let mut body = Map::new();
    let mut filters = Map::new();
    for (name, text) in fields {
        if name == "filters" || name == "query" {
            let value: Value = super::parse_json(text.as_bytes())?;
            let Value::Object(object) = value else {
                return Err(ApiError::bad(
                    name.clone(),
                    format!("{name}: expected a JSON object"),
                ));
            };
            let target = if name == "filters" {
                &mut filters
            } else {
                &mut body
            };
            target.extend(object);
        } else if FILTER_PARTS.contains(&name.as_str()) {
            filters.insert(name.clone(), part_value(name, text));
        } else if name == "box" || name == "text" || name == "fusion" || name == "upload" {
            body.insert(name.clone(), Value::String(text.clone()));
        } else {
            body.insert(name.clone(), part_value(name, text));
        }
    }
    if !filters.is_empty() {
        body.insert("filters".into(), Value::Object(filters));
    }
    serde_json::from_value(Value::Object(body.clone())).map_err(|e| {
        let message = e.to_string();
        // serde names a missing or unknown field, not the part whose value has the wrong
        // type ("NaN" for a number): that part is the one that fails on its own.
        let field = message
            .split('`')
            .nth(1)
            .map(String::from)
            .or_else(|| {
                body.iter()
                    .find(|(name, value)| {
                        let alone = Map::from_iter([((*name).clone(), (*value).clone())]);
                        serde_json::from_value::<SearchBody>(Value::Object(alone)).is_err()
                    })
                    .map(|(name, _)| name.clone())
            })
            .unwrap_or_else(|| "multipart".to_string());
        ApiError::bad(field.clone(), format!("{field}: {message}"))
    })
}

/// The core request for a wire body, checked by the core under the server's caps (`max_k`
/// in place of the configured one for exports); `image` is a slice uploaded with it.
fn to_request(
    state: &Shared,
    engine: &Engine,
    body: SearchBody,
    image: Option<Arc<CtImage>>,
    max_k: usize,
) -> ApiResult<SearchRequest> {
    let image = match (image, &body.upload) {
        (Some(image), _) => Some(image),
        (None, Some(upload)) => Some(state.upload(upload).ok_or_else(|| {
            ApiError::not_found(format!(
                "upload: `{upload}` is not (or no longer) held; upload the slice again"
            ))
            .with_field("upload")
        })?),
        (None, None) => None,
    };
    let limits = SearchLimits {
        max_k,
        max_offset: state.config.max_offset,
        max_list: state.config.max_list,
    };
    let mut request = body
        .into_input(image.map(|image| (*image).clone()))
        .into_request(engine, &limits)
        .map_err(|e| ApiError::from_core(e, "image"))?;
    request.image_deadline = Some(state.config.image_deadline);
    Ok(request)
}

/// Runs a search on a worker thread and shapes the reply: in a heavy slot when an image must
/// be decoded or embedded, as light work otherwise.
pub async fn run_search(
    state: &Shared,
    body: SearchBody,
    image: Option<RawImage>,
    max_k: usize,
) -> ApiResult<SearchReply> {
    let engine = state.engine();
    let shared = state.clone();
    let embeds = image.is_some() || body.upload.is_some();
    let work = move |cancel: &Cancel| {
        let image = match image {
            Some((name, bytes)) => Some(Arc::new(decode_upload(&shared, &bytes, &name)?)),
            None => None,
        };
        let (offset, k) = (body.offset, body.k);
        let mut request = to_request(&shared, &engine, body, image, max_k)?;
        request.cancel = cancel.clone();
        let response = engine
            .search(&request)
            .map_err(|e| ApiError::from_core(e, "image"))?;
        Ok(SearchReply::new(response, offset, k, |id| {
            engine.facts(id).cloned()
        }))
    };
    if embeds {
        heavy(state, work).await
    } else {
        blocking(state, work).await
    }
}

pub(super) async fn search(
    _: ReadAccess,
    state: Shared,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let (body, image) = read_search(&state, &req, payload).await?;
    let max_k = state.config.max_k;
    Ok(HttpResponse::Ok().json(run_search(&state, body, image, max_k).await?))
}

pub(super) async fn similar(
    _: ReadAccess,
    state: Shared,
    path: web::Path<String>,
    query: web::Query<SimilarQuery>,
) -> ApiResult<HttpResponse> {
    let id = super::path_lesion(&state.engine(), &path)?;
    let body = SearchBody {
        lesion: Some(LesionRef::Id(id)),
        k: query.k.unwrap_or(DEFAULT_K),
        offset: query.offset.unwrap_or(0),
        group_by_patient: query.group_by_patient.unwrap_or(true),
        ..SearchBody::default()
    };
    let max_k = state.config.max_k;
    Ok(HttpResponse::Ok().json(run_search(&state, body, None, max_k).await?))
}

/// One CSV cell, quoted when needed. Text that a spreadsheet would run as a formula (it
/// starts with `=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading `'`, so an
/// exported report cannot execute anything when the cohort is opened.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

pub(super) async fn export(
    _: ReadAccess,
    state: Shared,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let body: ExportBody = read_json(payload, 1 << 20).await?;
    let format = body.format.as_deref().unwrap_or("csv").to_ascii_lowercase();
    if format != "csv" && format != "json" {
        return Err(ApiError::bad(
            "format",
            format!("format: `{format}` is not csv or json"),
        ));
    }
    let cap = state.config.max_export;
    let limit = body.limit.unwrap_or(cap);
    if limit == 0 || limit > cap {
        return Err(ApiError::bad(
            "limit",
            format!("limit: must be 1 to {cap}, not {limit}"),
        ));
    }
    let mut query = body.query.unwrap_or_default();
    query.k = limit;
    query.offset = 0;
    let reply = run_search(&state, query, None, cap).await?;
    let reports = reports_of(&state, &reply).await?;
    Ok(if format == "json" {
        export_json(&reply, &reports)
    } else {
        export_csv(&reply, &reports)
    })
}

/// The stored report of every hit, read in a heavy slot.
async fn reports_of(state: &Shared, reply: &SearchReply) -> ApiResult<Vec<String>> {
    let ids: Vec<u32> = reply.hits.iter().map(|h| h.id).collect();
    let engine = state.engine();
    heavy(state, move |cancel| {
        ids.iter()
            .enumerate()
            .map(|(row, &id)| {
                if row % 256 == 0 {
                    cancel
                        .check("the export's reports")
                        .map_err(|e| ApiError::from_core(e, "body"))?;
                }
                Ok(engine
                    .lesion(id)
                    .map_err(|e| ApiError::from_core(e, "id"))?
                    .map(|l| l.report)
                    .unwrap_or_default())
            })
            .collect::<ApiResult<Vec<String>>>()
    })
    .await
}

fn attachment(ext: &str) -> (header::HeaderName, String) {
    (
        header::CONTENT_DISPOSITION,
        format!("attachment; filename=\"lesions.{ext}\""),
    )
}

fn export_json(reply: &SearchReply, reports: &[String]) -> HttpResponse {
    let lesions = reply
        .hits
        .iter()
        .zip(reports)
        .map(|(hit, report)| ExportRow {
            lesion: hit.lesion.clone(),
            score: hit.score,
            matched: hit.matched,
            report: report.clone(),
        })
        .collect();
    HttpResponse::Ok()
        .insert_header(attachment("json"))
        .json(ExportReply {
            total: reply.total,
            lesions,
        })
}

fn export_csv(reply: &SearchReply, reports: &[String]) -> HttpResponse {
    let mut csv = String::from(
        "id,key,score,matched,coarse_type,sex,age,long_mm,short_mm,location_x,location_y,location_z,split,patient,study,report\n",
    );
    for (hit, report) in reply.hits.iter().zip(reports) {
        let l = &hit.lesion;
        let row = [
            l.id.to_string(),
            csv_field(&l.key),
            format!("{:.6}", hit.score),
            serde_json::to_value(hit.matched)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            l.coarse_type.name().to_string(),
            l.sex.code().to_string(),
            l.age.map(|a| a.to_string()).unwrap_or_default(),
            l.long_mm.to_string(),
            l.short_mm.to_string(),
            l.location.x.to_string(),
            l.location.y.to_string(),
            l.location.z.to_string(),
            l.split.name().to_string(),
            l.patient.to_string(),
            l.study.to_string(),
            csv_field(report),
        ];
        csv.push_str(&row.join(","));
        csv.push('\n');
    }
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/csv; charset=utf-8"))
        .insert_header(attachment("csv"))
        .body(csv)
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_cells_cannot_be_formulas() {
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("-2+3"), "'-2+3");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\tcmd"), "'\tcmd");
        assert_eq!(csv_field("liver lesion, 2 cm"), "\"liver lesion, 2 cm\"");
        assert_eq!(csv_field("lung nodule"), "lung nodule");
    }
}
