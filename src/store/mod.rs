//! Lesion records in sled: every DL_info field, report text, tags and a thumbnail per dense
//! id, and the key-to-id map. sled is named in this module only; its author calls it beta,
//! so every record carries into a checksum that `verify` recomputes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::dataset::LesionRecord;

mod table;
use crate::error::{Error, Result};
pub use table::{RecordTable, RECORDS_TABLE};

/// Everything kept for one lesion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredLesion {
    /// `File_name`, with `#n` past the first lesion of a slice.
    pub key: String,
    /// 0-based row of the source table (LesaNet labels key on it).
    pub row_index: usize,
    pub record: LesionRecord,
    pub report: String,
    pub tags: Vec<String>,
    /// The DeepLesion-format folder holding this lesion's slices, when it is not the one the
    /// index was built from (lesions added later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
}

/// The records of one index generation.
pub struct RecordStore {
    path: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    keys: sled::Tree,
    thumbnails: sled::Tree,
}

/// One key/value pair of the records checksum, length-prefixed; the sled store and the
/// sealed table both hash through here, so their digests cannot drift apart.
pub(crate) fn hash_entry(hasher: &mut sha2::Sha256, key: &[u8], value: &[u8]) {
    hasher.update((key.len() as u32).to_le_bytes());
    hasher.update(key);
    hasher.update((value.len() as u32).to_le_bytes());
    hasher.update(value);
}

pub(crate) fn store_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Index {
        path: path.to_path_buf(),
        message: format!("records: {e}"),
    }
}

impl RecordStore {
    /// Opens (creating if absent) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(|e| store_error(dir, e))?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| store_error(dir, e));
        Ok(RecordStore {
            path: dir.to_path_buf(),
            records: tree("records")?,
            keys: tree("keys")?,
            thumbnails: tree("thumbnails")?,
            db,
        })
    }

    pub fn insert(
        &self,
        id: u32,
        lesion: &StoredLesion,
        thumbnail_png: Option<&[u8]>,
    ) -> Result<()> {
        let value = serde_json::to_vec(lesion).map_err(|e| store_error(&self.path, e))?;
        self.records
            .insert(id.to_be_bytes(), value)
            .map_err(|e| store_error(&self.path, e))?;
        self.keys
            .insert(lesion.key.as_bytes(), &id.to_be_bytes())
            .map_err(|e| store_error(&self.path, e))?;
        if let Some(png) = thumbnail_png {
            self.thumbnails
                .insert(id.to_be_bytes(), png)
                .map_err(|e| store_error(&self.path, e))?;
        }
        Ok(())
    }

    /// Removes a lesion's record, key and thumbnail; returns whether it was there.
    pub fn remove(&self, id: u32) -> Result<bool> {
        let Some(lesion) = self.get(id)? else {
            return Ok(false);
        };
        self.records
            .remove(id.to_be_bytes())
            .map_err(|e| store_error(&self.path, e))?;
        self.keys
            .remove(lesion.key.as_bytes())
            .map_err(|e| store_error(&self.path, e))?;
        self.thumbnails
            .remove(id.to_be_bytes())
            .map_err(|e| store_error(&self.path, e))?;
        Ok(true)
    }

    pub fn get(&self, id: u32) -> Result<Option<StoredLesion>> {
        match self
            .records
            .get(id.to_be_bytes())
            .map_err(|e| store_error(&self.path, e))?
        {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| store_error(&self.path, format!("record {id} is corrupt: {e}"))),
            None => Ok(None),
        }
    }

    pub fn id_of(&self, key: &str) -> Result<Option<u32>> {
        Ok(self
            .keys
            .get(key.as_bytes())
            .map_err(|e| store_error(&self.path, e))?
            .and_then(|v| v.as_ref().try_into().ok().map(u32::from_be_bytes)))
    }

    pub fn thumbnail(&self, id: u32) -> Result<Option<Vec<u8>>> {
        Ok(self
            .thumbnails
            .get(id.to_be_bytes())
            .map_err(|e| store_error(&self.path, e))?
            .map(|v| v.to_vec()))
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every record in id order.
    pub fn all(&self) -> Result<Vec<(u32, StoredLesion)>> {
        self.records
            .iter()
            .map(|entry| {
                let (k, v) = entry.map_err(|e| store_error(&self.path, e))?;
                let id = u32::from_be_bytes(
                    k.as_ref()
                        .try_into()
                        .map_err(|_| store_error(&self.path, "bad record key"))?,
                );
                let lesion = serde_json::from_slice(&v)
                    .map_err(|e| store_error(&self.path, format!("record {id} is corrupt: {e}")))?;
                Ok((id, lesion))
            })
            .collect()
    }

    /// Sha256 over ids and record bytes in id order, and over the key map.
    pub fn checksum(&self) -> Result<String> {
        let mut hasher = sha2::Sha256::new();
        for tree in [&self.records, &self.keys] {
            for entry in tree.iter() {
                let (k, v) = entry.map_err(|e| store_error(&self.path, e))?;
                hash_entry(&mut hasher, &k, &v);
            }
        }
        Ok(crate::util::hex_digest(&hasher.finalize()))
    }

    /// Seals the store into the read-only table readers open (see `table`), written
    /// atomically to `path`.
    pub fn freeze(&self, path: &Path) -> Result<()> {
        let collect = |tree: &sled::Tree| -> Result<Vec<(sled::IVec, sled::IVec)>> {
            tree.iter()
                .map(|entry| entry.map_err(|e| store_error(&self.path, e)))
                .collect()
        };
        let id_of = |k: &[u8]| -> Result<u32> {
            k.try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| store_error(&self.path, "bad record key"))
        };
        let records = collect(&self.records)?
            .into_iter()
            .map(|(k, v)| Ok((id_of(&k)?, v.to_vec())))
            .collect::<Result<Vec<_>>>()?;
        let keys = collect(&self.keys)?
            .into_iter()
            .map(|(k, v)| Ok((k.to_vec(), id_of(&v)?)))
            .collect::<Result<Vec<_>>>()?;
        let thumbnails = collect(&self.thumbnails)?
            .into_iter()
            .map(|(k, v)| Ok((id_of(&k)?, v.to_vec())))
            .collect::<Result<Vec<_>>>()?;
        crate::fsutil::write_atomically(path, |w| {
            table::write_table(w, &records, &keys, &thumbnails)
        })
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map_err(|e| store_error(&self.path, e))?;
        Ok(())
    }
}

