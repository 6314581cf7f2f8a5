//! Checks a JSON value against a schema of the OpenAPI document: the part of JSON Schema
//! 2020-12 that the generated schemas use (`$ref`, `type`, `properties`, `required`,
//! `additionalProperties`, `items`, `prefixItems`, `enum`, `const`, `anyOf`, `oneOf`,
//! `allOf`, numeric bounds). A reply field the schema does not name is a failure: the document
//! must say everything the server sends.

use serde_json::Value;

/// Every mismatch between `value` and `schema`, with the JSON path of each.
pub fn mismatches(document: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check(document, schema, value, "$", true, &mut out);
    out
}

fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            let target = document
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling reference {reference}"));
            resolve(document, target)
        }
        None => schema,
    }
}

/// A value shortened for a message.
fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(120) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        other => panic!("unknown type {other}"),
    }
}

/// Property names a schema (and the schemas it combines with `allOf`) names.
fn named_properties<'a>(document: &'a Value, schema: &'a Value, names: &mut Vec<&'a str>) -> bool {
    let schema = resolve(document, schema);
    let mut open = schema
        .get("additionalProperties")
        .is_some_and(|a| a != &Value::Bool(false));
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        names.extend(properties.keys().map(String::as_str));
    }
    for part in ["allOf", "anyOf", "oneOf"] {
        for sub in schema
            .get(part)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            open |= named_properties(document, sub, names);
        }
    }
    open
}

/// `strict`: a field the schema does not name is a mismatch (not so inside `allOf`, whose
/// parts each name some of the fields).
fn check(
    document: &Value,
    schema: &Value,
    value: &Value,
    path: &str,
    strict: bool,
    out: &mut Vec<String>,
) {
    let schema = resolve(document, schema);
    if schema == &Value::Bool(true) {
        return;
    }
    if let Some(types) = schema.get("type") {
        let fits = match types {
            Value::String(name) => type_matches(name, value),
            Value::Array(names) => names
                .iter()
                .any(|n| type_matches(n.as_str().unwrap_or_default(), value)),
            _ => true,
        };
        if !fits {
            out.push(format!("{path}: {} is not of type {types}", short(value)));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            out.push(format!(
                "{path}: {} is not one of {allowed:?}",
                short(value)
            ));
        }
    }
    if let Some(constant) = schema.get("const") {
        if constant != value {
            out.push(format!("{path}: {} is not {constant}", short(value)));
        }
    }
    if let (Some(minimum), Some(v)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) {
        if v < minimum {
            out.push(format!("{path}: {v} is below {minimum}"));
        }
    }
    for part in ["anyOf", "oneOf"] {
        if let Some(options) = schema.get(part).and_then(Value::as_array) {
            let fits = options.iter().any(|option| {
                let mut inner = Vec::new();
                check(document, option, value, path, strict, &mut inner);
                inner.is_empty()
            });
            if !fits {
                out.push(format!("{path}: {} fits none of {part}", short(value)));
            }
        }
    }
    for sub in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check(document, sub, value, path, false, out);
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                out.push(format!("{path}: required `{name}` is missing"));
            }
        }
        let mut names = Vec::new();
        let open = named_properties(document, schema, &mut names);
        for (name, field) in object {
            if let Some(field_schema) = properties.and_then(|p| p.get(name)) {
                check(
                    document,
                    field_schema,
                    field,
                    &format!("{path}.{name}"),
                    true,
                    out,
                );
            } else if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object())
            {
                check(document, extra, field, &format!("{path}.{name}"), true, out);
            } else if strict && !open && !names.contains(&name.as_str()) {
                out.push(format!("{path}: `{name}` is not in the schema"));
            }
        }
    }
    if let Some(items) = value.as_array() {
        let prefix = schema.get("prefixItems").and_then(Value::as_array);
        for (i, item) in items.iter().enumerate() {
            let item_schema = prefix
                .and_then(|p| p.get(i))
                .or_else(|| schema.get("items").filter(|s| s.is_object()));
            if let Some(item_schema) = item_schema {
                check(
                    document,
                    item_schema,
                    item,
                    &format!("{path}[{i}]"),
                    true,
                    out,
                );
            }
        }
        if let Some(prefix) = prefix {
            if schema.get("items") == Some(&Value::Bool(false)) && items.len() > prefix.len() {
                out.push(format!(
                    "{path}: {} items, at most {}",
                    items.len(),
                    prefix.len()
                ));
            }
        }
        for (bound, ok) in [
            (
                "minItems",
                (|n: usize, b: u64| n as u64 >= b) as fn(usize, u64) -> bool,
            ),
            ("maxItems", |n, b| n as u64 <= b),
        ] {
            if let Some(b) = schema.get(bound).and_then(Value::as_u64) {
                if !ok(items.len(), b) {
                    out.push(format!("{path}: {} items against {bound} {b}", items.len()));
                }
            }
        }
    }
}
