//! Vector search: an exact flat index and an HNSW graph over the same dense lesion ids, and
//! the planner that picks between them from the filter's cardinality.
//!
//! hnsw_rs is named only in `hnsw/hnsw_rs.rs`.

mod flat;
mod hnsw;
mod idset;
mod quantized;
mod simd;
mod store;
mod vecs;

pub use flat::{FlatIndex, Scored, TopK};
pub use hnsw::{Connectivity, Graph, GraphBuilder, GraphParams};
pub use idset::IdSet;
pub use simd::dot;
pub use store::{load_vector_index, save_vector_index, vector_index_from_bytes};
pub use vecs::{read_ivecs, read_vectors, write_fvecs, VectorSet};

/// Recall@10 the approximate path is tuned for when its `ef` is chosen.
pub const RECALL_TARGET: f32 = 0.99;

/// Below this many candidate ids an exact scan is cheaper than a graph walk (and exact).
pub const EXACT_SCAN_BELOW: usize = 20_000;

/// A graph walk is planned only for a `k` below this share of its candidates (1 in 100);
/// deeper lists are answered by the exact scan.
const GRAPH_MAX_SHARE: usize = 100;

/// The shallowest `k` that [`VectorIndex::search`] answers by the exact scan for a filter
/// letting `candidates` ids through, whatever the graph: a list at least this deep is a
/// prefix of the exact ranking (score, then id), so pages cut from lists of any such depth
/// agree. The engine's result lists ask for at least this much.
pub fn exact_depth(candidates: usize) -> usize {
    candidates / GRAPH_MAX_SHARE + 1
}

/// The graph is rebuilt once deleted ids, or ids added since the build (scanned exactly),
/// pass this fraction of the index.
pub const REBUILD_FRACTION: f32 = 0.1;

/// `n` unit vectors of `dim` dimensions drawn around `clusters` random centres: the cone
/// shape of CNN features, for tests and benchmarks (the side-by-side in the team's notes, `shared/notes/PERF.md`, used the same).
pub fn clustered_unit_vectors(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::util::Rng::new(seed);
    let centres: Vec<Vec<f32>> = (0..clusters.max(1))
        .map(|_| crate::util::l2_normalised((0..dim).map(|_| rng.normal()).collect()))
        .collect();
    let spread = 0.6 / (dim as f32).sqrt();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = &centres[(rng.next_u64() % centres.len() as u64) as usize];
        let v: Vec<f32> = c.iter().map(|x| x + spread * rng.normal()).collect();
        out.extend(crate::util::l2_normalised(v));
    }
    out
}

/// `n` unit vectors from the family of the shared ANN tool `gen_fvecs.py` (its README
/// describes the recipe): `clusters` anisotropic clusters, each a centre plus a rank-`rank`
/// part and an isotropic part whose spreads vary 5x, cluster sizes Zipf-like (weights
/// 1/i^0.8, shuffled), all inside a cone as CNN features are. Harder for a graph than
/// [`clustered_unit_vectors`]: small clusters far apart need long links to be reached.
/// Our own draw of that recipe, for tests; the bench reads the tool's files themselves.
pub fn anisotropic_unit_vectors(
    n: usize,
    dim: usize,
    clusters: usize,
    rank: usize,
    seed: u64,
) -> Vec<f32> {
    let mut rng = crate::util::Rng::new(seed);
    let clusters = clusters.max(1);
    let scale = 1.0 / (dim as f32).sqrt();
    let cone = crate::util::l2_normalised((0..dim).map(|_| rng.normal()).collect());
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| {
            crate::util::l2_normalised(
                cone.iter()
                    .map(|g| 0.6 * g + scale * rng.normal())
                    .collect(),
            )
        })
        .collect();
    let spread: Vec<f32> = (0..clusters)
        .map(|_| rng.range(0.3f32.ln(), 1.5f32.ln()).exp())
        .collect();
    let low_share: Vec<f32> = (0..clusters).map(|_| rng.range(0.5, 0.9)).collect();
    let bases: Vec<Vec<f32>> = (0..clusters * rank)
        .map(|_| (0..dim).map(|_| scale * rng.normal()).collect())
        .collect();
    // Zipf-like weights over a shuffled cluster order, as a cumulative table.
    let mut order: Vec<usize> = (0..clusters).collect();
    for i in (1..clusters).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let mut cumulative = vec![0.0f64; clusters];
    let mut total = 0.0;
    for (c, &position) in order.iter().enumerate() {
        total += 1.0 / ((position + 1) as f64).powf(0.8);
        cumulative[c] = total;
    }
    let mut out = Vec::with_capacity(n * dim);
    let rank_scale = 1.0 / (rank.max(1) as f32).sqrt();
    for _ in 0..n {
        let draw = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
        let k = cumulative.partition_point(|&c| c < draw).min(clusters - 1);
        let mut v: Vec<f32> = centres[k].clone();
        let (low, iso) = (low_share[k].sqrt(), (1.0 - low_share[k]).sqrt());
        for r in 0..rank {
            let weight = spread[k] * low * rank_scale * rng.normal();
            for (x, b) in v.iter_mut().zip(&bases[k * rank + r]) {
                *x += weight * b;
            }
        }
        for x in v.iter_mut() {
            *x += spread[k] * iso * scale * rng.normal();
        }
        out.extend(crate::util::l2_normalised(v));
    }
    out
}

