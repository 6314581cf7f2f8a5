//! Our HNSW insertion (Malkov and Yashunin 2018: algorithm 1 with the neighbour heuristic of
//! algorithm 4), run on every core with one lock per node, as hnswlib does.
//!
//! hnsw_rs built the graph before; its insertion was 3.6 to 3.9 times slower than hnswlib's
//! on the same 2 threads (c100k: 61.5 s against 17.0 s; BENCHMARKS.md), mostly in its
//! per-candidate allocations, hash-map visited sets and the layer-0 refinement its graphs
//! needed afterwards. This routine scores with our SIMD dot product, marks visits in a
//! per-thread bitset, and copies a neighbour list out of its lock before walking it, so no
//! lock is held while distances are computed except when a full list is pruned.

use std::cell::RefCell;
use std::collections::BinaryHeap;
use std::sync::Mutex;

use super::heuristic::{first_visit, select_neighbours, Best};
use super::Lists;
use crate::index::flat::FlatIndex;
use crate::index::simd::{dot, prefetch};

/// Levels above this are not drawn (2^16 nodes per level step would need 24^16 vectors).
const MAX_LEVEL: usize = 16;

/// Seed of the level draw: the same ids get the same levels in every build.
const LEVEL_SEED: u64 = 0x4C45_5349_4F4E_4857;

/// Everything one insertion reads and writes.
struct Builder<'a> {
    flat: &'a FlatIndex,
    /// Per node, its neighbour list on each of its layers (0 up to its level).
    nodes: Vec<Mutex<Vec<Vec<u32>>>>,
    /// Entry point and the top layer, replaced when a node is drawn above it.
    entry: Mutex<(u32, usize)>,
    /// Links a new node keeps on each layer (the heuristic's choice).
    m: usize,
    ef_construction: usize,
}

