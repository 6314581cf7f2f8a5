//! Exports with provenance (`POST /api/export`): the file holds exactly the result list that
//! `/api/search` pages through, in its order, for text, image-example and hybrid searches, in
//! CSV and JSON Lines; the provenance names the search, the model and the generation; the
//! DeepLesion columns load with the core's own `DL_info.csv` reader; formula cells are
//! neutralised. Also: field queries the text index refuses are 400 naming `text`.

use std::path::Path;

use actix_web::http::StatusCode;
use actix_web::test;
use lesion_search::archive::{build, BuildOptions};
use lesion_search::dataset::{read_reports, write_reports, DlInfoReader, ReportEntry};
use lesion_search::embed::{bundled_lesion_cnn, Embedder};
use lesion_search::index::GraphParams;
use lesion_search::synth::{generate, SynthOptions};
use lesion_web::{app, AppState, Config};
use serde_json::{json, Value};

mod common;
use common::*;

/// A CSV export split into its provenance lines, header and rows (RFC 4180 quoting; a
/// record that starts with `#` is a comment, as pandas' `comment="#"` reads it).
struct Csv {
    provenance: Vec<(String, Value)>,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    /// The file without its comment lines: what a `DL_info.csv` reader sees.
    table: String,
}

fn parse_csv(text: &str) -> Csv {
    let mut provenance = Vec::new();
    let mut table = String::new();
    let mut records = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(comment) = rest.strip_prefix('#') {
            let end = comment.find('\n').map_or(comment.len(), |i| i + 1);
            let line = comment[..end].trim();
            if let Some((key, value)) = line.split_once(": ") {
                let value: Value = serde_json::from_str(value)
                    .unwrap_or_else(|e| panic!("provenance `{line}` is not JSON: {e}"));
                provenance.push((key.to_string(), value));
            }
            rest = &comment[end..];
            continue;
        }
        let (cells, used) = csv_record(rest);
        table.push_str(&rest[..used]);
        records.push(cells);
        rest = &rest[used..];
    }
    let header = records.remove(0);
    for row in &records {
        assert_eq!(
            row.len(),
            header.len(),
            "a row of {} cells: {row:?}",
            row.len()
        );
    }
    Csv {
        provenance,
        header,
        rows: records,
        table,
    }
}

/// One record at the start of `text`: its cells and the bytes it used (newline included).
/// Asserts that every `#` of the record lies inside a quoted cell.
fn csv_record(text: &str) -> (Vec<String>, usize) {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let cell = cells.last_mut().unwrap();
        match (quoted, c) {
            (true, '"') if chars.peek().map(|p| p.1) == Some('"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') if cell.is_empty() => quoted = true,
            (false, ',') => cells.push(String::new()),
            (false, '\n') => return (cells, i + 1),
            (false, '#') => panic!(
                "an unquoted # in a data row: {}",
                &text[..text.len().min(200)]
            ),
            (false, c) => cell.push(c),
        }
    }
    (cells, text.len())
}

impl Csv {
    fn column(&self, name: &str) -> Vec<&str> {
        let i = self
            .header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.header));
        self.rows.iter().map(|r| r[i].as_str()).collect()
    }

    fn provenance(&self, key: &str) -> &Value {
        &self
            .provenance
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no provenance line `{key}`"))
            .1
    }
}

async fn post(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    uri: &str,
    body: Value,
) -> (StatusCode, String, Vec<u8>) {
    call_typed(app, test::TestRequest::post().uri(uri).set_json(body)).await
}

/// The ids of the whole result list, paged through `/api/search`, and its `total`.
async fn paged_ids(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    query: &Value,
) -> (Vec<u64>, usize) {
    let mut ids = Vec::new();
    let mut total = None;
    loop {
        let mut page = query.clone();
        page["k"] = json!(37);
        page["offset"] = json!(ids.len());
        let (status, _, body) = post(app, "/api/search", page).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let reply = json_of(&body);
        let this = reply["total"].as_u64().unwrap() as usize;
        assert_eq!(*total.get_or_insert(this), this, "total moved while paging");
        let hits = reply["hits"].as_array().unwrap();
        ids.extend(hits.iter().map(|h| h["id"].as_u64().unwrap()));
        if hits.is_empty() || ids.len() >= this {
            break;
        }
    }
    (ids, total.unwrap_or(0))
}

fn engine_model() -> (String, String) {
    let card = shared_engine().model().card().clone();
    (card.name, card.weights_sha256)
}

fn assert_ranks(ranks: &[&str]) {
    let expected: Vec<String> = (1..=ranks.len()).map(|r| r.to_string()).collect();
    assert_eq!(ranks, expected);
}

