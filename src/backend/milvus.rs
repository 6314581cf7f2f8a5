//! The Milvus backend: a generation's vectors and filterable facts in a Milvus collection;
//! the report text ranked by Milvus' BM25 where the server has it (2.5+), else by the
//! generation's tantivy index beside it.
//!
//! The published generation on disk stays the source of truth: records, manifest, text and
//! the local vector files are written as for the embedded backend, then [`Connection::mirror`]
//! copies the generation into its own collection (`<name>_gen_NNNNNN_...`, stamped in its
//! description with the archive, the generation, the checksums and the model card), waits
//! until readers see all of it, and switches the alias `<name>` to it. A server opens
//! exactly the collection of the generation it serves, so a generation published but not
//! yet mirrored is refused (the previous one stays served), never half-served. The
//! collection before the newest is kept for servers still on it.
//!
//! The SDK is asynchronous; this module owns a small tokio runtime and blocks on it, so the
//! engine's synchronous callers (request threads, the CLI) can use it from any thread.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::mpsc;

use milvus::client::{Client, ConsistencyLevel};
use milvus::data::FieldColumn;
use milvus::index::{IndexParams, IndexType, MetricType};
use milvus::query::{QueryOptions, SearchOptions};
use milvus::schema::{CollectionSchemaBuilder, FieldSchema};
use milvus::value::{Value, ValueVec};
use serde::{Deserialize, Serialize};

use super::{Allowed, BackendInfo, SearchBackend};
use crate::archive::Published;
use crate::error::{Error, Result};
use crate::filter::{Filter, Range};
use crate::index::{dot, Plan, Scored, VectorIndex};
use crate::text::{document_text, RankedText, Snippet, TextIndex};

/// Where the Milvus server listens when nothing else is said.
pub const DEFAULT_URL: &str = "http://127.0.0.1:19530";
/// The alias that names the served generation's collection, and the prefix of every
/// generation's collection.
pub const DEFAULT_COLLECTION: &str = "lesion_search";

/// HNSW build parameters of every collection (Milvus' own recommendation for ~1M vectors).
const GRAPH_M: usize = 16;
const GRAPH_EF_CONSTRUCTION: usize = 200;
/// Search breadth: at least this, and never below the number of hits asked for.
const MIN_EF: usize = 256;
/// Up to this many lesions a collection is searched exactly (FLAT) unless told otherwise:
/// milliseconds at this size, and Milvus 2.3.5's HNSW loses true neighbours under scalar
/// filters that no `ef` brings back (BENCHMARKS.md, "Milvus backend").
pub const FLAT_UP_TO: usize = 200_000;
/// Milvus' largest `topk` and query window.
const MAX_TOPK: usize = 16_384;
/// Below this many allowed ids, an id set no filter describes is sent as `lid in [...]`.
const MAX_ID_LIST: usize = 4_096;
/// The readiness probe of a filled collection: recall@100 of this many spread lesions'
/// unfiltered searches against the exact scan must reach [`SETTLED_RECALL`].
const SETTLE_SAMPLES: usize = 16;
const SETTLE_DEPTH: usize = 100;
const SETTLED_RECALL: f64 = 0.98;
const SETTLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(300);
/// How every read sees a collection: at most a few seconds stale. Rows a writer inserted
/// become visible to such readers only that long after, so a filled collection is served
/// only once readers see all of it ([`Connection::settle`]).
const READERS: ConsistencyLevel = ConsistencyLevel::Bounded;
/// What a collection that ranks report text says in its stamp and in `/healthz`.
const MILVUS_BM25: &str = "milvus-bm25";
/// Longest report text a collection holds (Milvus' VarChar limit).
const MAX_REPORT_BYTES: usize = 65_535;
/// Bytes of vectors per insert request (the server's gRPC limit is 64 MiB).
const INSERT_BYTES: usize = 16 << 20;

/// The vector index a generation's collection gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MilvusIndex {
    /// FLAT up to [`FLAT_UP_TO`] lesions, HNSW past it.
    #[default]
    Auto,
    Flat,
    Hnsw,
}

impl MilvusIndex {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "auto" => Ok(MilvusIndex::Auto),
            "flat" => Ok(MilvusIndex::Flat),
            "hnsw" => Ok(MilvusIndex::Hnsw),
            other => Err(Error::invalid_argument(
                "milvus-index",
                format!("`{other}` is not auto, flat or hnsw"),
            )),
        }
    }

    fn for_rows(self, rows: usize) -> IndexType {
        match self {
            MilvusIndex::Flat => IndexType::Flat,
            MilvusIndex::Hnsw => IndexType::HNSW,
            MilvusIndex::Auto if rows <= FLAT_UP_TO => IndexType::Flat,
            MilvusIndex::Auto => IndexType::HNSW,
        }
    }
}

