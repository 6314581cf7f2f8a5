//! The approximate index: an HNSW graph, built by our insertion routine (`insert.rs`) or by
//! hnsw_rs (the reference), searched by our own routine.
//!
//! Either builder's neighbour lists are copied into flat arrays. hnsw_rs's own search costs
//! about 1 us per distance step against 0.3 us for hnswlib (a hash-map visited set,
//! allocations per candidate, a lock per neighbour list; PERF.md), so the search here walks
//! the copied arrays with a visited bitset, scoring 8-bit codes of the vectors (a quarter
//! of the memory traffic, loads prefetched a whole neighbour list at a time), and re-ranks
//! the best candidates with the exact float vectors, so every score returned is exact.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

use anndists::dist::Distance;
use hnsw_rs::prelude::Hnsw;

use super::flat::{FlatIndex, Scored, TopK};
use super::idset::IdSet;
use super::insert::insert_all;
use super::quantized::{Codes, PreparedQuery};

/// Inner-product distance `1 - a·b` for unit vectors, clamped at 0, with our SIMD dot.
///
/// anndists' `DistDot` asserts `1 - a·b >= 0` and panics when two unit vectors are equal up
/// to rounding (a·b = 1.0000001): real embeddings of a lesion and its follow-up do that, so
/// a 32k-lesion build crashed. Clamping is exact for unit vectors and also 1.4x faster than
/// its scalar loop (PERF.md).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UnitDot;

impl Distance<f32> for UnitDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - super::simd::dot(a, b)).max(0.0)
    }
}

/// Which routine inserts the vectors into the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphBuilder {
    /// Our parallel insertion (`insert.rs`): as hnswlib builds, with our SIMD scoring.
    #[default]
    Native,
    /// hnsw_rs's parallel insertion followed by two passes of layer-0 refinement: the
    /// reference the native graph is tested against, and a fallback.
    HnswRs,
}

/// Build parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphParams {
    /// Neighbours per node on upper layers (twice that on layer 0).
    pub m: usize,
    pub ef_construction: usize,
    pub builder: GraphBuilder,
}

impl Default for GraphParams {
    fn default() -> Self {
        GraphParams {
            m: 24,
            ef_construction: 200,
            builder: GraphBuilder::Native,
        }
    }
}

/// Neighbour lists of one layer in one array.
#[derive(Debug, Clone, Default)]
struct Layer {
    /// `offsets[id]..offsets[id + 1]` indexes `neighbours`; ids absent from the layer have an
    /// empty range.
    offsets: Vec<u32>,
    neighbours: Vec<u32>,
}

