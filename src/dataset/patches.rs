//! Reading a lesion's slices from a dataset folder and cutting its patch.

use std::path::{Path, PathBuf};

use super::record::LesionRecord;
use crate::error::{Error, Result};
use crate::imaging::{
    extract_patch, load_png16, slice_offset, CtImage, Patch, PatchGeometry, PatchSpec, SliceStack,
};

/// A DeepLesion-format dataset folder.
#[derive(Debug, Clone)]
pub struct Dataset {
    root: PathBuf,
}

/// The key slice of a lesion and the neighbours a patch spec needs.
pub struct LesionSlices {
    pub key: CtImage,
    /// (offset in slices, slice) for every neighbour that exists on disk.
    pub neighbours: Vec<(i32, CtImage)>,
}

impl LesionSlices {
    pub fn stack(&self) -> SliceStack<'_> {
        SliceStack {
            key: &self.key,
            neighbours: self.neighbours.iter().map(|(o, s)| (*o, s)).collect(),
        }
    }
}

impl Dataset {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Dataset { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dl_info_path(&self) -> PathBuf {
        self.root.join(super::DL_INFO_FILE)
    }

    /// `DL_info.csv`, or where only a partial copy of DeepLesion's table is present (as
    /// `DL_info_partial.csv`), that one.
    pub fn table_path(&self) -> PathBuf {
        let full = self.dl_info_path();
        let partial = self.root.join("DL_info_partial.csv");
        if !full.is_file() && partial.is_file() {
            partial
        } else {
            full
        }
    }

    pub fn reports_path(&self) -> PathBuf {
        self.root.join(super::REPORTS_FILE)
    }

    /// Loads the key slice (it must exist and be a 16-bit PNG of the stated size) and the
    /// neighbours `spec` reads, skipping neighbours that are outside `Slice_range` or absent.
    pub fn load_slices(&self, record: &LesionRecord, spec: &PatchSpec) -> Result<LesionSlices> {
        let key = self.load_key_slice(record)?;
        let mut offsets: Vec<i32> = spec
            .channels
            .iter()
            .map(|c| slice_offset(c.slice_offset_mm, record.spacing.z_mm))
            .filter(|&o| o != 0)
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        let mut neighbours = Vec::with_capacity(offsets.len());
        for offset in offsets {
            let index = record.key_slice as i64 + offset as i64;
            if index < 0 || !record.slice_range.contains(index as u32) {
                continue;
            }
            let path = record.slice_path(&self.root, index as u32);
            match load_png16(&path) {
                Ok(slice) => neighbours.push((offset, slice)),
                // The real archive always has its neighbours, partial copies often do not:
                // the patch falls back to the nearest slice and counts the substitution.
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(LesionSlices { key, neighbours })
    }

    /// Loads and checks the key slice of a lesion.
    pub fn load_key_slice(&self, record: &LesionRecord) -> Result<CtImage> {
        let path = record.key_slice_path(&self.root);
        let image = load_png16(&path).map_err(|e| match e {
            Error::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::MissingSlice {
                    path,
                    lesion: record.file_name.clone(),
                }
            }
            other => other,
        })?;
        if (image.width as u32, image.height as u32) != (record.image_width, record.image_height) {
            return Err(Error::Image {
                path,
                message: format!(
                    "image is {}x{}, DL_info.csv says {}x{}",
                    image.width, image.height, record.image_width, record.image_height
                ),
            });
        }
        Ok(image)
    }

    /// The lesion's patch, read from disk.
    pub fn lesion_patch(&self, record: &LesionRecord, spec: &PatchSpec) -> Result<Patch> {
        let slices = self.load_slices(record, spec)?;
        extract_patch(&slices.stack(), &geometry_of(record), spec)
    }
}

/// Patch geometry of a recorded lesion.
pub fn geometry_of(record: &LesionRecord) -> PatchGeometry {
    PatchGeometry {
        bbox: record.bbox,
        spacing_mm: (record.spacing.x_mm, record.spacing.y_mm),
        slice_interval_mm: record.spacing.z_mm,
        own_window: Some(record.window),
    }
}
