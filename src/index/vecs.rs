//! Vector sets in the formats ANN benchmarks ship: TEXMEX `.fvecs` / `.ivecs` (SIFT, GIST,
//! Deep1B: per row a little-endian i32 dimension, then that many f32 or i32) and NumPy
//! `.npy` (float32, two dimensions, C order). They let the vector bench run on sets this
//! project did not make, and `export-vectors` turn an index's embeddings into one.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Index {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Rows of a TEXMEX file whose values are 4 bytes each: (rows, dim, values as raw words).
fn read_texmex(path: &Path) -> Result<(usize, usize, Vec<[u8; 4]>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() < 4 {
        return Err(bad(path, "empty: no row"));
    }
    let dim = i32::from_le_bytes(bytes[..4].try_into().expect("four bytes"));
    if dim <= 0 || dim > 1 << 16 {
        return Err(bad(path, format!("row 0 declares {dim} dimensions")));
    }
    let dim = dim as usize;
    let row_bytes = 4 * (dim + 1);
    if bytes.len() % row_bytes != 0 {
        return Err(bad(
            path,
            format!(
                "{} bytes is not a whole number of {dim}-value rows ({row_bytes} bytes each)",
                bytes.len()
            ),
        ));
    }
    let rows = bytes.len() / row_bytes;
    let mut values = Vec::with_capacity(rows * dim);
    for (row, chunk) in bytes.chunks_exact(row_bytes).enumerate() {
        let declared = i32::from_le_bytes(chunk[..4].try_into().expect("four bytes"));
        if declared as usize != dim {
            return Err(bad(
                path,
                format!("row {row} declares {declared} dimensions, row 0 declared {dim}"),
            ));
        }
        values.extend(
            chunk[4..]
                .chunks_exact(4)
                .map(|w| <[u8; 4]>::try_from(w).expect("four bytes")),
        );
    }
    Ok((rows, dim, values))
}

/// A float vector set: `rows` x `dim` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSet {
    pub dim: usize,
    pub values: Vec<f32>,
}