impl Layer {
    #[inline]
    fn of(&self, id: u32) -> &[u32] {
        let i = id as usize;
        if i + 1 >= self.offsets.len() {
            return &[];
        }
        &self.neighbours[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    fn from_lists(lists: &[Vec<u32>]) -> Self {
        let mut offsets = Vec::with_capacity(lists.len() + 1);
        let mut neighbours = Vec::with_capacity(lists.iter().map(Vec::len).sum());
        offsets.push(0);
        for list in lists {
            neighbours.extend_from_slice(list);
            offsets.push(neighbours.len() as u32);
        }
        Layer {
            offsets,
            neighbours,
        }
    }
}

/// Layer 0 with a fixed stride per node (count, then neighbours), so that expanding a node
/// is one contiguous read that can be prefetched before it is needed.
#[derive(Debug, Clone, Default)]
struct BaseLayer {
    stride: usize,
    slots: Vec<u32>,
}

impl BaseLayer {
    fn from_layer(layer: &Layer) -> Self {
        let nodes = layer.offsets.len().saturating_sub(1);
        let degree = (0..nodes as u32)
            .map(|id| layer.of(id).len())
            .max()
            .unwrap_or(0);
        let stride = degree + 1;
        let mut slots = vec![0u32; nodes * stride];
        for id in 0..nodes {
            let list = layer.of(id as u32);
            slots[id * stride] = list.len() as u32;
            slots[id * stride + 1..id * stride + 1 + list.len()].copy_from_slice(list);
        }
        BaseLayer { stride, slots }
    }

    fn nodes(&self) -> usize {
        self.slots.len().checked_div(self.stride).unwrap_or(0)
    }

    #[inline]
    fn of(&self, id: u32) -> &[u32] {
        let start = id as usize * self.stride;
        let count = self.slots[start] as usize;
        &self.slots[start + 1..start + 1 + count]
    }

    #[inline]
    fn prefetch(&self, id: u32) {
        let start = id as usize * self.stride;
        if let Some(slots) = self.slots.get(start..start + self.stride) {
            super::simd::prefetch(slots);
        }
    }

    fn to_layer(&self) -> Layer {
        let lists: Vec<Vec<u32>> = (0..self.nodes() as u32)
            .map(|id| self.of(id).to_vec())
            .collect();
        Layer::from_lists(&lists)
    }
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

/// A candidate ordered by score (best first in a max-heap).
#[derive(Clone, Copy, PartialEq)]
pub(crate) struct Best(pub f32, pub u32);

impl Eq for Best {}

impl Ord for Best {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

impl PartialOrd for Best {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The walk's `ef` best candidates and which of them are left to expand; the walk stops
/// when none of the `ef` best is (HNSW's stopping rule).
///
/// Up to [`SORTED_FRONTIER_UP_TO`] candidates they are one array kept sorted, each marked
/// once expanded: an insertion is a binary search and a short move, where HNSW's two heaps
/// cost a quarter of the query time on small indexes (perf, 2,700 x 128). Past that the
/// moves grow with `ef` (filtered walks run at `ef` in the thousands), and the heaps win.
enum Frontier {
    Sorted {
        capacity: usize,
        /// (score, id, expanded), best first; ties keep the earlier arrival first.
        entries: Vec<(f32, u32, bool)>,
        /// No entry before this index is unexpanded.
        cursor: usize,
    },
    Heaps {
        capacity: usize,
        /// Left to expand, best on top.
        candidates: BinaryHeap<Best>,
        /// The best seen, worst on top.
        kept: BinaryHeap<std::cmp::Reverse<Best>>,
    },
}

/// Largest `ef` the walk keeps in a sorted array.
const SORTED_FRONTIER_UP_TO: usize = 384;

impl Frontier {
    /// A frontier of `capacity` entries, in `storage` when they are kept sorted.
    fn new(capacity: usize, mut storage: Vec<(f32, u32, bool)>) -> Self {
        let capacity = capacity.max(1);
        if capacity <= SORTED_FRONTIER_UP_TO {
            storage.clear();
            storage.reserve(capacity + 1);
            Frontier::Sorted {
                capacity,
                entries: storage,
                cursor: 0,
            }
        } else {
            Frontier::Heaps {
                capacity,
                candidates: BinaryHeap::with_capacity(2 * capacity),
                kept: BinaryHeap::with_capacity(capacity + 1),
            }
        }
    }

    /// Keeps `id` if it is among the best `capacity` seen.
    #[inline]
    fn offer(&mut self, score: f32, id: u32) {
        match self {
            Frontier::Sorted {
                capacity,
                entries,
                cursor,
            } => {
                if entries.len() == *capacity && entries.last().is_some_and(|w| score <= w.0) {
                    return;
                }
                // Shifted by hand from the end: most newcomers land near it, and a memmove
                // call per insertion cost more than the moves themselves at small `ef`.
                let mut at = entries.len();
                entries.push((score, id, false));
                while at > 0 && entries[at - 1].0 < score {
                    entries[at] = entries[at - 1];
                    at -= 1;
                }
                entries[at] = (score, id, false);
                entries.truncate(*capacity);
                *cursor = (*cursor).min(at);
            }
            Frontier::Heaps {
                capacity,
                candidates,
                kept,
            } => {
                let worst = kept.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0);
                if kept.len() < *capacity || score > worst {
                    candidates.push(Best(score, id));
                    kept.push(std::cmp::Reverse(Best(score, id)));
                    if kept.len() > *capacity {
                        kept.pop();
                    }
                }
            }
        }
    }

    /// The best candidate left to expand, now counted as expanded; `None` ends the walk.
    #[inline]
    fn next_unexpanded(&mut self) -> Option<u32> {
        match self {
            Frontier::Sorted {
                entries, cursor, ..
            } => {
                while let Some(entry) = entries.get_mut(*cursor) {
                    if !entry.2 {
                        entry.2 = true;
                        return Some(entry.1);
                    }
                    *cursor += 1;
                }
                None
            }
            Frontier::Heaps {
                capacity,
                candidates,
                kept,
            } => {
                let Best(score, id) = candidates.pop()?;
                let worst = kept.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0);
                (kept.len() < *capacity || score >= worst).then_some(id)
            }
        }
    }

    /// Ids of the best `n` kept, best first.
    fn best(&mut self, n: usize) -> Vec<u32> {
        match self {
            Frontier::Sorted { entries, .. } => entries.iter().take(n).map(|e| e.1).collect(),
            Frontier::Heaps { kept, .. } => std::mem::take(kept)
                .into_sorted_vec()
                .into_iter()
                .take(n)
                .map(|r| r.0 .1)
                .collect(),
        }
    }

    /// The storage to reuse for the next frontier.
    fn into_storage(self) -> Vec<(f32, u32, bool)> {
        match self {
            Frontier::Sorted { entries, .. } => entries,
            Frontier::Heaps { .. } => Vec::new(),
        }
    }

    /// The candidate [`Frontier::next_unexpanded`] would give, unless better ones arrive.
    fn peek_unexpanded(&self) -> Option<u32> {
        match self {
            Frontier::Sorted {
                entries, cursor, ..
            } => entries[(*cursor).min(entries.len())..]
                .iter()
                .find(|e| !e.2)
                .map(|e| e.1),
            Frontier::Heaps { candidates, .. } => candidates.peek().map(|b| b.1),
        }
    }
}

/// What one walk needs besides the graph, kept per thread between queries (allocating it
/// per query cost a few percent on small indexes).
#[derive(Default)]
struct Scratch {
    /// Visited ids, one bit each: at a million ids it is 125 kB and stays in the L2 cache,
    /// where stamps of 4 bytes would miss on almost every test; clearing it costs ~2 us.
    visited: Vec<u64>,
    /// The sorted frontier's storage.
    frontier: Vec<(f32, u32, bool)>,
    /// Neighbours seen for the first time at the current step.
    fresh: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            visited: Vec::new(),
            frontier: Vec::new(),
            fresh: Vec::new(),
        })
    };
}

