//! The read side of a published generation's records: one immutable file written from the
//! sled store when the generation is sealed. sled admits a single process per database, so
//! readers (the server, `verify`, a CLI search beside a running server) read this file
//! instead; any number of them share it without locks and without copying anything.
//!
//! ```text
//! "LSRECT01"
//! u64 records, u64 keys, u64 thumbnails                     (little-endian)
//! records:    u32 id, u32 len, JSON          (ascending id, as sled iterates)
//! keys:       u32 len, key bytes, u32 id     (ascending key bytes, as sled iterates)
//! thumbnails: u32 id, u32 len, PNG
//! u64 CRC-32 of everything above
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::Digest;

use super::{store_error as bad_store, StoredLesion};
use crate::error::{Error, Result};

pub(super) const MAGIC: &[u8; 8] = b"LSRECT01";
/// The file beside `records/` in a generation folder.
pub const RECORDS_TABLE: &str = "records.table";

/// Where one value lies in the file.
#[derive(Debug, Clone, Copy)]
struct Span {
    offset: u64,
    len: u32,
}

/// A generation's records, read from its table file.
pub struct RecordTable {
    path: PathBuf,
    file: File,
    /// Ascending ids with their record spans.
    records: Vec<(u32, Span)>,
    /// Keys in the order sled kept them (the checksum walks them so).
    keys: Vec<(String, u32)>,
    key_ids: HashMap<String, u32>,
    thumbnails: HashMap<u32, Span>,
}

/// Reads little-endian values while keeping the CRC and the offset of what passed.
struct Scanner<R: Read> {
    inner: R,
    crc: crc32fast::Hasher,
    offset: u64,
    path: PathBuf,
    /// Bytes the file holds; declared lengths are checked against what remains.
    size: u64,
}

impl<R: Read> Scanner<R> {
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        if (n as u64) > self.size.saturating_sub(self.offset) {
            return Err(bad_store(
                &self.path,
                format!(
                    "declares {n} bytes at offset {} past the end of the file ({} bytes)",
                    self.offset, self.size
                ),
            ));
        }
        let mut buf = vec![0; n];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| Error::io(&self.path, e))?;
        self.crc.update(&buf);
        self.offset += n as u64;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.bytes(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("eight bytes")))
    }

    /// Skips a value, keeping it in the CRC, and says where it was.
    fn span(&mut self, len: u32) -> Result<Span> {
        let offset = self.offset;
        if u64::from(len) > self.size.saturating_sub(self.offset) {
            return Err(bad_store(
                &self.path,
                format!("a value of {len} bytes at offset {offset} runs past the end of the file"),
            ));
        }
        let mut left = len as usize;
        let mut buf = [0u8; 64 * 1024];
        while left > 0 {
            let n = left.min(buf.len());
            self.inner
                .read_exact(&mut buf[..n])
                .map_err(|e| Error::io(&self.path, e))?;
            self.crc.update(&buf[..n]);
            left -= n;
        }
        self.offset += u64::from(len);
        Ok(Span { offset, len })
    }
}

/// Writes the table: the values in the order given (sled's iteration order).
pub(super) fn write_table(
    out: &mut impl Write,
    records: &[(u32, Vec<u8>)],
    keys: &[(Vec<u8>, u32)],
    thumbnails: &[(u32, Vec<u8>)],
) -> std::io::Result<()> {
    let mut crc = crc32fast::Hasher::new();
    let mut put = |bytes: &[u8]| -> std::io::Result<()> {
        crc.update(bytes);
        out.write_all(bytes)
    };
    put(MAGIC)?;
    for count in [records.len(), keys.len(), thumbnails.len()] {
        put(&(count as u64).to_le_bytes())?;
    }
    for (id, value) in records {
        put(&id.to_le_bytes())?;
        put(&(value.len() as u32).to_le_bytes())?;
        put(value)?;
    }
    for (key, id) in keys {
        put(&(key.len() as u32).to_le_bytes())?;
        put(key)?;
        put(&id.to_le_bytes())?;
    }
    for (id, png) in thumbnails {
        put(&id.to_le_bytes())?;
        put(&(png.len() as u32).to_le_bytes())?;
        put(png)?;
    }
    let sum = crc.finalize();
    out.write_all(&u64::from(sum).to_le_bytes())
}

