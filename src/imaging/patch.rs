//! Patches: the square, multi-channel, fixed-size inputs an embedding model sees.
//!
//! A patch is centred on the lesion's box and covers a field of view given in millimetres,
//! so that the same lesion looks the same size whatever the scanner's pixel spacing. Each
//! channel is one slice (the key slice or a neighbour at an offset in mm) under one window.

use serde::{Deserialize, Serialize};

use super::geometry::check_box;
use super::PixelBox;
use super::{CtImage, PixelUnit, Window, WindowChoice, WindowPreset};
use crate::error::{Error, Result};

/// How much of the slice around the box a patch covers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldOfView {
    /// A fixed extent in mm: absolute lesion size stays visible to the model.
    FixedMm(f32),
    /// The box's longer side in mm plus `margin` of it on each side, clamped to
    /// `[min_mm, max_mm]`: small lesions keep detail, large ones fit.
    Context {
        margin: f32,
        min_mm: f32,
        max_mm: f32,
    },
}

impl FieldOfView {
    /// Side of the square field of view in mm for a box of this size in mm.
    pub fn side_mm(&self, box_width_mm: f32, box_height_mm: f32) -> f32 {
        match *self {
            FieldOfView::FixedMm(mm) => mm,
            FieldOfView::Context {
                margin,
                min_mm,
                max_mm,
            } => (box_width_mm.max(box_height_mm) * (1.0 + 2.0 * margin)).clamp(min_mm, max_mm),
        }
    }
}

/// One channel of a patch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChannelSpec {
    /// Offset of the slice from the key slice in mm along z (negative: towards the head).
    pub slice_offset_mm: f32,
    pub window: WindowChoice,
}

/// Geometry and channels of a patch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchSpec {
    pub size_px: usize,
    pub field_of_view: FieldOfView,
    pub channels: Vec<ChannelSpec>,
}

impl PatchSpec {
    /// Key slice under three windows (soft tissue, lung, bone): every organ's contrast.
    pub fn three_windows(size_px: usize, field_of_view: FieldOfView) -> Self {
        let channel = |preset| ChannelSpec {
            slice_offset_mm: 0.0,
            window: WindowChoice::Preset(preset),
        };
        PatchSpec {
            size_px,
            field_of_view,
            channels: vec![
                channel(WindowPreset::SoftTissue),
                channel(WindowPreset::Lung),
                channel(WindowPreset::Bone),
            ],
        }
    }

    /// The slices `offset_mm` above and below plus the key slice, under one window: the
    /// 3-slice input of DeepLesion detectors, which gives a 2-D model some 3-D context.
    pub fn neighbour_slices(
        size_px: usize,
        field_of_view: FieldOfView,
        offset_mm: f32,
        window: WindowChoice,
    ) -> Self {
        PatchSpec {
            size_px,
            field_of_view,
            channels: [-offset_mm, 0.0, offset_mm]
                .into_iter()
                .map(|slice_offset_mm| ChannelSpec {
                    slice_offset_mm,
                    window,
                })
                .collect(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(8..=1024).contains(&self.size_px) {
            return Err(Error::invalid_argument(
                "patch size",
                format!("{} px is outside 8..1024", self.size_px),
            ));
        }
        if self.channels.is_empty() {
            return Err(Error::invalid_argument(
                "patch channels",
                "at least one channel",
            ));
        }
        Ok(())
    }
}

/// A patch, channel-major (CHW), values in 0..1.
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    pub size_px: usize,
    pub channels: usize,
    pub data: Vec<f32>,
    /// Physical size of one patch pixel.
    pub mm_per_px: f32,
    /// Channels whose neighbour slice was absent and were filled from the nearest slice
    /// that exists (the key slice at worst).
    pub substituted_channels: usize,
}

impl Patch {
    pub fn channel(&self, c: usize) -> &[f32] {
        let n = self.size_px * self.size_px;
        &self.data[c * n..(c + 1) * n]
    }
}

/// The key slice and whichever neighbours were loaded, by offset in slices.
pub struct SliceStack<'a> {
    pub key: &'a CtImage,
    pub neighbours: Vec<(i32, &'a CtImage)>,
}

impl<'a> SliceStack<'a> {
    pub fn single(key: &'a CtImage) -> Self {
        SliceStack {
            key,
            neighbours: Vec::new(),
        }
    }