/// Keeps, of `candidates` (id, similarity to the node), up to `degree` neighbours by the
/// HNSW heuristic: a candidate closer to an already kept neighbour than to the node adds no
/// new direction and is pruned. Pruned candidates fill at most `fill` more slots: the rest
/// stay free for links back from other nodes, which is what keeps clusters joined (hnswlib
/// keeps none of the pruned ones).
pub(crate) fn select_neighbours(
    flat: &FlatIndex,
    mut candidates: Vec<(u32, f32)>,
    degree: usize,
    fill: usize,
) -> Vec<u32> {
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    candidates.dedup_by_key(|c| c.0);
    let mut kept: Vec<u32> = Vec::with_capacity(degree);
    let mut pruned = Vec::new();
    for &(id, similarity) in &candidates {
        if kept.len() == degree {
            break;
        }
        let diverse = kept
            .iter()
            .all(|&k| super::simd::dot(flat.vector(id), flat.vector(k)) < similarity);
        if diverse {
            kept.push(id);
        } else {
            pruned.push(id);
        }
    }
    let room = degree.min(kept.len() + fill);
    for id in pruned {
        if kept.len() >= room {
            break;
        }
        kept.push(id);
    }
    kept
}

/// True when `id` was not visited yet; marks it.
#[inline]
pub(crate) fn first_visit(visited: &mut [u64], id: u32) -> bool {
    let word = &mut visited[id as usize >> 6];
    let bit = 1u64 << (id & 63);
    let fresh = *word & bit == 0;
    *word |= bit;
    fresh
}

/// What one search asks of the graph (see [`Graph::search`]).
#[derive(Clone, Copy)]
struct Walk<'a> {
    flat: &'a FlatIndex,
    query: &'a [f32],
    k: usize,
    ef: usize,
    allowed: Option<&'a IdSet>,
    /// `None` when nothing is hidden, so that an unfiltered walk is recognised.
    hidden: Option<&'a IdSet>,
}