impl RecordTable {
    /// Opens a table, checking its CRC and every declared length.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut scan = Scanner {
            inner: BufReader::with_capacity(
                1 << 20,
                file.try_clone().map_err(|e| Error::io(path, e))?,
            ),
            crc: crc32fast::Hasher::new(),
            offset: 0,
            path: path.to_path_buf(),
            size: size.saturating_sub(8),
        };
        if scan.bytes(MAGIC.len())? != MAGIC {
            return Err(bad_store(path, "not a record table (bad magic)"));
        }
        let record_count = scan.u64()?;
        let key_count = scan.u64()?;
        let thumbnail_count = scan.u64()?;
        // Each entry takes at least 8 bytes, so a count the file cannot hold is refused
        // before anything is allocated for it.
        let most = size / 8;
        if record_count > most || key_count > most || thumbnail_count > most {
            return Err(bad_store(
                path,
                "declares more entries than the file can hold",
            ));
        }
        let mut records = Vec::with_capacity(record_count as usize);
        for _ in 0..record_count {
            let id = scan.u32()?;
            let len = scan.u32()?;
            if records.last().is_some_and(|&(last, _)| last >= id) {
                return Err(bad_store(
                    path,
                    format!("record ids out of order at id {id}"),
                ));
            }
            records.push((id, scan.span(len)?));
        }
        let mut keys = Vec::with_capacity(key_count as usize);
        for _ in 0..key_count {
            let len = scan.u32()?;
            let key = String::from_utf8(scan.bytes(len as usize)?)
                .map_err(|_| bad_store(path, "a key is not UTF-8"))?;
            keys.push((key, scan.u32()?));
        }
        let mut thumbnails = HashMap::with_capacity(thumbnail_count as usize);
        for _ in 0..thumbnail_count {
            let id = scan.u32()?;
            let len = scan.u32()?;
            thumbnails.insert(id, scan.span(len)?);
        }
        let computed = scan.crc.finalize();
        let mut stored = [0u8; 8];
        let mut rest = scan.inner;
        rest.read_exact(&mut stored)
            .map_err(|e| Error::io(path, e))?;
        if u64::from(computed) != u64::from_le_bytes(stored) || scan.offset + 8 != size {
            return Err(bad_store(
                path,
                "checksum mismatch: the record table is damaged; rebuild the index",
            ));
        }
        let key_ids = keys.iter().cloned().collect();
        Ok(RecordTable {
            path: path.to_path_buf(),
            file,
            records,
            keys,
            key_ids,
            thumbnails,
        })
    }

    fn read(&self, span: Span) -> Result<Vec<u8>> {
        let mut buf = vec![0; span.len as usize];
        self.file
            .read_exact_at(&mut buf, span.offset)
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(buf)
    }

    fn record_span(&self, id: u32) -> Option<Span> {
        self.records
            .binary_search_by_key(&id, |&(i, _)| i)
            .ok()
            .map(|at| self.records[at].1)
    }

    fn decode(&self, id: u32, bytes: &[u8]) -> Result<StoredLesion> {
        serde_json::from_slice(bytes)
            .map_err(|e| bad_store(&self.path, format!("record {id} is corrupt: {e}")))
    }

    pub fn get(&self, id: u32) -> Result<Option<StoredLesion>> {
        match self.record_span(id) {
            Some(span) => self.decode(id, &self.read(span)?).map(Some),
            None => Ok(None),
        }
    }

    pub fn id_of(&self, key: &str) -> Result<Option<u32>> {
        Ok(self.key_ids.get(key).copied())
    }

    pub fn thumbnail(&self, id: u32) -> Result<Option<Vec<u8>>> {
        self.thumbnails
            .get(&id)
            .map(|&span| self.read(span))
            .transpose()
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
            .map(|&(id, span)| Ok((id, self.decode(id, &self.read(span)?)?)))
            .collect()
    }

    /// The same digest `RecordStore::checksum` computes over the sled trees it came from.
    pub fn checksum(&self) -> Result<String> {
        let mut hasher = sha2::Sha256::new();
        let mut entry = |k: &[u8], v: &[u8]| super::hash_entry(&mut hasher, k, v);
        for &(id, span) in &self.records {
            entry(&id.to_be_bytes(), &self.read(span)?);
        }
        for (key, id) in &self.keys {
            entry(key.as_bytes(), &id.to_be_bytes());
        }
        Ok(crate::util::hex_digest(&hasher.finalize()))
    }
}
