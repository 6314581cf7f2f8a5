//! The OpenAPI 3.1 document, generated from the route table ([`crate::api::ROUTES`]) and the
//! wire types' JSON Schemas (schemars). Nothing about a route is written twice.

use std::sync::OnceLock;

use schemars::generate::{Contract, SchemaSettings};
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

use crate::access::Access;
use crate::api::routes::{Body, Route, SchemaOf};
use crate::api::ROUTES;
use crate::wire::ErrorReply;

/// Path parameters by name, as every route that takes one reads it.
const PATH_PARAMETERS: &[(&str, &str)] = &[
    (
        "id",
        "Dense lesion id, or the lesion key (its File_name; `%23n` appended for the n-th lesion of a slice); a task id on the task routes",
    ),
    ("upload", "The id `POST /api/uploads` answered"),
];

/// The document, made once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(generate)
}

/// Schemas describe what the server sends in replies and what it accepts in requests: two
/// generators, since a defaulted field is always sent but never required.
struct Generators {
    replies: SchemaGenerator,
    requests: SchemaGenerator,
}

fn settings(contract: Contract) -> SchemaSettings {
    SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
        s.contract = contract;
    })
}

fn generate() -> Value {
    let mut generators = Generators {
        replies: settings(Contract::Serialize).into_generator(),
        requests: settings(Contract::Deserialize).into_generator(),
    };
    let error_schema = generators.replies.subschema_for::<ErrorReply>();
    let mut paths: Map<String, Value> = Map::new();
    for route in ROUTES {
        let operation = operation(route, &mut generators);
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[route.method.as_str().to_ascii_lowercase()] = operation;
    }
    let mut schemas = generators.replies.take_definitions(true);
    for (name, schema) in generators.requests.take_definitions(true) {
        match schemas.get(&name) {
            // A type both sent and accepted must read the same both ways.
            Some(existing) if *existing != schema => {
                schemas.insert(format!("{name}Request"), schema);
            }
            _ => {
                schemas.insert(name, schema);
            }
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Lesion Search API",
            "version": lesion_search::version(),
            "description": "Search CT lesions by text, by an image example or by a stored lesion, with filters, facets, follow-ups and cohort export. Every error is JSON `{\"error\": {\"code\", \"message\", \"field\"}}`, `field` naming the request part at fault.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                "Error": {
                    "description": "An error; `code` says which, `field` names the request part at fault",
                    "content": {"application/json": {"schema": error_schema}},
                },
            },
            "securitySchemes": {
                "readKey": {"type": "http", "scheme": "bearer", "description": "The read key, when the server has one (also `X-Api-Key`)"},
                "adminKey": {"type": "http", "scheme": "bearer", "description": "The admin key; write routes are off without one"},
            },
        },
    })
}

fn operation(route: &Route, generators: &mut Generators) -> Value {
    let mut operation = Map::new();
    operation.insert("summary".into(), route.summary.into());
    operation.insert(
        "operationId".into(),
        format!(
            "{} {}",
            route.method.as_str().to_ascii_lowercase(),
            route.path
        )
        .into(),
    );
    let parameters = parameters(route, generators);
    if !parameters.is_empty() {
        operation.insert("parameters".into(), parameters.into());
    }
    if let Some(body) = &route.request {
        operation.insert(
            "requestBody".into(),
            json!({"required": true, "content": content(body, &mut generators.requests)}),
        );
    }
    let mut responses = Map::new();
    let mut ok = json!({
        "description": route.answer,
        "content": content(&route.reply, &mut generators.replies),
    });
    if route.status == 202 {
        ok["headers"] =
            json!({"Location": {"schema": {"type": "string"}, "description": "The task's route"}});
    }
    responses.insert(route.status.to_string(), ok);
    for status in route.statuses() {
        if status != route.status {
            responses.insert(
                status.to_string(),
                json!({"$ref": "#/components/responses/Error"}),
            );
        }
    }
    operation.insert("responses".into(), responses.into());
    let security = match route.access {
        Access::Open => json!([]),
        Access::Read => json!([{"readKey": []}, {"adminKey": []}]),
        Access::Admin => json!([{"adminKey": []}]),
    };
    operation.insert("security".into(), security);
    operation.into()
}

/// The path's `{name}` parameters, then the query's fields.
fn parameters(route: &Route, generators: &mut Generators) -> Vec<Value> {
    let mut out = Vec::new();
    for segment in route.path.split('/') {
        let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
            continue;
        };
        let description = PATH_PARAMETERS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| *d)
            .unwrap_or_else(|| panic!("{}: undocumented path parameter {name}", route.path));
        out.push(json!({
            "name": name, "in": "path", "required": true,
            "description": description, "schema": {"type": "string"},
        }));
    }
    if let Some(query) = route.query {
        let schema = inline(query, &mut generators.requests);
        let required: Vec<Value> = schema["required"].as_array().cloned().unwrap_or_default();
        if let Some(fields) = schema["properties"].as_object() {
            for (name, field) in fields {
                let mut field = field.clone();
                let description = field.as_object_mut().and_then(|f| f.remove("description"));
                let mut parameter = json!({
                    "name": name, "in": "query",
                    "required": required.contains(&Value::String(name.clone())),
                    "schema": field,
                });
                if let Some(description) = description {
                    parameter["description"] = description;
                }
                out.push(parameter);
            }
        }
    }
    out
}

/// A type's own schema rather than a reference to it (query fields become parameters).
fn inline(schema_of: SchemaOf, generator: &mut SchemaGenerator) -> Value {
    let reference = schema_of(generator).to_value();
    match reference["$ref"].as_str() {
        Some(path) => {
            let name = path.rsplit('/').next().unwrap_or_default();
            generator
                .definitions()
                .get(name)
                .cloned()
                .unwrap_or(Value::Null)
        }
        None => reference,
    }
}

fn content(body: &Body, generator: &mut SchemaGenerator) -> Value {
    let binary = json!({"type": "string", "format": "binary"});
    match body {
        Body::Json(schema) => json!({"application/json": {"schema": schema(generator)}}),
        Body::Form(schema) => json!({"multipart/form-data": {"schema": schema(generator)}}),
        Body::JsonOrForm(json, form) => json!({
            "application/json": {"schema": json(generator)},
            "multipart/form-data": {"schema": form(generator)},
        }),
        // The export: CSV, JSON Lines or one JSON document (`format`), each with the same
        // provenance and rows (the JSON document's schema names both).
        Body::CsvOrJson(schema) => json!({
            "text/csv": {"schema": {
                "type": "string",
                "description": "Provenance as leading `# key: value` lines (each value JSON; pandas: `comment=\"#\"`), then a header row of ExportRow's fields in order and one row per hit in list order",
            }},
            "application/x-ndjson": {"schema": {
                "type": "string",
                "description": "JSON Lines: `{\"provenance\": ExportProvenance}`, then one ExportRow per line in list order",
            }},
            "application/json": {"schema": schema(generator)},
        }),
        Body::Bytes(media) => one_type(media, json!({"schema": binary})),
        Body::Text(media) => one_type(media, json!({"schema": {"type": "string"}})),
    }
}

fn one_type(media: &str, content: Value) -> Value {
    let mut map = Map::new();
    map.insert(media.to_string(), content);
    map.into()
}
