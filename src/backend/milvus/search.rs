//! [`MilvusBackend`]: the served generation's collection as a [`SearchBackend`]. Vectors
//! and filters are searched in Milvus, report text by Milvus' BM25 where the collection
//! ranks it, else by the generation's tantivy index.

use std::borrow::Cow;

use milvus::collection::SearchResult;
use milvus::data::FieldColumn;
use milvus::index::IndexType;
use milvus::query::{QueryOptions, SearchOptions};
use milvus::value::{Value, ValueVec};

use super::connection::{column, READERS};
use super::expression::expression_of;
use super::stamp::{Stamp, MILVUS_BM25};
use super::{Connection, MilvusSettings};
use crate::archive::Published;
use crate::backend::{ranked_by_tantivy, Allowed, BackendInfo, SearchBackend};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::index::{Plan, Scored};
use crate::text::{RankedText, Snippet, TextIndex};

/// Search breadth: at least this, and never below the number of hits asked for.
const MIN_EF: usize = 256;
/// Milvus' largest `topk` and query window.
const MAX_TOPK: usize = 16_384;
/// Below this many allowed ids, an id set no filter describes is sent as `lid in [...]`.
const MAX_ID_LIST: usize = 4_096;

/// Vectors and filters in a Milvus collection, text in the generation's tantivy index.
pub struct MilvusBackend {
    pub(super) connection: Connection,
    pub(super) collection: String,
    pub(super) dim: usize,
    live: usize,
    text: TextIndex,
    version: String,
    /// `FLAT` or `HNSW`.
    index: String,
    exact: bool,
    /// Report text ranked by Milvus' BM25 (2.5+); otherwise by the tantivy index.
    bm25: bool,
}

impl MilvusBackend {
    /// The backend over the collection of `published`'s generation; refused when that
    /// collection is missing or holds something else (another generation, model or
    /// records).
    pub fn open(settings: &MilvusSettings, published: &Published, text: TextIndex) -> Result<Self> {
        let connection = Connection::connect(settings)?;
        let expected = Stamp::of(published);
        let Some((collection, stamp)) = collection_holding(&connection, &expected)? else {
            return Err(connection.error(format!(
                "generation {} ({}) is not in Milvus under {}: run `lesion-indexer milvus-sync --index {}`",
                expected.generation,
                expected.describe(),
                settings.collection,
                published.dir.parent().unwrap_or(&published.dir).display()
            )));
        };
        // A restarted server holds collections unloaded.
        connection.load(&collection)?;
        let visible = connection.visible_rows(&collection, "lid >= 0")?;
        if visible != expected.live {
            return Err(connection.error(format!(
                "collection {collection} shows {visible} of the generation's {} lesions yet (its writer may still be filling it; Milvus shows new rows to readers a few seconds after they are written)",
                expected.live
            )));
        }
        let version = connection
            .server_version()
            .unwrap_or_else(|| "(version not told)".into());
        Ok(MilvusBackend {
            bm25: stamp.text == MILVUS_BM25,
            exact: stamp.index == IndexType::Flat.to_string(),
            index: stamp.index,
            dim: expected.dim,
            live: expected.live,
            collection,
            connection,
            text,
            version,
        })
    }

    /// The collection this backend reads.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// How many lesions of the collection pass `filter`, counted by Milvus from its
    /// expression (what a pushed-down filter selects).
    pub fn count(&self, filter: &Filter) -> Result<usize> {
        let expr = match expression_of(filter) {
            e if e.is_empty() => "lid >= 0".to_string(),
            e => e,
        };
        self.connection.visible_rows(&self.collection, &expr)
    }

    /// `call`, and once more after loading the collection if Milvus says it is not loaded
    /// (a server restarted uncleanly, or a collection released by hand).
    fn loaded<T>(&self, call: impl Fn() -> Result<T>) -> Result<T> {
        match call() {
            Err(e) if e.to_string().contains("not loaded") => {
                self.connection.load(&self.collection)?;
                call()
            }
            answer => answer,
        }
    }

