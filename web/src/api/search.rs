//! `POST /api/search` (JSON, or multipart with an `image` part and a `box`), `GET
//! /api/lesions/{id}/similar`, `POST /api/export`.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use lesion_search::imaging::CtImage;
use lesion_search::search::{
    Engine, Fusion, Matched, SearchLimits, SearchRequest, SearchResponse, DEFAULT_K, MAX_K,
};
use lesion_search::util::Cancel;
use serde_json::{Map, Value};

use super::{blocking, decode_upload, heavy, is_multipart, read_form, read_json, Shared};
use crate::access::ReadAccess;
use crate::error::{ApiError, ApiResult};
use crate::wire::{
    ExportBody, ExportExample, ExportModel, ExportProvenance, ExportRow, LesionRef, Page,
    SearchBody, SearchReply, SimilarQuery,
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
    mut body: SearchBody,
    image: Option<Arc<CtImage>>,
    max_k: usize,
) -> ApiResult<SearchRequest> {
    body.semantic = Some(semantic_of(state, engine, &body));
    if body.semantic == Some(true)
        && engine.text_encoder_card().is_some()
        && !engine.supports_semantic()
    {
        return Err(ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "semantic_unavailable",
            "semantic: the server has not loaded this archive's text encoder (its weights are not imported where the server runs: `lesion-indexer weights import minilm`, then restart it)",
        )
        .with_field("semantic"));
    }
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

/// Whether a search uses semantic retrieval: as the body says, else the server's setting
/// where the archive supports it and the text is plain language (a default never makes a
/// request fail).
fn semantic_of(state: &Shared, engine: &Engine, body: &SearchBody) -> bool {
    body.semantic.unwrap_or_else(|| {
        state.config.semantic_default && engine.semantic_by_default_for(body.text.as_deref())
    })
}

/// Runs a search on a worker thread and shapes the reply: in a heavy slot when an image or
/// the text's sentence vector must be computed, as light work otherwise.
pub async fn run_search(
    state: &Shared,
    body: SearchBody,
    image: Option<RawImage>,
    max_k: usize,
) -> ApiResult<SearchReply> {
    let engine = state.engine();
    let shared = state.clone();
    let embeds_text = body.text.as_ref().is_some_and(|t| !t.trim().is_empty())
        && semantic_of(state, &engine, &body);
    let embeds = image.is_some() || body.upload.is_some() || embeds_text;
    let work = move |cancel: &Cancel| {
        let image = match image {
            Some((name, bytes)) => Some(Arc::new(decode_upload(&shared, &bytes, &name)?)),
            None => None,
        };
        let page = Page {
            offset: body.offset,
            k: body.k,
            group_by_patient: body.group_by_patient,
        };
        let mut request = to_request(&shared, &engine, body, image, max_k)?;
        request.cancel = cancel.clone();
        let response = engine
            .search(&request)
            .map_err(|e| ApiError::from_core(e, "image"))?;
        Ok(SearchReply::new(response, page, |id| {
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

/// Rows one engine call of an export asks for (the engine answers at most this many).
const EXPORT_PAGE: usize = MAX_K;

/// The file formats of `POST /api/export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Provenance as `# key: value` lines, then a header row and one row per hit.
    Csv,
    /// JSON Lines: `{"provenance": ...}`, then one object per hit.
    Jsonl,
    /// One JSON document: `provenance`, `total`, `lesions`.
    Json,
}

impl Format {
    fn parse(name: Option<&str>) -> ApiResult<Self> {
        let name = name.unwrap_or("csv").to_ascii_lowercase();
        match name.as_str() {
            "csv" => Ok(Format::Csv),
            "jsonl" | "ndjson" => Ok(Format::Jsonl),
            "json" => Ok(Format::Json),
            _ => Err(ApiError::bad(
                "format",
                format!("format: `{name}` is not csv, jsonl or json"),
            )),
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Json => "json",
        }
    }

    fn media_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Jsonl => "application/x-ndjson; charset=utf-8",
            Format::Json => "application/json",
        }
    }

    /// How to read the file, for its provenance.
    fn reading(self) -> &'static str {
        match self {
            Format::Csv => "csv: these `# key: value` lines (each value JSON), then a header row and one row per lesion in list order; pandas.read_csv(path, comment='#')",
            Format::Jsonl => "jsonl: this provenance line, then one JSON object per lesion in list order; pandas.read_json(path, lines=True) after dropping the first line",
            Format::Json => "json: provenance, total, and lesions in list order",
        }
    }
}

pub(super) async fn export(
    _: ReadAccess,
    state: Shared,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    // Read as JSON first, so the provenance can hold the search exactly as it was sent.
    let sent: Value = read_json(payload, 1 << 20).await?;
    let body: ExportBody = super::parse_json(sent.to_string().as_bytes())?;
    let format = Format::parse(body.format.as_deref())?;
    let cap = state.config.max_export;
    if let Some(limit) = body.limit.filter(|&l| l == 0 || l > cap) {
        return Err(ApiError::bad(
            "limit",
            format!("limit: must be 1 to {cap}, not {limit}"),
        ));
    }
    let query = body.query.unwrap_or_default();
    let shared = state.clone();
    let engine = state.engine();
    let ranks_by_likeness =
        query.lesion.is_some() || query.upload.is_some() || !query.positives.is_empty();
    let job = ExportJob {
        sent: sent_search(&sent),
        deepest_ranked: engine.deepest_vector_list().filter(|_| ranks_by_likeness),
        query,
        limit: body.limit,
        cap,
        format,
    };
    let file = heavy(&state, move |cancel| job.run(&shared, &engine, cancel)).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, format.media_type()))
        .insert_header(attachment(format.extension()))
        .body(file))
}

