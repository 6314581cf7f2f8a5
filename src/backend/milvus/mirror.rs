//! A published generation into its own stamped collection: filled (`fill.rs`) unless it
//! is there already, loaded, waited on until readers see all of it from its built index,
//! then named by the alias; the archive's older collections are dropped.

use std::time::{Duration, Instant};

use super::stamp::{Stamp, MILVUS_BM25};
use super::{Connection, MirrorSummary};
use crate::archive::Published;
use crate::error::Result;
use crate::index::{dot, VectorIndex};

/// The readiness probe of a filled collection: recall@100 of this many spread lesions'
/// unfiltered searches against the exact scan must reach [`SETTLED_RECALL`].
const SETTLE_SAMPLES: usize = 16;
const SETTLE_DEPTH: usize = 100;
const SETTLED_RECALL: f64 = 0.98;
const SETTLE_WITHIN: Duration = Duration::from_secs(300);

impl Connection {
    /// Copies the published generation into its collection (unless it is there already,
    /// stamped alike), builds its graph, loads it and points the alias at it; then drops
    /// the collections of generations older than the one before it.
    pub fn mirror(&self, published: &Published, vectors: &VectorIndex) -> Result<MirrorSummary> {
        let mut stamp = Stamp::of(published);
        self.refuse_other_archives(&stamp)?;
        stamp.index = self.settings().index.for_rows(stamp.live).to_string();
        // A server that names its version is trusted on it; one that does not is asked to
        // rank text and, if it refuses, holds the vectors alone.
        let version = self.server_version();
        if version.as_deref().is_none_or(has_bm25) {
            stamp.text = MILVUS_BM25.into();
        }
        let name = self.settings().collection_of(&stamp);
        // Filled before with this index; how it ranks text was settled when it was filled.
        let already = self
            .stamp(&name)?
            .is_some_and(|s| s.holds(&stamp) && s.index == stamp.index);
        let mut rows = stamp.live;
        if !already {
            rows = self.refill(&name, &mut stamp, published, vectors, version.is_none())?;
        }
        self.load(&name)?;
        let (settled_s, recall) = self.settle(&name, vectors)?;
        let aliased = self.point_alias(&name)?;
        let dropped =
            self.drop_older_than(stamp.generation.saturating_sub(1), &name, &stamp.archive)?;
        Ok(MirrorSummary {
            collection: name,
            alias: aliased.then(|| self.settings().collection.clone()),
            settled_s,
            recall,
            rows,
            already,
            dropped,
        })
    }

    /// Refuses to mirror when a collection under this name holds another archive.
    fn refuse_other_archives(&self, stamp: &Stamp) -> Result<()> {
        for name in self.collections()? {
            if self.settings().generation_of(&name).is_none() {
                continue;
            }
            if let Some(other) = self.stamp(&name)?.filter(|o| o.archive != stamp.archive) {
                return Err(self.error(format!(
                    "collection {name} under {} holds another archive (generation {} of {} lesions, built from another folder): give this archive its own --milvus-collection",
                    self.settings().collection, other.generation, other.live
                )));
            }
        }
        Ok(())
    }

    /// Fills `name` from scratch; when a server that did not name its version refuses to
    /// rank text, fills it again with the vectors alone (and says so in `stamp`).
    fn refill(
        &self,
        name: &str,
        stamp: &mut Stamp,
        published: &Published,
        vectors: &VectorIndex,
        version_unknown: bool,
    ) -> Result<usize> {
        // Half filled by a writer that died: its name is this state's, so start over.
        self.drop_if_present(name)?;
        match self.fill(name, stamp, published, vectors) {
            Err(_) if version_unknown && stamp.text == MILVUS_BM25 => {
                self.drop_if_present(name)?;
                stamp.text = String::new();
                self.fill(name, stamp, published, vectors)
            }
            filled => filled,
        }
    }

