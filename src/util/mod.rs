//! The bottom layer: what every other module may use and which uses none of them. A seeded
//! random stream whose values stay stable across crate upgrades, digests, number parsing
//! for typed fields, and vector normalisation.

mod cancel;
mod rng;

pub use cancel::Cancel;
pub use rng::Rng;

use std::path::Path;

use crate::error::{Error, Result};

/// Lower-case hex of a digest.
pub fn hex_digest(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file, read in 1 MiB pieces, as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut file, &mut buffer).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex_digest(&hasher.finalize()))
}

/// The vector scaled to unit length (a zero vector stays zero).
pub fn l2_normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Parses exactly `N` comma-separated numbers, e.g. `"226.169, 90.0204, 241.252, 111.977"`.
pub fn numbers<const N: usize>(text: &str) -> std::result::Result<[f32; N], String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if parts.len() != N || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "expected {N} comma-separated numbers, found `{}`",
            text.trim()
        ));
    }
    let mut out = [0f32; N];
    for (slot, part) in out.iter_mut().zip(&parts) {
        *slot = number(part)?;
    }
    Ok(out)
}

/// One finite number.
pub fn number(text: &str) -> std::result::Result<f32, String> {
    let t = text.trim();
    match t.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("`{t}` is not a finite number")),
        Err(_) if t.is_empty() => Err("empty, expected a number".to_string()),
        Err(_) => Err(format!("`{t}` is not a number")),
    }
}
