//! The reference builder: hnsw_rs's parallel insertion, its lists copied out, then two
//! passes of layer-0 refinement. The only file that names hnsw_rs and anndists.

use anndists::dist::Distance;
use hnsw_rs::prelude::Hnsw;

use super::heuristic::select_neighbours;
use super::{GraphParams, Lists};
use crate::index::flat::FlatIndex;
use crate::index::quantized::Codes;

/// Passes of layer-0 refinement after the hnsw_rs build.
const REFINE_PASSES: usize = 2;

/// Pruned candidates a refined list may keep beyond the heuristic's choice.
const REFINE_FILL: usize = 4;

/// Inner-product distance `1 - a·b` for unit vectors, clamped at 0, with our SIMD dot.
///
/// anndists' `DistDot` asserts `1 - a·b >= 0` and panics when two unit vectors are equal up
/// to rounding (a·b = 1.0000001): real embeddings of a lesion and its follow-up do that, so
/// a 32k-lesion build crashed. Clamping is exact for unit vectors and also 1.4x faster than
/// its scalar loop (the team's notes, `shared/notes/PERF.md`; BENCHMARKS.md, "Vector index").
#[derive(Debug, Clone, Copy, Default)]
struct UnitDot;

impl Distance<f32> for UnitDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - crate::index::simd::dot(a, b)).max(0.0)
    }
}

/// hnsw_rs's graph over `ids`, refined on layer 0.
pub(super) fn build(flat: &FlatIndex, codes: &Codes, ids: &[u32], params: GraphParams) -> Lists {
    let mut lists = inserted(flat, ids, params);
    // Each pass starts from the neighbourhoods the last one improved (as in NN-descent,
    // most of the gain comes in the first iterations).
    for _ in 0..REFINE_PASSES {
        refine_base_layer(flat, codes, &mut lists.layers[0], ids, 2 * params.m);
    }
    lists
}

/// hnsw_rs's insertion of `ids`, its lists copied out per layer and id.
fn inserted(flat: &FlatIndex, ids: &[u32], params: GraphParams) -> Lists {
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
    let mut layers: Vec<Vec<Vec<u32>>> = vec![vec![Vec::new(); n]; top + 1];
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
            layers[layer][id as usize] = neighbours.iter().map(|nb| nb.d_id as u32).collect();
        }
    }
    Lists { entry, layers }
}

/// One pass of neighbourhood refinement over layer 0 after the hnsw_rs build, which under
/// parallel insertion leaves some points poorly linked (self-recall 0.84 at 1M vectors).
/// Each node re-chooses its neighbours by the HNSW heuristic among its current ones, the
/// nodes that point to it, and the nearest of its neighbours' neighbours (see
/// [`Candidates::refined_list`]). Then every kept link is made mutual where the other end
/// has room.
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
            let candidates = Candidates {
                flat,
                codes,
                current,
                reverse: &reverse,
            };
            (u, candidates.refined_list(u, degree))
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

/// What one refinement pass reads to re-choose a node's list.
struct Candidates<'a> {
    flat: &'a FlatIndex,
    codes: &'a Codes,
    /// Layer 0 as the pass found it.
    current: &'a [Vec<u32>],
    /// Per node, the nodes that link to it.
    reverse: &'a [Vec<u32>],
}

impl Candidates<'_> {
    /// `u`'s new list. Its current and incoming links always compete: they hold the long
    /// links between clusters, which a nearest-only shortlist would drop (that left whole
    /// clusters unreachable).
    fn refined_list(&self, u: u32, degree: usize) -> Vec<u32> {
        let own = &self.current[u as usize];
        let query = self.flat.vector(u);
        let mut linked: Vec<u32> = own.clone();
        linked.extend_from_slice(&self.reverse[u as usize]);
        linked.sort_unstable();
        linked.dedup();
        linked.retain(|&c| c != u);
        let two_hop = self.nearest_two_hop(u, &linked, 2 * degree);
        let scored = linked
            .into_iter()
            .chain(two_hop)
            .map(|c| (c, self.flat.score(query, c)))
            .collect();
        select_neighbours(self.flat, scored, degree, REFINE_FILL)
    }

    /// The `shortlist` nodes two hops from `u`, not in `linked` (sorted), nearest by code.
    fn nearest_two_hop(&self, u: u32, linked: &[u32], shortlist: usize) -> Vec<u32> {
        let mut two_hop: Vec<u32> = self.current[u as usize]
            .iter()
            .flat_map(|&v| self.current[v as usize].iter().copied())
            .filter(|&c| c != u && linked.binary_search(&c).is_err())
            .collect();
        two_hop.sort_unstable();
        two_hop.dedup();
        // Up to a thousand two-hop candidates: rank them by code, then give the pruning
        // rule exact scores for the best few (its cost grows with candidates x kept).
        let prepared = self.codes.prepare(self.flat.vector(u));
        let mut ranked: Vec<(u32, i32)> = two_hop
            .into_iter()
            .map(|c| (c, self.codes.score(&prepared, c)))
            .collect();
        let shortlist = shortlist.min(ranked.len());
        if shortlist > 0 && shortlist < ranked.len() {
            ranked.select_nth_unstable_by(shortlist - 1, |a, b| b.1.cmp(&a.1));
            ranked.truncate(shortlist);
        }
        ranked.into_iter().map(|(c, _)| c).collect()
    }
}
