//! Lesions: where each coarse type occurs, what each appearance family looks like, and the
//! words a radiologist would use for it.

use super::anatomy::{frame_at, organ_at, parts_at, Body, Organ};
use super::canvas::Shape;
use crate::dataset::CoarseType;
use crate::util::Rng;

/// Appearance families, several per coarse type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    SolidNodule,
    GroundGlassNodule,
    SpiculatedNodule,
    HypodenseLiver,
    HyperdenseLiver,
    KidneyCyst,
    RenalMass,
    LyticBone,
    ScleroticBone,
    LymphNode,
    AdrenalNodule,
    PancreaticMass,
    SoftTissueMass,
    PelvicMass,
    PelvicCyst,
}

impl Family {
    pub const ALL: [Family; 15] = [
        Family::SolidNodule,
        Family::GroundGlassNodule,
        Family::SpiculatedNodule,
        Family::HypodenseLiver,
        Family::HyperdenseLiver,
        Family::KidneyCyst,
        Family::RenalMass,
        Family::LyticBone,
        Family::ScleroticBone,
        Family::LymphNode,
        Family::AdrenalNodule,
        Family::PancreaticMass,
        Family::SoftTissueMass,
        Family::PelvicMass,
        Family::PelvicCyst,
    ];
}

/// Where a lesion sits, in terms that survive a change of patient position between studies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Anchor {
    /// Unit-disk coordinates inside the `index`-th structure of an organ.
    InOrgan {
        organ: Organ,
        index: usize,
        u: f32,
        v: f32,
    },
    /// An offset in mm from the centre of an organ's first structure.
    Near { organ: Organ, dx: f32, dy: f32 },
    /// Fractions of the body cavity's half-axes.
    Cavity { u: f32, v: f32 },
    /// In the body wall: angle from anterior (clockwise on the image), depth in mm.
    Wall { theta: f32, depth: f32 },
}

/// A lesion as it exists in a patient, followed across studies.
#[derive(Debug, Clone)]
pub struct TrackedLesion {
    pub coarse_type: CoarseType,
    pub family: Family,
    pub anchor: Anchor,
    /// Normalized z of the lesion's centre.
    pub z: f32,
    /// Long diameter in mm at the first study.
    pub long_mm: f32,
    pub short_ratio: f32,
    pub angle: f32,
    /// Size change per month, as a log ratio.
    pub growth_per_month: f32,
    pub detail_seed: u64,
    /// Ontology body-part term of the site ("right lower lobe", "paraaortic").
    pub site_term: &'static str,
}

impl Anchor {
    /// Position in body coordinates (mm) at level `z`, if the anchoring structure is there.
    pub fn position(&self, body: &Body, z: f32) -> Option<(f32, f32)> {
        let f = frame_at(body, z);
        match *self {
            Anchor::InOrgan { organ, index, u, v } => parts_at(body, z)
                .into_iter()
                .filter(|p| p.organ == organ)
                .nth(index)
                .map(|p| p.shape.point_at(u, v)),
            Anchor::Near { organ, dx, dy } => parts_at(body, z)
                .into_iter()
                .find(|p| p.organ == organ)
                .map(|p| (p.shape.cx + dx * body.scale, p.shape.cy + dy * body.scale)),
            Anchor::Cavity { u, v } => Some((u * f.cavity_a, v * f.cavity_b)),
            Anchor::Wall { theta, depth } => {
                let (a, b) = (f.a - depth, f.b - depth);
                Some((a * theta.sin(), -b * theta.cos()))
            }
        }
    }
}

/// Typical long diameter (mm) by type; DeepLesion's median over all types is 18 mm.
fn median_size(t: CoarseType) -> f32 {
    match t {
        CoarseType::Lung => 11.0,
        CoarseType::Liver => 19.0,
        CoarseType::Kidney => 16.0,
        CoarseType::Bone => 22.0,
        CoarseType::Mediastinum => 18.0,
        CoarseType::Abdomen => 20.0,
        CoarseType::SoftTissue => 26.0,
        CoarseType::Pelvis => 30.0,
        CoarseType::Unknown => 18.0,
    }
}

