//! The vector index on disk: little-endian arrays behind a magic, a version and lengths,
//! closed by a CRC-32 of everything before it, written to temporary files and published by
//! rename; a short, corrupt or inconsistent file is an error naming it. Every length read
//! from a file is checked against the bytes that are there before anything is allocated.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use super::hnsw::LayerParts;
use super::{FlatIndex, Graph, IdSet, VectorIndex};
use crate::error::{Error, Result};
use crate::fsutil::write_atomically;

const VECTORS_FILE: &str = "vectors.bin";
const GRAPH_FILE: &str = "graph.bin";
const META_FILE: &str = "vectors.json";
const MAGIC: &[u8; 8] = b"LSVECT02";
const GRAPH_MAGIC: &[u8; 8] = b"LSHNSW02";
/// Files of the first layout, without the checksum; still read.
const MAGIC_V1: &[u8; 8] = b"LSVECT01";
const GRAPH_MAGIC_V1: &[u8; 8] = b"LSHNSW01";
/// More graph layers than any HNSW over 2^32 nodes can have.
const MAX_LAYERS: usize = 64;
/// More neighbours than any node of our graphs has (layer 0 keeps at most 2M after pruning):
/// a corrupt list this long would make the fixed-stride layer 0 quadratic in memory.
const MAX_DEGREE: usize = 1024;
/// Widest vectors an index may hold.
const MAX_DIM: usize = 65_536;

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    dim: usize,
    count: usize,
    ef: usize,
    self_recall: f32,
    tombstones: Vec<u32>,
    has_graph: bool,
    /// Absent in indexes written before outcomes were recorded: their graphs were served.
    #[serde(default)]
    outcome: super::GraphOutcome,
    /// Absent in indexes written before builders were recorded: the native one built them.
    #[serde(default)]
    builder: super::GraphBuilder,
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

/// A writer that keeps the CRC-32 of what passed through it.
struct Summing<'a, W: Write> {
    inner: &'a mut W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Summing<'_, W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc.update(bytes);
        self.inner.write_all(bytes)
    }

    /// Writes the checksum of everything so far.
    fn close(self) -> std::io::Result<()> {
        let sum = self.crc.finalize();
        self.inner.write_all(&u64::from(sum).to_le_bytes())
    }
}

fn summing<W: Write>(inner: &mut W) -> Summing<'_, W> {
    Summing {
        inner,
        crc: crc32fast::Hasher::new(),
    }
}

/// Writes the index into `dir` (which must exist).
pub fn save_vector_index(index: &VectorIndex, dir: &Path) -> Result<()> {
    let dim = index.flat.dim();
    write_atomically(&dir.join(VECTORS_FILE), |w| {
        let mut w = summing(w);
        w.put(MAGIC)?;
        w.put(&(dim as u64).to_le_bytes())?;
        w.put(&(index.len() as u64).to_le_bytes())?;
        for chunk in index.flat.data().chunks(1 << 16) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.put(&bytes)?;
        }
        w.close()
    })?;
    if let Some(graph) = &index.graph {
        let (entry, layers) = graph.parts();
        write_atomically(&dir.join(GRAPH_FILE), |w| {
            let mut w = summing(w);
            w.put(GRAPH_MAGIC)?;
            w.put(&(entry as u64).to_le_bytes())?;
            w.put(&(layers.len() as u64).to_le_bytes())?;
            for (offsets, neighbours) in layers {
                w.put(&(offsets.len() as u64).to_le_bytes())?;
                w.put(&(neighbours.len() as u64).to_le_bytes())?;
                w.put(&u32s_to_bytes(&offsets))?;
                w.put(&u32s_to_bytes(&neighbours))?;
            }
            w.close()
        })?;
    }
    let meta = Meta {
        dim,
        count: index.len(),
        ef: index.ef,
        self_recall: index.self_recall,
        tombstones: index.tombstones.iter().collect(),
        has_graph: index.graph.is_some(),
        outcome: index.outcome,
        builder: index.builder,
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
        if n > self.bytes.len() - self.at {
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

    /// A length read from the file, as a count of `unit`-byte items that must fit in the rest.
    fn count(&mut self, unit: usize) -> Result<usize> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.at) / unit.max(1);
        if n > left as u64 {
            return Err(bad(
                self.path,
                format!(
                    "declares {n} items at offset {}, the file holds at most {left}",
                    self.at - 8
                ),
            ));
        }
        Ok(n as usize)
    }

    fn u32s(&mut self, n: usize) -> Result<Vec<u32>> {
        Ok(self
            .take(n.saturating_mul(4))?
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

/// The file's body without its checksum, after checking the checksum (current layout) or
/// as it is (first layout, which had none).
fn checked_body<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: &[u8; 8],
    v1: &[u8; 8],
) -> Result<&'a [u8]> {
    if bytes.len() < 8 {
        return Err(bad(path, format!("truncated: {} bytes", bytes.len())));
    }
    if &bytes[..8] == v1 {
        return Ok(bytes);
    }
    if &bytes[..8] != magic {
        return Err(bad(path, "not an index file of this version (bad magic)"));
    }
    if bytes.len() < 16 {
        return Err(bad(path, format!("truncated: {} bytes", bytes.len())));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 8);
    let stored = u64::from_le_bytes(tail.try_into().expect("8 bytes"));
    let actual = u64::from(crc32fast::hash(body));
    if stored != actual {
        return Err(bad(
            path,
            format!("checksum mismatch (stored {stored:08x}, computed {actual:08x}): the file is truncated or corrupt"),
        ));
    }
    Ok(body)
}

