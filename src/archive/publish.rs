//! A complete generation renamed into place and named by `CURRENT`.

use std::collections::HashSet;
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

/// Keeps the served generation and the one before it (a reader may still hold that one).
/// An old generation is first renamed to `gen-NNNNNN.removing`, so a crash midway leaves
/// a name nobody opens, and the next pruning finishes it.
pub(super) fn prune_old_generations(dir: &Path, served: u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name.starts_with("gen-") && name.ends_with(".removing") {
            let _ = fs::remove_dir_all(entry.path());
            continue;
        }
        let number = name
            .strip_prefix("gen-")
            .and_then(|n| n.parse::<u64>().ok());
        if number.is_some_and(|n| n + 1 < served) {
            let doomed = dir.join(format!("{name}.removing"));
            if fs::rename(entry.path(), &doomed).is_ok() {
                crate::fault::point("pruning");
                let _ = fs::remove_dir_all(&doomed);
            }
        }
    }
}

/// Removes what killed writers left behind, once a write has published `served`: embedding
/// staging files (a killed write resumes from its own only when it is the next write to
/// run; the price of a later resume is embedding again, never a wrong vector, since a
/// staging file is keyed by weights and table) and `added/` folders that neither the served
/// generation nor the one before it refers to (staged by an add that died before it
/// published, or belonging to lesions deleted since). Runs under the write lock, and slices
/// are staged under it, so no other writer's input is in flight.
pub(super) fn remove_leftovers(dir: &Path, served: u64) {
    let staging = dir.join("staging");
    if let Ok(entries) = fs::read_dir(&staging) {
        for entry in entries.flatten() {
            let _ = fs::remove_file(entry.path());
        }
    }
    let added = dir.join(super::ADDED_DIR);
    let Ok(entries) = fs::read_dir(&added) else {
        return;
    };
    let mut referenced = HashSet::new();
    for generation in [served.checked_sub(1), Some(served)].into_iter().flatten() {
        let table = dir
            .join(format!("gen-{generation:06}"))
            .join(crate::store::RECORDS_TABLE);
        if !table.exists() {
            continue;
        }
        // A table that cannot be read keeps every folder: a leftover costs disk, a folder
        // removed by mistake costs a lesion's image.
        let Ok(records) = crate::store::RecordTable::open(&table).and_then(|t| t.all()) else {
            return;
        };
        // By folder name, not by path: a source recorded under another spelling of the
        // index folder (relative, moved, copied) still keeps its folder.
        for source in records.into_iter().filter_map(|(_, lesion)| lesion.source) {
            match source.file_name() {
                Some(name) => referenced.insert(name.to_os_string()),
                None => return,
            };
        }
    }
    for entry in entries.flatten() {
        if !referenced.contains(&entry.file_name()) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
