//! What insertion, refinement and search share: a candidate ordered by score, the visited
//! bitset, and the HNSW neighbour-selection heuristic.

use std::cmp::Ordering;

use crate::index::flat::FlatIndex;
use crate::index::simd::dot;

/// A candidate ordered by score (best first in a max-heap).
#[derive(Clone, Copy, PartialEq)]
pub(super) struct Best(pub f32, pub u32);

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

/// True when `id` was not visited yet; marks it.
#[inline]
pub(super) fn first_visit(visited: &mut [u64], id: u32) -> bool {
    let word = &mut visited[id as usize >> 6];
    let bit = 1u64 << (id & 63);
    let fresh = *word & bit == 0;
    *word |= bit;
    fresh
}

/// Keeps, of `candidates` (id, similarity to the node), up to `degree` neighbours by the
/// HNSW heuristic: a candidate closer to an already kept neighbour than to the node adds no
/// new direction and is pruned. Pruned candidates fill at most `fill` more slots: the rest
/// stay free for links back from other nodes, which is what keeps clusters joined (hnswlib
/// keeps none of the pruned ones).
pub(super) fn select_neighbours(
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
            .all(|&k| dot(flat.vector(id), flat.vector(k)) < similarity);
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
