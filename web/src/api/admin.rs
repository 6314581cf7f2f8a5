//! Admin routes: `POST /api/lesions` (a slice, its box and metadata become a new lesion) and
//! `DELETE /api/lesions/{id}` answer 202 with a task that publishes a new index generation
//! and serves it; `GET /api/tasks/{id}` follows it.

use std::io::Write;
use std::path::{Path, PathBuf};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use lesion_search::archive::{add, delete, AddOptions};
use lesion_search::dataset::{
    write_dl_info, write_reports, CoarseType, LesionRecord, NormalizedLocation, PixelBox, Point,
    Recist, ReportEntry, Sex, SliceRange, Spacing, Split, IMAGES_DIR,
};
use lesion_search::imaging::{encode_png16, CtImage, PixelUnit, WindowPreset};
use lesion_search::index::GraphParams;

use super::{decode_upload, heavy, path_lesion, read_form, Shared};
use crate::access::AdminAccess;
use crate::error::{ApiError, ApiResult};
use crate::state::Served;
use crate::tasks::{Landed, TaskReport};
use crate::wire::{parse_sex, parse_type};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/lesions", web::post().to(create))
        .route("/api/lesions/{id}", web::delete().to(remove))
        .route("/api/tasks", web::get().to(tasks))
        .route("/api/tasks/{id}", web::get().to(task));
}

fn number<T: std::str::FromStr>(fields: &[(String, String)], name: &str) -> ApiResult<Option<T>> {
    match fields.iter().find(|(n, _)| n == name) {
        None => Ok(None),
        Some((_, text)) if text.trim().is_empty() => Ok(None),
        Some((_, text)) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad(name, format!("{name}: `{text}` is not a number"))),
    }
}

fn text<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
}

const KNOWN_PARTS: [&str; 14] = [
    "box",
    "patient",
    "study",
    "series",
    "slice",
    "type",
    "sex",
    "age",
    "spacing_mm",
    "slice_interval_mm",
    "location",
    "report",
    "split",
    "window",
];