    fn search(&self, query: &[f32], limit: usize, expr: String) -> Result<Vec<Scored>> {
        self.loaded(|| {
            self.connection
                .search_in(&self.collection, query, limit, expr.clone())
        })
    }

    /// Rows of `expr`, with the given output fields, at most [`MAX_TOPK`].
    pub(super) fn query(&self, expr: String, fields: Vec<String>) -> Result<Vec<FieldColumn>> {
        self.loaded(|| {
            let (collection, expr) = (self.collection.clone(), expr.clone());
            let options = QueryOptions::new()
                .limit(MAX_TOPK as i64)
                .output_fields(fields.clone());
            self.connection.run("query", move |c| async move {
                c.query(collection, &expr, &options).await
            })
        })
    }

    /// How many hits to ask for first so that `wanted` of the allowed are likely among
    /// them: the allowed share of the collection, with a margin.
    fn first_limit(&self, wanted: usize, allowed: Allowed<'_>) -> usize {
        let share = allowed.ids.len() as f32 / self.live.max(1) as f32;
        ((wanted as f32 * 1.5 / share.max(1e-4)) as usize + 64).min(MAX_TOPK)
    }

    /// Nearest among a subset no pushed-down filter is trusted with. Milvus 2.3.5's HNSW
    /// answers filtered searches wrongly for some filters (3 hits where 3,571 lesions
    /// match; a true nearest found with `limit` 10 and lost with 100; docs/SCALE.md),
    /// while its unfiltered HNSW search is near-exact. So the subset is found by asking
    /// for more than `k` without a filter and keeping the allowed; only a subset too small
    /// for that (fewer than `k` of it among the 16,384 nearest) is also searched with the
    /// filter as an expression (or an id list), and the two lists are merged. Id sets that
    /// no filter describes (evaluation) take this path on FLAT collections too.
    fn nearest_allowed(
        &self,
        query: &[f32],
        wanted: usize,
        allowed: Allowed<'_>,
    ) -> Result<Vec<Scored>> {
        let (mut kept, complete) = self.allowed_among_nearest(query, wanted, allowed)?;
        if complete {
            return Ok(kept);
        }
        let Some(expr) = narrowing_expression(allowed) else {
            return Ok(kept);
        };
        for hit in self.search(query, wanted, expr)? {
            if allowed.ids.contains(hit.id) && !kept.iter().any(|k| k.id == hit.id) {
                kept.push(hit);
            }
        }
        kept.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        Ok(kept)
    }

    /// The allowed among ever deeper unfiltered searches, until `wanted` of them are found
    /// or Milvus has no more to give; and whether that list is complete (`wanted` found, or
    /// the whole collection searched).
    fn allowed_among_nearest(
        &self,
        query: &[f32],
        wanted: usize,
        allowed: Allowed<'_>,
    ) -> Result<(Vec<Scored>, bool)> {
        let mut limit = self.first_limit(wanted, allowed);
        loop {
            let found = self.search(query, limit, String::new())?;
            let exhausted = found.len() < limit || limit == MAX_TOPK;
            let kept: Vec<Scored> = found
                .into_iter()
                .filter(|h| allowed.ids.contains(h.id))
                .collect();
            if kept.len() >= wanted || exhausted {
                let complete = kept.len() >= wanted || found_all(limit, self.live);
                return Ok((kept, complete));
            }
            limit = (limit * 2).min(MAX_TOPK);
        }
    }

    /// BM25 in Milvus: the allowed among a deep enough top list (filtered searches are not
    /// trusted, as for vectors), and the number of lesions matching any word.
    fn ranked_by_milvus(
        &self,
        text: &str,
        depth: usize,
        allowed: Allowed<'_>,
    ) -> Result<(Vec<RankedText>, usize)> {
        crate::text::check_query(text)?;
        let words = match_words(text);
        if words.is_empty() || depth == 0 || allowed.ids.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let hits = self.allowed_by_bm25(&words, depth, allowed)?;
        let total = self.text_matches(&words)?.unwrap_or(hits.len());
        Ok((hits, total))
    }