/// Width of the search on the layers above 0.
const UPPER_BEAM: usize = 4;

/// How many of the best candidates by code are re-ranked with exact scores for a top `k`:
/// enough that codes' rounding cannot push a true top-k hit out of the pool.
fn rerank_pool(k: usize) -> usize {
    (8 * k).max(64)
}

/// Passes of layer-0 refinement after the hnsw_rs build.
const REFINE_PASSES: usize = 2;

/// Pruned candidates a refined list may keep beyond the heuristic's choice.
const REFINE_FILL: usize = 4;

/// Links a node may take beyond its degree when an island is joined to the graph.
const REPAIR_SLACK: usize = 4;

/// One pass of neighbourhood refinement over layer 0 after the hnsw_rs build, which under
/// parallel insertion leaves some points poorly linked (self-recall 0.84 at 1M vectors).
/// Each node re-chooses its neighbours by the HNSW heuristic among its current ones, the
/// nodes that point to it, and the nearest of its neighbours' neighbours. Its current and
/// incoming links always compete: they hold the long links between clusters, which a
/// nearest-only shortlist would drop (that left whole clusters unreachable). Then every
/// kept link is made mutual where the other end has room.
fn refine_base_layer(
    flat: &FlatIndex,
    codes: &Codes,
    lists: &mut [Vec<u32>],
    ids: &[u32],
    degree: usize,
) {
    use rayon::prelude::*;
    let mut reverse: Vec<Vec<u32>> = vec![Vec::new(); lists.len()];
    for &u in ids {
        for &v in &lists[u as usize] {
            reverse[v as usize].push(u);
        }
    }
    let current: &[Vec<u32>] = lists;
    let refined: Vec<(u32, Vec<u32>)> = ids
        .par_iter()
        .map(|&u| {
            let own = &current[u as usize];
            let query = flat.vector(u);
            let mut linked: Vec<u32> = own.clone();
            linked.extend_from_slice(&reverse[u as usize]);
            linked.sort_unstable();
            linked.dedup();
            linked.retain(|&c| c != u);
            let mut two_hop: Vec<u32> = own
                .iter()
                .flat_map(|&v| current[v as usize].iter().copied())
                .filter(|&c| c != u && linked.binary_search(&c).is_err())
                .collect();
            two_hop.sort_unstable();
            two_hop.dedup();
            // Up to a thousand two-hop candidates: rank them by code, then give the pruning
            // rule exact scores for the best few (its cost grows with candidates x kept).
            let prepared = codes.prepare(query);
            let mut ranked: Vec<(u32, i32)> = two_hop
                .into_iter()
                .map(|c| (c, codes.score(&prepared, c)))
                .collect();
            let shortlist = (2 * degree).min(ranked.len());
            if shortlist > 0 && shortlist < ranked.len() {
                ranked.select_nth_unstable_by(shortlist - 1, |a, b| b.1.cmp(&a.1));
                ranked.truncate(shortlist);
            }
            let scored = linked
                .into_iter()
                .chain(ranked.into_iter().map(|(c, _)| c))
                .map(|c| (c, flat.score(query, c)))
                .collect();
            (u, select_neighbours(flat, scored, degree, REFINE_FILL))
        })
        .collect();
    for (u, list) in refined {
        lists[u as usize] = list;
    }
    for &u in ids {
        for i in 0..lists[u as usize].len() {
            let v = lists[u as usize][i] as usize;
            if lists[v].len() < degree && !lists[v].contains(&u) {
                lists[v].push(u);
            }
        }
    }
}

/// Nodes of `ids` a walk from `entry` along `lists` reaches.
fn reached_from(entry: u32, lists: &[Vec<u32>], capacity: usize) -> IdSet {
    let mut seen = IdSet::new(capacity);
    seen.insert(entry);
    let mut stack = vec![entry];
    while let Some(id) = stack.pop() {
        for &nb in &lists[id as usize] {
            if !seen.contains(nb) {
                seen.insert(nb);
                stack.push(nb);
            }
        }
    }
    seen
}