/// A text, an image-example and a hybrid search, grouped by patient or not.
fn queries() -> Vec<(&'static str, Value)> {
    vec![
        ("text", json!({"text": "liver lesion"})),
        (
            "text, per lesion, filtered",
            json!({"text": "lesion", "group_by_patient": false, "filters": {"sex": "F"}}),
        ),
        ("image", json!({"lesion": 3})),
        (
            "image, per lesion",
            json!({"lesion": 3, "group_by_patient": false}),
        ),
        ("hybrid", json!({"text": "nodule", "lesion": 7})),
        (
            "hybrid, per lesion",
            json!({"text": "lesion", "lesion": 7, "group_by_patient": false}),
        ),
    ]
}

#[actix_web::test]
async fn csv_holds_the_result_list_in_order_with_its_provenance() {
    let app = test::init_service(app(state(Config::default()))).await;
    let (model, digest) = engine_model();
    for (what, query) in queries() {
        let (ids, total) = paged_ids(&app, &query).await;
        assert!(total > 0, "{what}: an empty list proves nothing");
        let (status, media, body) = post(
            &app,
            "/api/export",
            json!({"query": query, "format": "csv"}),
        )
        .await;
        let text = String::from_utf8(body).unwrap();
        assert_eq!(status, StatusCode::OK, "{what}: {text}");
        assert!(media.starts_with("text/csv"), "{media}");
        let csv = parse_csv(&text);
        assert_eq!(
            csv.rows.len(),
            total,
            "{what}: rows against the reply's total"
        );
        assert_ranks(&csv.column("rank"));
        let exported: Vec<u64> = csv
            .column("id")
            .iter()
            .map(|i| i.parse().unwrap())
            .collect();
        assert_eq!(exported, ids, "{what}: the rows are the list, in its order");
        // Provenance: what was asked, from what, how many.
        assert_eq!(
            csv.provenance("text"),
            &query.get("text").cloned().unwrap_or(Value::Null)
        );
        assert_eq!(
            csv.provenance("filters"),
            &query.get("filters").cloned().unwrap_or(json!({}))
        );
        assert_eq!(csv.provenance("request"), &query, "{what}");
        assert_eq!(csv.provenance("total"), &json!(total));
        assert_eq!(csv.provenance("rows"), &json!(total));
        assert_eq!(csv.provenance("truncated"), &json!(false));
        assert_eq!(csv.provenance("model")["name"], json!(model));
        assert_eq!(csv.provenance("model")["weights_sha256"], json!(digest));
        assert_eq!(
            csv.provenance("generation"),
            &json!(shared_engine().generation())
        );
        assert_eq!(csv.provenance("version"), &json!(lesion_search::version()));
        let at = csv.provenance("exported_at").as_str().unwrap().to_string();
        assert!(is_rfc3339_utc(&at), "{at}");
        let grouped = query["group_by_patient"].as_bool().unwrap_or(true);
        assert_eq!(csv.provenance("group_by_patient"), &json!(grouped));
        if let Some(id) = query.get("lesion") {
            let example = csv.provenance("example");
            assert_eq!(&example["lesion"], id);
            assert!(example["lesion_key"].as_str().unwrap().ends_with(".png"));
        } else {
            assert_eq!(csv.provenance("example"), &Value::Null);
        }
        // Each signal's score where it found the lesion, empty where it did not.
        let (image, text_side) = (csv.column("image_cosine"), csv.column("text_bm25"));
        if query.get("lesion").is_some() && query.get("text").is_none() {
            assert!(image.iter().all(|c| c.parse::<f32>().is_ok()), "{what}");
            assert!(text_side.iter().all(|c| c.is_empty()), "{what}");
        }
        if query.get("text").is_some() && query.get("lesion").is_none() {
            assert!(text_side.iter().all(|c| c.parse::<f32>().is_ok()), "{what}");
            assert!(image.iter().all(|c| c.is_empty()), "{what}");
        }
        for (matched, (image, text_side)) in csv
            .column("matched")
            .iter()
            .zip(image.iter().zip(&text_side))
        {
            assert_eq!(
                !image.is_empty(),
                matches!(*matched, "image" | "both"),
                "{what}"
            );
            assert_eq!(
                !text_side.is_empty(),
                matches!(*matched, "text" | "both"),
                "{what}"
            );
        }
        if grouped {
            let mut patients = csv.column("Patient_index");
            patients.sort_unstable();
            patients.dedup();
            assert_eq!(patients.len(), total, "{what}: one row per patient");
        }
    }
}

