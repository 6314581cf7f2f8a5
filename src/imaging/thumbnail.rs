//! 8-bit thumbnails for people: a window applied, the lesion's box drawn.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use super::patch::{sample_region, Region};
use super::PixelBox;
use super::{CtImage, Window};
use crate::error::{Error, Result};

/// What a thumbnail shows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThumbnailSpec {
    /// Longest side of the output in pixels.
    pub size_px: usize,
    /// `None`: the whole slice; `Some(mm)`: a square of that side around the box.
    pub around_box_mm: Option<f32>,
    pub draw_box: bool,
}

/// An RGB thumbnail.
#[derive(Debug, Clone, PartialEq)]
pub struct Thumbnail {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Thumbnail {
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let mut out = Cursor::new(Vec::new());
        image::write_buffer_with_format(
            &mut out,
            &self.rgb,
            self.width as u32,
            self.height as u32,
            image::ExtendedColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .map_err(|e| Error::Image {
            path: "thumbnail".into(),
            message: e.to_string(),
        })?;
        Ok(out.into_inner())
    }
}

const BOX_COLOUR: [u8; 3] = [255, 214, 0];

/// Renders `image` under `window`, optionally cropped around and marked with `bbox`.
pub fn render_thumbnail(
    image: &CtImage,
    window: &Window,
    bbox: Option<&PixelBox>,
    spacing_mm: (f32, f32),
    spec: &ThumbnailSpec,
) -> Result<Thumbnail> {
    if !(8..=2048).contains(&spec.size_px) {
        return Err(Error::invalid_argument(
            "thumbnail size",
            format!("{} px is outside 8..2048", spec.size_px),
        ));
    }
    if let Some(b) = bbox {
        super::geometry::check_box(b, image.width, image.height)?;
    }
    let region = match (spec.around_box_mm, bbox) {
        (Some(mm), Some(b)) => {
            super::check_context_mm(mm, "around_mm")?;
            super::check_pixel_spacing(spacing_mm.0, "spacing_mm")?;
            super::check_pixel_spacing(spacing_mm.1, "spacing_mm")?;
            let c = b.center();
            Region {
                center_x: c.x,
                center_y: c.y,
                width_px: mm / spacing_mm.0,
                height_px: mm / spacing_mm.1,
            }
        }
        _ => Region {
            center_x: image.width as f32 / 2.0 - 0.5,
            center_y: image.height as f32 / 2.0 - 0.5,
            width_px: image.width as f32,
            height_px: image.height as f32,
        },
    };
    let scale = spec.size_px as f32 / region.width_px.max(region.height_px);
    let out_w = ((region.width_px * scale).round() as usize).max(1);
    let out_h = ((region.height_px * scale).round() as usize).max(1);
    let mut gray = vec![0f32; out_w * out_h];
    sample_region(image, &region, out_w, out_h, window, &mut gray);
    let mut rgb: Vec<u8> = gray
        .iter()
        .flat_map(|&v| {
            let g = (v * 255.0).round() as u8;
            [g, g, g]
        })
        .collect();
    if let (true, Some(b)) = (spec.draw_box, bbox) {
        // Source pixel coordinate -> output pixel coordinate.
        let to_out = |x: f32, y: f32| {
            let ox = (x - (region.center_x - region.width_px / 2.0)) * scale;
            let oy = (y - (region.center_y - region.height_px / 2.0)) * scale;
            (ox.floor() as isize, oy.floor() as isize)
        };
        let (x1, y1) = to_out(b.x1, b.y1);
        let (x2, y2) = to_out(b.x2, b.y2);
        draw_rectangle(&mut rgb, out_w, out_h, (x1, y1, x2, y2));
    }
    Ok(Thumbnail {
        width: out_w,
        height: out_h,
        rgb,
    })
}

fn draw_rectangle(
    rgb: &mut [u8],
    w: usize,
    h: usize,
    (x1, y1, x2, y2): (isize, isize, isize, isize),
) {
    // Sides far outside the output are drawn where they cross it, never walked pixel by
    // pixel: the loops stay bounded by the output whatever the box maps to.
    let (w_i, h_i) = (w as isize, h as isize);
    let clamp_x = |x: isize| x.clamp(-1, w_i);
    let clamp_y = |y: isize| y.clamp(-1, h_i);
    let (x1, x2, y1, y2) = (clamp_x(x1), clamp_x(x2), clamp_y(y1), clamp_y(y2));
    let mut put = |x: isize, y: isize| {
        if x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h {
            let i = (y as usize * w + x as usize) * 3;
            rgb[i..i + 3].copy_from_slice(&BOX_COLOUR);
        }
    };
    for x in x1..=x2 {
        put(x, y1);
        put(x, y2);
    }
    for y in y1..=y2 {
        put(x1, y);
        put(x2, y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::WindowPreset;

    #[test]
    fn draws_the_box_where_the_lesion_is() {
        let image = CtImage::new_hounsfield(100, 100, vec![40.0; 100 * 100]);
        let spec = ThumbnailSpec {
            size_px: 50,
            around_box_mm: None,
            draw_box: true,
        };
        let bbox = PixelBox::new(20.0, 20.0, 60.0, 40.0);
        let t = render_thumbnail(
            &image,
            &WindowPreset::SoftTissue.window(),
            Some(&bbox),
            (1.0, 1.0),
            &spec,
        )
        .unwrap();
        assert_eq!((t.width, t.height), (50, 50));
        let at = |x: usize, y: usize| &t.rgb[(y * 50 + x) * 3..(y * 50 + x) * 3 + 3];
        assert_eq!(at(20, 10), &BOX_COLOUR);
        assert_ne!(at(20, 15), &BOX_COLOUR);
        assert!(t.to_png().unwrap().starts_with(b"\x89PNG"));
    }
}
