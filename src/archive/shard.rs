//! Embedding as sharded batch work. A shard is the lesions of the patients that a stable hash
//! of the patient number sends to it; [`embed_shard`] embeds one shard of a DeepLesion-format
//! archive into a shard file, anywhere (another process, another machine), and
//! [`super::build_from_shards`] builds the index from every shard's file instead of embedding.
//!
//! A shard file: `LSSHARD1`, the header's length (u32 LE) and the header as JSON (model card
//! digest, table digest, shard, lesion count, dimension), then per lesion its row in the table
//! (u32), its vector (f32 LE) and its thumbnail (u32 length, PNG), then a CRC-32 of all that
//! came before. It is written whole or not at all.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::draft::Incoming;
use super::embedding::{embed_batch, Embedded};
use super::index_error;
use crate::embed::Embedder;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"LSSHARD1";
/// Lesions embedded together, as a build does.
const BATCH: usize = 64;

/// Shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `I/N` with 0 <= I < N, as a user writes it.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::invalid_argument(
                "shard",
                format!("`{text}` is not I/N with 0 <= I < N (for example 0/4)"),
            )
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether a patient's lesions belong to this shard. The hash keeps shards even when
    /// patient numbers follow a pattern (sites numbering in blocks, say).
    pub fn holds(&self, patient: u32) -> bool {
        let mut z = u64::from(patient).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % self.count as u64) as usize == self.index
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    model: String,
    weights_sha256: String,
    dim: usize,
    table_sha256: String,
    shard: Shard,
    lesions: usize,
}

/// What one shard's embedding did.
#[derive(Debug, Clone, Serialize)]
pub struct ShardSummary {
    pub shard: Shard,
    pub lesions: usize,
    pub patients: usize,
    pub out: PathBuf,
}

