//! One DeepLesion lesion with every `DL_info.csv` field typed.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::imaging::Window;
pub use crate::imaging::{PixelBox, Point};

/// The RECIST measurement: the long axis and the short axis perpendicular to it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Recist {
    pub long_axis: [Point; 2],
    pub short_axis: [Point; 2],
}

impl Recist {
    /// The eight numbers in `Measurement_coordinates` order.
    pub fn from_coordinates(c: [f32; 8]) -> Self {
        let p = |i: usize| Point {
            x: c[i],
            y: c[i + 1],
        };
        Recist {
            long_axis: [p(0), p(2)],
            short_axis: [p(4), p(6)],
        }
    }

    pub fn coordinates(&self) -> [f32; 8] {
        let [a, b] = self.long_axis;
        let [c, d] = self.short_axis;
        [a.x, a.y, b.x, b.y, c.x, c.y, d.x, d.y]
    }
}

/// Normalized body location, each coordinate in 0..1; z grows from head to feet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct NormalizedLocation {
    pub x: f32,
    pub y: f32,
    pub z: f32,
}

/// DeepLesion's eight coarse lesion types, plus Unknown (`-1`, every training row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum CoarseType {
    Bone,
    Abdomen,
    Mediastinum,
    Liver,
    Lung,
    Kidney,
    SoftTissue,
    Pelvis,
    Unknown,
}

impl CoarseType {
    /// The eight known types in code order 1..8.
    pub const KNOWN: [CoarseType; 8] = [
        CoarseType::Bone,
        CoarseType::Abdomen,
        CoarseType::Mediastinum,
        CoarseType::Liver,
        CoarseType::Lung,
        CoarseType::Kidney,
        CoarseType::SoftTissue,
        CoarseType::Pelvis,
    ];

    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            -1 => Some(CoarseType::Unknown),
            1..=8 => Some(Self::KNOWN[(code - 1) as usize]),
            _ => None,
        }
    }

    pub fn code(self) -> i32 {
        match self {
            CoarseType::Unknown => -1,
            known => Self::KNOWN.iter().position(|t| *t == known).unwrap_or(0) as i32 + 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CoarseType::Bone => "bone",
            CoarseType::Abdomen => "abdomen",
            CoarseType::Mediastinum => "mediastinum",
            CoarseType::Liver => "liver",
            CoarseType::Lung => "lung",
            CoarseType::Kidney => "kidney",
            CoarseType::SoftTissue => "soft_tissue",
            CoarseType::Pelvis => "pelvis",
            CoarseType::Unknown => "unknown",
        }
    }

    /// Accepts the name (`soft_tissue`, `soft tissue`) or the numeric code.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim().to_ascii_lowercase().replace([' ', '-'], "_");
        if let Ok(code) = t.parse::<i32>() {
            return Self::from_code(code);
        }
        Self::KNOWN
            .into_iter()
            .chain([CoarseType::Unknown])
            .find(|c| c.name() == t)
    }

    pub fn is_known(self) -> bool {
        self != CoarseType::Unknown
    }
}

impl fmt::Display for CoarseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Sex {
    Female,
    Male,
    Unknown,
}