thread_local! {
    /// Visited ids of the current insertion's layer search, one bit each.
    static VISITED: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    /// A neighbour list copied out of its node's lock.
    static LIST: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Draws each id's level: floor(-ln(u) / ln(m)), so each layer holds about 1/m of the one
/// below (the paper's normalisation factor mL = 1/ln(m)).
fn draw_levels(ids: &[u32], m: usize) -> Vec<usize> {
    let mut rng = crate::util::Rng::new(LEVEL_SEED);
    let norm = 1.0 / (m.max(2) as f64).ln();
    ids.iter()
        .map(|_| {
            let u = 1.0 - (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            ((-u.ln() * norm).floor() as usize).min(MAX_LEVEL)
        })
        .collect()
}

/// Inserts `ids` of `flat` into a new graph with `m` links per node on the upper layers and
/// `2 m` on layer 0. Lists hold only the heuristic's choice, as hnswlib's do: no refinement
/// follows to need the pruned ones.
pub(super) fn insert_all(flat: &FlatIndex, ids: &[u32], m: usize, ef_construction: usize) -> Lists {
    use rayon::prelude::*;
    let n = flat.len();
    let levels = draw_levels(ids, m);
    let mut node_levels: Vec<Option<usize>> = vec![None; n];
    for (&id, &level) in ids.iter().zip(&levels) {
        node_levels[id as usize] = Some(level);
    }
    let nodes = node_levels
        .iter()
        .map(|level| Mutex::new(level.map_or_else(Vec::new, |l| vec![Vec::new(); l + 1])))
        .collect();
    let Some((&first, rest)) = ids.split_first() else {
        return Lists {
            entry: 0,
            layers: Vec::new(),
        };
    };
    let builder = Builder {
        flat,
        nodes,
        entry: Mutex::new((first, levels[0])),
        m: m.max(2),
        ef_construction: ef_construction.max(m),
    };
    rest.par_iter()
        .zip(&levels[1..])
        .with_min_len(64)
        .for_each(|(&id, &level)| builder.insert(id, level));
    builder.into_layers()
}

impl Builder<'_> {
    fn most_links(&self, layer: usize) -> usize {
        if layer == 0 {
            2 * self.m
        } else {
            self.m
        }
    }

    /// Copies `id`'s list on `layer` into `out` (ids not on that layer have none).
    fn copy_links(&self, id: u32, layer: usize, out: &mut Vec<u32>) {
        out.clear();
        let node = self.nodes[id as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(list) = node.get(layer) {
            out.extend_from_slice(list);
        }
    }

    fn insert(&self, id: u32, level: usize) {
        let query = self.flat.vector(id);
        let (mut nearest, top) = *self.entry.lock().unwrap_or_else(|e| e.into_inner());
        let mut nearest_score = dot(query, self.flat.vector(nearest));
        // Above the node's own level, a greedy walk finds where to descend.
        LIST.with(|cell| {
            let mut list = cell.borrow_mut();
            for layer in (level + 1..=top).rev() {
                loop {
                    self.copy_links(nearest, layer, &mut list);
                    let before = nearest;
                    for &nb in list.iter() {
                        let score = dot(query, self.flat.vector(nb));
                        if score > nearest_score {
                            nearest_score = score;
                            nearest = nb;
                        }
                    }
                    if nearest == before {
                        break;
                    }
                }
            }
        });
        let mut seeds = vec![Best(nearest_score, nearest)];
        for layer in (0..=level.min(top)).rev() {
            let found = self.search_layer(query, &seeds, layer);
            // Another thread may have linked this node already (it found it as a seed
            // carried down from a layer above), so the search can meet the node itself.
            let candidates: Vec<(u32, f32)> = found
                .iter()
                .filter(|b| b.1 != id)
                .map(|b| (b.1, b.0))
                .collect();
            let chosen = select_neighbours(self.flat, candidates, self.m, 0);
            {
                let mut node = self.nodes[id as usize]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                node[layer].clone_from(&chosen);
            }
            for &nb in &chosen {
                self.link(nb, id, layer);
            }
            seeds = found;
        }
        if level > top {
            let mut entry = self.entry.lock().unwrap_or_else(|e| e.into_inner());
            if level > entry.1 {
                *entry = (id, level);
            }
        }
    }

    /// Adds the link `from -> to` on `layer`; a full list is re-chosen by the heuristic.
    fn link(&self, from: u32, to: u32, layer: usize) {
        let most = self.most_links(layer);
        let mut node = self.nodes[from as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let list = &mut node[layer];
        if from == to || list.contains(&to) {
            return;
        }
        if list.len() < most {
            list.push(to);
            return;
        }
        let origin = self.flat.vector(from);
        let candidates: Vec<(u32, f32)> = list
            .iter()
            .copied()
            .chain(std::iter::once(to))
            .map(|c| (c, dot(origin, self.flat.vector(c))))
            .collect();
        *list = select_neighbours(self.flat, candidates, most, 0);
    }

    /// The `ef_construction` nodes nearest `query` on `layer` found from `seeds`, best first.
    fn search_layer(&self, query: &[f32], seeds: &[Best], layer: usize) -> Vec<Best> {
        let ef = self.ef_construction;
        VISITED.with(|visited| {
            LIST.with(|list| {
                let mut visited = visited.borrow_mut();
                let mut list = list.borrow_mut();
                visited.clear();
                visited.resize(self.nodes.len().div_ceil(64), 0);
                let mut candidates: BinaryHeap<Best> = BinaryHeap::with_capacity(2 * ef);
                let mut found: BinaryHeap<std::cmp::Reverse<Best>> =
                    BinaryHeap::with_capacity(ef + 1);
                for &seed in seeds {
                    if first_visit(&mut visited, seed.1) {
                        candidates.push(seed);
                        found.push(std::cmp::Reverse(seed));
                        if found.len() > ef {
                            found.pop();
                        }
                    }
                }
                while let Some(Best(score, id)) = candidates.pop() {
                    let worst = found.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0);
                    if found.len() >= ef && score < worst {
                        break;
                    }
                    self.copy_links(id, layer, &mut list);
                    list.retain(|&nb| first_visit(&mut visited, nb));
                    // The first cache line of each; the rest follows in sequence.
                    for &nb in list.iter() {
                        let v = self.flat.vector(nb);
                        prefetch(&v[..v.len().min(16)]);
                    }
                    for &nb in list.iter() {
                        let s = dot(query, self.flat.vector(nb));
                        let worst = found.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0);
                        if found.len() < ef || s > worst {
                            candidates.push(Best(s, nb));
                            found.push(std::cmp::Reverse(Best(s, nb)));
                            if found.len() > ef {
                                found.pop();
                            }
                        }
                    }
                }
                let mut best: Vec<Best> = found.into_iter().map(|r| r.0).collect();
                best.sort_by(|a, b| b.cmp(a));
                best
            })
        })
    }

    fn into_layers(self) -> Lists {
        let (entry, top) = self.entry.into_inner().unwrap_or_else(|e| e.into_inner());
        let n = self.nodes.len();
        let mut layers: Vec<Vec<Vec<u32>>> = vec![vec![Vec::new(); n]; top + 1];
        for (id, node) in self.nodes.into_iter().enumerate() {
            let lists = node.into_inner().unwrap_or_else(|e| e.into_inner());
            for (layer, list) in lists.into_iter().enumerate().take(top + 1) {
                layers[layer][id] = list;
            }
        }
        Lists { entry, layers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_layer_holds_about_one_in_m_of_the_one_below() {
        let ids: Vec<u32> = (0..100_000).collect();
        let levels = draw_levels(&ids, 16);
        let on = |layer: usize| levels.iter().filter(|&&l| l >= layer).count() as f64;
        for layer in 1..=2 {
            let ratio = on(layer) / on(layer - 1);
            assert!((ratio - 1.0 / 16.0).abs() < 0.01, "layer {layer}: {ratio}");
        }
        assert_eq!(
            levels,
            draw_levels(&ids, 16),
            "levels differ between builds"
        );
    }

    #[test]
    fn lists_are_bounded_free_of_self_links_and_repeats_and_skip_excluded_ids() {
        let dim = 16;
        let n = 3_000;
        let flat = FlatIndex::from_data(dim, crate::index::clustered_unit_vectors(n, dim, 10, 3));
        let ids: Vec<u32> = (0..n as u32).filter(|id| id % 7 != 0).collect();
        let m = 8;
        let inserted = insert_all(&flat, &ids, m, 64);
        for (layer, lists) in inserted.layers.iter().enumerate() {
            let most = if layer == 0 { 2 * m } else { m };
            for (id, list) in lists.iter().enumerate() {
                assert!(
                    list.len() <= most,
                    "layer {layer}, node {id}: {}",
                    list.len()
                );
                assert!(!list.contains(&(id as u32)), "node {id} links to itself");
                let mut unique = list.clone();
                unique.sort_unstable();
                unique.dedup();
                assert_eq!(unique.len(), list.len(), "node {id} repeats a link");
                assert!(
                    list.iter().all(|nb| nb % 7 != 0),
                    "a link to an excluded id"
                );
                if id % 7 == 0 {
                    assert!(list.is_empty(), "excluded id {id} has links");
                }
            }
        }
        assert!(inserted.layers[0]
            .iter()
            .enumerate()
            .all(|(id, list)| id % 7 == 0 || !list.is_empty()));
    }
}
