//! A body phantom whose anatomy follows z: what an axial CT slice shows at each level.
//!
//! Body coordinates are in mm with the origin at the body's centre, x towards the image's
//! right (the patient's left, as radiologists view axial slices) and y posterior. Levels use
//! DeepLesion's normalized z (0 at the head, 1 at the feet; chest about 0.35 to 0.58,
//! abdomen to 0.74, pelvis below), whose organ ranges follow the lesion locations of the
//! real table (mediastinum median z 0.45, lung 0.49, liver 0.60, kidney 0.66, pelvis 0.80).

use super::canvas::Shape;
use crate::util::Rng;

/// Millimetres per unit of normalized z.
pub const MM_PER_Z: f32 = 1100.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Organ {
    Body,
    Muscle,
    Cavity,
    RightLung,
    LeftLung,
    Heart,
    Aorta,
    Trachea,
    Esophagus,
    Liver,
    Spleen,
    Stomach,
    RightKidney,
    LeftKidney,
    Adrenal,
    Pancreas,
    Vena,
    Psoas,
    Bowel,
    Vertebra,
    SpinalCanal,
    Rib,
    Scapula,
    Sternum,
    RightIlium,
    LeftIlium,
    Sacrum,
    Femur,
    Bladder,
    Rectum,
    Vessel,
}

/// One structure on one slice.
#[derive(Debug, Clone)]
pub struct Part {
    pub organ: Organ,
    pub shape: Shape,
}

/// A patient's build, fixed across studies.
#[derive(Debug, Clone)]
pub struct Body {
    pub scale: f32,
    pub fat_mm: f32,
    pub liver_scale: f32,
    seed: u64,
}

impl Body {
    pub fn random(rng: &mut Rng, female: bool) -> Self {
        Body {
            scale: rng
                .gaussian(if female { 0.93 } else { 1.0 }, 0.06)
                .clamp(0.8, 1.2),
            fat_mm: rng.range(8.0, 34.0),
            liver_scale: rng.range(0.9, 1.1),
            seed: rng.next_u64(),
        }
    }

    fn outline(&self, z: f32) -> (f32, f32) {
        const KEYS: [(f32, f32, f32); 9] = [
            (0.20, 62.0, 58.0),
            (0.30, 70.0, 62.0),
            (0.34, 195.0, 120.0),
            (0.40, 170.0, 120.0),
            (0.58, 162.0, 116.0),
            (0.74, 158.0, 112.0),
            (0.84, 172.0, 106.0),
            (0.92, 168.0, 100.0),
            (1.00, 150.0, 90.0),
        ];
        let (a, b) = interpolate(&KEYS, z);
        (a * self.scale, b * self.scale)
    }
}

/// Geometry shared by the placement of lesions and the drawing of a slice.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub a: f32,
    pub b: f32,
    pub cavity_a: f32,
    pub cavity_b: f32,
    pub spine_y: f32,
    pub vertebra_r: f32,
}

pub fn frame_at(body: &Body, z: f32) -> Frame {
    let (a, b) = body.outline(z);
    let wall = body.fat_mm + 12.0 * body.scale;
    let cavity_a = (a - wall).max(a * 0.4);
    let cavity_b = (b - wall).max(b * 0.4);
    let vertebra_r = body.scale * if z > 0.6 { 20.0 } else { 16.0 };
    Frame {
        a,
        b,
        cavity_a,
        cavity_b,
        spine_y: cavity_b - vertebra_r - 10.0,
        vertebra_r,
    }
}

/// Smooth bump: 0 outside `start..end`, 1 in the middle.
fn bump(z: f32, start: f32, end: f32) -> f32 {
    if z <= start || z >= end {
        return 0.0;
    }
    let t = (z - start) / (end - start);
    (std::f32::consts::PI * t).sin().powf(0.5)
}

/// The structure visible at a point: the last one painted there (small vessels aside).
pub fn organ_at(parts: &[Part], x: f32, y: f32) -> Option<Organ> {
    parts
        .iter()
        .rev()
        .filter(|p| p.organ != Organ::Vessel)
        .find(|p| p.shape.covers(x, y))
        .map(|p| p.organ)
}

