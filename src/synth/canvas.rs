//! Rasterising soft-edged shapes in millimetres onto a slice in HU.

use crate::util::Rng;

/// Low-frequency texture: a sum of plane waves, so tissue looks uneven without noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Texture {
    pub amplitude_hu: f32,
    pub wavelength_mm: f32,
    pub phases: [f32; 3],
}

/// An ellipse, optionally lobulated or spiculated through radial harmonics, with a soft
/// edge, an optional rim of another value and a texture. Coordinates in mm.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub cx: f32,
    pub cy: f32,
    pub a: f32,
    pub b: f32,
    pub angle: f32,
    pub value: f32,
    pub softness_mm: f32,
    /// (frequency, relative amplitude, phase) of radius modulations.
    pub harmonics: Vec<(f32, f32, f32)>,
    /// (width in mm, value) of a rim just inside the edge (enhancing wall, cortex).
    pub rim: Option<(f32, f32)>,
    pub texture: Option<Texture>,
    /// How much of the value replaces what is below (1: opaque; below 1: partial volume,
    /// as ground glass over lung).
    pub opacity: f32,
}

impl Shape {
    pub fn ellipse(cx: f32, cy: f32, a: f32, b: f32, angle: f32, value: f32) -> Self {
        Shape {
            cx,
            cy,
            a,
            b,
            angle,
            value,
            softness_mm: 0.8,
            harmonics: Vec::new(),
            rim: None,
            texture: None,
            opacity: 1.0,
        }
    }

    pub fn circle(cx: f32, cy: f32, r: f32, value: f32) -> Self {
        Self::ellipse(cx, cy, r, r, 0.0, value)
    }

    pub fn soft(mut self, mm: f32) -> Self {
        self.softness_mm = mm.max(0.05);
        self
    }

    pub fn with_rim(mut self, width_mm: f32, value: f32) -> Self {
        self.rim = Some((width_mm, value));
        self
    }

    pub fn with_texture(mut self, rng: &mut Rng, amplitude_hu: f32, wavelength_mm: f32) -> Self {
        self.texture = Some(Texture {
            amplitude_hu,
            wavelength_mm,
            phases: [
                rng.range(0.0, 6.3),
                rng.range(0.0, 6.3),
                rng.range(0.0, 6.3),
            ],
        });
        self
    }

    /// The point at unit-disk coordinates (u, v) of this ellipse.
    pub fn point_at(&self, u: f32, v: f32) -> (f32, f32) {
        let (s, c) = self.angle.sin_cos();
        let (du, dv) = (u * self.a, v * self.b);
        (self.cx + du * c - dv * s, self.cy + du * s + dv * c)
    }

    /// Whether a point (mm) lies inside the unmodulated ellipse.
    pub fn covers(&self, x: f32, y: f32) -> bool {
        let (sin, cos) = self.angle.sin_cos();
        let (dx, dy) = (x - self.cx, y - self.cy);
        let (u, v) = (dx * cos + dy * sin, -dx * sin + dy * cos);
        (u / self.a).powi(2) + (v / self.b).powi(2) <= 1.0
    }

    fn reach(&self) -> f32 {
        let modulation: f32 = self.harmonics.iter().map(|h| h.1.abs()).sum();
        self.a.max(self.b) * (1.0 + modulation) + 2.0 * self.softness_mm
    }
}

/// A slice being drawn: HU values on a pixel grid with a known spacing.
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub spacing_mm: f32,
    /// Position in mm of the image centre in body coordinates.
    pub centre_mm: (f32, f32),
    pub hu: Vec<f32>,
}

impl Canvas {
    pub fn new(
        width: usize,
        height: usize,
        spacing_mm: f32,
        centre_mm: (f32, f32),
        fill: f32,
    ) -> Self {
        Canvas {
            width,
            height,
            spacing_mm,
            centre_mm,
            hu: vec![fill; width * height],
        }
    }

    /// Body coordinates (mm) of a pixel centre.
    pub fn to_mm(&self, px: f32, py: f32) -> (f32, f32) {
        (
            self.centre_mm.0 + (px - self.width as f32 / 2.0) * self.spacing_mm,
            self.centre_mm.1 + (py - self.height as f32 / 2.0) * self.spacing_mm,
        )
    }

