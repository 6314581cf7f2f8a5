//! Counts, ids and checksums of a generation's stores checked against each other.

use std::path::Path;

use super::{Archive, Manifest};
use crate::error::Result;
use crate::index::VectorIndex;
use crate::store::PublishedRecords;
use crate::text::TextIndex;
use crate::util::sha256_file;

impl Archive {
    /// Counts, ids and checksums agree across the three stores; every disagreement listed.
    pub fn verify(&self) -> Result<Vec<String>> {
        verify_embedded(
            (&self.dir, &self.manifest, &self.records),
            &self.vectors,
            &self.text,
        )
    }
}

/// Counts, ids and checksums of the embedded vector and text stores agree with the
/// published records and manifest; every disagreement listed.
pub(crate) fn verify_embedded(
    (dir, manifest, records): (&Path, &Manifest, &PublishedRecords),
    vectors: &VectorIndex,
    text: &TextIndex,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let n = manifest.lesions;
    let live = n - manifest.deleted.min(n);
    let counts = [
        ("records", records.len(), live),
        ("vectors", vectors.len(), n),
        ("deleted vectors", vectors.deleted(), manifest.deleted),
        ("text documents", text.len() as usize, live),
    ];
    for (what, count, expected) in counts {
        if count != expected {
            problems.push(format!("{what}: {count}, manifest says {expected}"));
        }
    }
    for (id, lesion) in records.all()? {
        if id as usize >= n {
            problems.push(format!("record id {id} is beyond the {n} lesions"));
        }
        if vectors.is_deleted(id) {
            problems.push(format!(
                "record {id} ({}) is deleted from the vectors but not from the records",
                lesion.key
            ));
        }
        if records.id_of(&lesion.key)? != Some(id) {
            problems.push(format!("key {} does not map back to id {id}", lesion.key));
        }
    }
    if let Some(graph) = vectors.graph() {
        let c = graph.connectivity();
        if c.reachable < c.nodes {
            problems.push(format!(
                "graph: {} of {} nodes cannot be reached from the entry point (no ef finds them)",
                c.nodes - c.reachable,
                c.nodes
            ));
        }
    }
    let records_sha = records.checksum()?;
    if records_sha != manifest.records_sha256 {
        problems.push(format!(
            "records checksum {records_sha} differs from the manifest's {}",
            manifest.records_sha256
        ));
    }
    let vectors_sha = sha256_file(&dir.join("vectors/vectors.bin"))?;
    if vectors_sha != manifest.vectors_sha256 {
        problems.push(format!(
            "vectors.bin checksum {vectors_sha} differs from the manifest's {}",
            manifest.vectors_sha256
        ));
    }
    if vectors.dim() != manifest.model.output_dim {
        problems.push(format!(
            "vectors have {} dimensions, the model {}",
            vectors.dim(),
            manifest.model.output_dim
        ));
    }
    Ok(problems)
}