fn push(parts: &mut Vec<Part>, organ: Organ, shape: Shape) {
    parts.push(Part { organ, shape });
}

fn interpolate(keys: &[(f32, f32, f32)], z: f32) -> (f32, f32) {
    if z <= keys[0].0 {
        return (keys[0].1, keys[0].2);
    }
    for w in keys.windows(2) {
        let (z0, a0, b0) = w[0];
        let (z1, a1, b1) = w[1];
        if z <= z1 {
            let t = (z - z0) / (z1 - z0);
            return (a0 + (a1 - a0) * t, b0 + (b1 - b0) * t);
        }
    }
    let last = keys[keys.len() - 1];
    (last.1, last.2)
}

/// Every structure at level `z`, in painting order.
pub fn parts_at(body: &Body, z: f32) -> Vec<Part> {
    let f = frame_at(body, z);
    let mut parts = Vec::with_capacity(64);

    push(
        &mut parts,
        Organ::Body,
        Shape::ellipse(0.0, 0.0, f.a, f.b, 0.0, -100.0).soft(1.0),
    );
    push(
        &mut parts,
        Organ::Muscle,
        Shape::ellipse(0.0, 0.0, f.a - body.fat_mm, f.b - body.fat_mm, 0.0, 50.0),
    );
    let abdominal = z > 0.56;
    let cavity_value = if abdominal { -60.0 } else { -85.0 };
    push(
        &mut parts,
        Organ::Cavity,
        Shape::ellipse(0.0, 0.0, f.cavity_a, f.cavity_b, 0.0, cavity_value),
    );

    chest(&mut parts, &f, z);
    lung_vessels(&mut parts, body, &f, z);
    upper_abdomen(&mut parts, body, &f, z);
    bowel(&mut parts, body, &f, z);
    pelvis(&mut parts, body, &f, z);
    skeleton(&mut parts, body, &f, z);
    parts
}

/// The lungs.
fn chest(parts: &mut Vec<Part>, f: &Frame, z: f32) {
    let lung = bump(z, 0.335, 0.63);
    if lung > 0.0 {
        let base_shift = ((z - 0.52).max(0.0) * 4.0).min(0.45) * f.cavity_b;
        let size = lung.powf(0.5) * (1.0 - ((z - 0.52).max(0.0) * 4.0).min(0.5));
        for (organ, side) in [(Organ::RightLung, -1.0), (Organ::LeftLung, 1.0)] {
            let heart_cut = if side > 0.0 {
                1.0 - 0.15 * bump(z, 0.44, 0.57)
            } else {
                1.0
            };
            push(
                parts,
                organ,
                Shape::ellipse(
                    side * 0.5 * f.cavity_a,
                    0.02 * f.cavity_b + base_shift,
                    0.42 * f.cavity_a * size * heart_cut,
                    0.86 * f.cavity_b * size,
                    side * 0.08,
                    -860.0,
                )
                .soft(1.2),
            );
        }
    }
}

