//! Model cards: what a model expects and produces, stored beside its weights and in every
//! index it builds, so that vectors of different models are never compared.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::imaging::PatchSpec;

/// Which network a card describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Architecture {
    /// The Merlin CT ResNet-152 trunk (3-D kernels summed over depth), cut after a stage,
    /// global-average pooled, optionally followed by a trained linear projection.
    CtResnet {
        stage: ResnetStage,
        projection: Option<usize>,
    },
    /// Our compact residual CNN.
    LesionCnn { widths: Vec<usize>, dim: usize },
}

/// Where the ResNet trunk stops: deeper is slower and more abstract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResnetStage {
    Layer2,
    Layer3,
    Layer4,
}

impl ResnetStage {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "layer2" | "2" => Some(ResnetStage::Layer2),
            "layer3" | "3" => Some(ResnetStage::Layer3),
            "layer4" | "4" => Some(ResnetStage::Layer4),
            _ => None,
        }
    }

    /// Features after this stage of ResNet-152 (times the stem width over 64).
    pub fn features(self, stem_width: usize) -> usize {
        stem_width
            * match self {
                ResnetStage::Layer2 => 8,
                ResnetStage::Layer3 => 16,
                ResnetStage::Layer4 => 32,
            }
    }
}

/// Everything needed to reproduce a model's vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub name: String,
    pub architecture: Architecture,
    /// Patch size in pixels and mm, channels and their windows.
    pub patch: PatchSpec,
    pub output_dim: usize,
    /// File of the weights beside the card.
    pub weights_file: String,
    pub weights_sha256: String,
    /// Where the weights came from and how to rebuild them.
    pub provenance: String,
    /// For a head trained on a frozen trunk: the trunk's weights; `weights_file` then holds
    /// only the head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk: Option<TrunkWeights>,
}

/// Weights a model reads besides its own file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrunkWeights {
    /// Absolute, or relative to the card's folder.
    pub file: String,
    pub sha256: String,
}

impl ModelCard {
    /// Refuses vectors from `other` where they would not be comparable, listing every field
    /// that differs.
    pub fn check_same_model(&self, other: &ModelCard) -> Result<()> {
        let mut differences = Vec::new();
        if self.name != other.name {
            differences.push(format!("model `{}` vs `{}`", self.name, other.name));
        }
        if self.architecture != other.architecture {
            differences.push(format!(
                "architecture {:?} vs {:?}",
                self.architecture, other.architecture
            ));
        }
        if self.patch.size_px != other.patch.size_px {
            differences.push(format!(
                "patch {} px vs {} px",
                self.patch.size_px, other.patch.size_px
            ));
        }
        if self.patch.field_of_view != other.patch.field_of_view {
            differences.push(format!(
                "field of view {:?} vs {:?}",
                self.patch.field_of_view, other.patch.field_of_view
            ));
        }
        if self.patch.channels != other.patch.channels {
            differences.push(format!(
                "channels {:?} vs {:?}",
                self.patch.channels, other.patch.channels
            ));
        }
        if self.output_dim != other.output_dim {
            differences.push(format!(
                "dimension {} vs {}",
                self.output_dim, other.output_dim
            ));
        }
        if !same_weights(&self.name, &self.weights_sha256, &other.weights_sha256) {
            differences.push(format!(
                "weights sha256 {} vs {}",
                short(&self.weights_sha256),
                short(&other.weights_sha256)
            ));
        }
        if self.trunk != other.trunk {
            differences.push("trunk weights differ".to_string());
        }
        if differences.is_empty() {
            Ok(())
        } else {
            Err(Error::ModelMismatch { differences })
        }
    }
}

/// Weight files that hold the same numbers for a model: archives built with `ct-resnet-l2`
/// before it was bundled recorded the imported full ResNet-152 file, of which the bundled
/// file is conv1 to layer2 exactly (`weights import` derives it bit for bit, tested), so
/// their vectors are the bundled trunk's and they open without a rebuild.
const SAME_WEIGHTS: &[(&str, &str, &str)] = &[(
    "ct-resnet-l2",
    "4b9e69e7cfce3648e04ca9dcde4881e66c0fe6a2a19d03f00d8fa98f2ef81997",
    "c8b9ec40683def289e027253ad8d031891d7cbc842c652d11ebd15596e2007d0",
)];

fn same_weights(model: &str, a: &str, b: &str) -> bool {
    a == b
        || SAME_WEIGHTS.iter().any(|&(name, old, new)| {
            name == model && ((a, b) == (old, new) || (a, b) == (new, old))
        })
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::{FieldOfView, PatchSpec};

    fn card() -> ModelCard {
        ModelCard {
            name: "lesion-cnn".into(),
            architecture: Architecture::LesionCnn {
                widths: vec![16, 32],
                dim: 64,
            },
            patch: PatchSpec::three_windows(64, FieldOfView::FixedMm(64.0)),
            output_dim: 64,
            weights_file: "model.safetensors".into(),
            weights_sha256: "ab".repeat(32),
            provenance: String::new(),
            trunk: None,
        }
    }

    #[test]
    fn mismatch_says_what_differs() {
        let a = card();
        assert!(a.check_same_model(&a.clone()).is_ok());
        let mut b = card();
        b.patch.size_px = 96;
        b.weights_sha256 = "cd".repeat(32);
        let message = a.check_same_model(&b).unwrap_err().to_string();
        assert!(message.contains("patch 64 px vs 96 px"), "{message}");
        assert!(
            message.contains("weights sha256 abababababab vs cdcdcdcdcdcd"),
            "{message}"
        );
        assert!(!message.contains("dimension"), "{message}");
    }

    #[test]
    fn an_archive_of_the_imported_l2_trunk_opens_with_the_bundled_one() {
        let bundled: ModelCard =
            serde_json::from_str(include_str!("../../data/models/ct-resnet-l2/card.json")).unwrap();
        let (_, imported_sha, bundled_sha) = SAME_WEIGHTS[0];
        assert_eq!(
            bundled.weights_sha256, bundled_sha,
            "SAME_WEIGHTS names the bundled file"
        );
        let imported = ModelCard {
            weights_sha256: imported_sha.to_string(),
            provenance: "weights import, before the trunk was bundled".into(),
            ..bundled.clone()
        };
        assert!(imported.check_same_model(&bundled).is_ok());
        assert!(bundled.check_same_model(&imported).is_ok());
        // Only for that model: another with the same two files differs.
        let other = |card: &ModelCard| ModelCard {
            name: "ct-resnet-l3".into(),
            ..card.clone()
        };
        assert!(other(&imported).check_same_model(&other(&bundled)).is_err());
    }
}