/// Reads an index written by [`save_vector_index`].
pub fn load_vector_index(dir: &Path) -> Result<VectorIndex> {
    let meta = read_all(&dir.join(META_FILE))?;
    let vectors = read_all(&dir.join(VECTORS_FILE))?;
    let graph_path = dir.join(GRAPH_FILE);
    let graph = if graph_path.exists() {
        Some(read_all(&graph_path)?)
    } else {
        None
    };
    vector_index_from_bytes(dir, &meta, &vectors, graph.as_deref())
}

/// Parses the three files of an index folder from memory; `dir` names them in errors. Any
/// bytes at all give an index or an error, never a panic or an allocation larger than the
/// input (the fuzz target `index_load` holds it to that).
pub fn vector_index_from_bytes(
    dir: &Path,
    meta: &[u8],
    vectors: &[u8],
    graph: Option<&[u8]>,
) -> Result<VectorIndex> {
    let meta_path = dir.join(META_FILE);
    let meta: Meta = serde_json::from_slice(meta)
        .map_err(|e| bad(&meta_path, format!("not an index description: {e}")))?;
    let flat = flat_from_bytes(&dir.join(VECTORS_FILE), vectors, &meta)?;
    let count = flat.len();
    if let Some(&id) = meta.tombstones.iter().find(|&&id| id as usize >= count) {
        return Err(bad(
            &meta_path,
            format!("deleted id {id} is past the {count} vectors"),
        ));
    }
    let graph = if meta.has_graph {
        let graph_path = dir.join(GRAPH_FILE);
        let file =
            graph.ok_or_else(|| bad(&graph_path, "missing: the index says it has a graph"))?;
        Some(graph_from_bytes(&graph_path, file, &flat)?)
    } else {
        None
    };
    Ok(VectorIndex {
        tombstones: IdSet::from_ids(count, meta.tombstones),
        flat,
        graph,
        ef: meta.ef,
        self_recall: meta.self_recall,
        outcome: meta.outcome,
        builder: meta.builder,
    })
}

/// The vectors file, checked against the description's dimension and count.
fn flat_from_bytes(path: &Path, file: &[u8], meta: &Meta) -> Result<FlatIndex> {
    let bytes = checked_body(path, file, MAGIC, MAGIC_V1)?;
    let mut r = Reader { path, bytes, at: 8 };
    let (dim, count) = (r.u64()?, r.u64()?);
    if dim == 0 || dim > MAX_DIM as u64 {
        return Err(bad(
            path,
            format!("{dim} dimensions (1 to {MAX_DIM} allowed)"),
        ));
    }
    let (dim, count) = (dim as usize, count.min(usize::MAX as u64) as usize);
    if dim != meta.dim || count != meta.count {
        return Err(bad(
            path,
            format!(
                "holds {count} vectors of {dim} dimensions, {META_FILE} says {} of {}",
                meta.count, meta.dim
            ),
        ));
    }
    let data: Vec<f32> = r
        .take(
            dim.checked_mul(count)
                .and_then(|n| n.checked_mul(4))
                .unwrap_or(usize::MAX),
        )?
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if r.at != bytes.len() {
        return Err(bad(
            path,
            format!("{} bytes of trailing data", bytes.len() - r.at),
        ));
    }
    Ok(FlatIndex::from_data(dim, data))
}

/// The graph file over the vectors of `flat`: every layer's lists consistent with the
/// vectors and with layer 0, and the entry point among them.
fn graph_from_bytes(path: &Path, file: &[u8], flat: &FlatIndex) -> Result<Graph> {
    let bytes = checked_body(path, file, GRAPH_MAGIC, GRAPH_MAGIC_V1)?;
    let mut r = Reader { path, bytes, at: 8 };
    let entry = r.u64()?;
    let layer_count = r.u64()? as usize;
    if layer_count > MAX_LAYERS {
        return Err(bad(
            path,
            format!("{layer_count} layers, more than the {MAX_LAYERS} any graph has"),
        ));
    }
    let mut layers: Vec<LayerParts> = Vec::with_capacity(layer_count);
    for layer in 0..layer_count {
        let offsets_len = r.count(4)?;
        let neighbours_len = r.count(4)?;
        let offsets = r.u32s(offsets_len)?;
        let neighbours = r.u32s(neighbours_len)?;
        let base_nodes = layers.first().map(|(o, _)| o.len());
        check_layer(path, layer, &offsets, &neighbours, flat.len(), base_nodes)?;
        layers.push((offsets, neighbours));
    }
    let covered = layers.first().map_or(0, |(offsets, _)| offsets.len() - 1);
    if entry >= covered.max(1) as u64 {
        return Err(bad(path, format!("entry point {entry} out of range")));
    }
    Ok(Graph::from_parts(entry as u32, layers, flat))
}

/// One stored layer's lists against `count` vectors and, above layer 0, layer 0's length
/// `base_nodes`.
fn check_layer(
    path: &Path,
    layer: usize,
    offsets: &[u32],
    neighbours: &[u32],
    count: usize,
    base_nodes: Option<usize>,
) -> Result<()> {
    // A graph may cover fewer ids than there are vectors (lesions added since).
    if offsets.is_empty()
        || offsets.len() > count + 1
        || offsets[0] != 0
        || offsets.windows(2).any(|w| w[0] > w[1])
        || offsets.last().copied() != Some(neighbours.len() as u32)
        || neighbours.iter().any(|&n| n as usize + 1 >= offsets.len())
    {
        return Err(bad(
            path,
            format!("layer {layer}: neighbour lists do not match the vectors"),
        ));
    }
    let widest = offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    if widest as usize > MAX_DEGREE || offsets.len() > base_nodes.unwrap_or(offsets.len()) {
        return Err(bad(
            path,
            format!("layer {layer}: a node with {widest} neighbours, or more nodes than layer 0"),
        ));
    }
    Ok(())
}