/// The DeepLesion row for one uploaded lesion: RECIST axes along the box's sides (the best
/// a box alone says), the file's window or soft tissue.
fn record_of(image: &CtImage, fields: &[(String, String)]) -> ApiResult<LesionRecord> {
    if let Some((name, _)) = fields
        .iter()
        .find(|(n, _)| !KNOWN_PARTS.contains(&n.as_str()))
    {
        return Err(ApiError::bad(
            name.clone(),
            format!("{name}: unknown part (known: {})", KNOWN_PARTS.join(", ")),
        ));
    }
    if image.unit != PixelUnit::Hounsfield {
        return Err(ApiError::bad(
            "image",
            "image: a lesion added to the archive needs Hounsfield units (a CT DICOM or a 16-bit DeepLesion PNG), not an 8-bit picture",
        ));
    }
    let bbox_text =
        text(fields, "box").ok_or_else(|| ApiError::bad("box", "box: required (x1,y1,x2,y2)"))?;
    let bbox = PixelBox::parse(bbox_text).map_err(|e| ApiError::bad("box", format!("box: {e}")))?;
    lesion_search::imaging::check_box(&bbox, image.width, image.height)
        .map_err(|e| ApiError::bad("box", format!("box: {e}")))?;
    let patient: u32 =
        number(fields, "patient")?.ok_or_else(|| ApiError::bad("patient", "patient: required"))?;
    let study: u32 =
        number(fields, "study")?.ok_or_else(|| ApiError::bad("study", "study: required"))?;
    let series: u32 = number(fields, "series")?.unwrap_or(1);
    let slice: u32 = number(fields, "slice")?.unwrap_or(1);
    let (sx, sy) = match (number::<f32>(fields, "spacing_mm")?, image.spacing_mm) {
        (Some(s), _) => (s, s),
        (None, Some(s)) => s,
        (None, None) => {
            return Err(ApiError::bad(
                "spacing_mm",
                "spacing_mm: the file states no pixel spacing; give it in mm",
            ))
        }
    };
    let location = match text(fields, "location") {
        None => NormalizedLocation {
            x: 0.5,
            y: 0.5,
            z: 0.5,
        },
        Some(t) => {
            let v: Vec<f32> = t
                .split(',')
                .map(|p| p.trim().parse::<f32>())
                .collect::<Result<_, _>>()
                .map_err(|_| ApiError::bad("location", format!("location: `{t}` is not x,y,z")))?;
            match v.as_slice() {
                [x, y, z] if [x, y, z].iter().all(|c| (0.0..=1.0).contains(*c)) => {
                    NormalizedLocation {
                        x: *x,
                        y: *y,
                        z: *z,
                    }
                }
                _ => {
                    return Err(ApiError::bad(
                        "location",
                        format!("location: `{t}` is not x,y,z each in 0..1"),
                    ))
                }
            }
        }
    };
    let c = bbox.center();
    let (w, h) = (bbox.width(), bbox.height());
    let (long_axis, short_axis) = if w >= h {
        (
            [Point { x: bbox.x1, y: c.y }, Point { x: bbox.x2, y: c.y }],
            [Point { x: c.x, y: bbox.y1 }, Point { x: c.x, y: bbox.y2 }],
        )
    } else {
        (
            [Point { x: c.x, y: bbox.y1 }, Point { x: c.x, y: bbox.y2 }],
            [Point { x: bbox.x1, y: c.y }, Point { x: bbox.x2, y: c.y }],
        )
    };
    let window = match text(fields, "window") {
        Some(t) => lesion_search::imaging::WindowChoice::parse(t)
            .map_err(|e| ApiError::bad("window", format!("window: {e}")))?
            .resolve(image.window),
        None => image
            .window
            .unwrap_or_else(|| WindowPreset::SoftTissue.window()),
    };
    Ok(LesionRecord {
        file_name: LesionRecord::canonical_file_name(patient, study, series, slice),
        patient,
        study,
        series,
        key_slice: slice,
        recist: Recist {
            long_axis,
            short_axis,
        },
        bbox,
        diameters_px: [w.max(h), w.min(h)],
        location,
        coarse_type: match text(fields, "type") {
            Some(t) => parse_type(t, "type")?,
            None => CoarseType::Unknown,
        },
        possibly_noisy: false,
        slice_range: SliceRange {
            first: slice,
            last: slice,
        },
        spacing: Spacing {
            x_mm: sx,
            y_mm: sy,
            z_mm: number(fields, "slice_interval_mm")?.unwrap_or(5.0),
        },
        image_width: image.width as u32,
        image_height: image.height as u32,
        window,
        sex: match text(fields, "sex") {
            Some(t) => parse_sex(t, "sex")?,
            None => Sex::Unknown,
        },
        age: number(fields, "age")?,
        split: match text(fields, "split") {
            Some(t) => Split::parse(t).ok_or_else(|| {
                ApiError::bad(
                    "split",
                    format!("split: `{t}` is not train, validation or test"),
                )
            })?,
            None => Split::Train,
        },
    })
}

/// Writes a one-lesion DeepLesion-format folder under the index (the slice as a 16-bit PNG),
/// so the lesion's image stays readable like any other.
fn stage(dir: &Path, image: &CtImage, record: &LesionRecord, report: &str) -> std::io::Result<()> {
    let series = dir.join(IMAGES_DIR).join(record.series_folder());
    std::fs::create_dir_all(&series)?;
    std::fs::write(
        record.key_slice_path(dir),
        encode_png16(image.width, image.height, &image.pixels),
    )?;
    let mut table = std::fs::File::create(dir.join("DL_info.csv"))?;
    write_dl_info(&mut table, [record])?;
    table.flush()?;
    let entry = ReportEntry {
        file_name: record.file_name.clone(),
        lesion: 0,
        text: report.to_string(),
    };
    write_reports(std::fs::File::create(dir.join("reports.jsonl"))?, [&entry])
}

