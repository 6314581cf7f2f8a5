//! The metadata filter of a request: which lesions it may return. The engine turns it into
//! an id set over its catalog; an external backend turns it into its own filter expression.

use serde::{Deserialize, Serialize};

use crate::dataset::{CoarseType, Sex, Split};

/// An inclusive range; either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Range {
    pub min: Option<f32>,
    pub max: Option<f32>,
}

impl Range {
    pub fn contains(&self, value: f32) -> bool {
        self.min.is_none_or(|m| value >= m) && self.max.is_none_or(|m| value <= m)
    }

    pub fn is_open(&self) -> bool {
        self.min.is_none() && self.max.is_none()
    }
}

/// Metadata filters; an empty filter lets every live lesion through.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// Any of these coarse types (none: all).
    pub types: Vec<CoarseType>,
    pub sex: Option<Sex>,
    /// Lesions without a recorded age fail an age range.
    pub age: Range,
    /// Long diameter in mm.
    pub long_mm: Range,
    /// Normalized location box, per axis.
    pub location_x: Range,
    pub location_y: Range,
    pub location_z: Range,
    pub split: Option<Split>,
    pub exclude_patients: Vec<u32>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}