/// How a query was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Plan {
    Exact,
    Graph { ef: usize },
}

/// What calibration made of a graph build.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum GraphOutcome {
    /// Calibration reached [`RECALL_TARGET`] with the parameters asked for (or no graph).
    #[default]
    Met,
    /// It did not; the graph was rebuilt with these larger parameters, which did.
    Enlarged { m: usize, ef_construction: usize },
    /// Even the enlarged graph fell short: every query is answered by the exact scan, and
    /// the graph is kept only to be measured.
    Exact { recall_at_10: f32 },
}

/// The flat index, the graph over it, the tombstones, and the calibrated `ef`.
#[derive(Debug, Clone, Default)]
pub struct VectorIndex {
    flat: FlatIndex,
    graph: Option<Graph>,
    /// Deleted ids, hidden from every result until the next rebuild.
    tombstones: IdSet,
    /// Smallest `ef` that met [`RECALL_TARGET`] on a sample of the index's own vectors.
    ef: usize,
    /// Fraction of sampled vectors that find themselves first through the graph.
    self_recall: f32,
    /// Whether the graph met its recall target, was enlarged to, or gave way to exact scans.
    outcome: GraphOutcome,
    /// What built the graph (meaningless without one).
    builder: GraphBuilder,
}

/// The `ef`s calibration tries, smallest first.
const EF_LADDER: [usize; 19] = [
    16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 448, 512, 640, 768, 1024, 1536, 2048,
];

/// What a graph build measured.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Calibration {
    pub ef: usize,
    pub recall_at_10: f32,
    pub self_recall: f32,
}

impl VectorIndex {
    pub fn exact(flat: FlatIndex) -> Self {
        let n = flat.len();
        VectorIndex {
            flat,
            graph: None,
            tombstones: IdSet::new(n),
            ef: 0,
            self_recall: 1.0,
            outcome: GraphOutcome::Met,
            builder: GraphBuilder::default(),
        }
    }

    /// Builds the graph, then measures self-recall and picks `ef` on a sample; a graph that
    /// cannot reach [`RECALL_TARGET`] is never served quietly (see [`GraphOutcome`]).
    pub fn with_graph(flat: FlatIndex, params: GraphParams) -> (Self, Calibration) {
        let n = flat.len();
        let mut index = VectorIndex {
            flat,
            graph: None,
            tombstones: IdSet::new(n),
            ef: 64,
            self_recall: 1.0,
            outcome: GraphOutcome::Met,
            builder: params.builder,
        };
        let calibration = index.rebuild(params);
        (index, calibration)
    }

    /// The larger parameters a graph that fell short of its target is rebuilt with.
    pub fn enlarged(params: GraphParams) -> GraphParams {
        GraphParams {
            m: (params.m * 3 / 2).clamp(params.m, 64),
            ef_construction: params.ef_construction * 2,
            ..params
        }
    }

    pub fn len(&self) -> usize {
        self.flat.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flat.is_empty()
    }

    pub fn live(&self) -> usize {
        self.len() - self.tombstones.len()
    }

    /// Width of every vector.
    pub fn dim(&self) -> usize {
        self.flat.dim()
    }

    /// The vector stored under `id` (deleted ids keep theirs).
    pub fn vector(&self, id: u32) -> &[f32] {
        self.flat.vector(id)
    }

    /// The exact index over every stored vector, deleted ones included: the oracle the
    /// approximate path is measured against.
    pub fn flat(&self) -> &FlatIndex {
        &self.flat
    }

    /// Whether `id` was deleted (it stays hidden from every result).
    pub fn is_deleted(&self, id: u32) -> bool {
        self.tombstones.contains(id)
    }

    /// How many ids were deleted.
    pub fn deleted(&self) -> usize {
        self.tombstones.len()
    }

    /// The deleted ids, as a set to hide from a search.
    pub fn deleted_ids(&self) -> &IdSet {
        &self.tombstones
    }