/// The `query` of an export body as sent, less the paging it does not use.
fn sent_search(sent: &Value) -> Value {
    let mut query = sent.get("query").cloned().unwrap_or(Value::Null);
    if query.is_null() {
        query = Value::Object(Map::new());
    }
    if let Value::Object(fields) = &mut query {
        fields.remove("k");
        fields.remove("offset");
    }
    query
}

/// One export: the search, how many of its rows, in which format.
struct ExportJob {
    sent: Value,
    query: SearchBody,
    limit: Option<usize>,
    cap: usize,
    format: Format,
    /// The backend's cap on a list ranked by likeness, when the export ranks by an image
    /// or a lesion (Milvus's `topk`): a longer export is refused before its first row.
    deepest_ranked: Option<usize>,
}

/// What the pages of an export found, besides their rows.
#[derive(Default)]
struct Tally {
    total: usize,
    matched_lesions: usize,
    rows: usize,
    degraded: Option<String>,
}

impl Tally {
    /// Takes in one page's numbers; refuses a list longer than the cap when no limit was
    /// asked, rather than cut it silently.
    fn page(&mut self, response: &SearchResponse, job: &ExportJob) -> ApiResult<()> {
        self.total = response.total;
        self.matched_lesions = response.matched_lesions;
        if self.degraded.is_none() {
            self.degraded.clone_from(&response.degraded);
        }
        if let Some(deepest) = job.deepest_ranked.filter(|&d| self.wanted(job) > d) {
            return Err(ApiError::bad(
                "limit",
                format!(
                    "limit: the search backend ranks at most {deepest} lesions by likeness and this export would hold {}; narrow the search, or set limit (1 to {deepest})",
                    self.wanted(job)
                ),
            ));
        }
        if job.limit.is_none() && response.total > job.cap {
            return Err(ApiError::bad(
                "limit",
                format!(
                    "limit: the result list holds {} rows, more than the {} an export may hold; narrow the search, or set limit (1 to {}) to export its first rows",
                    response.total, job.cap, job.cap
                ),
            ));
        }
        Ok(())
    }

    /// Rows the export should hold, as far as the pages so far tell.
    fn wanted(&self, job: &ExportJob) -> usize {
        self.total.min(job.limit.unwrap_or(job.cap))
    }
}