    /// The slice at `offset`, or the nearest loaded one between it and the key slice;
    /// the flag says whether it is a substitute.
    pub fn at(&self, offset: i32) -> (&'a CtImage, bool) {
        if offset == 0 {
            return (self.key, false);
        }
        let best = self
            .neighbours
            .iter()
            .filter(|(o, _)| o.signum() == offset.signum() && o.abs() <= offset.abs())
            .max_by_key(|(o, _)| o.abs());
        match best {
            Some((o, image)) => (image, *o != offset),
            None => (self.key, true),
        }
    }
}

/// Where a lesion is and how its slices are spaced.
#[derive(Debug, Clone, Copy)]
pub struct PatchGeometry {
    pub bbox: PixelBox,
    /// Pixel spacing in mm (x, y).
    pub spacing_mm: (f32, f32),
    /// Distance between consecutive slices in mm.
    pub slice_interval_mm: f32,
    /// The lesion's own window, used by `WindowChoice::Own` channels.
    pub own_window: Option<Window>,
}

/// Slice offset (in slices) that a channel at `offset_mm` reads.
pub fn slice_offset(offset_mm: f32, slice_interval_mm: f32) -> i32 {
    if offset_mm == 0.0 || slice_interval_mm <= 0.0 {
        return 0;
    }
    let slices = (offset_mm / slice_interval_mm).round() as i32;
    // A non-zero offset always reaches at least the adjacent slice.
    if slices == 0 {
        offset_mm.signum() as i32
    } else {
        slices
    }
}

/// Cuts a patch around the box from the stack, resampled to the spec.
pub fn extract_patch(
    stack: &SliceStack,
    geometry: &PatchGeometry,
    spec: &PatchSpec,
) -> Result<Patch> {
    spec.validate()?;
    let key = stack.key;
    check_box(&geometry.bbox, key.width, key.height)?;
    let (sx, sy) = geometry.spacing_mm;
    super::check_pixel_spacing(sx, "spacing_mm")?;
    super::check_pixel_spacing(sy, "spacing_mm")?;
    let side_mm = spec
        .field_of_view
        .side_mm(geometry.bbox.width() * sx, geometry.bbox.height() * sy);
    let n = spec.size_px;
    let mut data = vec![0f32; spec.channels.len() * n * n];
    let mut substituted_channels = 0;
    let center = geometry.bbox.center();
    for (channel, out) in spec.channels.iter().zip(data.chunks_exact_mut(n * n)) {
        let offset = slice_offset(channel.slice_offset_mm, geometry.slice_interval_mm);
        let (image, substituted) = stack.at(offset);
        substituted_channels += usize::from(substituted);
        if (image.width, image.height) != (key.width, key.height) {
            return Err(Error::invalid_argument(
                "neighbour slice",
                format!(
                    "slice at offset {offset} is {}x{}, the key slice {}x{}",
                    image.width, image.height, key.width, key.height
                ),
            ));
        }
        let window = channel.window.resolve(geometry.own_window.or(image.window));
        let region = Region {
            center_x: center.x,
            center_y: center.y,
            width_px: side_mm / sx,
            height_px: side_mm / sy,
        };
        sample_region(image, &region, n, n, &window, out);
    }
    Ok(Patch {
        size_px: n,
        channels: spec.channels.len(),
        data,
        mm_per_px: side_mm / n as f32,
        substituted_channels,
    })
}

/// A rectangle of the source image in pixel coordinates (pixel `k` is centred on `k`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Region {
    pub center_x: f32,
    pub center_y: f32,
    pub width_px: f32,
    pub height_px: f32,
}

/// Resamples `region` of `image` to `out_w x out_h` display values in 0..1.
///
/// Bilinear interpolation, with a box filter over sub-samples when shrinking so that fine
/// texture does not alias; outside the image reads as air (or black for display images).
pub(crate) fn sample_region(
    image: &CtImage,
    region: &Region,
    out_w: usize,
    out_h: usize,
    window: &Window,
    out: &mut [f32],
) {
    let step_x = region.width_px / out_w as f32;
    let step_y = region.height_px / out_h as f32;
    let sub = (step_x.max(step_y).ceil() as usize).clamp(1, 4);
    let outside = match image.unit {
        PixelUnit::Hounsfield => -1024.0,
        PixelUnit::Modality | PixelUnit::Display => image.range().0,
    };
    let x0 = region.center_x - region.width_px / 2.0;
    let y0 = region.center_y - region.height_px / 2.0;
    let inv = 1.0 / (sub * sub) as f32;
    for oy in 0..out_h {
        for ox in 0..out_w {
            let mut acc = 0.0;
            for sy in 0..sub {
                let y = y0 + (oy as f32 + (sy as f32 + 0.5) / sub as f32) * step_y;
                for sx in 0..sub {
                    let x = x0 + (ox as f32 + (sx as f32 + 0.5) / sub as f32) * step_x;
                    acc += bilinear(image, x, y, outside);
                }
            }
            out[oy * out_w + ox] = image.display(acc * inv, window);
        }
    }
}

