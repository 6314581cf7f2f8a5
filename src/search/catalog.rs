//! The searchable metadata of every live lesion, held in memory: filters become id sets
//! with one pass over compact rows (32k lesions in well under a millisecond), and facets are
//! counted over any id set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dataset::{CoarseType, Sex, Split};
use crate::error::Result;
use crate::index::IdSet;
use crate::store::{RecordStore, StoredLesion};

/// What filters and facets read of one lesion.
#[derive(Debug, Clone, PartialEq)]
pub struct LesionFacts {
    pub key: String,
    pub patient: u32,
    pub study: u32,
    pub coarse_type: CoarseType,
    pub sex: Sex,
    pub age: Option<f32>,
    pub long_mm: f32,
    pub short_mm: f32,
    /// Normalized body location (x, y, z), each in 0..1.
    pub location: [f32; 3],
    pub split: Split,
}

impl LesionFacts {
    pub fn of(lesion: &StoredLesion) -> Self {
        let r = &lesion.record;
        LesionFacts {
            key: lesion.key.clone(),
            patient: r.patient,
            study: r.study,
            coarse_type: r.coarse_type,
            sex: r.sex,
            age: r.age,
            long_mm: r.long_diameter_mm(),
            short_mm: r.short_diameter_mm(),
            location: [r.location.x, r.location.y, r.location.z],
            split: r.split,
        }
    }
}

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
    pub fn accepts(&self, f: &LesionFacts) -> bool {
        (self.types.is_empty() || self.types.contains(&f.coarse_type))
            && self.sex.is_none_or(|s| s == f.sex)
            && (self.age.is_open() || f.age.is_some_and(|a| self.age.contains(a)))
            && self.long_mm.contains(f.long_mm)
            && self.location_x.contains(f.location[0])
            && self.location_y.contains(f.location[1])
            && self.location_z.contains(f.location[2])
            && self.split.is_none_or(|s| s == f.split)
            && !self.exclude_patients.contains(&f.patient)
    }

    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}

/// Counts per value of the faceted fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Facets {
    pub total: usize,
    pub types: BTreeMap<String, usize>,
    pub sex: BTreeMap<String, usize>,
    /// `"0-19"`, `"20-39"`, ... `"80+"`, `"unknown"`.
    pub age: BTreeMap<String, usize>,
    /// Long diameter: `"<10"`, `"10-19"`, `"20-29"`, `"30-49"`, `"50+"` (mm).
    pub size_mm: BTreeMap<String, usize>,
    pub split: BTreeMap<String, usize>,
}

fn age_bin(age: Option<f32>) -> &'static str {
    match age {
        None => "unknown",
        Some(a) if a < 20.0 => "0-19",
        Some(a) if a < 40.0 => "20-39",
        Some(a) if a < 60.0 => "40-59",
        Some(a) if a < 80.0 => "60-79",
        Some(_) => "80+",
    }
}

fn size_bin(mm: f32) -> &'static str {
    match mm {
        m if m < 10.0 => "<10",
        m if m < 20.0 => "10-19",
        m if m < 30.0 => "20-29",
        m if m < 50.0 => "30-49",
        _ => "50+",
    }
}

fn sex_name(sex: Sex) -> &'static str {
    match sex {
        Sex::Female => "F",
        Sex::Male => "M",
        Sex::Unknown => "unknown",
    }
}

/// Facts of every live lesion by dense id.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    facts: Vec<Option<LesionFacts>>,
    live: usize,
}

impl Catalog {
    pub fn load(records: &RecordStore, ids: usize) -> Result<Self> {
        let mut facts = vec![None; ids];
        let mut live = 0;
        for (id, lesion) in records.all()? {
            if let Some(slot) = facts.get_mut(id as usize) {
                *slot = Some(LesionFacts::of(&lesion));
                live += 1;
            }
        }
        Ok(Catalog { facts, live })
    }

    pub fn get(&self, id: u32) -> Option<&LesionFacts> {
        self.facts.get(id as usize).and_then(Option::as_ref)
    }

    /// Ids (live and dead) the catalog spans.
    pub fn capacity(&self) -> usize {
        self.facts.len()
    }

    pub fn live(&self) -> usize {
        self.live
    }

    /// Live ids passing `filter`.
    pub fn allowed(&self, filter: &Filter) -> IdSet {
        let mut set = IdSet::new(self.facts.len());
        for (id, facts) in self.facts.iter().enumerate() {
            if facts.as_ref().is_some_and(|f| filter.accepts(f)) {
                set.insert(id as u32);
            }
        }
        set
    }

