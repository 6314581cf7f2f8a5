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

    /// Whether the box overlaps the image at all.
    pub fn intersects_image(&self, width: usize, height: usize) -> bool {
        self.x2 > 0.0 && self.y2 > 0.0 && self.x1 < width as f32 && self.y1 < height as f32
    }
}