    /// Waits until the collection answers from its built index (see [`Connection::recall`]),
    /// at most [`SETTLE_WITHIN`]; returns the seconds waited and the recall reached.
    fn settle(&self, collection: &str, vectors: &VectorIndex) -> Result<(f64, f64)> {
        let started = Instant::now();
        let live = vectors.live();
        loop {
            let visible = self.visible_rows(collection, "lid >= 0")?;
            let recall = if visible == live {
                self.recall(collection, vectors, SETTLE_SAMPLES, SETTLE_DEPTH)?
            } else {
                0.0
            };
            if recall >= SETTLED_RECALL {
                return Ok((started.elapsed().as_secs_f64(), recall));
            }
            if started.elapsed() > SETTLE_WITHIN {
                return Err(self.error(format!(
                    "collection {collection} shows readers {visible} of {live} lesions, recall@{SETTLE_DEPTH} {recall:.3} against the exact scan, after {} s",
                    SETTLE_WITHIN.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Recall@`depth` of the collection's unfiltered search against the exact scan of the
    /// generation's vectors, over `samples` live lesions spread over the ids. Right after
    /// a collection is filled, Milvus answers for a while from an interim index while the
    /// built one is handed over (top-100 lists then differ from the exact ones); this says
    /// when it serves the index it was given.
    fn recall(
        &self,
        collection: &str,
        vectors: &VectorIndex,
        samples: usize,
        depth: usize,
    ) -> Result<f64> {
        let live: Vec<u32> = vectors.live_ids().collect();
        let (mut found, mut wanted) = (0usize, 0usize);
        let step = (live.len() / samples.max(1)).max(1);
        for &id in live.iter().step_by(step).take(samples) {
            let query = vectors.vector(id);
            let exact = exact_nearest(vectors, &live, query, depth);
            let hits = self.search_in(collection, query, depth, String::new())?;
            wanted += exact.len();
            found += hits
                .iter()
                .filter(|h| exact.iter().any(|e| e.0 == h.id))
                .count();
        }
        Ok(if wanted == 0 {
            1.0
        } else {
            found as f64 / wanted as f64
        })
    }

    fn drop_if_present(&self, name: &str) -> Result<()> {
        if self.collections()?.iter().any(|c| c == name) {
            self.drop_collection(name)?;
        }
        Ok(())
    }

    /// Points the alias at `collection`: moved if it exists (atomically, for every client
    /// of the alias), created if not. Milvus 2.3 cannot describe an alias, so the move is
    /// tried first.
    fn point_alias(&self, collection: &str) -> Result<bool> {
        let (target, alias) = (collection.to_string(), self.settings().collection.clone());
        let moved = self.run("alter alias", move |c| async move {
            c.alter_alias(target, alias).await
        });
        if moved.is_ok() {
            return Ok(true);
        }
        let (target, alias) = (collection.to_string(), self.settings().collection.clone());
        match self.run("create alias", move |c| async move {
            c.create_alias(target, alias).await
        }) {
            Ok(()) => Ok(true),
            Err(e) if e.to_string().contains("Unimplemented") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Drops this archive's collections of generations before `keep_from`, and its other
    /// fillings of the served generation (another index type, an earlier build).
    fn drop_older_than(&self, keep_from: u64, served: &str, archive: &str) -> Result<Vec<String>> {
        let served_generation = self.settings().generation_of(served);
        let mut dropped = Vec::new();
        for name in self.collections()? {
            let generation = self.settings().generation_of(&name);
            let stale = generation.is_some_and(|g| g < keep_from)
                || (generation == served_generation && name != served);
            // Only collections this archive filled (stamped with it) are ever dropped.
            if stale && self.stamp(&name)?.is_some_and(|s| s.archive == archive) {
                self.drop_collection(&name)?;
                dropped.push(name);
            }
        }
        Ok(dropped)
    }
}

/// The `depth` live lesions nearest to `query` by the exact scan, best first.
fn exact_nearest(
    vectors: &VectorIndex,
    live: &[u32],
    query: &[f32],
    depth: usize,
) -> Vec<(u32, f32)> {
    let mut exact: Vec<(u32, f32)> = live
        .iter()
        .map(|&other| (other, dot(query, vectors.vector(other))))
        .collect();
    exact.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    exact.truncate(depth);
    exact
}

/// Whether a server of this version (`v2.5.1`, `v2.3.5-lite`) ranks text by BM25.
fn has_bm25(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_from_2_5_on() {
        assert!(has_bm25("v2.5.1") && has_bm25("2.6.0") && has_bm25("v3.0.0-beta"));
        assert!(!has_bm25("v2.3.5-lite") && !has_bm25("") && !has_bm25("v2.4.9"));
    }
}