impl ExportJob {
    /// Pages through the result list in order, one engine call per page, writing each hit
    /// as it comes, then puts the provenance in front.
    fn run(self, state: &Shared, engine: &Engine, cancel: &Cancel) -> ApiResult<Vec<u8>> {
        let mut query = self.query.clone();
        query.offset = 0;
        query.k = self.limit.unwrap_or(self.cap).min(EXPORT_PAGE);
        let mut request = to_request(state, engine, query, None, EXPORT_PAGE)?;
        request.cancel = cancel.clone();
        let mut tally = Tally::default();
        let mut out = Vec::new();
        loop {
            let response = engine
                .search(&request)
                .map_err(|e| ApiError::from_core(e, "image"))?;
            tally.page(&response, &self)?;
            let wanted = tally.wanted(&self);
            for hit in response.hits.iter().take(wanted.saturating_sub(tally.rows)) {
                if tally.rows % 256 == 0 {
                    cancel
                        .check("the export's rows")
                        .map_err(|e| ApiError::from_core(e, "body"))?;
                }
                let stored = engine
                    .lesion(hit.id)
                    .map_err(|e| ApiError::from_core(e, "id"))?
                    .ok_or_else(|| {
                        ApiError::internal(format!("lesion {} of the list has no record", hit.id))
                    })?;
                self.write_row(
                    &mut out,
                    &ExportRow::new(tally.rows + 1, hit, &stored),
                    tally.rows,
                );
                tally.rows += 1;
            }
            if tally.rows >= wanted || response.hits.is_empty() {
                break;
            }
            request.offset = tally.rows;
            request.k = (wanted - tally.rows).min(EXPORT_PAGE);
        }
        let provenance = self.provenance(engine, &request, &tally);
        let (head, tail) = self.frame(&provenance);
        out.reserve(head.len() + tail.len());
        out.splice(0..0, head.into_bytes());
        out.extend_from_slice(tail.as_bytes());
        Ok(out)
    }

    fn write_row(&self, out: &mut Vec<u8>, row: &ExportRow, before: usize) {
        match self.format {
            Format::Csv => {
                out.extend_from_slice(csv_row(row).as_bytes());
            }
            Format::Jsonl | Format::Json => {
                if self.format == Format::Json && before > 0 {
                    out.push(b',');
                }
                // A row of plain strings and numbers always serialises.
                let _ = serde_json::to_writer(&mut *out, row);
                if self.format == Format::Jsonl {
                    out.push(b'\n');
                }
            }
        }
    }

    /// What comes before the rows (the provenance, the CSV header) and after them.
    fn frame(&self, provenance: &ExportProvenance) -> (String, String) {
        match self.format {
            Format::Csv => {
                let mut head = String::from(
                    "# Lesion Search export. Lines starting with # are its provenance (each value JSON); read with pandas.read_csv(path, comment='#')\n",
                );
                for (key, value) in provenance.fields() {
                    head.push_str(&format!("# {key}: {}\n", comment_json(&value)));
                }
                head.push_str(&csv_columns().join(","));
                head.push('\n');
                (head, String::new())
            }
            Format::Jsonl => (
                format!("{}\n", serde_json::json!({ "provenance": provenance })),
                String::new(),
            ),
            Format::Json => (
                format!(
                    "{{\"provenance\":{},\"total\":{},\"lesions\":[",
                    serde_json::to_value(provenance).unwrap_or(Value::Null),
                    provenance.total
                ),
                "]}".to_string(),
            ),
        }
    }

