//! The search: a beam over the upper layers, then the `ef` best on layer 0 scored on the
//! 8-bit codes, then exact re-ranking of the best few, so every score returned is exact.

use std::cell::RefCell;
use std::collections::BinaryHeap;

use super::heuristic::{first_visit, Best};
use super::Graph;
use crate::index::flat::{FlatIndex, Scored, TopK};
use crate::index::idset::IdSet;
use crate::index::quantized::{Codes, PreparedQuery};

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

impl Walk<'_> {
    #[inline(always)]
    fn filtered(&self) -> bool {
        self.allowed.is_some() || self.hidden.is_some()
    }

    #[inline(always)]
    fn accepts(&self, id: u32) -> bool {
        self.allowed.is_none_or(|a| a.contains(id)) && self.hidden.is_none_or(|h| !h.contains(id))
    }

    /// Exact scores for the shortlist, best `k` kept.
    fn rerank(&self, shortlist: Vec<u32>) -> Vec<Scored> {
        let mut results = TopK::new(self.k);
        for id in shortlist {
            results.push(id, self.flat.score(self.query, id));
        }
        results.into_sorted()
    }
}

/// Width of the search on the layers above 0.
const UPPER_BEAM: usize = 4;

/// How many of the best candidates by code are re-ranked with exact scores for a top `k`:
/// enough that codes' rounding cannot push a true top-k hit out of the pool.
fn rerank_pool(k: usize) -> usize {
    (8 * k).max(64)
}

impl Graph {
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
            ef: ef.max(k),
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
        let codes = &self.codes;
        let prepared = codes.prepare(walk.query);
        let approx = |id: u32| score(codes, &prepared, id) as f32;
        let shortlist_len = rerank_pool(walk.k).min(walk.ef);
        // Accepted ids by approximate score, kept only under a filter: unfiltered, the
        // frontier's own best are the shortlist (a heap push per scored node cost a few
        // percent of a query on small indexes).
        let mut pool = TopK::new(if walk.filtered() { shortlist_len } else { 0 });
        // Taken out of the thread-local rather than borrowed in a closure: code inside
        // `LocalKey::with`'s closure is not compiled for AVX2, and the scores would not inline.
        let mut scratch = SCRATCH.with(|cell| cell.take());
        scratch.visited.clear();
        scratch.visited.resize(walk.flat.len().div_ceil(64), 0);
        let seeds = self.descend(&mut scratch.visited, &approx);
        scratch.visited.iter_mut().for_each(|w| *w = 0);
        let mut frontier = Frontier::new(walk.ef, std::mem::take(&mut scratch.frontier));
        for &Best(score, id) in &seeds {
            first_visit(&mut scratch.visited, id);
            frontier.offer(score, id);
            if walk.filtered() && walk.accepts(id) {
                pool.push(id, score);
            }
        }
        self.walk_base_layer(&walk, &mut scratch, &mut frontier, &mut pool, &approx);
        let shortlist = if walk.filtered() {
            pool.into_sorted().into_iter().map(|c| c.id).collect()
        } else {
            frontier.best(shortlist_len)
        };
        scratch.frontier = frontier.into_storage();
        SCRATCH.with(|cell| *cell.borrow_mut() = scratch);
        walk.rerank(shortlist)
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

    /// Expands the frontier's best unexpanded node until none of the `ef` best is left,
    /// offering each first-seen neighbour to the frontier and, under a filter, accepted ones
    /// to `pool`.
    #[inline(always)]
    fn walk_base_layer(
        &self,
        walk: &Walk<'_>,
        scratch: &mut Scratch,
        frontier: &mut Frontier,
        pool: &mut TopK,
        approx: &impl Fn(u32) -> f32,
    ) {
        let (base, codes) = (&self.base, &self.codes);
        let filtered = walk.filtered();
        let Scratch { visited, fresh, .. } = scratch;
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
                if filtered && walk.accepts(nb) {
                    pool.push(nb, s);
                }
            }
        }
    }
}
