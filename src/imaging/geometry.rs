//! Positions on a slice, in pixels.

use serde::{Deserialize, Serialize};

/// A point in image pixels (x to the right, y down).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

impl Point {
    pub fn distance(self, other: Point) -> f32 {
        (self.x - other.x).hypot(self.y - other.y)
    }
}

/// An axis-aligned box in pixels, `x1 <= x2`, `y1 <= y2`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct PixelBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl PixelBox {
    pub fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        PixelBox { x1, y1, x2, y2 }
    }

    /// Parses `x1,y1,x2,y2` as typed on a command line or in a form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let [x1, y1, x2, y2] = crate::util::numbers::<4>(text)?;
        let b = PixelBox { x1, y1, x2, y2 };
        b.check_ordered()?;
        Ok(b)
    }

    pub fn check_ordered(&self) -> Result<(), String> {
        if self.x2 <= self.x1 || self.y2 <= self.y1 {
            return Err(format!(
                "box {},{},{},{} is empty or inverted (need x1 < x2 and y1 < y2)",
                self.x1, self.y1, self.x2, self.y2
            ));
        }
        Ok(())
    }

    pub fn width(&self) -> f32 {
        self.x2 - self.x1
    }

    pub fn height(&self) -> f32 {
        self.y2 - self.y1
    }

    pub fn center(&self) -> Point {
        Point {
            x: (self.x1 + self.x2) / 2.0,
            y: (self.y1 + self.y2) / 2.0,
        }
    }
}

/// The one rule for "this box is on that image", for every box a user types, a file states
/// or the engine crops: finite, not empty or inverted, overlapping the image and centred on
/// it (a patch is cut around the centre). The error names the box and the image's size.
pub fn check_box(bbox: &PixelBox, width: usize, height: usize) -> crate::error::Result<()> {
    let outside = |reason| crate::error::Error::BoxOutsideImage {
        x1: bbox.x1,
        y1: bbox.y1,
        x2: bbox.x2,
        y2: bbox.y2,
        width,
        height,
        reason,
    };
    let finite = [bbox.x1, bbox.y1, bbox.x2, bbox.y2]
        .iter()
        .all(|c| c.is_finite());
    if !finite || bbox.x2 <= bbox.x1 || bbox.y2 <= bbox.y1 {
        return Err(outside("is empty or inverted (need x1 < x2 and y1 < y2)"));
    }
    let (w, h) = (width as f32, height as f32);
    if bbox.x2 <= 0.0 || bbox.y2 <= 0.0 || bbox.x1 >= w || bbox.y1 >= h {
        return Err(outside("lies entirely outside the image"));
    }
    let c = bbox.center();
    if c.x < 0.0 || c.y < 0.0 || c.x >= w || c.y >= h {
        return Err(outside("has its centre outside the image"));
    }
    Ok(())
}

/// In-plane pixel spacings a CT slice can have, in mm. Scanners reconstruct at about 0.2 to
/// 1.5 mm (DeepLesion's range is 0.18 to 0.98); the margin admits micro-CT and heavily
/// binned slices. Outside it a spacing is a typo or an attack: 1e30 mm made a 2 mm crop a
/// fraction of a pixel wide and its outline loop for ever, 0 divides by zero.
pub const PIXEL_SPACING_MM: std::ops::RangeInclusive<f32> = 0.05..=10.0;

/// Sides of the square of context shown around a lesion, in mm (a whole torso is ~500 mm).
pub const CONTEXT_MM: std::ops::RangeInclusive<f32> = 1.0..=2000.0;

/// `mm` when it is a CT pixel spacing ([`PIXEL_SPACING_MM`]); an error naming `name`
/// otherwise. The one rule every edge and every file's PixelSpacing goes through.
pub fn check_pixel_spacing(mm: f32, name: &str) -> crate::error::Result<f32> {
    if !PIXEL_SPACING_MM.contains(&mm) {
        return Err(crate::error::Error::invalid_argument(
            name,
            format!(
                "{mm} mm is not a CT pixel spacing (expected {} to {} mm)",
                PIXEL_SPACING_MM.start(),
                PIXEL_SPACING_MM.end()
            ),
        ));
    }
    Ok(mm)
}

/// The (x, y) spacing a file states, when both are CT pixel spacings; otherwise an error on
/// `spacing_mm` saying the file is at fault and how to override it.
pub fn check_file_spacing((x, y): (f32, f32)) -> crate::error::Result<(f32, f32)> {
    if PIXEL_SPACING_MM.contains(&x) && PIXEL_SPACING_MM.contains(&y) {
        return Ok((x, y));
    }
    Err(crate::error::Error::invalid_argument(
        "spacing_mm",
        format!(
            "the file's PixelSpacing {x} x {y} mm is not a CT pixel spacing (expected {} to {} mm); give spacing_mm to override it",
            PIXEL_SPACING_MM.start(),
            PIXEL_SPACING_MM.end()
        ),
    ))
}

/// `mm` when it is a context side ([`CONTEXT_MM`]); an error naming `name` otherwise.
pub fn check_context_mm(mm: f32, name: &str) -> crate::error::Result<f32> {
    if !CONTEXT_MM.contains(&mm) {
        return Err(crate::error::Error::invalid_argument(
            name,
            format!(
                "{mm} mm is not a context size (expected {} to {} mm)",
                CONTEXT_MM.start(),
                CONTEXT_MM.end()
            ),
        ));
    }
    Ok(mm)
}

#[cfg(test)]
mod range_tests {
    use super::*;

    #[test]
    fn boxes_off_the_image_are_refused_naming_the_box() {
        assert!(check_box(&PixelBox::new(10.0, 10.0, 11.0, 11.0), 64, 64).is_ok());
        for (b, reason) in [
            (PixelBox::new(70.0, 70.0, 80.0, 80.0), "entirely outside"),
            (PixelBox::new(-30.0, 10.0, 2.0, 20.0), "centre outside"),
            (PixelBox::new(20.0, 20.0, 10.0, 30.0), "inverted"),
            (PixelBox::new(10.0, 10.0, 10.0, 30.0), "empty"),
            (PixelBox::new(f32::NAN, 10.0, 20.0, 30.0), "empty"),
        ] {
            let error = check_box(&b, 64, 64).unwrap_err().to_string();
            assert!(
                error.starts_with("box ") && error.contains(reason),
                "{error}"
            );
            assert!(error.contains("(64x64 pixels)"), "{error}");
        }
    }

    #[test]
    fn spacings_and_contexts_outside_their_ranges_are_refused_by_name() {
        assert_eq!(check_pixel_spacing(0.7, "spacing_mm").unwrap(), 0.7);
        for bad in [0.0, -1.0, 1e-30, 1e30, f32::NAN, f32::INFINITY] {
            let error = check_pixel_spacing(bad, "spacing_mm").unwrap_err();
            assert!(error.to_string().starts_with("spacing_mm: "), "{error}");
        }
        assert_eq!(check_context_mm(64.0, "around_mm").unwrap(), 64.0);
        for bad in [0.0, -5.0, 1e-30, 1e30, f32::NAN] {
            assert!(check_context_mm(bad, "around_mm").is_err());
        }
    }
}