/// Joins every node a walk from the entry point cannot reach: each gets a link from its
/// nearest reached node (found by searching the graph restricted to reached nodes), and
/// links to it. Repeats until the walk reaches every node, so no `ef` is ever short of a
/// node because of the graph's shape. Returns how many nodes were joined.
fn join_islands(graph: &mut Graph, flat: &FlatIndex, ids: &[u32], degree: usize) -> usize {
    let capacity = graph.base.nodes();
    let mut joined = 0;
    loop {
        let lists: Vec<Vec<u32>> = (0..capacity as u32)
            .map(|id| graph.base.of(id).to_vec())
            .collect();
        let reached = reached_from(graph.entry, &lists, capacity);
        let stranded: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| !reached.contains(id))
            .collect();
        if stranded.is_empty() {
            return joined;
        }
        let mut lists = lists;
        for &u in &stranded {
            let near = graph.search(flat, flat.vector(u), 8, 64, Some(&reached), None);
            let host = near
                .iter()
                .map(|s| s.id)
                .find(|&h| lists[h as usize].len() < degree + REPAIR_SLACK)
                .unwrap_or(graph.entry);
            if !lists[host as usize].contains(&u) {
                lists[host as usize].push(u);
            }
            if lists[u as usize].len() < degree + REPAIR_SLACK && !lists[u as usize].contains(&host)
            {
                lists[u as usize].push(host);
            }
            joined += 1;
        }
        graph.base = BaseLayer::from_layer(&Layer::from_lists(&lists));
    }
}

/// How well layer 0 is connected: every node a walk from the entry point can reach is
/// findable at some `ef`; one it cannot reach is an island no `ef` finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Connectivity {
    /// Nodes in the graph (ids left out of a rebuild are not).
    pub nodes: usize,
    /// Of them, reachable from the entry point along layer-0 links.
    pub reachable: usize,
    /// Of them, nodes no other node links to.
    pub without_in_links: usize,
}

impl Connectivity {
    pub fn reachable_fraction(&self) -> f64 {
        if self.nodes == 0 {
            1.0
        } else {
            self.reachable as f64 / self.nodes as f64
        }
    }
}

/// hnsw_rs's graph over `ids`, refined on layer 0: entry point and lists per layer and id.
fn hnsw_rs_layers(
    flat: &FlatIndex,
    codes: &Codes,
    ids: &[u32],
    params: GraphParams,
) -> (u32, Vec<Vec<Vec<u32>>>) {
    let n = flat.len();
    let max_layer = 16.min(((ids.len() as f32).ln().ceil() as usize).max(1));
    let hnsw: Hnsw<f32, UnitDot> = Hnsw::new(
        params.m,
        ids.len(),
        max_layer,
        params.ef_construction,
        UnitDot,
    );
    let data: Vec<(&[f32], usize)> = ids
        .iter()
        .map(|&id| (flat.vector(id), id as usize))
        .collect();
    hnsw.parallel_insert_slice(&data);

    let indexation = hnsw.get_point_indexation();
    let top = indexation.get_max_level_observed() as usize;
    let mut lists: Vec<Vec<Vec<u32>>> = vec![vec![Vec::new(); n]; top + 1];
    let mut entry = 0u32;
    for point in indexation {
        let id = point.get_origin_id() as u32;
        let level = point.get_point_id().0 as usize;
        if level == top {
            entry = id;
        }
        for (layer, neighbours) in point
            .get_neighborhood_id()
            .into_iter()
            .enumerate()
            .take(top + 1)
        {
            lists[layer][id as usize] = neighbours.iter().map(|nb| nb.d_id as u32).collect();
        }
    }
    // Each pass starts from the neighbourhoods the last one improved (as in NN-descent,
    // most of the gain comes in the first iterations).
    for _ in 0..REFINE_PASSES {
        refine_base_layer(flat, codes, &mut lists[0], ids, 2 * params.m);
    }
    (entry, lists)
}

impl Graph {
    /// Nodes this build found unreachable after refining layer 0, and joined to the graph.
    pub fn joined_islands(&self) -> usize {
        self.joined
    }