#[inline]
fn bilinear(image: &CtImage, x: f32, y: f32, outside: f32) -> f32 {
    let (w, h) = (image.width as isize, image.height as isize);
    let fx = x.floor();
    let fy = y.floor();
    let (ix, iy) = (fx as isize, fy as isize);
    let (tx, ty) = (x - fx, y - fy);
    let at = |xx: isize, yy: isize| {
        if xx < 0 || yy < 0 || xx >= w || yy >= h {
            outside
        } else {
            image.pixels[(yy * w + xx) as usize]
        }
    };
    let top = at(ix, iy) * (1.0 - tx) + at(ix + 1, iy) * tx;
    let bottom = at(ix, iy + 1) * (1.0 - tx) + at(ix + 1, iy + 1) * tx;
    top * (1.0 - ty) + bottom * ty
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disc_image(size: usize, cx: f32, cy: f32, r: f32) -> CtImage {
        let pixels = (0..size * size)
            .map(|i| {
                let (x, y) = ((i % size) as f32, (i / size) as f32);
                if (x - cx).hypot(y - cy) < r {
                    60.0
                } else {
                    -1000.0
                }
            })
            .collect();
        CtImage::new_hounsfield(size, size, pixels)
    }

    fn geometry(bbox: PixelBox, spacing: f32) -> PatchGeometry {
        PatchGeometry {
            bbox,
            spacing_mm: (spacing, spacing),
            slice_interval_mm: 5.0,
            own_window: None,
        }
    }

    #[test]
    fn same_lesion_at_different_spacing_gives_the_same_patch() {
        // A 20 mm disc imaged at 0.5 and at 1.0 mm per pixel.
        let fine = disc_image(256, 128.0, 128.0, 20.0);
        let coarse = disc_image(128, 64.0, 64.0, 10.0);
        let spec = PatchSpec::three_windows(32, FieldOfView::FixedMm(64.0));
        let a = extract_patch(
            &SliceStack::single(&fine),
            &geometry(PixelBox::new(108.0, 108.0, 148.0, 148.0), 0.5),
            &spec,
        )
        .unwrap();
        let b = extract_patch(
            &SliceStack::single(&coarse),
            &geometry(PixelBox::new(54.0, 54.0, 74.0, 74.0), 1.0),
            &spec,
        )
        .unwrap();
        let diff: f32 = a
            .channel(0)
            .iter()
            .zip(b.channel(0))
            .map(|(x, y)| (x - y).abs())
            .sum::<f32>()
            / (32.0 * 32.0);
        assert!(diff < 0.03, "mean difference {diff}");
        assert!((a.mm_per_px - 2.0).abs() < 1e-6);
        // Centre is lesion (soft tissue 60 HU), corner is air.
        assert!(a.channel(0)[16 * 32 + 16] > 0.5);
        assert_eq!(a.channel(0)[0], 0.0);
    }

    #[test]
    fn context_field_of_view_follows_the_box() {
        let fov = FieldOfView::Context {
            margin: 0.5,
            min_mm: 32.0,
            max_mm: 160.0,
        };
        assert_eq!(fov.side_mm(10.0, 5.0), 32.0);
        assert_eq!(fov.side_mm(40.0, 20.0), 80.0);
        assert_eq!(fov.side_mm(300.0, 20.0), 160.0);
    }

    #[test]
    fn refuses_boxes_off_the_image() {
        let image = disc_image(64, 32.0, 32.0, 5.0);
        let spec = PatchSpec::three_windows(16, FieldOfView::FixedMm(32.0));
        for (b, reason) in [
            (PixelBox::new(70.0, 70.0, 80.0, 80.0), "entirely outside"),
            (PixelBox::new(-30.0, 10.0, 2.0, 20.0), "centre outside"),
            (PixelBox::new(20.0, 20.0, 10.0, 30.0), "inverted"),
        ] {
            let err =
                extract_patch(&SliceStack::single(&image), &geometry(b, 1.0), &spec).unwrap_err();
            assert!(matches!(err, Error::BoxOutsideImage { .. }), "{err}");
            assert!(err.to_string().contains(reason), "{err}");
        }
    }

    #[test]
    fn missing_neighbours_fall_back_towards_the_key_slice() {
        let key = disc_image(64, 32.0, 32.0, 5.0);
        let above = disc_image(64, 32.0, 32.0, 3.0);
        let stack = SliceStack {
            key: &key,
            neighbours: vec![(-1, &above)],
        };
        assert!(std::ptr::eq(stack.at(-2).0, &above) && stack.at(-2).1);
        assert!(std::ptr::eq(stack.at(-1).0, &above) && !stack.at(-1).1);
        assert!(std::ptr::eq(stack.at(1).0, &key) && stack.at(1).1);
        assert_eq!(slice_offset(2.0, 5.0), 1);
        assert_eq!(slice_offset(-10.0, 5.0), -2);
    }
}

#[cfg(test)]
mod sampling_tests {
    use super::*;

    #[test]
    fn identity_resampling_returns_the_pixels() {
        let pixels: Vec<f32> = (0..16).map(|i| i as f32 * 10.0).collect();
        let image = CtImage::new_hounsfield(4, 4, pixels.clone());
        let region = Region {
            center_x: 1.5,
            center_y: 1.5,
            width_px: 4.0,
            height_px: 4.0,
        };
        let window = Window {
            low: 0.0,
            high: 150.0,
        };
        let mut out = vec![0.0; 16];
        sample_region(&image, &region, 4, 4, &window, &mut out);
        let expected: Vec<f32> = pixels.iter().map(|v| window.apply(*v)).collect();
        for (a, b) in out.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }
}
