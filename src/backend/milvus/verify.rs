//! A collection checked against the published generation: its stamp, and every row's id,
//! key and vector against the live records and the generation's own vector files.

use std::collections::HashMap;
use std::ops::Range;

use milvus::value::ValueVec;

use super::connection::column;
use super::stamp::Stamp;
use super::MilvusBackend;
use crate::archive::Published;
use crate::error::Result;
use crate::index::VectorIndex;

/// Lesion ids read per query (well within Milvus' query window).
const IDS_PER_QUERY: usize = 4_096;

impl MilvusBackend {
    /// Disagreements between the collection and `published`; empty when they agree.
    pub(super) fn disagreements(&self, published: &Published) -> Result<Vec<String>> {
        let mut problems: Vec<String> = self.stamp_problem(published)?.into_iter().collect();
        let local = crate::index::load_vector_index(&published.dir.join("vectors"))?;
        let records = published.records.all()?;
        let top = records
            .last()
            .map_or(0, |(id, _)| *id as usize + 1)
            .max(local.len());
        let mut by_id: HashMap<u32, &str> = HashMap::new();
        for (id, lesion) in &records {
            by_id.insert(*id, lesion.key.as_str());
        }
        let mut seen = 0usize;
        for start in (0..top).step_by(IDS_PER_QUERY) {
            let ids = start..(start + IDS_PER_QUERY).min(top);
            seen += self.check_rows(ids, &by_id, &local, &mut problems)?;
        }
        if seen != records.len() {
            problems.push(format!(
                "Milvus holds {seen} lesions, the records {} live",
                records.len()
            ));
        }
        Ok(problems)
    }

    /// What is wrong with the collection's stamp, if anything.
    fn stamp_problem(&self, published: &Published) -> Result<Option<String>> {
        let expected = Stamp::of(published);
        Ok(match self.connection.stamp(&self.collection)? {
            Some(stamp) if stamp.holds(&expected) => None,
            Some(stamp) => Some(format!(
                "collection {} is stamped {}, the published generation is {}",
                self.collection,
                stamp.describe(),
                expected.describe()
            )),
            None => Some(format!("collection {} is missing", self.collection)),
        })
    }

    /// Checks the collection's rows with lesion ids in `ids`; returns how many it holds.
    fn check_rows(
        &self,
        ids: Range<usize>,
        by_id: &HashMap<u32, &str>,
        local: &VectorIndex,
        problems: &mut Vec<String>,
    ) -> Result<usize> {
        let Range { start, end } = ids;
        let columns = self.query(
            format!("lid >= {start} and lid < {end}"),
            vec!["lid".into(), "key".into(), "vector".into()],
        )?;
        let (
            Some(ValueVec::Long(lids)),
            Some(ValueVec::String(keys)),
            Some(ValueVec::Float(vectors)),
        ) = (
            column(&columns, "lid"),
            column(&columns, "key"),
            column(&columns, "vector"),
        )
        else {
            problems.push(format!(
                "ids {start}..{end}: the collection answered without lid, key or vector"
            ));
            return Ok(0);
        };
        let mut seen = 0;
        for (i, (&lid, key)) in lids.iter().zip(keys).enumerate() {
            seen += 1;
            let stored = vectors.get(i * self.dim..(i + 1) * self.dim);
            problems.extend(row_problem(lid as u32, key, stored, by_id, local));
        }
        Ok(seen)
    }
}

/// What is wrong with one row of the collection, if anything.
fn row_problem(
    id: u32,
    key: &str,
    stored: Option<&[f32]>,
    by_id: &HashMap<u32, &str>,
    local: &VectorIndex,
) -> Option<String> {
    match by_id.get(&id) {
        None => Some(format!(
            "lesion {id} ({key}) is in Milvus but not a live record"
        )),
        Some(expected_key) if *expected_key != key => Some(format!(
            "lesion {id}: Milvus has key {key}, the records {expected_key}"
        )),
        Some(_) => {
            let same = (id as usize) < local.len()
                && stored.is_some_and(|v| {
                    v.iter()
                        .zip(local.vector(id))
                        .all(|(a, b)| a.to_bits() == b.to_bits())
                });
            (!same)
                .then(|| format!("lesion {id}: its vector in Milvus differs from the generation's"))
        }
    }
}