/// Lung vessels: tubes that drift slowly with z, fixed per patient.
fn lung_vessels(parts: &mut Vec<Part>, body: &Body, f: &Frame, z: f32) {
    let s = body.scale;
    let lung = bump(z, 0.335, 0.63);
    if lung > 0.0 {
        let lungs: Vec<Shape> = parts
            .iter()
            .filter(|p| matches!(p.organ, Organ::RightLung | Organ::LeftLung))
            .map(|p| p.shape.clone())
            .collect();
        let mut rng = Rng::new(body.seed ^ 0x1A6);
        for lung_shape in &lungs {
            for _ in 0..45 {
                let (u0, v0) = (rng.range(-0.9, 0.9), rng.range(-0.9, 0.9));
                let (du, dv) = (rng.range(-3.0, 3.0), rng.range(-3.0, 3.0));
                let r = rng.range(0.8, 3.2);
                let (u, v) = (u0 + du * (z - 0.48), v0 + dv * (z - 0.48));
                if u * u + v * v < 0.8 {
                    let (x, y) = lung_shape.point_at(u, v);
                    parts.push(Part {
                        organ: Organ::Vessel,
                        shape: Shape::circle(x, y, r, 40.0).soft(0.6),
                    });
                }
            }
        }
    }

    let heart = bump(z, 0.44, 0.575);
    if heart > 0.0 {
        push(
            parts,
            Organ::Heart,
            Shape::ellipse(
                0.12 * f.cavity_a,
                -0.22 * f.cavity_b,
                0.36 * f.cavity_a * heart,
                0.42 * f.cavity_b * heart,
                -0.5,
                45.0,
            )
            .with_rim(6.0, 60.0),
        );
        push(
            parts,
            Organ::Heart,
            Shape::ellipse(
                0.16 * f.cavity_a,
                -0.22 * f.cavity_b,
                0.2 * f.cavity_a * heart,
                0.22 * f.cavity_b * heart,
                -0.5,
                150.0,
            ),
        );
    }
    if (0.385..0.46).contains(&z) {
        push(
            parts,
            Organ::Aorta,
            Shape::circle(0.04 * f.cavity_a, -0.3 * f.cavity_b, 15.0 * s, 180.0),
        );
    }
    if (0.38..0.40).contains(&z) {
        push(
            parts,
            Organ::Aorta,
            Shape::ellipse(
                0.06 * f.cavity_a,
                -0.1 * f.cavity_b,
                38.0 * s,
                12.0 * s,
                0.6,
                180.0,
            ),
        );
    }
    let airway_y = f.spine_y - f.vertebra_r - 24.0 * s;
    if (0.28..0.43).contains(&z) {
        push(
            parts,
            Organ::Trachea,
            Shape::circle(0.0, airway_y, 9.0 * s, -1000.0).with_rim(1.5, 30.0),
        );
    }
    if (0.28..0.62).contains(&z) {
        push(
            parts,
            Organ::Esophagus,
            Shape::circle(-6.0 * s, f.spine_y - f.vertebra_r - 7.0 * s, 7.0 * s, 35.0),
        );
    }
    if (0.38..0.77).contains(&z) {
        push(
            parts,
            Organ::Aorta,
            Shape::circle(
                f.vertebra_r + 6.0 * s,
                f.spine_y - f.vertebra_r - 6.0 * s,
                12.0 * s,
                180.0,
            ),
        );
    }
}