    /// Up to `depth` allowed lesions among ever deeper BM25 top lists of `words`.
    fn allowed_by_bm25(
        &self,
        words: &str,
        depth: usize,
        allowed: Allowed<'_>,
    ) -> Result<Vec<RankedText>> {
        let mut limit = self.first_limit(depth, allowed);
        loop {
            let found = self.bm25_top(words, limit)?;
            let exhausted = found.len() < limit || limit == MAX_TOPK;
            let kept: Vec<RankedText> = found
                .into_iter()
                .filter(|h| allowed.ids.contains(h.id))
                .map(|h| RankedText::ranked_elsewhere(h.id, h.score))
                .take(depth)
                .collect();
            if kept.len() >= depth || exhausted {
                return Ok(kept);
            }
            limit = (limit * 2).min(MAX_TOPK);
        }
    }

    /// The `limit` best lesions of the collection for `words` by BM25.
    fn bm25_top(&self, words: &str, limit: usize) -> Result<Vec<Scored>> {
        let options = SearchOptions::new()
            .limit(limit)
            .anns_field(vec!["report_bm25".into()])
            .consistency_level(READERS.into())
            .add_param("metric_type", "BM25");
        let (collection, query) = (self.collection.clone(), words.to_string());
        self.connection.run("text search", move |c| async move {
            let results = c
                .search(collection, vec![Value::from(query.as_str())], Some(options))
                .await?;
            Ok(scored(&results))
        })
    }

    /// How many lesions' reports match any of `words`, where Milvus says.
    fn text_matches(&self, words: &str) -> Result<Option<usize>> {
        let expr = format!("TEXT_MATCH(report, '{words}')");
        let collection = self.collection.clone();
        let options = QueryOptions::new().output_fields(vec!["count(*)".into()]);
        let columns = self
            .connection
            .run("text match count", move |c| async move {
                c.query(collection, &expr, &options).await
            })?;
        Ok(match column(&columns, "count(*)") {
            Some(ValueVec::Long(n)) if n.len() == 1 => Some(n[0] as usize),
            _ => None,
        })
    }
}

impl Connection {
    /// The `limit` nearest rows of `collection` to a unit query that pass `expr` (empty:
    /// all), by inner product, best first.
    pub(super) fn search_in(
        &self,
        collection: &str,
        query: &[f32],
        limit: usize,
        expr: String,
    ) -> Result<Vec<Scored>> {
        let ef = limit.max(MIN_EF);
        let options = SearchOptions::new()
            .limit(limit)
            .filter(expr)
            .anns_field(vec!["vector".into()])
            .consistency_level(READERS.into())
            .add_param("metric_type", "IP")
            .add_param("ef", ef.to_string());
        let collection = collection.to_string();
        let data = Value::from(query.to_vec());
        self.run("search", move |c| async move {
            let results = c.search(collection, vec![data], Some(options)).await?;
            Ok(scored(&results))
        })
    }
}

/// The collection of `expected`'s generation whose stamp holds the same archive state.
fn collection_holding(
    connection: &Connection,
    expected: &Stamp,
) -> Result<Option<(String, Stamp)>> {
    for name in connection.collections()? {
        if connection.settings().generation_of(&name) != Some(expected.generation) {
            continue;
        }
        if let Some(stamp) = connection.stamp(&name)? {
            if stamp.holds(expected) {
                return Ok(Some((name, stamp)));
            }
        }
    }
    Ok(None)
}