    fn provenance(
        &self,
        engine: &Engine,
        request: &SearchRequest,
        tally: &Tally,
    ) -> ExportProvenance {
        let card = engine.model().card();
        let example =
            (request.lesion.is_some() || self.query.upload.is_some()).then(|| ExportExample {
                lesion: request.lesion,
                lesion_key: request
                    .lesion
                    .and_then(|id| engine.facts(id))
                    .map(|f| f.key.clone()),
                upload: self.query.upload.clone(),
                bbox: self.query.bbox.clone(),
                spacing_mm: self.query.spacing_mm,
            });
        ExportProvenance {
            exported_at: rfc3339_utc(std::time::SystemTime::now()),
            server: format!("lesion-web {}", env!("CARGO_PKG_VERSION")),
            version: lesion_search::version(),
            request: self.sent.clone(),
            text: self.query.text.clone(),
            filters: self
                .sent
                .get("filters")
                .cloned()
                .unwrap_or_else(|| Value::Object(Map::new())),
            example,
            positives: request.positives.clone(),
            negatives: request.negatives.clone(),
            group_by_patient: request.group_by_patient,
            fusion: match request.fusion {
                Fusion::Rrf => "rrf",
                Fusion::Weighted { .. } => "weighted",
            },
            image_weight: match request.fusion {
                Fusion::Rrf => None,
                Fusion::Weighted { image_weight } => Some(image_weight),
            },
            model: ExportModel {
                name: card.name.clone(),
                weights_sha256: card.weights_sha256.clone(),
            },
            semantic: request.semantic
                && request.text.as_ref().is_some_and(|t| !t.trim().is_empty()),
            text_encoder: engine.text_encoder_card().map(|card| ExportModel {
                name: card.name.clone(),
                weights_sha256: card.weights_sha256.clone(),
            }),
            generation: engine.generation(),
            generation_name: engine.generation_name().map(String::from),
            total: tally.total,
            matched_lesions: tally.matched_lesions,
            rows: tally.rows,
            limit: self.limit,
            truncated: tally.rows < tally.total,
            degraded: tally.degraded.clone(),
            format: self.format.reading().to_string(),
        }
    }
}

fn attachment(ext: &str) -> (header::HeaderName, String) {
    (
        header::CONTENT_DISPOSITION,
        format!("attachment; filename=\"lesions.{ext}\""),
    )
}

/// The CSV header: [`ExportRow`]'s fields, in its order, under its names (DeepLesion's
/// columns as the core names them).
fn csv_columns() -> Vec<&'static str> {
    let ranks = [
        "rank",
        "score",
        "matched",
        "image_rank",
        "image_cosine",
        "text_rank",
        "text_bm25",
        "semantic_rank",
        "semantic_cosine",
    ];
    let ours = ["key", "id", "coarse_type", "long_mm", "short_mm", "report"];
    ranks
        .into_iter()
        .chain(lesion_search::dataset::COLUMNS)
        .chain(ours)
        .collect()
}

/// One CSV row of [`csv_columns`], newline-terminated. Text (keys, file names, reports) is
/// neutralised by [`csv_field`]; numbers and DeepLesion's number lists, which the server
/// writes itself, are only quoted.
fn csv_row(row: &ExportRow) -> String {
    let or_empty = |v: Option<String>| v.unwrap_or_default();
    let cells: [String; 33] = [
        row.rank.to_string(),
        row.score.to_string(),
        matched_name(row.matched).to_string(),
        or_empty(row.image_rank.map(|r| r.to_string())),
        or_empty(row.image_cosine.map(|c| c.to_string())),
        or_empty(row.text_rank.map(|r| r.to_string())),
        or_empty(row.text_bm25.map(|b| b.to_string())),
        or_empty(row.semantic_rank.map(|r| r.to_string())),
        or_empty(row.semantic_cosine.map(|c| c.to_string())),
        csv_field(&row.file_name),
        row.patient_index.to_string(),
        row.study_index.to_string(),
        row.series_id.to_string(),
        row.key_slice_index.to_string(),
        quoted(&row.measurement_coordinates),
        quoted(&row.bounding_boxes),
        quoted(&row.lesion_diameters_pixel),
        quoted(&row.normalized_lesion_location),
        row.coarse_lesion_type.to_string(),
        row.possibly_noisy.to_string(),
        quoted(&row.slice_range),
        quoted(&row.spacing_mm_px),
        quoted(&row.image_size),
        quoted(&row.dicom_windows),
        csv_field(&row.patient_gender),
        row.patient_age
            .map(lesion_search::dataset::fields::format_number)
            .unwrap_or_else(|| "NaN".into()),
        row.train_val_test.to_string(),
        csv_field(&row.key),
        row.id.to_string(),
        row.coarse_type.name().to_string(),
        row.long_mm.to_string(),
        row.short_mm.to_string(),
        csv_field(&row.report),
    ];
    let mut line = cells.join(",");
    line.push('\n');
    line
}