/// The upper abdomen.
fn upper_abdomen(parts: &mut Vec<Part>, body: &Body, f: &Frame, z: f32) {
    let s = body.scale;
    let liver = bump(z, 0.515, 0.695) * body.liver_scale;
    if liver > 0.0 {
        let size = liver.powf(0.6);
        push(
            parts,
            Organ::Liver,
            Shape::ellipse(
                -0.4 * f.cavity_a,
                0.0,
                0.56 * f.cavity_a * size,
                0.8 * f.cavity_b * size,
                -0.25,
                100.0,
            )
            .soft(1.0),
        );
        push(
            parts,
            Organ::Vessel,
            Shape::circle(-0.22 * f.cavity_a, 0.05 * f.cavity_b, 7.0 * s * size, 165.0),
        );
    }
    let spleen = bump(z, 0.545, 0.66);
    if spleen > 0.0 {
        push(
            parts,
            Organ::Spleen,
            Shape::ellipse(
                0.62 * f.cavity_a,
                0.3 * f.cavity_b,
                0.2 * f.cavity_a * spleen,
                0.36 * f.cavity_b * spleen,
                0.6,
                112.0,
            ),
        );
    }
    let stomach = bump(z, 0.53, 0.645);
    if stomach > 0.0 {
        push(
            parts,
            Organ::Stomach,
            Shape::ellipse(
                0.28 * f.cavity_a,
                -0.35 * f.cavity_b,
                0.3 * f.cavity_a * stomach,
                0.26 * f.cavity_b * stomach,
                0.3,
                25.0,
            )
            .with_rim(3.0, 70.0),
        );
        push(
            parts,
            Organ::Stomach,
            Shape::circle(0.22 * f.cavity_a, -0.5 * f.cavity_b, 12.0 * stomach, -900.0),
        );
    }
    if (0.5..0.77).contains(&z) {
        push(
            parts,
            Organ::Vena,
            Shape::circle(
                -(f.vertebra_r + 10.0 * s),
                f.spine_y - f.vertebra_r - 10.0 * s,
                11.0 * s,
                150.0,
            ),
        );
    }
    if (0.58..0.612).contains(&z) {
        for side in [-1.0, 1.0] {
            push(
                parts,
                Organ::Adrenal,
                Shape::ellipse(
                    side * (f.vertebra_r + 24.0 * s),
                    f.spine_y - 32.0 * s,
                    13.0 * s,
                    3.0 * s,
                    side * 0.9,
                    40.0,
                ),
            );
        }
    }
    let pancreas = bump(z, 0.59, 0.645);
    if pancreas > 0.0 {
        push(
            parts,
            Organ::Pancreas,
            Shape::ellipse(
                0.05 * f.cavity_a,
                -0.06 * f.cavity_b,
                0.4 * f.cavity_a * pancreas,
                11.0 * s,
                -0.2,
                90.0,
            ),
        );
    }
    for (organ, side, shift) in [
        (Organ::RightKidney, -1.0, 0.012),
        (Organ::LeftKidney, 1.0, 0.0),
    ] {
        let k = bump(z, 0.6 + shift, 0.72 + shift);
        if k > 0.0 {
            let (cx, cy) = (side * (f.vertebra_r + 40.0 * s), f.spine_y - 4.0);
            push(
                parts,
                organ,
                Shape::ellipse(cx, cy, 26.0 * s * k, 38.0 * s * k, side * 0.45, 175.0)
                    .with_rim(5.0, 190.0),
            );
            push(
                parts,
                organ,
                Shape::circle(cx - side * 12.0 * s * k, cy - 4.0, 8.0 * s * k, -40.0).soft(1.5),
            );
        }
    }
    if z > 0.66 && z < 0.86 {
        let p = ((z - 0.66) / 0.1).clamp(0.2, 1.0);
        for side in [-1.0, 1.0] {
            push(
                parts,
                Organ::Psoas,
                Shape::ellipse(
                    side * (f.vertebra_r + 16.0 * s),
                    f.spine_y + 2.0,
                    14.0 * s * p + 6.0,
                    16.0 * s * p + 6.0,
                    0.0,
                    52.0,
                ),
            );
        }
    }
}

/// Bowel: loops that come and go with z, fixed per patient.
fn bowel(parts: &mut Vec<Part>, body: &Body, f: &Frame, z: f32) {
    let s = body.scale;
    if (0.6..0.86).contains(&z) {
        let mut rng = Rng::new(body.seed ^ 0xB0E1);
        for _ in 0..40 {
            let (u, v) = (rng.range(-0.75, 0.75), rng.range(-0.8, 0.45));
            let (z0, z1) = {
                let c = rng.range(0.6, 0.86);
                (c - 0.03, c + 0.03)
            };
            let r = rng.range(9.0, 18.0) * s;
            let gas = rng.chance(0.25);
            let strength = bump(z, z0, z1);
            if strength > 0.2 && !(z < 0.7 && u < -0.2 && v < 0.3) {
                let shape = Shape::circle(
                    u * f.cavity_a,
                    v * f.cavity_b,
                    r * strength,
                    if gas { -900.0 } else { 30.0 },
                );
                push(
                    parts,
                    Organ::Bowel,
                    if gas {
                        shape
                    } else {
                        shape.with_rim(2.0, 80.0)
                    },
                );
            }
        }
    }
}