async fn create(
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
    let shared = state.clone();
    let (image, record, report) = heavy(&state, move || {
        let image = decode_upload(&shared, &bytes, &name)?;
        image
            .require_ct(std::path::Path::new(&name))
            .map_err(|e| ApiError::from_core(e, &name))?;
        let record = record_of(&image, &form.fields)?;
        let report = text(&form.fields, "report").unwrap_or("").to_string();
        Ok((image, record, report))
    })
    .await?;
    let engine = state.engine();
    let taken = engine
        .id_of(&record.file_name)
        .map_err(|e| ApiError::from_core(e, "image"))?
        .is_some_and(|id| engine.catalog.get(id).is_some());
    drop(engine);
    if taken {
        // The writer checks again (another write may land first); this answers the common case at once.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "exists",
            format!(
                "patient: the lesion on slice {} is already in the index (delete it first to replace it)",
                record.file_name
            ),
        )
        .with_field("patient"));
    }
    let task = state.tasks.submit("add", move |served| {
        add_lesion(served, &image, &record, &report)
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

/// Stages the lesion as a one-lesion DeepLesion folder under the index, adds it, and serves
/// the generation that holds it (runs on the index writer).
fn add_lesion(
    served: &Served,
    image: &CtImage,
    record: &LesionRecord,
    report: &str,
) -> ApiResult<Landed> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let folder: PathBuf = served.index_dir().join("added").join(format!("{stamp}"));
    stage(&folder, image, record, report)
        .map_err(|e| ApiError::internal(format!("could not stage the lesion: {e}")))?;
    let engine = served.engine();
    let options = AddOptions {
        dataset: folder.clone(),
        reports: None,
        model: engine.model().as_ref(),
        graph: GraphParams::default(),
    };
    let summary = match add(served.index_dir(), &options, &|_| {}) {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&folder);
            let mut error = ApiError::from_core(e, "image");
            if error.status == StatusCode::BAD_REQUEST {
                error.status = StatusCode::CONFLICT;
                error.body.code = "exists";
                error.body.field = Some("patient".into());
            }
            return Err(error);
        }
    };
    drop(engine);
    served
        .reload()
        .map_err(|e| ApiError::from_core(e, "index"))?;
    let (id, key) = summary.changed.first().cloned().unwrap_or_default();
    Ok(Landed {
        generation: summary.generation,
        result: serde_json::json!({"id": id, "key": key, "lesions": summary.live}),
    })
}

async fn remove(_: AdminAccess, state: Shared, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let engine = state.engine();
    let id = path_lesion(&engine, &path)?;
    let key = engine
        .catalog
        .get(id)
        .map(|f| f.key.clone())
        .unwrap_or_default();
    drop(engine);
    let task = state.tasks.submit("delete", move |served| {
        // An earlier queued write may have deleted it meanwhile.
        let engine = served.engine();
        let live = engine
            .id_of(&key)
            .map_err(|e| ApiError::from_core(e, "id"))?
            .is_some_and(|id| engine.catalog.get(id).is_some());
        drop(engine);
        if !live {
            return Err(ApiError::not_found(format!(
                "id: lesion {id} was deleted by an earlier write"
            ))
            .with_field("id"));
        }
        let summary = delete(served.index_dir(), &[key], GraphParams::default())
            .map_err(|e| ApiError::from_core(e, "id"))?;
        served
            .reload()
            .map_err(|e| ApiError::from_core(e, "index"))?;
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

#[derive(serde::Deserialize)]
struct TaskQuery {
    /// Seconds to wait for the task to finish before answering (long polling), at most 60.
    wait: Option<f64>,
}

/// Longest `wait` a task request may ask for.
const MAX_TASK_WAIT_S: f64 = 60.0;

async fn task(
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

async fn tasks(_: AdminAccess, state: Shared) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(serde_json::json!({ "tasks": state.tasks.recent(100) })))
}