fn matched_name(matched: Matched) -> &'static str {
    match matched {
        Matched::Image => "image",
        Matched::Text => "text",
        Matched::Both => "both",
        Matched::Filter => "filter",
    }
}

/// One CSV cell of text, quoted when needed. Text that a spreadsheet would run as a formula
/// (it starts with `=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading `'`, so an
/// exported report cannot execute anything when the cohort is opened.
fn csv_field(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        quoted(&format!("'{value}"))
    } else {
        quoted(value)
    }
}

/// A cell quoted when it holds a separator, a quote, a line break or a `#` (pandas'
/// `comment="#"` ends a row at an unquoted `#`, and a row starting with one is skipped).
fn quoted(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r', '#']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// A provenance value as JSON for a `# key: value` line that a spreadsheet reads as cells:
/// inside strings, quotes are `\u` escapes (so quotes stay paired), and so are a leading
/// `=`, `+`, `-` or `@` and a comma before one (so no cell starts as a formula). The value
/// reads back unchanged with any JSON parser.
fn comment_json(value: &Value) -> String {
    let mut out = String::new();
    write_comment_json(value, &mut out);
    out
}

fn write_comment_json(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => comment_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_comment_json(item, out);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            out.push('{');
            for (i, (key, item)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                comment_string(key, out);
                out.push(':');
                write_comment_json(item, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn comment_string(s: &str, out: &mut String) {
    let formula = |c: char| matches!(c, '=' | '+' | '-' | '@');
    out.push('"');
    for (i, c) in s.char_indices() {
        // A comma starts a cell: harmless unless what follows it could be read as a formula
        // or a quoted cell.
        let opens_cell = c == ','
            && s[i + 1..]
                .trim_start_matches(' ')
                .starts_with(|n: char| formula(n) || n == '"' || n.is_control());
        let risky = opens_cell || c == '"' || (i == 0 && formula(c));
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if risky || c.is_control() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `time` as RFC 3339 in UTC, to the second (`2024-05-01T12:34:56Z`).
fn rfc3339_utc(time: std::time::SystemTime) -> String {
    let seconds = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01: counted in 400-year eras of
/// 146,097 days, each year taken from March so that the leap day ends it.
fn civil_date(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_hash_in_a_cell_is_quoted() {
        // Neither a leading `#` (a comment line to pandas) nor one inside a row (pandas
        // would drop the rest of the row) is left bare.
        assert_eq!(csv_field("# not a comment"), "\"# not a comment\"");
        assert_eq!(
            csv_field("000001_01_01_109.png#2"),
            "\"000001_01_01_109.png#2\""
        );
    }

    #[test]
    fn comment_values_are_json_and_start_no_formula_cell() {
        let value = serde_json::json!({
            "text": "=HYPERLINK(\"x\"), \"a\"\nb,@c, -d,plain, words",
            "list": ["-1+2", "@x", "plain"],
            "n": -3,
        });
        let line = comment_json(&value);
        assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), value);
        assert!(!line.contains('\n'));
        assert!(line.contains("plain, words"), "a plain comma stays: {line}");
        // Split as a spreadsheet would (commas outside quotes): no cell is a formula.
        for cell in line.split(',') {
            let cell = cell.trim_start_matches('"');
            assert!(!cell.starts_with(['=', '+', '@']), "{cell} in {line}");
        }
        assert_eq!(line.matches('"').count() % 2, 0, "{line}");
    }

    #[test]
    fn utc_times_are_rfc3339() {
        let at = |s: u64| rfc3339_utc(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn csv_columns_are_the_rows_fields() {
        let schema = schemars::schema_for!(ExportRow);
        let names: Vec<&str> = schema.as_value()["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut columns = csv_columns();
        let mut names = names;
        columns.sort_unstable();
        names.sort_unstable();
        assert_eq!(columns, names);
    }
}
