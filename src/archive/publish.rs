//! A complete generation renamed into place and named by `CURRENT`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::manifest::current_generation;
use super::{index_error, Manifest, CURRENT, MANIFEST};
use crate::error::{Error, Result};

/// An empty `gen-NNNNNN.partial` folder for the next generation. Leftovers of a killed
/// writer are discarded: a partial folder, and a complete `gen-NNNNNN` that was renamed but
/// never named by `CURRENT` (its writer died between the two steps, so nobody was told it
/// was published and no reader opened it).
pub(super) fn fresh_partial(dir: &Path, generation: u64) -> Result<PathBuf> {
    let partial = dir.join(format!("gen-{generation:06}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    }
    let orphan = dir.join(format!("gen-{generation:06}"));
    let served = current_generation(dir)?.map(|(n, _)| n);
    if orphan.exists() && served.is_none_or(|n| n < generation) {
        fs::remove_dir_all(&orphan).map_err(|e| Error::io(&orphan, e))?;
    }
    fs::create_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    Ok(partial)
}

/// Writes the manifest into a complete `partial` generation, renames it to its final name
/// and points `CURRENT` at it: readers see the old generation or the new one, whole.
pub(super) fn publish(dir: &Path, partial: &Path, manifest: &Manifest) -> Result<()> {
    let name = format!("gen-{:06}", manifest.generation);
    let manifest_path = partial.join(MANIFEST);
    let text = serde_json::to_string_pretty(manifest)
        .map_err(|e| index_error(&manifest_path, e.to_string()))?;
    crate::fsutil::write_atomically(&manifest_path, |w| w.write_all(text.as_bytes()))?;
    crate::fault::point("manifest-written");
    let published = dir.join(&name);
    crate::fsutil::sync_tree(partial)?;
    fs::rename(partial, &published).map_err(|e| Error::io(&published, e))?;
    crate::fsutil::sync_dir(dir)?;
    crate::fault::point("published-before-current");
    crate::fsutil::write_atomically(&dir.join(CURRENT), |w| w.write_all(name.as_bytes()))
}
