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
        let mut problems = verify_embedded(
            (&self.dir, &self.manifest, &self.records),
            &self.vectors,
            &self.text,
        )?;
        problems.extend(verify_report_vectors(
            (&self.dir, &self.manifest, &self.records),
            self.report_vectors.as_ref(),
        )?);
        Ok(problems)
    }
}

/// The report vectors, when the manifest names a text encoder, agree with the records: one
/// per lesion id, the same ids deleted, the width of the card, the manifest's checksum.
pub(crate) fn verify_report_vectors(
    (dir, manifest, records): (&Path, &Manifest, &PublishedRecords),
    reports: Option<&VectorIndex>,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let (card, reports) = match (&manifest.text_encoder, reports) {
        (None, None) => return Ok(problems),
        (Some(card), Some(reports)) => (card, reports),
        (Some(card), None) => {
            problems.push(format!(
                "the manifest names the text encoder {}, but no report vectors are open",
                card.name
            ));
            return Ok(problems);
        }
        (None, Some(_)) => {
            problems.push("report vectors without a text encoder in the manifest".into());
            return Ok(problems);
        }
    };
    let n = manifest.lesions;
    let live = n - manifest.deleted.min(n);
    let counts = [
        ("report vectors", reports.len(), n),
        (
            "deleted report vectors",
            reports.deleted(),
            manifest.deleted,
        ),
        ("live report vectors", reports.live(), live),
        (
            "records beside the report vectors",
            records.len(),
            reports.live(),
        ),
    ];
    for (what, count, expected) in counts {
        if count != expected {
            problems.push(format!("{what}: {count}, expected {expected}"));
        }
    }
    for (id, lesion) in records.all()? {
        if reports.is_deleted(id) || id as usize >= reports.len() {
            problems.push(format!(
                "record {id} ({}) has no live report vector",
                lesion.key
            ));
        }
    }
    if !reports.is_empty() && reports.dim() != card.dim {
        problems.push(format!(
            "report vectors have {} dimensions, the text encoder {} has {}",
            reports.dim(),
            card.name,
            card.dim
        ));
    }
    let sha = sha256_file(&dir.join(super::REPORT_VECTORS_DIR).join("vectors.bin"))?;
    if sha != manifest.report_vectors_sha256 {
        problems.push(format!(
            "report-vectors/vectors.bin checksum {sha} differs from the manifest's {}",
            manifest.report_vectors_sha256
        ));
    }
    Ok(problems)
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