    /// Ids not deleted, in order.
    pub fn live_ids(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len() as u32).filter(|&id| !self.tombstones.contains(id))
    }

    /// The graph, when one was built.
    pub fn graph(&self) -> Option<&Graph> {
        self.graph.as_ref()
    }

    /// Layer 0's reachability, when there is a graph.
    pub fn connectivity(&self) -> Option<Connectivity> {
        self.graph.as_ref().map(Graph::connectivity)
    }

    /// The `ef` calibration chose for [`RECALL_TARGET`] (0 without a graph).
    pub fn ef(&self) -> usize {
        self.ef
    }

    /// Fraction of sampled vectors that found themselves first through the graph.
    pub fn self_recall(&self) -> f32 {
        self.self_recall
    }

    /// Whether the graph met its recall target, was enlarged to, or gave way to exact scans.
    pub fn outcome(&self) -> GraphOutcome {
        self.outcome
    }

    /// What built the graph, when there is one.
    pub fn graph_builder(&self) -> Option<GraphBuilder> {
        self.graph.is_some().then_some(self.builder)
    }

    /// Ids added after the graph was built; searched exactly beside the graph walk.
    fn unindexed(&self) -> std::ops::Range<u32> {
        let covered = self.graph.as_ref().map_or(0, Graph::covers);
        covered as u32..self.len() as u32
    }

    /// Appends vectors (row-major, `dim` each) and returns their ids. They are searched
    /// exactly until the graph is rebuilt.
    pub fn append(&mut self, vectors: &[f32]) -> std::ops::Range<u32> {
        let first = self.len() as u32;
        for v in vectors.chunks_exact(self.flat.dim()) {
            self.flat.push(v);
        }
        first..self.len() as u32
    }

    /// Hides `id` from every search from now on.
    pub fn delete(&mut self, id: u32) {
        self.tombstones.insert(id);
    }

    /// Whether the graph should be rebuilt: too many deleted or unindexed ids, or a
    /// collection grown past the size where an exact scan is enough (`params.exact_below`).
    pub fn needs_rebuild(&self, params: GraphParams) -> bool {
        let n = self.len().max(1) as f32;
        match &self.graph {
            Some(_) => {
                self.tombstones.len() as f32 / n > REBUILD_FRACTION
                    || self.unindexed().len() as f32 / n > REBUILD_FRACTION
            }
            None => self.live() >= params.exact_below,
        }
    }

    /// Rebuilds the graph over the live ids and recalibrates; deleted ids stay hidden (ids
    /// are stable, so the tombstones remain), but no walk passes through them any more.
    pub fn rebuild(&mut self, params: GraphParams) -> Calibration {
        self.builder = params.builder;
        self.graph = Some(Graph::build_over(
            &self.flat,
            Some(&self.tombstones),
            params,
        ));
        let first = self.calibrate(RECALL_TARGET);
        if first.recall_at_10 >= RECALL_TARGET {
            self.outcome = GraphOutcome::Met;
            return first;
        }
        let larger = Self::enlarged(params);
        self.graph = Some(Graph::build_over(
            &self.flat,
            Some(&self.tombstones),
            larger,
        ));
        let second = self.calibrate(RECALL_TARGET);
        self.outcome = if second.recall_at_10 >= RECALL_TARGET {
            GraphOutcome::Enlarged {
                m: larger.m,
                ef_construction: larger.ef_construction,
            }
        } else {
            GraphOutcome::Exact {
                recall_at_10: second.recall_at_10,
            }
        };
        second
    }

    /// Chooses `ef` as the smallest of a ladder whose recall@10 against the exact scan reaches
    /// `target` on up to 300 queries made by perturbing the index's own vectors (new points
    /// from the same distribution), and measures self-recall: how many stored vectors find
    /// themselves first through the graph.
    pub fn calibrate(&mut self, target: f32) -> Calibration {
        let Some(graph) = &self.graph else {
            return Calibration {
                ef: 0,
                recall_at_10: 1.0,
                self_recall: 1.0,
            };
        };
        let sample = self.calibration_sample(graph);
        let queries = self.perturbed(&sample);
        let truth: Vec<Vec<u32>> = queries
            .iter()
            .map(|q| {
                self.flat
                    .search(q, 10, None, Some(&self.tombstones))
                    .into_iter()
                    .map(|s| s.id)
                    .collect()
            })
            .collect();
        let self_found = sample
            .iter()
            .filter(|&&q| {
                graph
                    .search(&self.flat, self.flat.vector(q), 1, 64, None, None)
                    .first()
                    .map(|s| s.id)
                    == Some(q)
            })
            .count();
        let self_recall = self_found as f32 / sample.len().max(1) as f32;
        let mut chosen = Calibration {
            ef: 2048,
            recall_at_10: 0.0,
            self_recall,
        };
        for ef in EF_LADDER {
            chosen = Calibration {
                ef,
                recall_at_10: self.recall_at(graph, &queries, &truth, ef),
                self_recall,
            };
            if chosen.recall_at_10 >= target {
                break;
            }
        }
        self.self_recall = self_recall;
        self.ef = chosen.ef;
        chosen
    }

    /// Up to 300 live ids the graph covers, spread over them by a fixed stride.
    fn calibration_sample(&self, graph: &Graph) -> Vec<u32> {
        let live: Vec<u32> = (0..graph.covers() as u32)
            .filter(|&id| !self.tombstones.contains(id))
            .collect();
        let n = live.len();
        (0..300.min(n))
            .map(|i| live[(i as u64 * 2_654_435_761 % n as u64) as usize])
            .collect()
    }

    /// The vectors of `ids`, each moved by noise of the data's own spread and renormalised.
    fn perturbed(&self, ids: &[u32]) -> Vec<Vec<f32>> {
        let mut rng = crate::util::Rng::new(0xCA11B);
        let spread = 0.6 / (self.flat.dim() as f32).sqrt();
        ids.iter()
            .map(|&q| {
                crate::util::l2_normalised(
                    self.flat
                        .vector(q)
                        .iter()
                        .map(|x| x + spread * rng.normal())
                        .collect(),
                )
            })
            .collect()
    }

    /// Recall@10 of the graph at `ef` against the exact top 10 of each query.
    fn recall_at(&self, graph: &Graph, queries: &[Vec<f32>], truth: &[Vec<u32>], ef: usize) -> f32 {
        let mut hit = 0usize;
        let mut total = 0usize;
        for (q, truth) in queries.iter().zip(truth) {
            let found = graph.search(&self.flat, q, 10, ef, None, Some(&self.tombstones));
            hit += truth
                .iter()
                .filter(|t| found.iter().any(|f| f.id == **t))
                .count();
            total += truth.len();
        }
        hit as f32 / total.max(1) as f32
    }

    /// The plan for a query whose filter lets `candidates` ids through.
    pub fn plan(&self, k: usize, candidates: usize) -> Plan {
        if matches!(self.outcome, GraphOutcome::Exact { .. }) {
            return Plan::Exact;
        }
        match &self.graph {
            Some(_) if candidates >= EXACT_SCAN_BELOW && k < exact_depth(candidates) => {
                // Over-fetch in proportion to what the filter removes.
                let selectivity = candidates as f32 / self.len().max(1) as f32;
                let ef = ((self.ef.max(k) as f32) / selectivity.max(0.01)).ceil() as usize;
                Plan::Graph { ef: ef.min(4096) }
            }
            _ => Plan::Exact,
        }
    }

    /// Top `k` among `allowed` (everything when `None`), deleted ids excluded; the results
    /// always satisfy the filter.
    pub fn search(&self, query: &[f32], k: usize, allowed: Option<&IdSet>) -> (Vec<Scored>, Plan) {
        let candidates = allowed.map_or(self.live(), IdSet::len);
        self.search_with(query, k, allowed, self.plan(k, candidates))
    }

    /// [`VectorIndex::search`] under a given plan (benchmarks and tests force one).
    pub fn search_with(
        &self,
        query: &[f32],
        k: usize,
        allowed: Option<&IdSet>,
        plan: Plan,
    ) -> (Vec<Scored>, Plan) {
        let candidates = allowed.map_or(self.live(), IdSet::len);
        let hits = match (plan, &self.graph) {
            (Plan::Graph { ef }, Some(graph)) => {
                let mut hits =
                    graph.search(&self.flat, query, k, ef, allowed, Some(&self.tombstones));
                let tail = self.unindexed();
                if !tail.is_empty() {
                    let mut top = TopK::new(k);
                    for hit in &hits {
                        top.push(hit.id, hit.score);
                    }
                    for id in tail {
                        if allowed.is_none_or(|a| a.contains(id)) && !self.tombstones.contains(id) {
                            top.push(id, self.flat.score(query, id));
                        }
                    }
                    hits = top.into_sorted();
                }
                if hits.len() < k.min(candidates) {
                    // The walk found too few allowed ids: answer exactly rather than short.
                    return (
                        self.flat.search(query, k, allowed, Some(&self.tombstones)),
                        Plan::Exact,
                    );
                }
                hits
            }
            _ => self.flat.search(query, k, allowed, Some(&self.tombstones)),
        };
        (hits, plan)
    }
}