    /// Pixel coordinates of a point in body coordinates.
    pub fn to_px(&self, x: f32, y: f32) -> (f32, f32) {
        (
            (x - self.centre_mm.0) / self.spacing_mm + self.width as f32 / 2.0,
            (y - self.centre_mm.1) / self.spacing_mm + self.height as f32 / 2.0,
        )
    }

    pub fn paint(&mut self, shape: &Shape) {
        let reach = shape.reach();
        let (x0, y0) = self.to_px(shape.cx - reach, shape.cy - reach);
        let (x1, y1) = self.to_px(shape.cx + reach, shape.cy + reach);
        let clamp_x = |v: f32| v.clamp(0.0, self.width as f32) as usize;
        let clamp_y = |v: f32| v.clamp(0.0, self.height as f32) as usize;
        let (px0, px1, py0, py1) = (
            clamp_x(x0.floor()),
            clamp_x(x1.ceil()),
            clamp_y(y0.floor()),
            clamp_y(y1.ceil()),
        );
        let (sin, cos) = shape.angle.sin_cos();
        let minor = shape.a.min(shape.b);
        let edge = minor / shape.softness_mm;
        for py in py0..py1 {
            for px in px0..px1 {
                let (x, y) = self.to_mm(px as f32, py as f32);
                let (dx, dy) = (x - shape.cx, y - shape.cy);
                let (u, v) = (dx * cos + dy * sin, -dx * sin + dy * cos);
                let (nu, nv) = (u / shape.a, v / shape.b);
                let mut d = (nu * nu + nv * nv).sqrt();
                if !shape.harmonics.is_empty() {
                    let theta = nv.atan2(nu);
                    let radius: f32 = 1.0
                        + shape
                            .harmonics
                            .iter()
                            .map(|&(k, amp, phase)| amp * (k * theta + phase).cos())
                            .sum::<f32>();
                    d /= radius.max(0.2);
                }
                let coverage = (0.5 + (1.0 - d) * edge).clamp(0.0, 1.0) * shape.opacity;
                if coverage <= 0.0 {
                    continue;
                }
                let mut value = shape.value;
                if let Some((width, rim_value)) = shape.rim {
                    let depth = (1.0 - d) * minor;
                    if depth < width {
                        value = rim_value;
                    }
                }
                if let Some(t) = &shape.texture {
                    let k = std::f32::consts::TAU / t.wavelength_mm;
                    value += t.amplitude_hu
                        * ((k * u + t.phases[0]).sin() * 0.5
                            + (k * 0.7 * v + t.phases[1]).sin() * 0.3
                            + (k * 1.3 * (u + v) + t.phases[2]).sin() * 0.2);
                }
                let i = py * self.width + px;
                self.hu[i] += (value - self.hu[i]) * coverage;
            }
        }
    }

    /// Adds Gaussian noise where `mask` holds, blurs everything with a 5-tap Gaussian
    /// (the reconstruction kernel's correlation), then adds a little white noise.
    pub fn finish(&mut self, rng: &mut Rng, noise_hu: f32, mask: impl Fn(f32) -> bool) {
        for v in &mut self.hu {
            if mask(*v) {
                *v += noise_hu * rng.normal();
            }
        }
        let kernel = [0.06136f32, 0.24477, 0.38774, 0.24477, 0.06136];
        let (w, h) = (self.width, self.height);
        let mut tmp = vec![0f32; w * h];
        for y in 0..h {
            let row = &self.hu[y * w..(y + 1) * w];
            for x in 0..w {
                let mut acc = 0.0;
                for (k, weight) in kernel.iter().enumerate() {
                    let xx = (x + k).saturating_sub(2).min(w - 1);
                    acc += row[xx] * weight;
                }
                tmp[y * w + x] = acc;
            }
        }
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0.0;
                for (k, weight) in kernel.iter().enumerate() {
                    let yy = (y + k).saturating_sub(2).min(h - 1);
                    acc += tmp[yy * w + x] * weight;
                }
                self.hu[y * w + x] = acc;
            }
        }
        for v in &mut self.hu {
            if mask(*v) {
                *v += 0.25 * noise_hu * rng.normal();
            }
        }
    }
}