    /// Measures reachability from the entry point and nodes without in-links on layer 0.
    pub fn connectivity(&self) -> Connectivity {
        let n = self.base.nodes();
        if n == 0 {
            return Connectivity {
                nodes: 0,
                reachable: 0,
                without_in_links: 0,
            };
        }
        let mut in_links = vec![0u32; n];
        let mut member = vec![false; n];
        for id in 0..n as u32 {
            let list = self.base.of(id);
            member[id as usize] |= !list.is_empty();
            for &nb in list {
                if let Some(count) = in_links.get_mut(nb as usize) {
                    *count += 1;
                    member[nb as usize] = true;
                }
            }
        }
        if let Some(m) = member.get_mut(self.entry as usize) {
            *m = true;
        }
        let mut seen = vec![false; n];
        let mut stack = vec![self.entry];
        let mut reachable = 0;
        if let Some(s) = seen.get_mut(self.entry as usize) {
            *s = true;
        }
        while let Some(id) = stack.pop() {
            reachable += 1;
            for &nb in self.base.of(id) {
                if let Some(s) = seen.get_mut(nb as usize) {
                    if !*s {
                        *s = true;
                        stack.push(nb);
                    }
                }
            }
        }
        Connectivity {
            nodes: member.iter().filter(|&&m| m).count(),
            reachable,
            without_in_links: (0..n)
                .filter(|&i| member[i] && in_links[i] == 0 && i != self.entry as usize)
                .count(),
        }
    }

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
        let (entry, lists) = match params.builder {
            GraphBuilder::Native => {
                let inserted = insert_all(flat, &ids, params.m, params.ef_construction);
                (inserted.entry, inserted.layers)
            }
            GraphBuilder::HnswRs => hnsw_rs_layers(flat, &codes, &ids, params),
        };
        let mut layers = lists.iter().map(|l| Layer::from_lists(l));
        let base = layers
            .next()
            .map_or_else(BaseLayer::default, |l| BaseLayer::from_layer(&l));
        let mut graph = Graph {
            entry,
            base,
            upper: layers.collect(),
            codes,
            joined: 0,
        };
        graph.joined = join_islands(&mut graph, flat, &ids, 2 * params.m);
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
    pub(crate) fn from_parts(
        entry: u32,
        layers: Vec<(Vec<u32>, Vec<u32>)>,
        flat: &FlatIndex,
    ) -> Self {
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
        self.base.slots.len() * 4
            + self
                .upper
                .iter()
                .map(|l| (l.offsets.len() + l.neighbours.len()) * 4)
                .sum::<usize>()
            + self.codes.memory_bytes()
    }

    /// The layers above 0, walked with a beam of [`UPPER_BEAM`] instead of one greedy walker
    /// (a query near a cluster boundary then does not descend into the wrong cluster): the
    /// seeds of the layer-0 search. Marks what it scores in `visited`.
    #[inline(always)]
    fn descend(&self, visited: &mut [u64], approx: &impl Fn(u32) -> f32) -> Vec<Best> {
        // The beam, best first, each with whether it was expanded on the current layer.
        let mut beam: Vec<(Best, bool)> = Vec::with_capacity(UPPER_BEAM + 1);
        first_visit(visited, self.entry);
        beam.push((Best(approx(self.entry), self.entry), false));
        for layer in self.upper.iter().rev() {
            for slot in beam.iter_mut() {
                slot.1 = false;
            }
            while let Some(next) = beam.iter().position(|slot| !slot.1) {
                beam[next].1 = true;
                let id = beam[next].0 .1;
                for &nb in layer.of(id) {
                    if !first_visit(visited, nb) {
                        continue;
                    }
                    let candidate = Best(approx(nb), nb);
                    if beam.len() == UPPER_BEAM && candidate < beam[UPPER_BEAM - 1].0 {
                        continue;
                    }
                    let at = beam.partition_point(|slot| slot.0 > candidate);
                    beam.insert(at, (candidate, false));
                    beam.truncate(UPPER_BEAM);
                }
            }
        }
        beam.into_iter().map(|slot| slot.0).collect()
    }