/// Embeds the lesions of `shard` of the archive in `dataset` with `model` into `out`.
pub fn embed_shard(
    dataset: &Path,
    shard: Shard,
    model: &dyn Embedder,
    out: &Path,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<ShardSummary> {
    let incoming = Incoming::read(dataset, None)?;
    let rows: Vec<usize> = (0..incoming.records.len())
        .filter(|&i| shard.holds(incoming.records[i].patient))
        .collect();
    let card = model.card();
    let header = Header {
        model: card.name.clone(),
        weights_sha256: card.weights_sha256.clone(),
        dim: card.output_dim,
        table_sha256: incoming.table_sha256.clone(),
        shard,
        lesions: rows.len(),
    };
    let header_json =
        serde_json::to_vec(&header).map_err(|e| Error::invalid_argument("shard", e.to_string()))?;
    let mut body = Vec::new();
    body.extend_from_slice(MAGIC);
    body.extend_from_slice(&(header_json.len() as u32).to_le_bytes());
    body.extend_from_slice(&header_json);
    for (done, chunk) in rows.chunks(BATCH).enumerate() {
        let records: Vec<_> = chunk.iter().map(|&i| incoming.records[i].clone()).collect();
        let (vectors, thumbnails) = embed_batch(&incoming.dataset, &records, model)?;
        for ((row, vector), thumbnail) in chunk
            .iter()
            .zip(vectors.chunks_exact(card.output_dim))
            .zip(thumbnails)
        {
            body.extend_from_slice(&(*row as u32).to_le_bytes());
            body.extend(vector.iter().flat_map(|v| v.to_le_bytes()));
            body.extend_from_slice(&(thumbnail.len() as u32).to_le_bytes());
            body.extend_from_slice(&thumbnail);
        }
        progress((done * BATCH + chunk.len()).min(rows.len()), rows.len());
    }
    let crc = crc32fast::hash(&body);
    crate::fsutil::write_atomically(out, |w| {
        w.write_all(&body)?;
        w.write_all(&crc.to_le_bytes())
    })?;
    let mut patients: Vec<u32> = rows.iter().map(|&i| incoming.records[i].patient).collect();
    patients.sort_unstable();
    patients.dedup();
    Ok(ShardSummary {
        shard,
        lesions: rows.len(),
        patients: patients.len(),
        out: out.to_path_buf(),
    })
}

/// A reader over a shard file's bytes that names the file in every error.
struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(index_error(
                self.path,
                format!("the shard file ends early (at byte {})", self.at),
            ));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The embeddings of every lesion of `incoming`, from the files of all its shards. Every
/// file must come from this table and this model, the shards must be exactly 0..N, and each
/// lesion must be in the shard its patient hashes to.
pub(super) fn embedded_from_shards(
    incoming: &Incoming,
    files: &[PathBuf],
    model: &dyn Embedder,
) -> Result<Embedded> {
    let n = incoming.records.len();
    let mut filling = Filling {
        dim: model.card().output_dim,
        vectors: vec![0f32; n * model.card().output_dim],
        thumbnails: vec![None; n],
        seen_shards: Vec::new(),
        count: None,
    };
    for path in files {
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        let mut cursor = checked_content(path, &bytes)?;
        let header_len = cursor.u32()? as usize;
        let header: Header = serde_json::from_slice(cursor.take(header_len)?)
            .map_err(|e| index_error(path, format!("bad shard header: {e}")))?;
        check_header(path, &header, model, incoming)?;
        filling.count_shard(path, &header)?;
        filling.read_rows(path, &header, &mut cursor, incoming)?;
    }
    filling.finish()
}

/// The shard file's content after its magic, once its CRC has been checked.
fn checked_content<'a>(path: &'a Path, bytes: &'a [u8]) -> Result<Cursor<'a>> {
    if bytes.len() < MAGIC.len() + 8 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(index_error(
            path,
            "not a shard file (lesion-indexer embed-shard)",
        ));
    }
    let (content, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(content).to_le_bytes() != crc {
        return Err(index_error(
            path,
            "the shard file is damaged (CRC mismatch)",
        ));
    }
    Ok(Cursor {
        path,
        bytes: content,
        at: MAGIC.len(),
    })
}

/// A shard embedded with this build's model from this build's table.
fn check_header(
    path: &Path,
    header: &Header,
    model: &dyn Embedder,
    incoming: &Incoming,
) -> Result<()> {
    let card = model.card();
    if header.weights_sha256 != card.weights_sha256 || header.dim != card.output_dim {
        return Err(index_error(
            path,
            format!(
                "embedded with `{}` ({}), not with the model of this build, `{}` ({})",
                header.model,
                &header.weights_sha256[..12.min(header.weights_sha256.len())],
                card.name,
                &card.weights_sha256[..12.min(card.weights_sha256.len())]
            ),
        ));
    }
    if header.table_sha256 != incoming.table_sha256 {
        return Err(index_error(
            path,
            "embedded from another DL_info.csv than the one being built",
        ));
    }
    Ok(())
}

/// The build's vectors and thumbnails as shard files fill them in.
struct Filling {
    dim: usize,
    vectors: Vec<f32>,
    thumbnails: Vec<Option<Vec<u8>>>,
    seen_shards: Vec<usize>,
    count: Option<usize>,
}

impl Filling {
    /// Every file splits the archive the same way, and no shard comes twice.
    fn count_shard(&mut self, path: &Path, header: &Header) -> Result<()> {
        if *self.count.get_or_insert(header.shard.count) != header.shard.count {
            return Err(index_error(
                path,
                format!(
                    "one of {} shards, but the other files split the archive in {}",
                    header.shard.count,
                    self.count.unwrap_or_default()
                ),
            ));
        }
        if self.seen_shards.contains(&header.shard.index) {
            return Err(index_error(
                path,
                format!("shard {} is given twice", header.shard.index),
            ));
        }
        self.seen_shards.push(header.shard.index);
        Ok(())
    }

    fn read_rows(
        &mut self,
        path: &Path,
        header: &Header,
        cursor: &mut Cursor,
        incoming: &Incoming,
    ) -> Result<()> {
        let (n, dim) = (self.thumbnails.len(), self.dim);
        for _ in 0..header.lesions {
            let row = cursor.u32()? as usize;
            if row >= n || self.thumbnails[row].is_some() {
                return Err(index_error(
                    path,
                    format!("row {row} is outside the table or given twice"),
                ));
            }
            if !header.shard.holds(incoming.records[row].patient) {
                return Err(index_error(
                    path,
                    format!("row {row} does not belong to shard {}", header.shard.index),
                ));
            }
            for (slot, b) in self.vectors[row * dim..(row + 1) * dim]
                .iter_mut()
                .zip(cursor.take(dim * 4)?.chunks_exact(4))
            {
                *slot = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            let len = cursor.u32()? as usize;
            self.thumbnails[row] = Some(cursor.take(len)?.to_vec());
        }
        Ok(())
    }

    /// Every shard given, every row of the table in one of them.
    fn finish(self) -> Result<Embedded> {
        let expected = self.count.unwrap_or(0);
        if self.seen_shards.len() != expected || expected == 0 {
            let mut missing: Vec<String> = (0..expected)
                .filter(|i| !self.seen_shards.contains(i))
                .map(|i| format!("{i}/{expected}"))
                .collect();
            if expected == 0 {
                missing.push("every shard".into());
            }
            return Err(Error::invalid_argument(
                "embeddings",
                format!("missing shard files: {}", missing.join(", ")),
            ));
        }
        if let Some(row) = self.thumbnails.iter().position(Option::is_none) {
            return Err(Error::invalid_argument(
                "embeddings",
                format!("row {row} of the table is in no shard file"),
            ));
        }
        Ok(Embedded {
            vectors: self.vectors,
            thumbnails: self.thumbnails,
            resumed: 0,
            cache: PathBuf::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_split_every_patient_into_exactly_one() {
        assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
        for bad in ["4/4", "1", "a/2", "0/0", "-1/3"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let shards: Vec<Shard> = (0..4).map(|index| Shard { index, count: 4 }).collect();
        let mut sizes = [0usize; 4];
        for patient in 1..=4000u32 {
            let holders: Vec<usize> = (0..4).filter(|&i| shards[i].holds(patient)).collect();
            assert_eq!(holders.len(), 1);
            sizes[holders[0]] += 1;
        }
        assert!(sizes.iter().all(|&s| (850..1150).contains(&s)), "{sizes:?}");
    }
}
