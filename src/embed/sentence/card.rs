//! What an archive records of the sentence encoder that embedded its reports, and how the
//! encoder is found again by that record.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{load_minilm, SentenceEncoder, MINILM_MODEL};
use crate::error::{Error, Result};

/// The text encoders an archive may be built with: (flag value, folder name in the cache).
pub const TEXT_ENCODERS: [(&str, &str); 1] = [("minilm", MINILM_MODEL)];

/// The sentence encoder of an archive's report vectors: enough to refuse another one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextEncoderCard {
    /// The model folder's name (`all-minilm-l6-v2`).
    pub name: String,
    /// Width of the vectors.
    pub dim: usize,
    /// sha256 of `model.safetensors`.
    pub weights_sha256: String,
}

impl TextEncoderCard {
    /// Refuses an encoder other than this one, saying what differs: report vectors of two
    /// encoders are never compared.
    pub fn check_same(&self, other: &TextEncoderCard) -> Result<()> {
        let mut differences = Vec::new();
        if self.name != other.name {
            differences.push(format!(
                "text encoder {} (the archive's is {})",
                other.name, self.name
            ));
        }
        if self.dim != other.dim {
            differences.push(format!(
                "text encoder width {} (the archive's is {})",
                other.dim, self.dim
            ));
        }
        if self.weights_sha256 != other.weights_sha256 {
            differences.push(format!(
                "text encoder weights sha256 {} (the archive's are {})",
                other.weights_sha256, self.weights_sha256
            ));
        }
        if differences.is_empty() {
            Ok(())
        } else {
            Err(Error::ModelMismatch { differences })
        }
    }
}

/// The encoder a user names (`minilm`) or an archive's card names (`all-minilm-l6-v2`),
/// loaded from the weights cache; a missing import names the command that makes it.
pub fn load_text_encoder(name: &str, cache: &Path) -> Result<SentenceEncoder> {
    match TEXT_ENCODERS
        .iter()
        .find(|(flag, folder)| name == *flag || name == *folder)
    {
        Some((_, folder)) if *folder == MINILM_MODEL => load_minilm(cache),
        _ => Err(Error::invalid_argument(
            "text_encoder",
            format!(
                "`{name}` is not a text encoder ({})",
                TEXT_ENCODERS
                    .iter()
                    .map(|(flag, _)| *flag)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}
