//! Augmented views: one random draw of shift, scale, window jitter and flips, applied alike
//! to every patch spec that reads the view, and kept as bytes between epochs.

use crate::dataset::{geometry_of, LesionRecord, LesionSlices, PixelBox};
use crate::error::Result;
use crate::imaging::{extract_patch, ChannelSpec, Patch, PatchSpec, Window, WindowChoice};
use crate::util::Rng;

/// A view as bytes (0..255), channel-major: a quarter of the memory of its floats.
pub(super) fn to_bytes(p: &Patch) -> Vec<u8> {
    p.data.iter().map(|v| (v * 255.0).round() as u8).collect()
}

/// The bytes of a view back as a patch of `spec`.
pub(super) fn bytes_to_patch(bytes: &[u8], spec: &PatchSpec) -> Patch {
    Patch {
        size_px: spec.size_px,
        channels: spec.channels.len(),
        data: bytes_to_floats(bytes).collect(),
        mm_per_px: 0.0,
        substituted_channels: 0,
    }
}

/// The pixel values of a view's bytes, as the network reads them.
pub(super) fn bytes_to_floats(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes.iter().map(|&v| f32::from(v) / 255.0)
}

/// One draw of the augmentations, applied alike to every spec that reads the view.
#[derive(Debug, Clone, Copy)]
pub(super) struct Augmentation {
    scale: f32,
    shift: (f32, f32),
    /// Per channel: (width factor, level shift as a fraction of the width).
    windows: [(f32, f32); 8],
    flips: (bool, bool),
}

impl Augmentation {
    /// Shift up to 4 px, scale 0.87..1.15, window level +-5% of the width and width +-10%,
    /// flips at random.
    pub(super) fn draw(rng: &mut Rng) -> Self {
        let mut windows = [(1.0, 0.0); 8];
        for w in &mut windows {
            *w = (rng.range(0.9, 1.1), rng.range(-0.05, 0.05));
        }
        Augmentation {
            scale: rng.range(0.87, 1.15),
            shift: (rng.range(-4.0, 4.0), rng.range(-4.0, 4.0)),
            windows,
            flips: (rng.chance(0.5), rng.chance(0.5)),
        }
    }

    /// The same geometry with the windows as specified: what an intensity-invariant target
    /// is computed from.
    pub(super) fn geometric_only(self) -> Self {
        Augmentation {
            windows: [(1.0, 0.0); 8],
            ..self
        }
    }

    pub(super) fn apply(
        &self,
        slices: &LesionSlices,
        record: &LesionRecord,
        spec: &PatchSpec,
    ) -> Result<Patch> {
        let mut geometry = geometry_of(record);
        geometry.bbox = self.moved_box(&geometry.bbox);
        let jittered = PatchSpec {
            channels: self.jittered_channels(record, spec),
            ..spec.clone()
        };
        let mut patch = extract_patch(&slices.stack(), &geometry, &jittered)?;
        flip(&mut patch, self.flips.0, self.flips.1);
        Ok(patch)
    }

    /// The box scaled about its centre and shifted.
    fn moved_box(&self, bbox: &PixelBox) -> PixelBox {
        let c = bbox.center();
        let (hw, hh) = (
            bbox.width() / 2.0 * self.scale,
            bbox.height() / 2.0 * self.scale,
        );
        let (dx, dy) = self.shift;
        PixelBox::new(c.x + dx - hw, c.y + dy - hh, c.x + dx + hw, c.y + dy + hh)
    }

    /// The spec's channels with each window's width and level jittered.
    fn jittered_channels(&self, record: &LesionRecord, spec: &PatchSpec) -> Vec<ChannelSpec> {
        spec.channels
            .iter()
            .enumerate()
            .map(|(i, ch)| {
                let w = ch.window.resolve(Some(record.window));
                let (width_factor, level_shift) = self.windows[i % self.windows.len()];
                ChannelSpec {
                    slice_offset_mm: ch.slice_offset_mm,
                    window: WindowChoice::Custom(Window::from_width_level(
                        w.width() * width_factor,
                        w.level() + w.width() * level_shift,
                    )),
                }
            })
            .collect()
    }
}

fn flip(patch: &mut Patch, horizontal: bool, vertical: bool) {
    let n = patch.size_px;
    for c in 0..patch.channels {
        let plane = &mut patch.data[c * n * n..(c + 1) * n * n];
        if horizontal {
            for row in plane.chunks_exact_mut(n) {
                row.reverse();
            }
        }
        if vertical {
            for y in 0..n / 2 {
                for x in 0..n {
                    plane.swap(y * n + x, (n - 1 - y) * n + x);
                }
            }
        }
    }
}
