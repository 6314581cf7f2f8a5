//! Report sentences in the LesaNet ontology's vocabulary, consistent with each lesion.

use super::lesion::{Family, TrackedLesion};
use crate::util::Rng;

/// What the sentence says about change since the previous study of the same lesion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    Baseline,
    Since { previous_mm: f32 },
}

/// The ontology terms a family's sentences may use for its type and attributes.
pub fn family_terms(family: Family) -> (&'static [&'static str], &'static [&'static str]) {
    match family {
        Family::SolidNodule => (
            &["solid pulmonary nodule", "lung nodule", "nodule"],
            &["solid", "round", "circumscribed"],
        ),
        Family::GroundGlassNodule => (
            &["ground-glass opacity", "nodule"],
            &["indistinct", "noncalcified"],
        ),
        Family::SpiculatedNodule => (
            &["spiculated mass", "lung mass", "nodule"],
            &["spiculated", "irregular", "solid"],
        ),
        Family::HypodenseLiver => (
            &["metastasis", "cyst", "liver mass"],
            &["hypoattenuation", "circumscribed"],
        ),
        Family::HyperdenseLiver => (
            &["hemangioma", "liver mass"],
            &["hyperattenuation", "enhancing"],
        ),
        Family::KidneyCyst => (
            &["kidney cyst", "simple cyst", "cyst"],
            &["hypoattenuation", "circumscribed", "round"],
        ),
        Family::RenalMass => (
            &["mass", "carcinoma"],
            &["heterogeneous", "enhancing", "solid"],
        ),
        Family::LyticBone => (&["metastasis", "lytic"], &["lytic", "expansile"]),
        Family::ScleroticBone => (
            &["metastasis", "sclerotic"],
            &["sclerotic", "hyperattenuation"],
        ),
        Family::LymphNode => (
            &["lymphadenopathy", "enlargement"],
            &["oval", "soft tissue attenuation"],
        ),
        Family::AdrenalNodule => (&["adenoma", "nodule"], &["hypoattenuation", "round"]),
        Family::PancreaticMass => (&["mass", "cyst"], &["hypoattenuation", "indistinct"]),
        Family::SoftTissueMass => (
            &["subcutaneous mass", "mass", "lobular mass"],
            &["soft tissue attenuation", "heterogeneous", "lobular"],
        ),
        Family::PelvicMass => (
            &["mass", "lobular mass"],
            &["heterogeneous", "enhancing", "large"],
        ),
        Family::PelvicCyst => (
            &["ovarian cyst", "cyst"],
            &["hypoattenuation", "circumscribed"],
        ),
    }
}

fn size_attribute(long_mm: f32) -> Option<&'static str> {
    match long_mm {
        l if l < 5.0 => Some("tiny"),
        l if l < 10.0 => Some("subcentimeter"),
        l if l > 50.0 => Some("large"),
        _ => None,
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// One report sentence, e.g. "Right lower lobe solid pulmonary nodule, 12 x 9 mm, round."
pub fn sentence(
    rng: &mut Rng,
    lesion: &TrackedLesion,
    long_mm: f32,
    short_mm: f32,
    change: Change,
) -> String {
    let (types, attributes) = family_terms(lesion.family);
    let kind = *rng.pick(types);
    let attribute = *rng.pick(attributes);
    let site = lesion.site_term;
    let size = format!("{long_mm:.0} x {short_mm:.0} mm");
    let mut text = match (lesion.family, rng.int(0, 2)) {
        (Family::LymphNode, 0) => format!("Enlarged {site}, {size}, {attribute}"),
        (Family::LymphNode, _) => format!("{} {site}, {size}, {kind}", capitalise(attribute)),
        (Family::LyticBone | Family::ScleroticBone, _) => {
            format!(
                "{} lesion of the {site}, {size}, likely {kind}",
                capitalise(attribute)
            )
        }
        (_, 0) => format!("{} {attribute} {kind}, {size}", capitalise(site)),
        (_, 1) => format!(
            "{} {kind} in the {site} measuring {size}",
            capitalise(attribute)
        ),
        (_, _) => format!("{} in the {site}, {attribute}, {size}", capitalise(kind)),
    };
    if let Some(extra) = size_attribute(long_mm) {
        text.push_str(&format!(", {extra}"));
    }
    match change {
        Change::Baseline => {}
        Change::Since { previous_mm } => {
            let ratio = long_mm / previous_mm;
            text.push_str(&if ratio > 1.1 {
                format!("; increased from {previous_mm:.0} mm")
            } else if ratio < 0.9 {
                format!("; decreased from {previous_mm:.0} mm")
            } else {
                "; stable".to_string()
            });
        }
    }
    text.push('.');
    text
}