impl VectorSet {
    pub fn rows(&self) -> usize {
        self.values.len() / self.dim.max(1)
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// Scales every row to unit length (inner product then ranks as cosine); refuses a zero
    /// or non-finite row, naming it.
    pub fn normalise(&mut self, path: &Path) -> Result<()> {
        for (i, row) in self.values.chunks_exact_mut(self.dim).enumerate() {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            if !norm.is_finite() || norm == 0.0 {
                return Err(bad(path, format!("row {i} has length {norm}")));
            }
            row.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(())
    }
}

/// Reads `.fvecs` or `.npy` (by extension) into a float vector set.
pub fn read_vectors(path: &Path) -> Result<VectorSet> {
    let set = match path.extension().and_then(|e| e.to_str()) {
        Some("fvecs") => {
            let (_, dim, words) = read_texmex(path)?;
            VectorSet {
                dim,
                values: words.into_iter().map(f32::from_le_bytes).collect(),
            }
        }
        Some("npy") => read_npy_f32(path)?,
        _ => {
            return Err(bad(
                path,
                "unknown vector format: expected .fvecs (TEXMEX) or .npy (float32, 2-D)",
            ))
        }
    };
    if let Some(i) = set.values.iter().position(|v| !v.is_finite()) {
        return Err(bad(
            path,
            format!("row {} holds a non-finite value", i / set.dim.max(1)),
        ));
    }
    Ok(set)
}

/// Reads `.ivecs` ground truth: per query, the ids of its nearest neighbours, best first.
pub fn read_ivecs(path: &Path) -> Result<Vec<Vec<u32>>> {
    let (rows, dim, words) = read_texmex(path)?;
    let ids: Vec<i32> = words.into_iter().map(i32::from_le_bytes).collect();
    (0..rows)
        .map(|r| {
            ids[r * dim..(r + 1) * dim]
                .iter()
                .map(|&id| {
                    u32::try_from(id).map_err(|_| bad(path, format!("row {r} holds id {id}")))
                })
                .collect()
        })
        .collect()
}

/// Writes a float vector set as `.fvecs`.
pub fn write_fvecs(path: &Path, set: &VectorSet) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let dim = (set.dim as i32).to_le_bytes();
    for row in set.values.chunks_exact(set.dim) {
        out.write_all(&dim).map_err(|e| Error::io(path, e))?;
        let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
        out.write_all(&bytes).map_err(|e| Error::io(path, e))?;
    }
    out.flush().map_err(|e| Error::io(path, e))
}

/// NumPy's format: magic, version, a Python-literal header naming dtype, order and shape,
/// padded to 16 (v1: u16 header length; v2/v3: u32), then the data.
fn read_npy_f32(path: &Path) -> Result<VectorSet> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad(path, "not a .npy file (bad magic)"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().expect("four bytes")) as usize,
            12,
        ),
        v => return Err(bad(path, format!(".npy version {v} is not supported"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad(path, ".npy header is cut short or not text"))?;
    let field = |name: &str| -> Option<&str> {
        let at = header.find(&format!("'{name}'"))?;
        let rest = header[at + name.len() + 2..].trim_start();
        Some(rest.strip_prefix(':')?.trim_start())
    };
    let descr = field("descr").ok_or_else(|| bad(path, ".npy header has no descr"))?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("'float32'")) {
        return Err(bad(
            path,
            format!(
                ".npy dtype {} is not little-endian float32",
                descr.split(',').next().unwrap_or("")
            ),
        ));
    }
    if field("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(bad(path, ".npy in Fortran order: save it C-ordered"));
    }
    let shape = field("shape").ok_or_else(|| bad(path, ".npy header has no shape"))?;
    let inside = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad(path, ".npy shape is not a tuple"))?;
    let dims: Vec<usize> = inside
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| bad(path, format!(".npy shape ({inside})")))
        })
        .collect::<Result<_>>()?;
    let [rows, dim] = dims[..] else {
        return Err(bad(
            path,
            format!(".npy shape ({inside}) is not two-dimensional"),
        ));
    };
    let data = &bytes[start + header_len..];
    if dim == 0 || rows.checked_mul(dim).and_then(|v| v.checked_mul(4)) != Some(data.len()) {
        return Err(bad(
            path,
            format!(
                ".npy shape ({rows}, {dim}) needs {} bytes of data, the file holds {}",
                rows.saturating_mul(dim).saturating_mul(4),
                data.len()
            ),
        ));
    }
    Ok(VectorSet {
        dim,
        values: data
            .chunks_exact(4)
            .map(|w| f32::from_le_bytes(w.try_into().expect("four bytes")))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fvecs_round_trip_and_damaged_files_name_the_fault() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.fvecs");
        let set = VectorSet {
            dim: 3,
            values: vec![1.0, 2.0, 3.0, -4.0, 5.5, 0.25],
        };
        write_fvecs(&path, &set).unwrap();
        assert_eq!(read_vectors(&path).unwrap(), set);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[16] = 7; // row 1's dimension
        std::fs::write(&path, &bytes).unwrap();
        let err = read_vectors(&path).unwrap_err().to_string();
        assert!(err.contains("row 1 declares 7"), "{err}");
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let err = read_vectors(&path).unwrap_err().to_string();
        assert!(err.contains("not a whole number"), "{err}");
    }

    #[test]
    fn npy_float32_is_read_and_other_dtypes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let npy = |descr: &str, shape: &str, data: &[u8]| {
            let mut header =
                format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({shape}), }}");
            while (10 + header.len() + 1) % 16 != 0 {
                header.push(' ');
            }
            header.push('\n');
            let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
            bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend_from_slice(data);
            let path = dir.path().join("v.npy");
            std::fs::write(&path, bytes).unwrap();
            read_vectors(&path)
        };
        let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let set = npy("<f4", "2, 3", &data).unwrap();
        assert_eq!((set.rows(), set.dim), (2, 3));
        assert_eq!(set.row(1), &[4.0, 5.0, 6.0]);
        let err = npy("<f8", "2, 3", &data).unwrap_err().to_string();
        assert!(err.contains("float32"), "{err}");
        let err = npy("<f4", "2, 4", &data).unwrap_err().to_string();
        assert!(err.contains("needs 32 bytes"), "{err}");
        let err = npy("<f4", "6,", &data).unwrap_err().to_string();
        assert!(err.contains("two-dimensional"), "{err}");
    }

    #[test]
    fn ivecs_truth_is_read_per_query() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.ivecs");
        let bytes: Vec<u8> = [2i32, 5, 9, 2, 1, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read_ivecs(&path).unwrap(), vec![vec![5, 9], vec![1, 0]]);
    }
}
