//! A request's [`Filter`] as a Milvus boolean expression over the collection's scalar
//! fields.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::filter::{Filter, Range};

/// A Milvus boolean expression true exactly for the lesions `filter` accepts. Bounds are
/// written as the exact decimal of their f32, so the server's comparison agrees with ours
/// at the boundary.
pub fn expression_of(filter: &Filter) -> String {
    let mut terms = Vec::new();
    if !filter.types.is_empty() {
        let names: Vec<String> = filter
            .types
            .iter()
            .map(|t| format!("\"{}\"", wire_name(t)))
            .collect();
        terms.push(format!("coarse_type in [{}]", names.join(", ")));
    }
    if let Some(sex) = filter.sex {
        terms.push(format!("sex == \"{}\"", wire_name(&sex)));
    }
    if !filter.age.is_open() {
        terms.push("age >= 0".to_string());
    }
    for (field, range) in [
        ("age", &filter.age),
        ("long_mm", &filter.long_mm),
        ("location_x", &filter.location_x),
        ("location_y", &filter.location_y),
        ("location_z", &filter.location_z),
    ] {
        push_range(&mut terms, field, range);
    }
    if let Some(split) = filter.split {
        terms.push(format!("split == \"{}\"", wire_name(&split)));
    }
    if !filter.exclude_patients.is_empty() {
        let set: BTreeSet<u32> = filter.exclude_patients.iter().copied().collect();
        let list: Vec<String> = set.iter().map(u32::to_string).collect();
        terms.push(format!("patient not in [{}]", list.join(", ")));
    }
    terms.join(" and ")
}

/// The serde name of an enum value (`lung`, `female`, `test`), as the wire and the
/// collection spell it.
pub(super) fn wire_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn push_range(terms: &mut Vec<String>, field: &str, range: &Range) {
    if let Some(min) = range.min {
        terms.push(format!("{field} >= {}", exact_decimal(min)));
    }
    if let Some(max) = range.max {
        terms.push(format!("{field} <= {}", exact_decimal(max)));
    }
}

/// The f32 widened to f64, printed so that it parses back to that exact value.
fn exact_decimal(value: f32) -> String {
    let wide = value as f64;
    if wide.is_finite() {
        format!("{wide:?}")
    } else if wide > 0.0 {
        "1e300".into()
    } else {
        "-1e300".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{CoarseType, Sex, Split};

    #[test]
    fn an_empty_filter_is_an_empty_expression() {
        assert_eq!(expression_of(&Filter::default()), "");
    }

    #[test]
    fn every_field_of_a_filter_becomes_a_term() {
        let filter = Filter {
            types: vec![CoarseType::Lung, CoarseType::SoftTissue],
            sex: Some(Sex::Female),
            age: Range {
                min: Some(40.0),
                max: None,
            },
            long_mm: Range {
                min: None,
                max: Some(0.3),
            },
            split: Some(Split::Test),
            exclude_patients: vec![7, 3, 7],
            ..Filter::default()
        };
        assert_eq!(
            expression_of(&filter),
            "coarse_type in [\"lung\", \"soft_tissue\"] and sex == \"female\" and age >= 0 \
             and age >= 40.0 and long_mm <= 0.30000001192092896 and split == \"test\" \
             and patient not in [3, 7]"
        );
    }

    #[test]
    fn bounds_are_the_exact_value_of_the_f32() {
        for value in [0.1f32, 0.3, 1e-7, 123.456, -2.5] {
            let text = exact_decimal(value);
            assert_eq!(text.parse::<f64>().unwrap(), value as f64, "{text}");
        }
        assert_eq!(exact_decimal(f32::INFINITY), "1e300");
    }
}
