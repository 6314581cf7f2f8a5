//! The vector index on disk: little-endian arrays behind a magic, a version and lengths,
//! written to temporary files and published by rename; a short or inconsistent file is an
//! error naming it.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use super::graph::Graph;
use super::{FlatIndex, IdSet, VectorIndex};
use crate::error::{Error, Result};
use crate::fsutil::write_atomically;

const VECTORS_FILE: &str = "vectors.bin";
const GRAPH_FILE: &str = "graph.bin";
const META_FILE: &str = "vectors.json";
const MAGIC: &[u8; 8] = b"LSVECT01";
const GRAPH_MAGIC: &[u8; 8] = b"LSHNSW01";

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    dim: usize,
    count: usize,
    ef: usize,
    self_recall: f32,
    tombstones: Vec<u32>,
    has_graph: bool,
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Index {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn u32s_to_bytes(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes the index into `dir` (which must exist).
pub fn save_vector_index(index: &VectorIndex, dir: &Path) -> Result<()> {
    let dim = index.flat.dim();
    write_atomically(&dir.join(VECTORS_FILE), |w| {
        w.write_all(MAGIC)?;
        w.write_all(&(dim as u64).to_le_bytes())?;
        w.write_all(&(index.len() as u64).to_le_bytes())?;
        for chunk in index.flat.data().chunks(1 << 16) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write_all(&bytes)?;
        }
        Ok(())
    })?;
    if let Some(graph) = &index.graph {
        let (entry, layers) = graph.parts();
        write_atomically(&dir.join(GRAPH_FILE), |w| {
            w.write_all(GRAPH_MAGIC)?;
            w.write_all(&(entry as u64).to_le_bytes())?;
            w.write_all(&(layers.len() as u64).to_le_bytes())?;
            for (offsets, neighbours) in layers {
                w.write_all(&(offsets.len() as u64).to_le_bytes())?;
                w.write_all(&(neighbours.len() as u64).to_le_bytes())?;
                w.write_all(&u32s_to_bytes(&offsets))?;
                w.write_all(&u32s_to_bytes(&neighbours))?;
            }
            Ok(())
        })?;
    }
    let meta = Meta {
        dim,
        count: index.len(),
        ef: index.ef,
        self_recall: index.self_recall,
        tombstones: index.tombstones.iter().collect(),
        has_graph: index.graph.is_some(),
    };
    let text =
        serde_json::to_string(&meta).map_err(|e| bad(&dir.join(META_FILE), e.to_string()))?;
    write_atomically(&dir.join(META_FILE), |w| w.write_all(text.as_bytes()))
}

struct Reader<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.at + n > self.bytes.len() {
            return Err(bad(
                self.path,
                format!(
                    "truncated: needs {} bytes at offset {}, file has {}",
                    n,
                    self.at,
                    self.bytes.len()
                ),
            ));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn u32s(&mut self, n: usize) -> Result<Vec<u32>> {
        Ok(self
            .take(n * 4)?
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

fn read_all(path: &Path) -> Result<Vec<u8>> {
    let mut file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// Reads an index written by [`save_vector_index`].
pub fn load_vector_index(dir: &Path) -> Result<VectorIndex> {
    let meta_path = dir.join(META_FILE);
    let meta: Meta = serde_json::from_slice(&read_all(&meta_path)?)
        .map_err(|e| bad(&meta_path, format!("not an index description: {e}")))?;

    let vectors_path = dir.join(VECTORS_FILE);
    let bytes = read_all(&vectors_path)?;
    let mut r = Reader {
        path: &vectors_path,
        bytes: &bytes,
        at: 0,
    };
    if r.take(8)? != MAGIC {
        return Err(bad(&vectors_path, "not a vector file (bad magic)"));
    }
    let (dim, count) = (r.u64()? as usize, r.u64()? as usize);
    if dim != meta.dim || count != meta.count {
        return Err(bad(
            &vectors_path,
            format!(
                "holds {count} vectors of {dim} dimensions, {META_FILE} says {} of {}",
                meta.count, meta.dim
            ),
        ));
    }
    let data: Vec<f32> = r
        .take(dim * count * 4)?
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if r.at != bytes.len() {
        return Err(bad(
            &vectors_path,
            format!("{} bytes of trailing data", bytes.len() - r.at),
        ));
    }
    let flat = FlatIndex::from_data(dim, data);

    let graph = if meta.has_graph {
        let graph_path = dir.join(GRAPH_FILE);
        let bytes = read_all(&graph_path)?;
        let mut r = Reader {
            path: &graph_path,
            bytes: &bytes,
            at: 0,
        };
        if r.take(8)? != GRAPH_MAGIC {
            return Err(bad(&graph_path, "not a graph file (bad magic)"));
        }
        let entry = r.u64()? as u32;
        let layer_count = r.u64()? as usize;
        let mut layers = Vec::with_capacity(layer_count);
        for _ in 0..layer_count {
            let (offsets_len, neighbours_len) = (r.u64()? as usize, r.u64()? as usize);
            let offsets = r.u32s(offsets_len)?;
            let neighbours = r.u32s(neighbours_len)?;
            // A graph may cover fewer ids than there are vectors (lesions added since).
            if offsets.is_empty()
                || offsets.len() > count + 1
                || offsets.last().copied() != Some(neighbours.len() as u32)
                || neighbours.iter().any(|&n| n as usize + 1 >= offsets.len())
            {
                return Err(bad(&graph_path, "neighbour lists do not match the vectors"));
            }
            layers.push((offsets, neighbours));
        }
        let covered = layers.first().map_or(0, |(offsets, _)| offsets.len() - 1);
        if entry as usize >= covered.max(1) {
            return Err(bad(
                &graph_path,
                format!("entry point {entry} out of range"),
            ));
        }
        Some(Graph::from_parts(entry, layers, &flat))
    } else {
        None
    };
    Ok(VectorIndex {
        tombstones: IdSet::from_ids(count, meta.tombstones),
        flat,
        graph,
        ef: meta.ef,
        self_recall: meta.self_recall,
    })
}