/// How to reach Milvus and what to call the archive's collections there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilvusSettings {
    pub url: String,
    /// The alias of the served generation; each generation's collection is
    /// `<collection>_gen_NNNNNN_...`. Letters, digits and underscores, starting with a letter.
    pub collection: String,
    /// The vector index of collections this process fills.
    pub index: MilvusIndex,
}

impl Default for MilvusSettings {
    fn default() -> Self {
        MilvusSettings {
            url: DEFAULT_URL.into(),
            collection: DEFAULT_COLLECTION.into(),
            index: MilvusIndex::Auto,
        }
    }
}

impl MilvusSettings {
    fn check(&self) -> Result<()> {
        let name = &self.collection;
        let valid = name.len() <= 200
            && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Error::invalid_argument(
                "milvus-collection",
                format!(
                    "`{name}` is not a Milvus name (letters, digits and _, starting with a letter)"
                ),
            ));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(Error::invalid_argument(
                "milvus-url",
                format!("`{}` is not an http:// or https:// address", self.url),
            ));
        }
        Ok(())
    }

    /// `<collection>_gen_NNNNNN_<records digest>_<index>`: never the name of a dropped
    /// collection with other contents (Milvus 2.3.5 can keep a dropped collection's index
    /// under a reused name).
    fn collection_of(&self, stamp: &Stamp) -> String {
        format!(
            "{}_gen_{:06}_{}_{}",
            self.collection,
            stamp.generation,
            &stamp.records_sha256[..12.min(stamp.records_sha256.len())],
            stamp.index.to_lowercase()
        )
    }

    fn generation_of(&self, collection: &str) -> Option<u64> {
        collection
            .strip_prefix(&self.collection)?
            .strip_prefix("_gen_")?
            .get(..6)?
            .parse()
            .ok()
    }
}

/// What a generation's collection holds, written into its description when it is filled
/// and compared with the published manifest whenever it is opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    /// Which archive (a digest of the folder the index was built from): collections of
    /// other archives under the same name are never dropped or reused.
    #[serde(default)]
    archive: String,
    generation: u64,
    live: usize,
    records_sha256: String,
    vectors_sha256: String,
    model: String,
    weights_sha256: String,
    dim: usize,
    /// `FLAT` or `HNSW`: how the collection is searched, not what it holds.
    #[serde(default)]
    index: String,
    /// `milvus-bm25` when the collection also ranks report text (Milvus 2.5+), else empty
    /// (text stays in tantivy).
    #[serde(default)]
    text: String,
}

impl Stamp {
    /// Holds the same archive state (whatever its index and text ranking).
    fn holds(&self, other: &Stamp) -> bool {
        let bare = |s: &Stamp| Stamp {
            index: String::new(),
            text: String::new(),
            ..s.clone()
        };
        bare(self) == bare(other)
    }

    fn of(published: &Published) -> Self {
        let m = &published.manifest;
        use sha2::Digest;
        let digest = sha2::Sha256::digest(m.dataset.as_bytes());
        Stamp {
            archive: digest[..8].iter().map(|b| format!("{b:02x}")).collect(),
            generation: m.generation,
            live: published.records.len(),
            records_sha256: m.records_sha256.clone(),
            vectors_sha256: m.vectors_sha256.clone(),
            model: m.model.name.clone(),
            weights_sha256: m.model.weights_sha256.clone(),
            dim: m.model.output_dim,
            index: String::new(),
            text: String::new(),
        }
    }
}

/// What [`Connection::mirror`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorSummary {
    pub collection: String,
    /// The alias now naming it; `None` on a server without aliases (milvus-lite), where
    /// only this program's stamp lookup finds the collection.
    pub alias: Option<String>,
    /// Seconds until the collection answered from its built index, and the recall@100
    /// of its unfiltered search against the exact scan then.
    pub settled_s: f64,
    pub recall: f64,
    pub rows: usize,
    /// The collection held this generation already (nothing was written).
    pub already: bool,
    /// Older generations' collections dropped.
    pub dropped: Vec<String>,
}

/// A client of one Milvus server, usable from synchronous code.
pub struct Connection {
    runtime: tokio::runtime::Runtime,
    client: Client,
    settings: MilvusSettings,
}

impl Connection {
    pub fn connect(settings: &MilvusSettings) -> Result<Self> {
        settings.check()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("milvus-client")
            .enable_all()
            .build()
            .map_err(|e| Error::Backend {
                backend: "milvus".into(),
                url: settings.url.clone(),
                message: format!("cannot start the client runtime: {e}"),
            })?;
        let (tx, rx) = mpsc::channel();
        let url = settings.url.clone();
        runtime.spawn(async move {
            let _ = tx.send(Client::new(url).await);
        });
        let client = rx
            .recv()
            .map_err(|_| Error::Backend {
                backend: "milvus".into(),
                url: settings.url.clone(),
                message: "the client runtime stopped".into(),
            })?
            .map_err(|e| Error::Backend {
                backend: "milvus".into(),
                url: settings.url.clone(),
                message: format!("cannot connect: {e}"),
            })?;
        Ok(Connection {
            runtime,
            client,
            settings: settings.clone(),
        })
    }