/// The hits of a search's answer, in its order, as lesion ids and scores.
fn scored(results: &[SearchResult<'_>]) -> Vec<Scored> {
    let mut hits = Vec::new();
    for result in results {
        for (id, score) in result.id.iter().zip(&result.score) {
            if let Value::Long(id) = id {
                hits.push(Scored {
                    id: *id as u32,
                    score: *score,
                });
            }
        }
    }
    hits
}

/// The expression that narrows a search to the allowed: their filter, or their ids when
/// few enough; `None` when neither.
fn narrowing_expression(allowed: Allowed<'_>) -> Option<String> {
    match allowed.filter {
        Some(filter) => Some(expression_of(filter)),
        None if allowed.ids.len() <= MAX_ID_LIST => {
            let ids: Vec<String> = allowed.ids.iter().map(|id| id.to_string()).collect();
            Some(format!("lid in [{}]", ids.join(", ")))
        }
        None => None,
    }
}

/// Whether a search for `limit` hits returned the whole collection.
fn found_all(limit: usize, live: usize) -> bool {
    limit >= live
}

/// The words of a text query, as a `TEXT_MATCH` literal can hold them: letters and
/// digits only, so nothing a user types can break out of the quotes.
fn match_words(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl SearchBackend for MilvusBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "milvus".into(),
            vectors: format!(
                "milvus {} {} ({})",
                self.version,
                self.index.to_lowercase(),
                self.collection
            ),
            text: if self.bm25 {
                MILVUS_BM25.into()
            } else {
                "tantivy-bm25 (beside milvus)".into()
            },
        }
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn ping(&self) -> Result<()> {
        self.connection.ping()
    }

    fn vector(&self, id: u32) -> Result<Cow<'_, [f32]>> {
        let columns = self.query(format!("lid == {id}"), vec!["vector".into()])?;
        match column(&columns, "vector") {
            Some(ValueVec::Float(v)) if v.len() == self.dim => Ok(Cow::Owned(v.clone())),
            _ => Err(Error::invalid_argument(
                "lesion",
                format!("lesion {id} has no stored vector"),
            )),
        }
    }

    fn deepest_vector_list(&self) -> Option<usize> {
        Some(MAX_TOPK)
    }

    fn nearest(
        &self,
        query: &[f32],
        k: usize,
        allowed: Allowed<'_>,
    ) -> Result<(Vec<Scored>, Plan)> {
        let wanted = k.min(MAX_TOPK);
        if wanted == 0 || allowed.ids.is_empty() {
            return Ok((Vec::new(), Plan::Graph { ef: MIN_EF }));
        }
        let mut hits = match allowed.filter {
            _ if allowed.ids.len() >= self.live => self.search(query, wanted, String::new())?,
            // A FLAT collection filters exactly: the filter goes to Milvus as it is.
            Some(filter) if self.exact => self.search(query, wanted, expression_of(filter))?,
            _ => self.nearest_allowed(query, wanted, allowed)?,
        };
        // The id set is the authority.
        hits.retain(|h| allowed.ids.contains(h.id));
        hits.truncate(wanted);
        let plan = if self.exact {
            Plan::Exact
        } else {
            Plan::Graph {
                ef: wanted.max(MIN_EF),
            }
        };
        Ok((hits, plan))
    }

    fn ranked_text(
        &self,
        text: &str,
        depth: usize,
        allowed: Allowed<'_>,
        allowed_share: f32,
    ) -> Result<(Vec<RankedText>, usize)> {
        if self.bm25 {
            return self.ranked_by_milvus(text, depth, allowed);
        }
        ranked_by_tantivy(&self.text, text, depth, allowed, allowed_share)
    }

    fn snippets(&self, text: &str, hits: &[RankedText]) -> Result<Vec<Snippet>> {
        self.text
            .snippets(text, hits, crate::text::QueryFeatures::ALL)
    }

    fn text_matches(&self, text: &str) -> Result<Vec<u32>> {
        self.text
            .matching_ids(text, crate::text::QueryFeatures::ALL)
    }

    fn did_you_mean(&self, text: &str) -> Result<Option<String>> {
        self.text.did_you_mean(text)
    }

    fn verify(&self, published: &Published) -> Result<Vec<String>> {
        self.disagreements(published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_words_stay_words() {
        assert_eq!(
            match_words("mass') or lid > 0 -- (left"),
            "mass or lid 0 left"
        );
    }
}