/// Draws a lesion of type `t`; `long_mm`, `z` and `side` override the draw when given
/// (metadata taken from a real table).
pub fn plan_lesion(
    rng: &mut Rng,
    t: CoarseType,
    long_mm: Option<f32>,
    z_hint: Option<f32>,
    female: bool,
) -> TrackedLesion {
    let size = long_mm.unwrap_or_else(|| (median_size(t).ln() + 0.55 * rng.normal()).exp());
    let right = rng.chance(0.5);
    let at = Placement {
        z_hint,
        right,
        side: if right { -1.0 } else { 1.0 },
        female,
    };
    let (family, anchor, z, cap, site_term) = match t {
        CoarseType::Lung | CoarseType::Unknown => lung_site(rng, &at),
        CoarseType::Liver => liver_site(rng, &at),
        CoarseType::Kidney => kidney_site(rng, &at),
        CoarseType::Bone => bone_site(rng, &at),
        CoarseType::Mediastinum => mediastinum_site(rng, &at),
        CoarseType::Abdomen => abdomen_site(rng, &at),
        CoarseType::SoftTissue => soft_tissue_site(rng, &at),
        CoarseType::Pelvis => pelvis_site(rng, &at),
    };
    let short_ratio = match family {
        Family::LymphNode => rng.range(0.5, 0.78),
        Family::KidneyCyst | Family::SolidNodule | Family::AdrenalNodule | Family::PelvicCyst => {
            rng.range(0.8, 0.97)
        }
        _ => rng.range(0.6, 0.93),
    };
    TrackedLesion {
        coarse_type: t,
        family,
        anchor,
        z,
        long_mm: size.clamp(3.0, cap.min(100.0)),
        short_ratio,
        angle: rng.range(0.0, std::f32::consts::PI),
        growth_per_month: rng.gaussian(0.0, 0.035),
        detail_seed: rng.next_u64(),
        site_term,
    }
}