    pub fn settings(&self) -> &MilvusSettings {
        &self.settings
    }

    fn error(&self, message: String) -> Error {
        Error::Backend {
            backend: "milvus".into(),
            url: self.settings.url.clone(),
            message,
        }
    }

    /// Runs one SDK call on the client runtime and waits for it; works from any thread,
    /// an async one included, since the waiting thread never drives the runtime.
    fn run<T, F>(&self, what: &str, call: impl FnOnce(Client) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = milvus::error::Result<T>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let future = call(self.client.clone());
        self.runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv()
            .map_err(|_| self.error(format!("{what}: the client runtime stopped")))?
            .map_err(|e| self.error(format!("{what}: {e}")))
    }

    /// The server's version string (`v2.3.5-lite`); `None` from a server that does not
    /// say (milvus-lite 2.5 answers neither `Connect` with its server info nor `GetVersion`).
    pub fn server_version(&self) -> Option<String> {
        self.run("server version", |c| async move {
            c.get_server_version().await.map(|v| v.version)
        })
        .ok()
    }

    /// Whether the server answers at all (a cheap call every version implements).
    pub fn ping(&self) -> Result<()> {
        self.collections().map(|_| ())
    }

    /// The `limit` nearest rows of `collection` to a unit query that pass `expr` (empty:
    /// all), by inner product, best first.
    fn search_in(
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
            Ok(hits)
        })
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
        let live: Vec<u32> = (0..vectors.len() as u32)
            .filter(|&id| !vectors.tombstones.contains(id))
            .collect();
        let (mut found, mut wanted) = (0usize, 0usize);
        let step = (live.len() / samples.max(1)).max(1);
        for &id in live.iter().step_by(step).take(samples) {
            let query = vectors.flat.vector(id);
            let mut exact: Vec<(u32, f32)> = live
                .iter()
                .map(|&other| (other, dot(query, vectors.flat.vector(other))))
                .collect();
            exact.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            exact.truncate(depth);
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

    /// Waits until the collection answers from its built index (see [`Connection::recall`]),
    /// at most [`SETTLE_WITHIN`]; returns the seconds waited and the recall reached.
    fn settle(&self, collection: &str, vectors: &VectorIndex) -> Result<(f64, f64)> {
        let started = std::time::Instant::now();
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
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }

    /// Rows of `collection` passing `expr`, as readers see them now.
    fn visible_rows(&self, collection: &str, expr: &str) -> Result<usize> {
        let (collection, expr) = (collection.to_string(), expr.to_string());
        let options = QueryOptions::new()
            .output_fields(vec!["count(*)".into()])
            .consistency_level(READERS.into());
        let columns = self.run("count", move |c| async move {
            c.query(collection, &expr, &options).await
        })?;
        match column(&columns, "count(*)") {
            Some(ValueVec::Long(n)) if n.len() == 1 => Ok(n[0] as usize),
            _ => Err(self.error("count: no count(*) in the answer".into())),
        }
    }

    fn stamp(&self, collection: &str) -> Result<Option<Stamp>> {
        let name = collection.to_string();
        let exists = self.run("has collection", move |c| async move {
            c.has_collection(name).await
        })?;
        if !exists {
            return Ok(None);
        }
        let name = collection.to_string();
        let description = self.run("describe collection", move |c| async move {
            c.describe_collection(name)
                .await
                .map(|d| d.schema.description)
        })?;
        // A collection of this name but no stamp was made by something else: never reuse it.
        Ok(serde_json::from_str(&description).ok())
    }

    fn collections(&self) -> Result<Vec<String>> {
        self.run(
            "list collections",
            |c| async move { c.list_collections().await },
        )
    }

    /// Copies the published generation into its collection (unless it is there already,
    /// stamped alike), builds its graph, loads it and points the alias at it; then drops
    /// the collections of generations older than the one before it.
    pub fn mirror(&self, published: &Published, vectors: &VectorIndex) -> Result<MirrorSummary> {
        let mut stamp = Stamp::of(published);
        for name in self.collections()? {
            if self.settings.generation_of(&name).is_none() {
                continue;
            }
            if let Some(other) = self.stamp(&name)?.filter(|o| o.archive != stamp.archive) {
                return Err(self.error(format!(
                    "collection {name} under {} holds another archive (generation {} of {} lesions, built from another folder): give this archive its own --milvus-collection",
                    self.settings.collection, other.generation, other.live
                )));
            }
        }
        stamp.index = self.settings.index.for_rows(stamp.live).to_string();
        // A server that names its version is trusted on it; one that does not is asked to
        // rank text and, if it refuses, holds the vectors alone.
        let version = self.server_version();
        if version.as_deref().is_none_or(has_bm25) {
            stamp.text = MILVUS_BM25.into();
        }
        let name = self.settings.collection_of(&stamp);
        // Filled before with this index; how it ranks text was settled when it was filled.
        let already = self
            .stamp(&name)?
            .is_some_and(|s| s.holds(&stamp) && s.index == stamp.index);
        let mut rows = stamp.live;
        if !already {
            // Half filled by a writer that died: its name is this state's, so start over.
            self.drop_if_present(&name)?;
            rows = match self.fill(&name, &stamp, published, vectors) {
                Err(_) if version.is_none() && stamp.text == MILVUS_BM25 => {
                    self.drop_if_present(&name)?;
                    stamp.text = String::new();
                    self.fill(&name, &stamp, published, vectors)?
                }
                filled => filled?,
            };
        }
        let loaded = name.clone();
        self.run("load collection", move |c| async move {
            c.load_collection(loaded, None).await
        })?;
        let (settled_s, recall) = self.settle(&name, vectors)?;
        let aliased = self.point_alias(&name)?;
        let dropped =
            self.drop_older_than(stamp.generation.saturating_sub(1), &name, &stamp.archive)?;
        Ok(MirrorSummary {
            collection: name,
            alias: aliased.then(|| self.settings.collection.clone()),
            settled_s,
            recall,
            rows,
            already,
            dropped,
        })
    }

    fn fill(
        &self,
        name: &str,
        stamp: &Stamp,
        published: &Published,
        vectors: &VectorIndex,
    ) -> Result<usize> {
        let dim = stamp.dim;
        if vectors.flat.dim() != dim {
            return Err(self.error(format!(
                "the generation's vectors have {} dimensions, its model card {dim}",
                vectors.flat.dim()
            )));
        }
        let description = serde_json::to_string(stamp).expect("a stamp serializes");
        let mut schema = CollectionSchemaBuilder::new(name, &description);
        schema
            .add_field(FieldSchema::new_primary_int64(
                "lid",
                "dense lesion id",
                false,
            ))
            .add_field(FieldSchema::new_float_vector(
                "vector",
                "unit embedding",
                dim as i64,
            ))
            .add_field(FieldSchema::new_varchar(
                "key",
                "File_name and ordinal",
                512,
            ))
            .add_field(FieldSchema::new_int64("patient", "patient index"))
            .add_field(FieldSchema::new_varchar(
                "coarse_type",
                "coarse lesion type",
                32,
            ))
            .add_field(FieldSchema::new_varchar(
                "sex",
                "female, male or unknown",
                16,
            ))
            .add_field(FieldSchema::new_float("age", "years; -1 when unknown"))
            .add_field(FieldSchema::new_float("long_mm", "RECIST long diameter"))
            .add_field(FieldSchema::new_float("location_x", "normalized body x"))
            .add_field(FieldSchema::new_float("location_y", "normalized body y"))
            .add_field(FieldSchema::new_float("location_z", "normalized body z"))
            .add_field(FieldSchema::new_varchar(
                "split",
                "train, validation or test",
                16,
            ));
        let bm25 = stamp.text == MILVUS_BM25;
        if bm25 {
            schema
                .add_field(
                    FieldSchema::new_varchar(
                        "report",
                        "report, tags and their ontology terms",
                        MAX_REPORT_BYTES as i32,
                    )
                    .add_type_param("enable_analyzer", "true")
                    .add_type_param("enable_match", "true")
                    .add_type_param("analyzer_params", "{\"type\": \"english\"}"),
                )
                .add_field(FieldSchema::new_sparse_float_vector(
                    "report_bm25",
                    "BM25 of the report",
                ))
                .add_function(milvus::proto::schema::FunctionSchema {
                    name: "report_bm25".into(),
                    r#type: milvus::proto::schema::FunctionType::Bm25 as i32,
                    input_field_names: vec!["report".into()],
                    output_field_names: vec!["report_bm25".into()],
                    ..Default::default()
                });
        }
        let schema = schema
            .build()
            .map_err(|e| self.error(format!("collection schema: {e}")))?;
        let created = schema.clone();
        self.run("create collection", move |c| async move {
            c.create_collection(created, None).await.map(|_| ())
        })?;

        let all = published.records.all()?;
        let per_batch = (INSERT_BYTES / (dim * 4)).clamp(1, 8_192);
        for batch in all.chunks(per_batch) {
            let mut lid = Vec::with_capacity(batch.len());
            let mut vector = Vec::with_capacity(batch.len() * dim);
            let mut key = Vec::with_capacity(batch.len());
            let mut patient = Vec::with_capacity(batch.len());
            let mut coarse_type = Vec::with_capacity(batch.len());
            let mut sex = Vec::with_capacity(batch.len());
            let mut age = Vec::with_capacity(batch.len());
            let mut long_mm = Vec::with_capacity(batch.len());
            let mut location = [Vec::new(), Vec::new(), Vec::new()];
            let mut split = Vec::with_capacity(batch.len());
            let mut report = Vec::with_capacity(if bm25 { batch.len() } else { 0 });
            for (id, lesion) in batch {
                if *id as usize >= vectors.len() || vectors.tombstones.contains(*id) {
                    return Err(
                        self.error(format!("record {id} has no live vector in the generation"))
                    );
                }
                let r = &lesion.record;
                lid.push(*id as i64);
                vector.extend_from_slice(vectors.flat.vector(*id));
                key.push(lesion.key.clone());
                patient.push(r.patient as i64);
                coarse_type.push(wire_name(&r.coarse_type));
                sex.push(wire_name(&r.sex));
                age.push(r.age.unwrap_or(-1.0));
                long_mm.push(r.long_diameter_mm());
                location[0].push(r.location.x);
                location[1].push(r.location.y);
                location[2].push(r.location.z);
                split.push(wire_name(&r.split));
                if bm25 {
                    report.push(truncated(
                        document_text(&lesion.report, &lesion.tags),
                        MAX_REPORT_BYTES,
                    ));
                }
            }
            let [location_x, location_y, location_z] = location;
            let field = |n: &str| schema.get_field(n).expect("field of the schema above");
            let mut columns = vec![
                FieldColumn::new(field("lid"), lid),
                FieldColumn::new(field("vector"), vector),
                FieldColumn::new(field("key"), key),
                FieldColumn::new(field("patient"), patient),
                FieldColumn::new(field("coarse_type"), coarse_type),
                FieldColumn::new(field("sex"), sex),
                FieldColumn::new(field("age"), age),
                FieldColumn::new(field("long_mm"), long_mm),
                FieldColumn::new(field("location_x"), location_x),
                FieldColumn::new(field("location_y"), location_y),
                FieldColumn::new(field("location_z"), location_z),
                FieldColumn::new(field("split"), split),
            ];
            if bm25 {
                columns.push(FieldColumn::new(field("report"), report));
            }
            let target = name.to_string();
            self.run("insert", move |c| async move {
                c.insert(target, columns, None).await.map(|_| ())
            })?;
        }
        let target = name.to_string();
        self.run("flush", move |c| async move { c.flush(target).await })?;
        let index = self.settings.index.for_rows(stamp.live);
        let build = match index {
            IndexType::HNSW => HashMap::from([
                ("M".to_string(), GRAPH_M.to_string()),
                (
                    "efConstruction".to_string(),
                    GRAPH_EF_CONSTRUCTION.to_string(),
                ),
            ]),
            _ => HashMap::new(),
        };
        // Named after the field, as Milvus names a default index (milvus-lite finds it only so).
        let params = IndexParams::new("vector".into(), index, MetricType::IP, build);
        let target = name.to_string();
        self.run("create index", move |c| async move {
            c.create_index(target, "vector", params).await
        })?;
        if bm25 {
            let params = IndexParams::new(
                "report_bm25".into(),
                IndexType::SparseInvertedIndex,
                MetricType::BM25,
                HashMap::new(),
            );
            let target = name.to_string();
            self.run("create text index", move |c| async move {
                c.create_index(target, "report_bm25", params).await
            })?;
        }
        Ok(all.len())
    }

    fn drop_if_present(&self, name: &str) -> Result<()> {
        if self.collections()?.iter().any(|c| c == name) {
            let old = name.to_string();
            self.run("drop collection", move |c| async move {
                c.drop_collection(old).await
            })?;
        }
        Ok(())
    }

    /// Points the alias at `collection`: moved if it exists (atomically, for every client
    /// of the alias), created if not. Milvus 2.3 cannot describe an alias, so the move is
    /// tried first.
    fn point_alias(&self, collection: &str) -> Result<bool> {
        let (target, alias) = (collection.to_string(), self.settings.collection.clone());
        let moved = self.run("alter alias", move |c| async move {
            c.alter_alias(target, alias).await
        });
        if moved.is_ok() {
            return Ok(true);
        }
        let (target, alias) = (collection.to_string(), self.settings.collection.clone());
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
        let served_generation = self.settings.generation_of(served);
        let mut dropped = Vec::new();
        for name in self.collections()? {
            let generation = self.settings.generation_of(&name);
            let stale = generation.is_some_and(|g| g < keep_from)
                || (generation == served_generation && name != served);
            // Only collections this archive filled (stamped with it) are ever dropped.
            if stale && self.stamp(&name)?.is_some_and(|s| s.archive == archive) {
                let target = name.clone();
                self.run("drop collection", move |c| async move {
                    c.drop_collection(target).await
                })?;
                dropped.push(name);
            }
        }
        Ok(dropped)
    }
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

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncated(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The words of a text query, as a `TEXT_MATCH` literal can hold them: letters and
/// digits only, so nothing a user types can break out of the quotes.
fn match_words(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The serde name of an enum value (`lung`, `female`, `test`), as the wire and the
/// collection spell it.
fn wire_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A Milvus boolean expression true exactly for the lesions `filter` accepts. Bounds are
/// written as the exact decimal of their f32, so the server's comparison agrees with ours
/// at the boundary.
pub fn expression_of(filter: &Filter) -> String {
    let mut terms = Vec::new();
    if !filter.types.is_empty() {
        let names: Vec<String> = filter
            .types
            .iter()
            .map(|t| format!("\"{}\"", wire_name(t)))
            .collect();
        terms.push(format!("coarse_type in [{}]", names.join(", ")));
    }
    if let Some(sex) = filter.sex {
        terms.push(format!("sex == \"{}\"", wire_name(&sex)));
    }
    if !filter.age.is_open() {
        terms.push("age >= 0".to_string());
    }
    for (field, range) in [
        ("age", &filter.age),
        ("long_mm", &filter.long_mm),
        ("location_x", &filter.location_x),
        ("location_y", &filter.location_y),
        ("location_z", &filter.location_z),
    ] {
        push_range(&mut terms, field, range);
    }
    if let Some(split) = filter.split {
        terms.push(format!("split == \"{}\"", wire_name(&split)));
    }
    if !filter.exclude_patients.is_empty() {
        let set: BTreeSet<u32> = filter.exclude_patients.iter().copied().collect();
        let list: Vec<String> = set.iter().map(u32::to_string).collect();
        terms.push(format!("patient not in [{}]", list.join(", ")));
    }
    terms.join(" and ")
}

fn push_range(terms: &mut Vec<String>, field: &str, range: &Range) {
    if let Some(min) = range.min {
        terms.push(format!("{field} >= {}", exact_decimal(min)));
    }
    if let Some(max) = range.max {
        terms.push(format!("{field} <= {}", exact_decimal(max)));
    }
}

/// The f32 widened to f64, printed so that it parses back to that exact value.
fn exact_decimal(value: f32) -> String {
    let wide = value as f64;
    if wide.is_finite() {
        format!("{wide:?}")
    } else if wide > 0.0 {
        "1e300".into()
    } else {
        "-1e300".into()
    }
}

/// Vectors and filters in a Milvus collection, text in the generation's tantivy index.
pub struct MilvusBackend {
    connection: Connection,
    collection: String,
    dim: usize,
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
        let mut found = None;
        for name in connection.collections()? {
            if settings.generation_of(&name) != Some(expected.generation) {
                continue;
            }
            if let Some(stamp) = connection.stamp(&name)? {
                if stamp.holds(&expected) {
                    found = Some((name, stamp));
                    break;
                }
            }
        }
        let Some((collection, stamp)) = found else {
            return Err(connection.error(format!(
                "generation {} ({}) is not in Milvus under {}: run `lesion-indexer milvus-sync --index {}`",
                expected.generation,
                describe(&expected),
                settings.collection,
                published.dir.parent().unwrap_or(&published.dir).display()
            )));
        };
        // A restarted server holds collections unloaded.
        let target = collection.clone();
        connection.run("load collection", move |c| async move {
            c.load_collection(target, None).await
        })?;
        let visible = connection.visible_rows(&collection, "lid >= 0")?;
        if visible != expected.live {
            return Err(connection.error(format!(
                "collection {collection} shows {visible} of the generation's {} lesions yet (its writer may still be filling it; Milvus shows new rows to readers a few seconds after they are written)",
                expected.live
            )));
        }
        let index = stamp.index;
        let bm25 = stamp.text == MILVUS_BM25;
        let version = connection
            .server_version()
            .unwrap_or_else(|| "(version not told)".into());
        Ok(MilvusBackend {
            bm25,
            exact: index == IndexType::Flat.to_string(),
            index,
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

    /// `call`, and once more after loading the collection if Milvus says it is not loaded
    /// (a server restarted uncleanly, or a collection released by hand).
    fn loaded<T>(&self, call: impl Fn() -> Result<T>) -> Result<T> {
        match call() {
            Err(e) if e.to_string().contains("not loaded") => {
                let target = self.collection.clone();
                self.connection
                    .run("load collection", move |c| async move {
                        c.load_collection(target, None).await
                    })?;
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
        let share = allowed.ids.len() as f32 / self.live.max(1) as f32;
        let mut limit = ((wanted as f32 * 1.5 / share.max(1e-4)) as usize + 64).min(MAX_TOPK);
        let mut kept = loop {
            let found = self.search(query, limit, String::new())?;
            let exhausted = found.len() < limit || limit == MAX_TOPK;
            let kept: Vec<Scored> = found
                .into_iter()
                .filter(|h| allowed.ids.contains(h.id))
                .collect();
            if kept.len() >= wanted || exhausted {
                if kept.len() >= wanted || found_all(limit, self.live) {
                    return Ok(kept);
                }
                break kept;
            }
            limit = (limit * 2).min(MAX_TOPK);
        };
        let expr = match allowed.filter {
            Some(filter) => expression_of(filter),
            None if allowed.ids.len() <= MAX_ID_LIST => {
                let ids: Vec<String> = allowed.ids.iter().map(|id| id.to_string()).collect();
                format!("lid in [{}]", ids.join(", "))
            }
            None => return Ok(kept),
        };
        for hit in self.search(query, wanted, expr)? {
            if allowed.ids.contains(hit.id) && !kept.iter().any(|k| k.id == hit.id) {
                kept.push(hit);
            }
        }
        kept.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        Ok(kept)
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
        let share = allowed.ids.len() as f32 / self.live.max(1) as f32;
        let mut limit = ((depth as f32 * 1.5 / share.max(1e-4)) as usize + 64).min(MAX_TOPK);
        let hits = loop {
            let options = SearchOptions::new()
                .limit(limit)
                .anns_field(vec!["report_bm25".into()])
                .consistency_level(READERS.into())
                .add_param("metric_type", "BM25");
            let (collection, query) = (self.collection.clone(), words.clone());
            let found: Vec<(u32, f32)> =
                self.connection.run("text search", move |c| async move {
                    let results = c
                        .search(collection, vec![Value::from(query.as_str())], Some(options))
                        .await?;
                    Ok(results
                        .iter()
                        .flat_map(|r| {
                            r.id.iter()
                                .zip(&r.score)
                                .filter_map(|(id, score)| match id {
                                    Value::Long(id) => Some((*id as u32, *score)),
                                    _ => None,
                                })
                        })
                        .collect())
                })?;
            let exhausted = found.len() < limit || limit == MAX_TOPK;
            let kept: Vec<RankedText> = found
                .into_iter()
                .filter(|(id, _)| allowed.ids.contains(*id))
                .map(|(id, score)| RankedText::ranked_elsewhere(id, score))
                .take(depth)
                .collect();
            if kept.len() >= depth || exhausted {
                break kept;
            }
            limit = (limit * 2).min(MAX_TOPK);
        };
        let expr = format!("TEXT_MATCH(report, '{words}')");
        let collection = self.collection.clone();
        let options = QueryOptions::new().output_fields(vec!["count(*)".into()]);
        let columns = self
            .connection
            .run("text match count", move |c| async move {
                c.query(collection, &expr, &options).await
            })?;
        let total = match column(&columns, "count(*)") {
            Some(ValueVec::Long(n)) if n.len() == 1 => n[0] as usize,
            _ => hits.len(),
        };
        Ok((hits, total))
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

    /// Rows of `expr`, with the given output fields, at most [`MAX_TOPK`].
    fn query(&self, expr: String, fields: Vec<String>) -> Result<Vec<FieldColumn>> {
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
}

/// Whether a search for `limit` hits returned the whole collection.
fn found_all(limit: usize, live: usize) -> bool {
    limit >= live
}

fn describe(stamp: &Stamp) -> String {
    format!(
        "generation {}, {} lesions, model {}, records {}",
        stamp.generation,
        stamp.live,
        stamp.model,
        &stamp.records_sha256[..12.min(stamp.records_sha256.len())]
    )
}

fn column<'a>(columns: &'a [FieldColumn], name: &str) -> Option<&'a ValueVec> {
    columns.iter().find(|c| c.name == name).map(|c| &c.value)
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
        super::ranked_by_tantivy(&self.text, text, depth, allowed, allowed_share)
    }

    fn snippets(&self, text: &str, hits: &[RankedText]) -> Result<Vec<Snippet>> {
        self.text.snippets(text, hits, true)
    }

    fn verify(&self, published: &Published) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let expected = Stamp::of(published);
        match self.connection.stamp(&self.collection)? {
            Some(stamp) if stamp.holds(&expected) => {}
            Some(stamp) => problems.push(format!(
                "collection {} is stamped {}, the published generation is {}",
                self.collection,
                describe(&stamp),
                describe(&expected)
            )),
            None => problems.push(format!("collection {} is missing", self.collection)),
        }
        let local = crate::index::load_vector_index(&published.dir.join("vectors"))?;
        let records = published.records.all()?;
        let mut seen = 0usize;
        let top = records
            .last()
            .map_or(0, |(id, _)| *id as usize + 1)
            .max(local.len());
        let mut by_id: HashMap<u32, &str> = HashMap::new();
        for (id, lesion) in &records {
            by_id.insert(*id, lesion.key.as_str());
        }
        let step = 4_096;
        for start in (0..top).step_by(step) {
            let end = (start + step).min(top);
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
                continue;
            };
            for (i, (&lid, key)) in lids.iter().zip(keys).enumerate() {
                seen += 1;
                let id = lid as u32;
                match by_id.get(&id) {
                    None => problems.push(format!(
                        "lesion {id} ({key}) is in Milvus but not a live record"
                    )),
                    Some(expected_key) if *expected_key != key => problems.push(format!(
                        "lesion {id}: Milvus has key {key}, the records {expected_key}"
                    )),
                    Some(_) => {
                        let stored = vectors.get(i * self.dim..(i + 1) * self.dim);
                        let same = (id as usize) < local.len()
                            && stored.is_some_and(|v| {
                                v.iter()
                                    .zip(local.flat.vector(id))
                                    .all(|(a, b)| a.to_bits() == b.to_bits())
                            });
                        if !same {
                            problems.push(format!(
                                "lesion {id}: its vector in Milvus differs from the generation's"
                            ));
                        }
                    }
                }
            }
        }
        if seen != records.len() {
            problems.push(format!(
                "Milvus holds {seen} lesions, the records {} live",
                records.len()
            ));
        }
        Ok(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{CoarseType, Sex, Split};

    #[test]
    fn an_empty_filter_is_an_empty_expression() {
        assert_eq!(expression_of(&Filter::default()), "");
    }

    #[test]
    fn every_field_of_a_filter_becomes_a_term() {
        let filter = Filter {
            types: vec![CoarseType::Lung, CoarseType::SoftTissue],
            sex: Some(Sex::Female),
            age: Range {
                min: Some(40.0),
                max: None,
            },
            long_mm: Range {
                min: None,
                max: Some(0.3),
            },
            split: Some(Split::Test),
            exclude_patients: vec![7, 3, 7],
            ..Filter::default()
        };
        assert_eq!(
            expression_of(&filter),
            "coarse_type in [\"lung\", \"soft_tissue\"] and sex == \"female\" and age >= 0 \
             and age >= 40.0 and long_mm <= 0.30000001192092896 and split == \"test\" \
             and patient not in [3, 7]"
        );
    }

    #[test]
    fn bounds_are_the_exact_value_of_the_f32() {
        for value in [0.1f32, 0.3, 1e-7, 123.456, -2.5] {
            let text = exact_decimal(value);
            assert_eq!(text.parse::<f64>().unwrap(), value as f64, "{text}");
        }
        assert_eq!(exact_decimal(f32::INFINITY), "1e300");
    }

    #[test]
    fn collection_names_carry_generation_digest_and_index() {
        let settings = MilvusSettings::default();
        let stamp = Stamp {
            archive: "0123".into(),
            generation: 12,
            live: 3,
            records_sha256: "abcdef0123456789".into(),
            vectors_sha256: String::new(),
            model: "m".into(),
            weights_sha256: String::new(),
            dim: 4,
            index: "FLAT".into(),
            text: String::new(),
        };
        let name = settings.collection_of(&stamp);
        assert_eq!(name, "lesion_search_gen_000012_abcdef012345_flat");
        assert_eq!(settings.generation_of(&name), Some(12));
        assert_eq!(settings.generation_of("lesion_searchx_gen_000012"), None);
        assert!(stamp.holds(&Stamp {
            index: "HNSW".into(),
            ..stamp.clone()
        }));
    }

    #[test]
    fn bm25_from_2_5_on_and_query_words_stay_words() {
        assert!(has_bm25("v2.5.1") && has_bm25("2.6.0") && has_bm25("v3.0.0-beta"));
        assert!(!has_bm25("v2.3.5-lite") && !has_bm25("") && !has_bm25("v2.4.9"));
        assert_eq!(
            match_words("mass') or lid > 0 -- (left"),
            "mass or lid 0 left"
        );
        assert_eq!(truncated("aé".into(), 2), "a");
    }

    #[test]
    fn settings_refuse_names_milvus_refuses() {
        for bad in ["", "1abc", "a-b", "a b"] {
            let settings = MilvusSettings {
                collection: bad.into(),
                ..MilvusSettings::default()
            };
            assert!(settings.check().is_err(), "{bad}");
        }
        let settings = MilvusSettings {
            url: "127.0.0.1:19530".into(),
            ..MilvusSettings::default()
        };
        assert!(settings
            .check()
            .unwrap_err()
            .to_string()
            .contains("milvus-url"));
    }
}