    /// Top `k` by inner product among `allowed` ids (all when `None`), never `hidden` ones,
    /// exploring `ef` candidates on layer 0. Filtered-out nodes are still walked through, so
    /// selective filters need a larger `ef` (the planner decides).
    pub fn search(
        &self,
        flat: &FlatIndex,
        query: &[f32],
        k: usize,
        ef: usize,
        allowed: Option<&IdSet>,
        hidden: Option<&IdSet>,
    ) -> Vec<Scored> {
        if self.is_empty() || k == 0 {
            return Vec::new();
        }
        let walk = Walk {
            flat,
            query,
            k,
            ef,
            allowed,
            hidden: hidden.filter(|h| !h.is_empty()),
        };
        #[cfg(target_arch = "x86_64")]
        if Codes::avx2() {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { self.search_avx2(walk) };
        }
        self.search_with_scorer(walk, |codes, prepared, id| codes.score(prepared, id))
    }

    /// [`Graph::search`] compiled for AVX2, so that the code scores inline into the walk
    /// (a call per score was a tenth of a query's time on small indexes).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn search_avx2(&self, walk: Walk<'_>) -> Vec<Scored> {
        self.search_with_scorer(walk, |codes, prepared, id| {
            // SAFETY: only reached when the CPU has AVX2.
            unsafe { codes.score_avx2(prepared, id) }
        })
    }

    #[inline(always)]
    fn search_with_scorer(
        &self,
        walk: Walk<'_>,
        score: impl Fn(&Codes, &PreparedQuery, u32) -> i32,
    ) -> Vec<Scored> {
        let Walk {
            flat,
            query,
            k,
            ef,
            allowed,
            hidden,
        } = walk;
        let ef = ef.max(k);
        let codes = &self.codes;
        let prepared = codes.prepare(query);
        let approx = |id: u32| score(codes, &prepared, id) as f32;
        let accept = |id: u32| {
            allowed.is_none_or(|a| a.contains(id)) && hidden.is_none_or(|h| !h.contains(id))
        };
        let filtered = allowed.is_some() || hidden.is_some();
        let shortlist_len = rerank_pool(k).min(ef);
        // Accepted ids by approximate score, kept only under a filter: unfiltered, the
        // frontier's own best are the shortlist (a heap push per scored node cost a few
        // percent of a query on small indexes).
        let mut pool = TopK::new(if filtered { shortlist_len } else { 0 });
        // Taken out of the thread-local rather than borrowed in a closure: code inside
        // `LocalKey::with`'s closure is not compiled for AVX2, and the scores would not inline.
        let mut scratch = SCRATCH.with(|cell| cell.take());
        let visited = &mut scratch.visited;
        visited.clear();
        visited.resize(flat.len().div_ceil(64), 0);
        let seeds = self.descend(visited, &approx);
        visited.iter_mut().for_each(|w| *w = 0);
        let base = &self.base;
        let mut frontier = Frontier::new(ef, std::mem::take(&mut scratch.frontier));
        let fresh = &mut scratch.fresh;
        for &Best(score, id) in &seeds {
            first_visit(visited, id);
            frontier.offer(score, id);
            if filtered && accept(id) {
                pool.push(id, score);
            }
        }
        while let Some(id) = frontier.next_unexpanded() {
            // The next node to expand is most likely the next best unexpanded one.
            if let Some(next) = frontier.peek_unexpanded() {
                base.prefetch(next);
            }
            fresh.clear();
            for &nb in base.of(id) {
                if first_visit(visited, nb) {
                    codes.prefetch(nb);
                    fresh.push(nb);
                }
            }
            for &nb in fresh.iter() {
                let s = approx(nb);
                frontier.offer(s, nb);
                if filtered && accept(nb) {
                    pool.push(nb, s);
                }
            }
        }
        let shortlist = if filtered {
            pool.into_sorted().into_iter().map(|c| c.id).collect()
        } else {
            frontier.best(shortlist_len)
        };
        scratch.frontier = frontier.into_storage();
        SCRATCH.with(|cell| *cell.borrow_mut() = scratch);
        let mut results = TopK::new(k);
        for id in shortlist {
            results.push(id, flat.score(query, id));
        }
        results.into_sorted()
    }
}