/// A lesion's family, anchor, level, size cap (mm) and the report's words for its site.
type Site = (Family, Anchor, f32, f32, &'static str);

/// What is fixed before a lesion's site is drawn.
#[derive(Clone, Copy)]
struct Placement {
    /// The level to keep (clamped to the site's range), when metadata gives one.
    z_hint: Option<f32>,
    right: bool,
    /// -1 on the patient's right (image left), 1 on the left.
    side: f32,
    female: bool,
}

impl Placement {
    fn pick_z(&self, rng: &mut Rng, lo: f32, hi: f32) -> f32 {
        match self.z_hint {
            Some(z) => z.clamp(lo, hi),
            None => rng.range(lo, hi),
        }
    }
}

/// A uniform point in a disk of radius `r_max`.
fn disk(rng: &mut Rng, r_max: f32) -> (f32, f32) {
    let r = r_max * rng.unit().sqrt();
    let a = rng.range(0.0, std::f32::consts::TAU);
    (r * a.cos(), r * a.sin())
}

/// Where a Lung lesion sits, and what it is.
fn lung_site(rng: &mut Rng, at: &Placement) -> Site {
    let Placement { right, .. } = *at;

    let family = [
        Family::SolidNodule,
        Family::GroundGlassNodule,
        Family::SpiculatedNodule,
    ][rng.weighted(&[0.5, 0.25, 0.25])];
    let z = at.pick_z(rng, 0.38, 0.585);
    let (u, v) = disk(rng, 0.72);
    let organ = if right {
        Organ::RightLung
    } else {
        Organ::LeftLung
    };
    let term = match (right, z) {
        (true, z) if z < 0.44 => "right upper lobe",
        (true, z) if z < 0.5 && v < 0.1 => "right mid lung",
        (true, _) => "right lower lobe",
        (false, z) if z < 0.47 => "left upper lung",
        (false, _) => "left lower lobe",
    };
    let cap = if family == Family::SpiculatedNodule {
        60.0
    } else {
        35.0
    };
    (
        family,
        Anchor::InOrgan {
            organ,
            index: 0,
            u,
            v,
        },
        z,
        cap,
        term,
    )
}

/// Where a Liver lesion sits, and what it is.
fn liver_site(rng: &mut Rng, at: &Placement) -> Site {
    let family = if rng.chance(0.65) {
        Family::HypodenseLiver
    } else {
        Family::HyperdenseLiver
    };
    let (u, v) = disk(rng, 0.65);
    let z = at.pick_z(rng, 0.55, 0.66);
    (
        family,
        Anchor::InOrgan {
            organ: Organ::Liver,
            index: 0,
            u,
            v,
        },
        z,
        100.0,
        "liver",
    )
}

/// Where a Kidney lesion sits, and what it is.
fn kidney_site(rng: &mut Rng, at: &Placement) -> Site {
    let Placement { right, .. } = *at;

    let family = if rng.chance(0.7) {
        Family::KidneyCyst
    } else {
        Family::RenalMass
    };
    let (u, v) = disk(rng, 0.9);
    let organ = if right {
        Organ::RightKidney
    } else {
        Organ::LeftKidney
    };
    let z = at.pick_z(rng, 0.625, 0.695);
    let term = if right { "right kidney" } else { "left kidney" };
    (
        family,
        Anchor::InOrgan {
            organ,
            index: 0,
            u,
            v,
        },
        z,
        60.0,
        term,
    )
}

/// Where a Bone lesion sits, and what it is.
fn bone_site(rng: &mut Rng, at: &Placement) -> Site {
    let Placement { right, .. } = *at;

    let family = if rng.chance(0.55) {
        Family::LyticBone
    } else {
        Family::ScleroticBone
    };
    match rng.weighted(&[0.5, 0.25, 0.25]) {
        0 => {
            let (u, v) = disk(rng, 0.4);
            let z = at.pick_z(rng, 0.4, 0.72);
            let term = if z < 0.6 {
                "thoracic spine"
            } else {
                "vertebral body"
            };
            (
                family,
                Anchor::InOrgan {
                    organ: Organ::Vertebra,
                    index: 0,
                    u,
                    v,
                },
                z,
                28.0,
                term,
            )
        }
        1 => {
            let index = rng.int(0, 13) as usize;
            (
                family,
                Anchor::InOrgan {
                    organ: Organ::Rib,
                    index,
                    u: 0.0,
                    v: 0.0,
                },
                at.pick_z(rng, 0.4, 0.62),
                22.0,
                "rib",
            )
        }
        _ => {
            let organ = if right {
                Organ::RightIlium
            } else {
                Organ::LeftIlium
            };
            let u = rng.range(-0.5, 0.5);
            (
                family,
                Anchor::InOrgan {
                    organ,
                    index: 0,
                    u,
                    v: 0.0,
                },
                at.pick_z(rng, 0.75, 0.84),
                40.0,
                "iliac wing",
            )
        }
    }
}

/// Where a Mediastinum lesion sits, and what it is.
fn mediastinum_site(rng: &mut Rng, at: &Placement) -> Site {
    const STATIONS: [(f32, f32, &str); 6] = [
        (0.0, -38.0, "pretracheal lymph node"),
        (-14.0, -30.0, "lower paratracheal lymph node"),
        (4.0, -12.0, "subcarinal lymph node"),
        (-38.0, -18.0, "right hilum lymph node"),
        (38.0, -18.0, "left hilum lymph node"),
        (20.0, -42.0, "mediastinum lymph node"),
    ];
    let (dx, dy, term) = *rng.pick(&STATIONS);
    let z = at.pick_z(rng, 0.4, 0.48);
    (
        Family::LymphNode,
        Anchor::Near {
            organ: Organ::Esophagus,
            dx,
            dy,
        },
        z,
        45.0,
        term,
    )
}

/// Where a Abdomen lesion sits, and what it is.
fn abdomen_site(rng: &mut Rng, at: &Placement) -> Site {
    let Placement { right, side, .. } = *at;

    match rng.weighted(&[0.5, 0.2, 0.15, 0.15]) {
        0 => {
            let dx = if right { -32.0 } else { 22.0 };
            let term = if right {
                "paracaval lymph node"
            } else {
                "paraaortic"
            };
            (
                Family::LymphNode,
                Anchor::Near {
                    organ: Organ::Aorta,
                    dx,
                    dy: 4.0,
                },
                at.pick_z(rng, 0.62, 0.74),
                45.0,
                term,
            )
        }
        1 => {
            let (u, v) = (rng.range(-0.35, 0.35), rng.range(-0.35, 0.05));
            (
                Family::LymphNode,
                Anchor::Cavity { u, v },
                at.pick_z(rng, 0.64, 0.74),
                40.0,
                "mesentery lymph node",
            )
        }
        2 => {
            let term = if right {
                "right adrenal gland"
            } else {
                "left adrenal gland"
            };
            let dx = side * 42.0;
            (
                Family::AdrenalNodule,
                Anchor::Near {
                    organ: Organ::Vertebra,
                    dx,
                    dy: -30.0,
                },
                at.pick_z(rng, 0.585, 0.61),
                40.0,
                term,
            )
        }
        _ => {
            let u = rng.range(-0.6, 0.4);
            (
                Family::PancreaticMass,
                Anchor::InOrgan {
                    organ: Organ::Pancreas,
                    index: 0,
                    u,
                    v: 0.0,
                },
                at.pick_z(rng, 0.605, 0.63),
                50.0,
                "pancreas",
            )
        }
    }
}

/// Where a SoftTissue lesion sits, and what it is.
fn soft_tissue_site(rng: &mut Rng, at: &Placement) -> Site {
    let Placement { side, .. } = *at;

    if rng.chance(0.3) {
        let term = "axilla lymph node";
        (
            Family::LymphNode,
            Anchor::Wall {
                theta: side * rng.range(1.25, 1.55),
                depth: 22.0,
            },
            at.pick_z(rng, 0.35, 0.41),
            40.0,
            term,
        )
    } else {
        let theta = rng.range(-2.6, 2.6);
        let z = at.pick_z(rng, 0.36, 0.9);
        let term = if z < 0.56 {
            "chest wall"
        } else if z < 0.78 {
            "abdominal wall"
        } else {
            "gluteal"
        };
        (
            Family::SoftTissueMass,
            Anchor::Wall {
                theta,
                depth: rng.range(6.0, 20.0),
            },
            z,
            90.0,
            term,
        )
    }
}

/// Where a Pelvis lesion sits, and what it is.
fn pelvis_site(rng: &mut Rng, at: &Placement) -> Site {
    let Placement { side, female, .. } = *at;

    match rng.weighted(&[0.5, if female { 0.3 } else { 0.0 }, 0.25]) {
        0 => {
            let (u, v) = (rng.range(-0.35, 0.35), rng.range(-0.45, 0.05));
            (
                Family::PelvicMass,
                Anchor::Cavity { u, v },
                at.pick_z(rng, 0.76, 0.9),
                100.0,
                "pelvis",
            )
        }
        1 => {
            let (u, v) = (side * rng.range(0.2, 0.4), rng.range(-0.2, 0.1));
            (
                Family::PelvicCyst,
                Anchor::Cavity { u, v },
                at.pick_z(rng, 0.8, 0.9),
                90.0,
                "adnexa",
            )
        }
        _ => {
            let (u, v) = (side * 0.3, rng.range(0.0, 0.2));
            (
                Family::LymphNode,
                Anchor::Cavity { u, v },
                at.pick_z(rng, 0.76, 0.88),
                40.0,
                "external iliac lymph node",
            )
        }
    }
}

impl TrackedLesion {
    /// Whether the lesion sits in tissue where its type occurs: a lung nodule in visible
    /// lung, not in the spleen that covers the lung's base; a node in fat, not in a vessel.
    pub fn fits(&self, body: &Body) -> bool {
        let Some((x, y)) = self.anchor.position(body, self.z) else {
            return false;
        };
        let parts = parts_at(body, self.z);
        let r = self.long_mm / 4.0;
        let probes = [(0.0, 0.0), (r, 0.0), (-r, 0.0), (0.0, r), (0.0, -r)];
        probes.iter().all(|(dx, dy)| {
            let here = organ_at(&parts, x + dx, y + dy);
            match self.anchor {
                Anchor::InOrgan { organ, .. } => {
                    // Bone lesions may break the cortex; only their centre must be in bone.
                    here == Some(organ)
                        || (*dx != 0.0 || *dy != 0.0)
                            && !matches!(organ, Organ::RightLung | Organ::LeftLung | Organ::Liver)
                }
                Anchor::Wall { .. } => matches!(here, Some(Organ::Body | Organ::Muscle)),
                Anchor::Near { .. } | Anchor::Cavity { .. } => matches!(
                    here,
                    Some(
                        Organ::Cavity
                            | Organ::Bowel
                            | Organ::Muscle
                            | Organ::Esophagus
                            | Organ::Psoas
                            | Organ::Adrenal
                            | Organ::Pancreas
                    )
                ),
            }
        })
    }

    /// Long diameter in mm after `months`.
    pub fn long_mm_at(&self, months: f32) -> f32 {
        (self.long_mm * (self.growth_per_month * months).exp()).clamp(3.0, 100.0)
    }

    /// Semi-axis along z in mm: lesions are roughly spheroids.
    pub fn half_depth_mm(&self, long_mm: f32) -> f32 {
        long_mm * (1.0 + self.short_ratio) / 4.0
    }

    /// The shapes that draw this lesion on a slice `dz_mm` from its centre, centred on
    /// `(x, y)` mm, with long diameter `long_mm` at the centre.
    pub fn shapes(&self, x: f32, y: f32, long_mm: f32, dz_mm: f32) -> Vec<Shape> {
        let depth = self.half_depth_mm(long_mm);
        if dz_mm.abs() >= depth {
            return Vec::new();
        }
        let k = (1.0 - (dz_mm / depth).powi(2)).sqrt();
        let a = long_mm / 2.0 * k;
        let b = a * self.short_ratio;
        if a < 0.6 {
            return Vec::new();
        }
        let mut rng = Rng::new(self.detail_seed);
        let base = |value: f32| Shape::ellipse(x, y, a, b, self.angle, value);
        let lobulate = |mut s: Shape, rng: &mut Rng, strength: f32| {
            for k in 2..=4 {
                s.harmonics
                    .push((k as f32, rng.range(0.0, strength), rng.range(0.0, 6.3)));
            }
            s
        };
        match self.family {
            Family::SolidNodule => vec![base(35.0).soft(0.5).with_texture(&mut rng, 8.0, 6.0)],
            Family::GroundGlassNodule => {
                let mut s = base(-560.0).soft(2.2).with_texture(&mut rng, 60.0, 5.0);
                s.opacity = 0.9;
                vec![s]
            }
            Family::SpiculatedNodule => {
                let mut core = base(40.0).soft(0.7).with_texture(&mut rng, 12.0, 7.0);
                for k in [7.0, 11.0, 13.0] {
                    core.harmonics
                        .push((k, rng.range(0.06, 0.14), rng.range(0.0, 6.3)));
                }
                let mut shapes = vec![core];
                let spicules = 7 + rng.int(0, 5);
                for i in 0..spicules {
                    let theta =
                        i as f32 / spicules as f32 * std::f32::consts::TAU + rng.range(-0.2, 0.2);
                    let len = a * rng.range(0.5, 0.9);
                    let (cx, cy) = (
                        x + (a + len * 0.4) * theta.cos(),
                        y + (b + len * 0.4) * theta.sin(),
                    );
                    let mut spicule = Shape::ellipse(cx, cy, len, 0.45, theta, 10.0).soft(0.4);
                    spicule.opacity = 0.75;
                    shapes.push(spicule);
                }
                shapes
            }
            Family::HypodenseLiver => {
                if rng.chance(0.4) {
                    vec![base(8.0).soft(0.4)]
                } else {
                    let s = base(38.0).soft(1.6).with_texture(&mut rng, 10.0, 8.0);
                    let s = if rng.chance(0.5) {
                        s.with_rim(1.5 + 0.05 * a, 85.0)
                    } else {
                        s
                    };
                    vec![lobulate(s, &mut rng, 0.08)]
                }
            }
            Family::HyperdenseLiver => vec![lobulate(
                base(190.0).soft(1.0).with_texture(&mut rng, 25.0, 6.0),
                &mut rng,
                0.1,
            )],
            Family::KidneyCyst => vec![base(6.0).soft(0.35)],
            Family::RenalMass => vec![lobulate(
                base(75.0).soft(1.2).with_texture(&mut rng, 30.0, 7.0),
                &mut rng,
                0.12,
            )],
            Family::LyticBone => vec![lobulate(
                base(35.0).soft(1.0).with_texture(&mut rng, 12.0, 5.0),
                &mut rng,
                0.1,
            )],
            Family::ScleroticBone => vec![base(880.0).soft(1.8).with_texture(&mut rng, 120.0, 4.0)],
            Family::LymphNode => {
                let mut shapes = vec![base(48.0).soft(0.8).with_texture(&mut rng, 6.0, 8.0)];
                if a > 5.0 && rng.chance(0.3) {
                    // Fatty hilum at one end of the node.
                    let (s, c) = self.angle.sin_cos();
                    shapes.push(
                        Shape::ellipse(
                            x + 0.55 * a * c,
                            y + 0.55 * a * s,
                            0.3 * a,
                            0.3 * b,
                            self.angle,
                            -70.0,
                        )
                        .soft(0.8),
                    );
                }
                shapes
            }
            Family::AdrenalNodule => vec![base(12.0).soft(0.6)],
            Family::PancreaticMass => vec![base(42.0).soft(2.0).with_texture(&mut rng, 8.0, 8.0)],
            Family::SoftTissueMass => vec![lobulate(
                base(42.0).soft(1.2).with_texture(&mut rng, 16.0, 9.0),
                &mut rng,
                0.15,
            )],
            Family::PelvicMass => vec![lobulate(
                base(46.0).soft(1.2).with_texture(&mut rng, 22.0, 10.0),
                &mut rng,
                0.15,
            )],
            Family::PelvicCyst => vec![base(12.0).soft(0.4).with_rim(1.2, 55.0)],
        }
    }
}