/// The records of a published generation, as readers see them: the sealed table, or for a
/// generation written before tables existed, its sled store opened in place (one process).
pub enum PublishedRecords {
    Table(RecordTable),
    Sled(RecordStore),
}

impl PublishedRecords {
    /// Opens `generation_dir`'s records: `records.table` when present, else `records/`.
    pub fn open(generation_dir: &Path) -> Result<Self> {
        let table = generation_dir.join(RECORDS_TABLE);
        if table.exists() {
            return RecordTable::open(&table).map(PublishedRecords::Table);
        }
        let dir = generation_dir.join("records");
        match RecordStore::open(&dir) {
            Ok(store) => Ok(PublishedRecords::Sled(store)),
            Err(e) => Err(store_error(
                &dir,
                format!(
                    "{e}; this generation predates record tables and another process holds it: \
                     stop that process, or publish a new generation (any add or delete) first"
                ),
            )),
        }
    }

    pub fn get(&self, id: u32) -> Result<Option<StoredLesion>> {
        match self {
            PublishedRecords::Table(t) => t.get(id),
            PublishedRecords::Sled(s) => s.get(id),
        }
    }

    pub fn id_of(&self, key: &str) -> Result<Option<u32>> {
        match self {
            PublishedRecords::Table(t) => t.id_of(key),
            PublishedRecords::Sled(s) => s.id_of(key),
        }
    }

    pub fn thumbnail(&self, id: u32) -> Result<Option<Vec<u8>>> {
        match self {
            PublishedRecords::Table(t) => t.thumbnail(id),
            PublishedRecords::Sled(s) => s.thumbnail(id),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            PublishedRecords::Table(t) => t.len(),
            PublishedRecords::Sled(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every record in id order.
    pub fn all(&self) -> Result<Vec<(u32, StoredLesion)>> {
        match self {
            PublishedRecords::Table(t) => t.all(),
            PublishedRecords::Sled(s) => s.all(),
        }
    }

    pub fn checksum(&self) -> Result<String> {
        match self {
            PublishedRecords::Table(t) => t.checksum(),
            PublishedRecords::Sled(s) => s.checksum(),
        }
    }

    /// Whether readers share this generation without opening sled.
    pub fn is_table(&self) -> bool {
        matches!(self, PublishedRecords::Table(_))
    }
}
