//! What a generation's collection is called and what it holds: the stamp written into its
//! description when it is filled and compared with the published manifest whenever it is
//! opened.

use serde::{Deserialize, Serialize};

use super::MilvusSettings;
use crate::archive::Published;

/// What a collection that ranks report text says in its stamp and in `/healthz`.
pub(super) const MILVUS_BM25: &str = "milvus-bm25";

/// What a generation's collection holds, written into its description when it is filled
/// and compared with the published manifest whenever it is opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Stamp {
    /// Which archive (a digest of the folder the index was built from): collections of
    /// other archives under the same name are never dropped or reused.
    #[serde(default)]
    pub(super) archive: String,
    pub(super) generation: u64,
    pub(super) live: usize,
    pub(super) records_sha256: String,
    pub(super) vectors_sha256: String,
    pub(super) model: String,
    pub(super) weights_sha256: String,
    pub(super) dim: usize,
    /// `FLAT` or `HNSW`: how the collection is searched, not what it holds.
    #[serde(default)]
    pub(super) index: String,
    /// `milvus-bm25` when the collection also ranks report text (Milvus 2.5+), else empty
    /// (text stays in tantivy).
    #[serde(default)]
    pub(super) text: String,
}

impl Stamp {
    /// Holds the same archive state (whatever its index and text ranking).
    pub(super) fn holds(&self, other: &Stamp) -> bool {
        let bare = |s: &Stamp| Stamp {
            index: String::new(),
            text: String::new(),
            ..s.clone()
        };
        bare(self) == bare(other)
    }

    pub(super) fn of(published: &Published) -> Self {
        let m = &published.manifest;
        use sha2::Digest;
        let digest = sha2::Sha256::digest(m.dataset.as_bytes());
        Stamp {
            archive: digest[..8].iter().map(|b| format!("{b:02x}")).collect(),
            generation: m.generation,
            live: published.records.len(),
            records_sha256: m.records_sha256.clone(),
            vectors_sha256: m.vectors_sha256.clone(),
            model: m.model.name.clone(),
            weights_sha256: m.model.weights_sha256.clone(),
            dim: m.model.output_dim,
            index: String::new(),
            text: String::new(),
        }
    }

    /// The collection description that carries this stamp.
    pub(super) fn description(&self) -> String {
        serde_json::to_string(self).expect("a stamp serializes")
    }

    /// The stamp a collection's description carries; `None` for a collection this program
    /// did not fill.
    pub(super) fn read(description: &str) -> Option<Stamp> {
        serde_json::from_str(description).ok()
    }

    /// The stamp in words, for messages.
    pub(super) fn describe(&self) -> String {
        format!(
            "generation {}, {} lesions, model {}, records {}",
            self.generation,
            self.live,
            self.model,
            self.records_digest()
        )
    }

    fn records_digest(&self) -> &str {
        &self.records_sha256[..12.min(self.records_sha256.len())]
    }
}

impl MilvusSettings {
    /// `<collection>_gen_NNNNNN_<records digest>_<index>`: never the name of a dropped
    /// collection with other contents (Milvus 2.3.5 can keep a dropped collection's index
    /// under a reused name).
    pub(super) fn collection_of(&self, stamp: &Stamp) -> String {
        format!(
            "{}_gen_{:06}_{}_{}",
            self.collection,
            stamp.generation,
            stamp.records_digest(),
            stamp.index.to_lowercase()
        )
    }

    /// The generation of one of this archive's collections, from its name.
    pub(super) fn generation_of(&self, collection: &str) -> Option<u64> {
        collection
            .strip_prefix(&self.collection)?
            .strip_prefix("_gen_")?
            .get(..6)?
            .parse()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_names_carry_generation_digest_and_index() {
        let settings = MilvusSettings::default();
        let stamp = Stamp {
            archive: "0123".into(),
            generation: 12,
            live: 3,
            records_sha256: "abcdef0123456789".into(),
            vectors_sha256: String::new(),
            model: "m".into(),
            weights_sha256: String::new(),
            dim: 4,
            index: "FLAT".into(),
            text: String::new(),
        };
        let name = settings.collection_of(&stamp);
        assert_eq!(name, "lesion_search_gen_000012_abcdef012345_flat");
        assert_eq!(settings.generation_of(&name), Some(12));
        assert_eq!(settings.generation_of("lesion_searchx_gen_000012"), None);
        assert!(stamp.holds(&Stamp {
            index: "HNSW".into(),
            ..stamp.clone()
        }));
        assert_eq!(Stamp::read(&stamp.description()), Some(stamp));
        assert_eq!(Stamp::read("made by someone else"), None);
    }
}