#[actix_web::test]
async fn jsonl_holds_the_same_rows_after_a_provenance_line() {
    let app = test::init_service(app(state(Config::default()))).await;
    for (what, query) in queries() {
        let (ids, total) = paged_ids(&app, &query).await;
        let (status, media, body) = post(
            &app,
            "/api/export",
            json!({"query": query, "format": "jsonl"}),
        )
        .await;
        let text = String::from_utf8(body).unwrap();
        assert_eq!(status, StatusCode::OK, "{what}: {text}");
        assert!(media.starts_with("application/x-ndjson"), "{media}");
        let mut lines = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap());
        let first = lines.next().unwrap();
        let provenance = &first["provenance"];
        assert_eq!(first.as_object().unwrap().len(), 1, "{first}");
        assert_eq!(provenance["total"], json!(total));
        assert_eq!(provenance["rows"], json!(total));
        assert_eq!(provenance["request"], query);
        assert_eq!(
            provenance["generation"],
            json!(shared_engine().generation())
        );
        assert!(
            provenance["model"]["weights_sha256"]
                .as_str()
                .unwrap()
                .len()
                == 64
        );
        let rows: Vec<Value> = lines.collect();
        assert_eq!(rows.len(), total, "{what}");
        let exported: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
        assert_eq!(exported, ids, "{what}");
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row["rank"], json!(i + 1));
            assert!(row["score"].is_number());
            assert!(row["Bounding_boxes"].as_str().unwrap().split(", ").count() == 4);
            assert!(row["report"].is_string());
            let signal = row["matched"].as_str().unwrap();
            assert_eq!(
                row["image_cosine"].is_number(),
                matches!(signal, "image" | "both")
            );
            assert_eq!(
                row["text_bm25"].is_number(),
                matches!(signal, "text" | "both")
            );
        }
        // `json` is the same rows in one document, with the same provenance.
        let (status, _, body) = post(
            &app,
            "/api/export",
            json!({"query": query, "format": "json"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let document = json_of(&body);
        assert_eq!(document["total"], json!(total));
        assert_eq!(document["provenance"]["rows"], json!(total));
        assert_eq!(document["lesions"].as_array().unwrap(), &rows, "{what}");
    }
}

#[actix_web::test]
async fn deeplesion_columns_load_with_the_dl_info_reader() {
    let app = test::init_service(app(state(Config::default()))).await;
    let query = json!({"group_by_patient": false});
    let (status, _, body) = post(&app, "/api/export", json!({"query": query})).await;
    assert_eq!(status, StatusCode::OK);
    let csv = parse_csv(&String::from_utf8(body).unwrap());
    let engine = shared_engine();
    assert_eq!(csv.rows.len(), engine.live(), "no query: the whole archive");
    let ids = csv.column("id");
    let reader = DlInfoReader::from_reader(csv.table.as_bytes(), Path::new("export.csv")).unwrap();
    let mut read = 0;
    for (row, id) in reader.zip(ids) {
        let row = row.unwrap();
        let stored = engine.lesion(id.parse().unwrap()).unwrap().unwrap();
        assert_eq!(row.record, stored.record, "lesion {id}");
        read += 1;
    }
    assert_eq!(read, engine.live());
    // The columns DeepLesion's tools look for, under their names.
    for name in lesion_search::dataset::COLUMNS {
        assert!(csv.header.iter().any(|h| h == name), "{name}");
    }
}

#[actix_web::test]
async fn a_limit_cuts_the_list_and_says_so_and_the_cap_refuses_longer_lists() {
    let app = test::init_service(app(state(Config {
        max_export: 5,
        ..Config::default()
    })))
    .await;
    let query = json!({"group_by_patient": false, "filters": {"sex": "F"}});
    let (ids, total) = paged_ids(&app, &query).await;
    assert!(total > 5, "{total}");
    let (status, _, body) = post(
        &app,
        "/api/export",
        json!({"query": query, "format": "csv", "limit": 3}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let csv = parse_csv(&String::from_utf8(body).unwrap());
    let exported: Vec<u64> = csv
        .column("id")
        .iter()
        .map(|i| i.parse().unwrap())
        .collect();
    assert_eq!(exported, ids[..3]);
    assert_eq!(csv.provenance("truncated"), &json!(true));
    assert_eq!(csv.provenance("rows"), &json!(3));
    assert_eq!(csv.provenance("total"), &json!(total));
    assert_eq!(csv.provenance("limit"), &json!(3));
    // Without a limit, a list longer than the cap is refused, never cut silently.
    for body in [
        json!({"query": query}),
        json!({"query": query, "limit": 6}),
        json!({"query": query, "limit": 0}),
    ] {
        let (status, _, reply) = post(&app, "/api/export", body).await;
        assert_eq!(
            (status, error_field(&reply).as_str()),
            (StatusCode::BAD_REQUEST, "limit"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
    let (status, _, reply) = post(&app, "/api/export", json!({"format": "xls"})).await;
    assert_eq!(
        (status, error_field(&reply).as_str()),
        (StatusCode::BAD_REQUEST, "format")
    );
}

#[actix_web::test]
async fn field_queries_the_text_index_refuses_are_400_naming_text() {
    let app = test::init_service(app(state(Config::default()))).await;
    for text in ["report:*", "type:liver"] {
        for uri in ["/api/search", "/api/export"] {
            let body = if uri == "/api/search" {
                json!({"text": text})
            } else {
                json!({"query": {"text": text}})
            };
            let (status, _, reply) = post(&app, uri, body).await;
            assert_eq!(
                (status, error_field(&reply).as_str()),
                (StatusCode::BAD_REQUEST, "text"),
                "{uri} {text}: {}",
                String::from_utf8_lossy(&reply)
            );
        }
    }
}

/// Reports that a spreadsheet would run, or that a CSV reader would take for a comment.
const HOSTILE_REPORTS: [&str; 5] = [
    "=HYPERLINK(\"http://evil.example\",\"click\") formula lesion",
    "+1+cmd|' /C calc'!A0 formula lesion",
    "-2+3 formula lesion",
    "@SUM(A1) formula lesion",
    "# formula lesion, not a comment",
];

/// A small archive whose first reports are [`HOSTILE_REPORTS`], indexed.
fn hostile_index(dir: &Path) -> std::path::PathBuf {
    let archive = dir.join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let options = SynthOptions {
        lesions: 24,
        seed: 11,
        label_train: true,
        ..Default::default()
    };
    generate(&archive, &options, &|_, _| {}).unwrap();
    let reports_path = archive.join("reports.jsonl");
    let reports = read_reports(&reports_path).unwrap();
    let mut entries: Vec<ReportEntry> = reports
        .into_iter()
        .map(|((file_name, lesion), text)| ReportEntry {
            file_name,
            lesion,
            text,
        })
        .collect();
    entries.sort_by(|a, b| (&a.file_name, a.lesion).cmp(&(&b.file_name, b.lesion)));
    for (entry, hostile) in entries.iter_mut().zip(HOSTILE_REPORTS) {
        entry.text = hostile.to_string();
    }
    let hostile_reports = dir.join("reports.jsonl");
    write_reports(std::fs::File::create(&hostile_reports).unwrap(), &entries).unwrap();
    let model = bundled_lesion_cnn().unwrap();
    let index = dir.join("index");
    build(
        &index,
        &BuildOptions {
            dataset: archive,
            reports: Some(hostile_reports),
            model: &model as &dyn Embedder,
            graph: GraphParams::default(),
            labels: None,
        },
        &|_| {},
    )
    .unwrap();
    index
}

#[actix_web::test]
async fn formula_cells_are_neutralised_and_a_hash_starts_no_comment() {
    let dir = tempfile::tempdir().unwrap();
    let index = hostile_index(dir.path());
    let state =
        actix_web::web::Data::new(AppState::open(index, model(), Config::default()).unwrap());
    let app = test::init_service(app(state)).await;
    // The query text is hostile too: it lands in the provenance lines.
    let query = json!({"text": "formula lesion, =1+2", "group_by_patient": false});
    let (ids, total) = paged_ids(&app, &query).await;
    assert!(total >= HOSTILE_REPORTS.len(), "{total}");
    let (status, _, body) = post(&app, "/api/export", json!({"query": query})).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    // No line of the file, provenance included, has a cell that a spreadsheet would run.
    for line in text.lines() {
        for cell in spreadsheet_cells(line) {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']) || is_number_list(&cell),
                "a formula cell {cell:?} in {line}"
            );
        }
    }
    let csv = parse_csv(&text);
    assert_eq!(csv.rows.len(), total);
    let exported: Vec<u64> = csv
        .column("id")
        .iter()
        .map(|i| i.parse().unwrap())
        .collect();
    assert_eq!(exported, ids);
    assert_eq!(csv.provenance("text"), &query["text"]);
    let reports = csv.column("report");
    for hostile in HOSTILE_REPORTS {
        let expected = if hostile.starts_with('#') {
            hostile.to_string()
        } else {
            format!("'{hostile}")
        };
        assert!(
            reports.contains(&expected.as_str()),
            "{expected} in {reports:?}"
        );
    }
}

/// A line split into cells as a spreadsheet reads a CSV line: quoted cells unquoted, a quote
/// inside an unquoted cell kept.
fn spreadsheet_cells(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut at_start = true;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        let cell = cells.last_mut().unwrap();
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if at_start => quoted = true,
            (false, ',') => {
                cells.push(String::new());
                at_start = true;
                continue;
            }
            (_, c) => cell.push(c),
        }
        at_start = false;
    }
    cells
}

/// DeepLesion's number lists (`-175, 275`): numbers the server writes, not text.
fn is_number_list(cell: &str) -> bool {
    cell.split(", ").all(|n| n.parse::<f64>().is_ok())
}

fn is_rfc3339_utc(at: &str) -> bool {
    let b = at.as_bytes();
    at.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && at
            .chars()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19].contains(&i) || c.is_ascii_digit())
}
