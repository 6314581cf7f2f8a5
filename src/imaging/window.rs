//! CT display windows: the presets viewers offer and the row's own window.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A display window in Hounsfield units: `low` maps to black, `high` to white.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub low: f32,
    pub high: f32,
}

impl Window {
    pub fn new(low: f32, high: f32) -> Result<Self, String> {
        if !(low.is_finite() && high.is_finite()) || high <= low {
            return Err(format!("window {low}, {high} needs low < high"));
        }
        Ok(Window { low, high })
    }

    /// From the width/level pair viewers show.
    pub fn from_width_level(width: f32, level: f32) -> Self {
        Window {
            low: level - width / 2.0,
            high: level + width / 2.0,
        }
    }

    pub fn width(&self) -> f32 {
        self.high - self.low
    }

    pub fn level(&self) -> f32 {
        (self.high + self.low) / 2.0
    }

    /// HU to display intensity in 0..1.
    #[inline]
    pub fn apply(&self, hu: f32) -> f32 {
        ((hu - self.low) / (self.high - self.low)).clamp(0.0, 1.0)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {}", self.low, self.high)
    }
}

/// The presets common viewers ship (width/level from DEEPLESION.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowPreset {
    SoftTissue,
    Lung,
    Liver,
    Bone,
    Brain,
    Mediastinum,
    Abdomen,
}

impl WindowPreset {
    pub const ALL: [WindowPreset; 7] = [
        WindowPreset::SoftTissue,
        WindowPreset::Lung,
        WindowPreset::Liver,
        WindowPreset::Bone,
        WindowPreset::Brain,
        WindowPreset::Mediastinum,
        WindowPreset::Abdomen,
    ];

    pub fn window(self) -> Window {
        let (width, level) = match self {
            WindowPreset::SoftTissue => (400.0, 40.0),
            WindowPreset::Lung => (1500.0, -600.0),
            WindowPreset::Liver => (150.0, 90.0),
            WindowPreset::Bone => (2500.0, 480.0),
            WindowPreset::Brain => (80.0, 40.0),
            WindowPreset::Mediastinum => (350.0, 50.0),
            WindowPreset::Abdomen => (400.0, 60.0),
        };
        Window::from_width_level(width, level)
    }

    pub fn name(self) -> &'static str {
        match self {
            WindowPreset::SoftTissue => "soft",
            WindowPreset::Lung => "lung",
            WindowPreset::Liver => "liver",
            WindowPreset::Bone => "bone",
            WindowPreset::Brain => "brain",
            WindowPreset::Mediastinum => "mediastinum",
            WindowPreset::Abdomen => "abdomen",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        let n = name.trim().to_ascii_lowercase();
        let n = match n.as_str() {
            "soft_tissue" | "soft-tissue" | "softtissue" => "soft",
            "mediastinal" => "mediastinum",
            other => other,
        };
        Self::ALL.into_iter().find(|p| p.name() == n)
    }
}

/// Which window a channel or a rendering uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowChoice {
    Preset(WindowPreset),
    /// The window stored with the lesion (`DICOM_windows`) or in the DICOM file.
    Own,
    Custom(Window),
}

impl WindowChoice {
    /// Parses a preset name, `own`/`dicom`, or `low,high`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if matches!(t.to_ascii_lowercase().as_str(), "own" | "dicom" | "file") {
            return Ok(WindowChoice::Own);
        }
        if let Some(preset) = WindowPreset::parse(t) {
            return Ok(WindowChoice::Preset(preset));
        }
        let [low, high] = crate::util::numbers::<2>(t).map_err(|_| {
            format!(
                "`{t}` is not a window: use one of soft, lung, liver, bone, brain, mediastinum, abdomen, own, or `low,high` in HU"
            )
        })?;
        Window::new(low, high).map(WindowChoice::Custom)
    }

    /// The window to use, given the image's or lesion's own (soft tissue when it has none).
    pub fn resolve(self, own: Option<Window>) -> Window {
        match self {
            WindowChoice::Preset(p) => p.window(),
            WindowChoice::Custom(w) => w,
            WindowChoice::Own => own.unwrap_or_else(|| WindowPreset::SoftTissue.window()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_follow_width_and_level() {
        let lung = WindowPreset::Lung.window();
        assert_eq!((lung.low, lung.high), (-1350.0, 150.0));
        let soft = WindowPreset::SoftTissue.window();
        assert_eq!((soft.low, soft.high), (-160.0, 240.0));
        assert_eq!(soft.apply(-1000.0), 0.0);
        assert_eq!(soft.apply(40.0), 0.5);
        assert_eq!(soft.apply(3000.0), 1.0);
    }

    #[test]
    fn parses_every_way_a_user_names_a_window() {
        assert_eq!(
            WindowChoice::parse("lung"),
            Ok(WindowChoice::Preset(WindowPreset::Lung))
        );
        assert_eq!(WindowChoice::parse("dicom"), Ok(WindowChoice::Own));
        assert_eq!(
            WindowChoice::parse("-175, 275"),
            Ok(WindowChoice::Custom(Window {
                low: -175.0,
                high: 275.0
            }))
        );
        assert!(WindowChoice::parse("275,-175").is_err());
        assert!(WindowChoice::parse("sharp")
            .unwrap_err()
            .contains("soft, lung"));
    }
}
