//! What users type, made typed once for every edge: filter values and lesion references.
//! The server and the command line both map their input onto these, so they accept and
//! refuse the same things; errors name the argument (with the caller's prefix).

use serde::Deserialize;

use super::Engine;
use crate::dataset::{CoarseType, Sex, Split};
use crate::error::{Error, Result};
use crate::filter::{Filter, Range};

/// A lesion named by its dense id or its key (`File_name`, `#n` for the n-th on a slice).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum LesionRef {
    Id(u32),
    Key(String),
}

impl LesionRef {
    /// Digits are an id; anything else a key.
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        match text.parse::<u32>() {
            Ok(id) => LesionRef::Id(id),
            Err(_) => LesionRef::Key(text.to_string()),
        }
    }
}

impl std::fmt::Display for LesionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LesionRef::Id(id) => write!(f, "{id}"),
            LesionRef::Key(key) => write!(f, "`{key}`"),
        }
    }
}

impl Engine {
    /// The live lesion `reference` names; [`Error::NoSuchLesion`] naming `name` otherwise.
    pub fn resolve(&self, reference: &LesionRef, name: &str) -> Result<u32> {
        let id = match reference {
            LesionRef::Id(id) => Some(*id),
            LesionRef::Key(key) => match key.parse::<u32>() {
                Ok(id) => Some(id),
                Err(_) => self.id_of(key)?,
            },
        };
        id.filter(|&id| self.is_live(id))
            .ok_or_else(|| Error::NoSuchLesion {
                name: name.to_string(),
                reference: reference.to_string(),
            })
    }
}

/// `[min, max]`, either end open.
pub type Bounds = [Option<f32>; 2];

/// Metadata filters as typed by a user; [`FilterInput::to_filter`] checks every value. The
/// server's JSON `filters` object is this type (named `FilterBody` in its schema).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "FilterBody")
)]
pub struct FilterInput {
    /// Coarse types: bone, abdomen, mediastinum, liver, lung, kidney, soft_tissue, pelvis,
    /// unknown.
    pub types: Vec<String>,
    /// `F`, `M` (or female, male).
    pub sex: Option<String>,
    pub age: Option<Bounds>,
    /// Long diameter in mm.
    pub size_mm: Option<Bounds>,
    /// Normalized location box (each axis 0..1).
    pub location_x: Option<Bounds>,
    pub location_y: Option<Bounds>,
    pub location_z: Option<Bounds>,
    /// train, validation or test.
    pub split: Option<String>,
    pub exclude_patients: Vec<u32>,
}

impl FilterInput {
    /// The filter; an error names the argument as `prefix` + its name (`types[1]`, `age`).
    pub fn to_filter(&self, prefix: &str) -> Result<Filter> {
        let name = |n: &str| format!("{prefix}{n}");
        Ok(Filter {
            types: self
                .types
                .iter()
                .enumerate()
                .map(|(i, t)| parse_type(t, &name(&format!("types[{i}]"))))
                .collect::<Result<_>>()?,
            sex: self
                .sex
                .as_deref()
                .map(|s| parse_sex(s, &name("sex")))
                .transpose()?,
            age: range(self.age, &name("age"))?,
            long_mm: range(self.size_mm, &name("size_mm"))?,
            location_x: range(self.location_x, &name("location_x"))?,
            location_y: range(self.location_y, &name("location_y"))?,
            location_z: range(self.location_z, &name("location_z"))?,
            split: self
                .split
                .as_deref()
                .map(|s| parse_split(s, &name("split")))
                .transpose()?,
            exclude_patients: self.exclude_patients.clone(),
        })
    }
}

pub fn parse_sex(text: &str, name: &str) -> Result<Sex> {
    Sex::parse(text).ok_or_else(|| {
        Error::invalid_argument(name, format!("`{}` is not F, M or unknown", text.trim()))
    })
}

pub fn parse_type(text: &str, name: &str) -> Result<CoarseType> {
    CoarseType::parse(text).ok_or_else(|| {
        Error::invalid_argument(
            name,
            format!(
                "`{}` is not a coarse type (bone, abdomen, mediastinum, liver, lung, kidney, soft_tissue, pelvis, unknown)",
                text.trim()
            ),
        )
    })
}

pub fn parse_split(text: &str, name: &str) -> Result<Split> {
    Split::parse(text).ok_or_else(|| {
        Error::invalid_argument(
            name,
            format!("`{}` is not train, validation or test", text.trim()),
        )
    })
}

/// A range from its two ends: finite, and the minimum not above the maximum.
pub fn range(bounds: Option<Bounds>, name: &str) -> Result<Range> {
    let Some([min, max]) = bounds else {
        return Ok(Range::default());
    };
    for end in [min, max].into_iter().flatten() {
        if !end.is_finite() {
            return Err(Error::invalid_argument(
                name,
                format!("{end} is not a finite number"),
            ));
        }
    }
    if let (Some(a), Some(b)) = (min, max) {
        if a > b {
            return Err(Error::invalid_argument(
                name,
                format!("minimum {a} is above maximum {b}"),
            ));
        }
    }
    Ok(Range { min, max })
}

/// `min,max` as typed on a command line (either end may be empty).
pub fn parse_bounds(text: &str, name: &str) -> Result<Bounds> {
    let (min, max) = text.split_once(',').ok_or_else(|| {
        Error::invalid_argument(
            name,
            format!("`{text}` is not min,max (either may be empty)"),
        )
    })?;
    let end = |v: &str| -> Result<Option<f32>> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        v.parse()
            .map(Some)
            .map_err(|_| Error::invalid_argument(name, format!("`{v}` is not a number")))
    };
    Ok([end(min)?, end(max)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_edges_refuse_the_same_values_naming_the_argument() {
        let bad = |input: FilterInput| input.to_filter("filters.").unwrap_err().to_string();
        let reversed = FilterInput {
            age: Some([Some(60.0), Some(40.0)]),
            ..Default::default()
        };
        assert!(bad(reversed).starts_with("filters.age: minimum 60"));
        let sex = FilterInput {
            sex: Some("x".into()),
            ..Default::default()
        };
        assert!(bad(sex).starts_with("filters.sex:"));
        let types = FilterInput {
            types: vec!["lung".into(), "brain".into()],
            ..Default::default()
        };
        assert!(bad(types).starts_with("filters.types[1]:"));
        let infinite = FilterInput {
            size_mm: Some([None, Some(f32::INFINITY)]),
            ..Default::default()
        };
        assert!(bad(infinite).starts_with("filters.size_mm:"));
        assert_eq!(parse_bounds("5,", "size_mm").unwrap(), [Some(5.0), None]);
        assert!(parse_bounds("5", "size_mm").is_err());
        let good = FilterInput {
            types: vec!["Lung".into(), "4".into()],
            sex: Some("female".into()),
            age: Some([Some(40.0), None]),
            split: Some("val".into()),
            ..Default::default()
        };
        let filter = good.to_filter("").unwrap();
        assert_eq!(filter.types, [CoarseType::Lung, CoarseType::Liver]);
        assert_eq!(filter.sex, Some(Sex::Female));
        assert_eq!(filter.split, Some(Split::Validation));
    }

    #[test]
    fn digits_are_ids_and_the_rest_keys() {
        assert_eq!(LesionRef::parse(" 42 "), LesionRef::Id(42));
        assert_eq!(
            LesionRef::parse("000001_01_01_010.png#1"),
            LesionRef::Key("000001_01_01_010.png#1".into())
        );
    }
}