/// The pelvis.
fn pelvis(parts: &mut Vec<Part>, body: &Body, f: &Frame, z: f32) {
    let s = body.scale;
    let ilium = bump(z, 0.72, 0.865);
    if ilium > 0.0 {
        for (organ, side) in [(Organ::RightIlium, -1.0), (Organ::LeftIlium, 1.0)] {
            push(
                parts,
                organ,
                Shape::ellipse(
                    side * 0.6 * f.cavity_a,
                    0.3 * f.cavity_b,
                    50.0 * s * ilium,
                    10.0 * s,
                    side * -0.65,
                    260.0,
                )
                .with_rim(2.5, 750.0),
            );
        }
    }
    if (0.865..0.96).contains(&z) {
        for side in [-1.0, 1.0] {
            push(
                parts,
                Organ::Femur,
                Shape::circle(side * 0.55 * f.cavity_a, 0.05 * f.cavity_b, 24.0 * s, 250.0)
                    .with_rim(2.5, 720.0),
            );
        }
    }
    let bladder = bump(z, 0.8, 0.93);
    if bladder > 0.0 {
        push(
            parts,
            Organ::Bladder,
            Shape::ellipse(
                0.0,
                -0.3 * f.cavity_b,
                45.0 * s * bladder,
                34.0 * s * bladder,
                0.0,
                10.0,
            )
            .with_rim(2.0, 40.0),
        );
    }
    if (0.8..0.96).contains(&z) {
        push(
            parts,
            Organ::Rectum,
            Shape::circle(0.0, 0.45 * f.cavity_b, 15.0 * s, 30.0).with_rim(3.0, 60.0),
        );
        push(
            parts,
            Organ::Rectum,
            Shape::circle(0.0, 0.45 * f.cavity_b, 5.0 * s, -900.0),
        );
    }
    if (0.74..0.9).contains(&z) {
        for side in [-1.0, 1.0] {
            push(
                parts,
                Organ::Vessel,
                Shape::circle(side * 0.32 * f.cavity_a, 0.1 * f.cavity_b, 6.0 * s, 170.0),
            );
        }
    }
}

/// The skeleton.
fn skeleton(parts: &mut Vec<Part>, body: &Body, f: &Frame, z: f32) {
    let s = body.scale;
    let z_mm = z * MM_PER_Z;
    if z < 0.75 {
        let disc = (z_mm / 30.0).fract() < 0.17;
        let vertebra = Shape::circle(
            0.0,
            f.spine_y,
            f.vertebra_r,
            if disc { 90.0 } else { 260.0 },
        );
        push(
            parts,
            Organ::Vertebra,
            if disc {
                vertebra
            } else {
                vertebra.with_rim(2.0, 760.0)
            },
        );
        push(
            parts,
            Organ::Vertebra,
            Shape::ellipse(
                0.0,
                f.spine_y + f.vertebra_r + 17.0 * s,
                16.0 * s,
                6.0 * s,
                0.0,
                620.0,
            ),
        );
        push(
            parts,
            Organ::SpinalCanal,
            Shape::circle(0.0, f.spine_y + f.vertebra_r + 7.0 * s, 7.0 * s, 20.0),
        );
    } else if z < 0.87 {
        push(
            parts,
            Organ::Sacrum,
            Shape::ellipse(0.0, f.spine_y + 5.0, 40.0 * s, 16.0 * s, 0.0, 250.0)
                .with_rim(2.0, 720.0),
        );
    }
    if (0.345..0.67).contains(&z) {
        for i in 0..7 {
            for side in [-1.0f32, 1.0] {
                let theta = 0.35 + 0.32 * i as f32 + 0.12 * (z_mm / 20.0 + i as f32).sin();
                let (x, y) = (
                    side * (f.cavity_a + 5.0) * theta.sin(),
                    -(f.cavity_b + 5.0) * theta.cos(),
                );
                push(
                    parts,
                    Organ::Rib,
                    Shape::ellipse(x, y, 8.0 * s, 4.5 * s, side * theta, 420.0)
                        .with_rim(1.2, 800.0),
                );
            }
        }
    }
    if (0.35..0.46).contains(&z) {
        for side in [-1.0, 1.0] {
            push(
                parts,
                Organ::Scapula,
                Shape::ellipse(
                    side * 0.78 * f.a,
                    0.62 * f.b,
                    48.0 * s,
                    6.0 * s,
                    side * -0.5,
                    600.0,
                ),
            );
        }
    }
    if (0.38..0.55).contains(&z) {
        push(
            parts,
            Organ::Sternum,
            Shape::ellipse(
                0.0,
                -(f.b - body.fat_mm - 8.0),
                14.0 * s,
                6.0 * s,
                0.0,
                300.0,
            )
            .with_rim(1.5, 700.0),
        );
    }
}