    /// Ids of one patient's lesions.
    pub fn of_patient(&self, patient: u32) -> Vec<u32> {
        self.facts
            .iter()
            .enumerate()
            .filter(|(_, f)| f.as_ref().is_some_and(|f| f.patient == patient))
            .map(|(id, _)| id as u32)
            .collect()
    }

    /// Facet counts over `ids`: counted in arrays (this runs on every request), named once.
    pub fn facets(&self, ids: &IdSet) -> Facets {
        const AGE_BINS: [&str; 6] = ["0-19", "20-39", "40-59", "60-79", "80+", "unknown"];
        const SIZE_BINS: [&str; 5] = ["<10", "10-19", "20-29", "30-49", "50+"];
        let mut types = [0usize; 9];
        let mut sexes = [0usize; 3];
        let mut ages = [0usize; AGE_BINS.len()];
        let mut sizes = [0usize; SIZE_BINS.len()];
        let mut splits = [0usize; 3];
        let mut total = 0;
        for id in ids.iter() {
            let Some(f) = self.get(id) else { continue };
            total += 1;
            types[type_slot(f.coarse_type)] += 1;
            sexes[f.sex as usize] += 1;
            let age = age_bin(f.age);
            ages[AGE_BINS.iter().position(|b| *b == age).unwrap_or(5)] += 1;
            let size = size_bin(f.long_mm);
            sizes[SIZE_BINS.iter().position(|b| *b == size).unwrap_or(0)] += 1;
            splits[(f.split.code() - 1).clamp(0, 2) as usize] += 1;
        }
        let named = |names: &[&str], counts: &[usize]| -> BTreeMap<String, usize> {
            names
                .iter()
                .zip(counts)
                .filter(|(_, &c)| c > 0)
                .map(|(n, &c)| (n.to_string(), c))
                .collect()
        };
        let type_names: Vec<&str> = ALL_TYPES.iter().map(|t| t.name()).collect();
        // `Sex` discriminants are 0, 1, 2 in this order.
        let sex_names = [Sex::Female, Sex::Male, Sex::Unknown].map(sex_name);
        Facets {
            total,
            types: named(&type_names, &types),
            sex: named(&sex_names, &sexes),
            age: named(&AGE_BINS, &ages),
            size_mm: named(&SIZE_BINS, &sizes),
            split: named(&["train", "validation", "test"], &splits),
        }
    }
}

const ALL_TYPES: [CoarseType; 9] = [
    CoarseType::Bone,
    CoarseType::Abdomen,
    CoarseType::Mediastinum,
    CoarseType::Liver,
    CoarseType::Lung,
    CoarseType::Kidney,
    CoarseType::SoftTissue,
    CoarseType::Pelvis,
    CoarseType::Unknown,
];

fn type_slot(t: CoarseType) -> usize {
    ALL_TYPES.iter().position(|x| *x == t).unwrap_or(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(patient: u32, age: Option<f32>, long_mm: f32) -> LesionFacts {
        LesionFacts {
            key: format!("{patient}.png"),
            patient,
            study: 1,
            coarse_type: CoarseType::Lung,
            sex: Sex::Female,
            age,
            long_mm,
            short_mm: long_mm / 2.0,
            location: [0.5, 0.4, 0.3],
            split: Split::Test,
        }
    }

    #[test]
    fn ranges_are_inclusive_and_missing_ages_fail_an_age_range() {
        let filter = Filter {
            age: Range {
                min: Some(40.0),
                max: Some(60.0),
            },
            ..Default::default()
        };
        assert!(filter.accepts(&facts(1, Some(40.0), 5.0)));
        assert!(filter.accepts(&facts(1, Some(60.0), 5.0)));
        assert!(!filter.accepts(&facts(1, Some(61.0), 5.0)));
        assert!(!filter.accepts(&facts(1, None, 5.0)));
        assert!(Filter::default().accepts(&facts(1, None, 5.0)));
        let excluding = Filter {
            exclude_patients: vec![7],
            ..Default::default()
        };
        assert!(!excluding.accepts(&facts(7, None, 5.0)));
    }

    #[test]
    fn bins_cover_every_value() {
        assert_eq!(age_bin(Some(0.0)), "0-19");
        assert_eq!(age_bin(Some(39.9)), "20-39");
        assert_eq!(age_bin(Some(85.0)), "80+");
        assert_eq!(age_bin(None), "unknown");
        assert_eq!(size_bin(9.99), "<10");
        assert_eq!(size_bin(49.0), "30-49");
        assert_eq!(size_bin(120.0), "50+");
    }
}