impl Sex {
    /// `F`/`female`, `M`/`male`, `U`/`unknown`, any case.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "f" | "female" => Some(Sex::Female),
            "m" | "male" => Some(Sex::Male),
            "u" | "unknown" => Some(Sex::Unknown),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Sex::Female => "F",
            Sex::Male => "M",
            Sex::Unknown => "",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(Split::Train),
            2 => Some(Split::Validation),
            3 => Some(Split::Test),
            _ => None,
        }
    }

    pub fn code(self) -> i32 {
        match self {
            Split::Train => 1,
            Split::Validation => 2,
            Split::Test => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "1" | "train" => Some(Split::Train),
            "2" | "val" | "validation" => Some(Split::Validation),
            "3" | "test" => Some(Split::Test),
            _ => None,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Pixel spacing in mm (x, y) and the interval between slices in mm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spacing {
    pub x_mm: f32,
    pub y_mm: f32,
    pub z_mm: f32,
}

/// First and last slice index present in the series folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceRange {
    pub first: u32,
    pub last: u32,
}

impl SliceRange {
    pub fn contains(&self, index: u32) -> bool {
        (self.first..=self.last).contains(&index)
    }

    pub fn len(&self) -> usize {
        (self.last - self.first) as usize + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// One row of `DL_info.csv`, every field typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LesionRecord {
    /// `<patient>_<study>_<series>_<slice>.png`; with the lesion's ordinal on that slice it
    /// is the lesion's key.
    pub file_name: String,
    pub patient: u32,
    pub study: u32,
    pub series: u32,
    pub key_slice: u32,
    pub recist: Recist,
    pub bbox: PixelBox,
    /// Long and short RECIST diameters in pixels.
    pub diameters_px: [f32; 2],
    pub location: NormalizedLocation,
    pub coarse_type: CoarseType,
    pub possibly_noisy: bool,
    pub slice_range: SliceRange,
    pub spacing: Spacing,
    pub image_width: u32,
    pub image_height: u32,
    /// The window the radiologist read the slice in.
    pub window: Window,
    pub sex: Sex,
    /// `None` where the table says `NaN` or nothing.
    pub age: Option<f32>,
    pub split: Split,
}

impl LesionRecord {
    pub fn long_diameter_mm(&self) -> f32 {
        self.diameters_px[0] * self.spacing.x_mm
    }

    pub fn short_diameter_mm(&self) -> f32 {
        self.diameters_px[1] * self.spacing.x_mm
    }

    /// `<patient>_<study>_<series>`: the folder under `Images_png/` holding the series.
    pub fn series_folder(&self) -> &str {
        series_folder_of(&self.file_name)
    }

    /// Path of the key slice under a dataset root.
    pub fn key_slice_path(&self, root: &Path) -> PathBuf {
        self.slice_path(root, self.key_slice)
    }

    /// Path of any slice of the same series.
    pub fn slice_path(&self, root: &Path, slice: u32) -> PathBuf {
        root.join(IMAGES_DIR)
            .join(self.series_folder())
            .join(format!("{slice:03}.png"))
    }

    /// Canonical file name for these indices, as DeepLesion spells it.
    pub fn canonical_file_name(patient: u32, study: u32, series: u32, slice: u32) -> String {
        format!("{patient:06}_{study:02}_{series:02}_{slice:03}.png")
    }
}

/// Folder of the slice images inside a DeepLesion-format dataset.
pub const IMAGES_DIR: &str = "Images_png";

/// `000001_01_01_109.png` -> `000001_01_01`.
pub fn series_folder_of(file_name: &str) -> &str {
    file_name
        .rsplit_once('_')
        .map(|(folder, _)| folder)
        .unwrap_or(file_name)
}

/// A lesion's key: its `File_name`, plus `#n` for the n-th (0-based) of several lesions on
/// one slice, in table order. `000001_01_01_109.png` and `000001_01_01_109.png#0` name the
/// same lesion.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LesionKey {
    pub file_name: String,
    pub ordinal: u32,
}

impl LesionKey {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (file_name, ordinal) = match text.rsplit_once('#') {
            Some((name, n)) => (
                name,
                n.parse::<u32>().map_err(|_| {
                    format!("`{text}`: `#{n}` is not a lesion ordinal (use #0, #1, ...)")
                })?,
            ),
            None => (text, 0),
        };
        if !file_name.ends_with(".png") || !file_name.contains('_') {
            return Err(format!(
                "`{text}` is not a lesion key (expected a File_name such as 000001_01_01_109.png, optionally #n)"
            ));
        }
        Ok(LesionKey {
            file_name: file_name.to_string(),
            ordinal,
        })
    }
}

impl fmt::Display for LesionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ordinal == 0 {
            f.write_str(&self.file_name)
        } else {
            write!(f, "{}#{}", self.file_name, self.ordinal)
        }
    }
}

/// Keys of lesions in table order: the n-th row naming a slice gets ordinal n.
pub fn lesion_keys<'a>(records: impl IntoIterator<Item = &'a LesionRecord>) -> Vec<LesionKey> {
    let mut seen: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    records
        .into_iter()
        .map(|r| {
            let n = seen.entry(r.file_name.as_str()).or_default();
            let key = LesionKey {
                file_name: r.file_name.clone(),
                ordinal: *n,
            };
            *n += 1;
            key
        })
        .collect()
}
