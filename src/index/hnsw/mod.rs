//! The approximate index: an HNSW graph, built by our insertion routine (`native.rs`) or by
//! hnsw_rs (`hnsw_rs.rs`, the reference), searched by our own routine (`walk.rs`).
//!
//! Either builder's neighbour lists are copied into flat arrays (`layout.rs`). hnsw_rs's own
//! search costs about 1 us per distance step against 0.3 us for hnswlib (a hash-map visited
//! set, allocations per candidate, a lock per neighbour list; measured in the team's notes beside the repository, `shared/notes/PERF.md`, and quoted in BENCHMARKS.md), so the search here
//! walks the copied arrays with a visited bitset, scoring 8-bit codes of the vectors (a
//! quarter of the memory traffic, loads prefetched a whole neighbour list at a time), and
//! re-ranks the best candidates with the exact float vectors, so every score returned is
//! exact. Both builders choose links with the heuristic of `heuristic.rs`; `repair.rs` joins
//! what a walk from the entry point cannot reach.

mod heuristic;
mod hnsw_rs;
mod layout;
mod native;
mod repair;
mod walk;

use layout::{BaseLayer, Layer};

pub use repair::Connectivity;

use super::flat::FlatIndex;
use super::idset::IdSet;
use super::quantized::Codes;

/// Which routine inserts the vectors into the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum GraphBuilder {
    /// Our parallel insertion (`native.rs`): as hnswlib builds, with our SIMD scoring.
    #[default]
    Native,
    /// hnsw_rs's parallel insertion followed by two passes of layer-0 refinement: the
    /// reference the native graph is tested against, and a choice for an index.
    HnswRs,
}

impl GraphBuilder {
    /// The builder's name as configuration, manifests and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            GraphBuilder::Native => "native",
            GraphBuilder::HnswRs => "hnsw-rs",
        }
    }
}

impl std::str::FromStr for GraphBuilder {
    type Err = crate::error::Error;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "native" => Ok(GraphBuilder::Native),
            "hnsw-rs" => Ok(GraphBuilder::HnswRs),
            other => Err(crate::error::Error::invalid_argument(
                "graph builder",
                format!("{other:?}: expected native or hnsw-rs"),
            )),
        }
    }
}

impl std::fmt::Display for GraphBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Build parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphParams {
    /// Neighbours per node on upper layers (twice that on layer 0).
    pub m: usize,
    pub ef_construction: usize,
    pub builder: GraphBuilder,
    /// Below this many live vectors a write builds no graph: the exact scan is as fast, and
    /// every query below it is planned as one anyway.
    pub exact_below: usize,
}

impl Default for GraphParams {
    fn default() -> Self {
        GraphParams {
            m: 24,
            ef_construction: 200,
            builder: GraphBuilder::Native,
            exact_below: crate::index::EXACT_SCAN_BELOW,
        }
    }
}

/// The graph as a builder leaves it: the entry point and, per layer from 0 up, one
/// neighbour list per id (empty for ids not on that layer).
struct Lists {
    entry: u32,
    layers: Vec<Vec<Vec<u32>>>,
}

/// One layer's offsets and neighbour ids, as stored on disk.
pub(crate) type LayerParts = (Vec<u32>, Vec<u32>);

/// An HNSW graph over the ids of a [`FlatIndex`].
#[derive(Debug, Clone, Default)]
pub struct Graph {
    entry: u32,
    base: BaseLayer,
    /// Layers 1 and up, lowest first.
    upper: Vec<Layer>,
    /// Codes of the covered ids, derived from the flat vectors (not stored).
    codes: Codes,
    /// Nodes the build found unreachable after refinement and joined (0 for a loaded graph).
    joined: usize,
}

impl Graph {
    /// Builds the graph over every vector of `flat` (unit vectors; inner product).
    pub fn build(flat: &FlatIndex, params: GraphParams) -> Graph {
        Graph::build_over(flat, None, params)
    }

    /// Builds the graph over the vectors of `flat` whose ids are not `excluded` (deleted
    /// lesions are left out of a rebuild, so no walk passes through them).
    pub fn build_over(flat: &FlatIndex, excluded: Option<&IdSet>, params: GraphParams) -> Graph {
        let n = flat.len();
        let ids: Vec<u32> = (0..n as u32)
            .filter(|&id| excluded.is_none_or(|x| !x.contains(id)))
            .collect();
        if ids.is_empty() {
            return Graph::default();
        }
        let codes = Codes::encode(flat, n);
        let lists = match params.builder {
            GraphBuilder::Native => {
                native::insert_all(flat, &ids, params.m, params.ef_construction)
            }
            GraphBuilder::HnswRs => hnsw_rs::build(flat, &codes, &ids, params),
        };
        let mut layers = lists.layers.iter().map(|l| Layer::from_lists(l));
        let base = layers
            .next()
            .map_or_else(BaseLayer::default, |l| BaseLayer::from_layer(&l));
        let mut graph = Graph {
            entry: lists.entry,
            base,
            upper: layers.collect(),
            codes,
            joined: 0,
        };
        graph.joined = repair::join_islands(&mut graph, flat, &ids, 2 * params.m);
        graph
    }

    pub fn is_empty(&self) -> bool {
        self.base.nodes() == 0
    }

    /// Ids `0..covers()` were present when the graph was built; later ones are not in it.
    pub fn covers(&self) -> usize {
        self.base.nodes()
    }

    /// Entry point and, per layer from 0 up, offsets and neighbour ids (for persistence).
    pub(crate) fn parts(&self) -> (u32, Vec<LayerParts>) {
        let base = self.base.to_layer();
        (
            self.entry,
            std::iter::once(&base)
                .chain(&self.upper)
                .map(|l| (l.offsets.clone(), l.neighbours.clone()))
                .collect(),
        )
    }

    /// The graph from stored lists over the vectors of `flat` (which may hold more ids
    /// than the graph covers, but never fewer).
    pub(crate) fn from_parts(entry: u32, layers: Vec<LayerParts>, flat: &FlatIndex) -> Self {
        let mut layers = layers.into_iter().map(|(offsets, neighbours)| Layer {
            offsets,
            neighbours,
        });
        let base = layers
            .next()
            .map_or_else(BaseLayer::default, |l| BaseLayer::from_layer(&l));
        let covered = base.nodes().min(flat.len());
        Graph {
            entry,
            base,
            upper: layers.collect(),
            codes: Codes::encode(flat, covered),
            joined: 0,
        }
    }

    /// Bytes held by the neighbour lists and the codes.
    pub fn memory_bytes(&self) -> usize {
        self.base.memory_bytes()
            + self.upper.iter().map(Layer::memory_bytes).sum::<usize>()
            + self.codes.memory_bytes()
    }
}
