//! The exact index: every vector in one contiguous array, scanned with SIMD dot products.
//! It is the oracle of every approximate-search test and the path for selective filters.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::idset::IdSet;
use super::simd::dot;

/// A hit: dense id and inner product (cosine for unit vectors), best first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub id: u32,
    pub score: f32,
}

/// Min-heap entry so the heap top is the worst of the best k.
#[derive(Clone, Copy, PartialEq)]
struct Worst(Scored);

impl Eq for Worst {}

impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .0
            .score
            .total_cmp(&self.0.score)
            .then(self.0.id.cmp(&other.0.id))
    }
}

impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Keeps the `k` best scores seen.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    #[inline]
    pub fn push(&mut self, id: u32, score: f32) {
        if self.heap.len() < self.k {
            self.heap.push(Worst(Scored { id, score }));
        } else if let Some(worst) = self.heap.peek() {
            if score > worst.0.score || (score == worst.0.score && id < worst.0.id) {
                self.heap.pop();
                self.heap.push(Worst(Scored { id, score }));
            }
        }
    }

    /// Worst score kept, once `k` are kept.
    pub fn threshold(&self) -> Option<f32> {
        (self.heap.len() == self.k)
            .then(|| self.heap.peek().map(|w| w.0.score))
            .flatten()
    }

    pub fn into_sorted(self) -> Vec<Scored> {
        let mut out: Vec<Scored> = self.heap.into_iter().map(|w| w.0).collect();
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        out
    }
}

/// Vectors of one dimension under dense ids `0..len`.
#[derive(Debug, Clone, Default)]
pub struct FlatIndex {
    dim: usize,
    data: Vec<f32>,
}

impl FlatIndex {
    pub fn new(dim: usize) -> Self {
        FlatIndex {
            dim,
            data: Vec::new(),
        }
    }

    pub fn from_data(dim: usize, data: Vec<f32>) -> Self {
        debug_assert_eq!(data.len() % dim.max(1), 0);
        FlatIndex { dim, data }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a vector and returns its id.
    pub fn push(&mut self, vector: &[f32]) -> u32 {
        debug_assert_eq!(vector.len(), self.dim);
        self.data.extend_from_slice(vector);
        (self.len() - 1) as u32
    }

    #[inline]
    pub fn vector(&self, id: u32) -> &[f32] {
        let start = id as usize * self.dim;
        &self.data[start..start + self.dim]
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    #[inline]
    pub fn score(&self, query: &[f32], id: u32) -> f32 {
        dot(query, self.vector(id))
    }

    /// Exact top `k` among ids in `allowed` (all ids when `None`); ids in `hidden` never come
    /// back.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        allowed: Option<&IdSet>,
        hidden: Option<&IdSet>,
    ) -> Vec<Scored> {
        let visible = |id: u32| hidden.is_none_or(|h| !h.contains(id));
        let candidates = allowed.map_or(self.len(), IdSet::len);
        if k >= candidates {
            // The whole ranking (a result list paged to its end): one sort, no heap.
            let mut all: Vec<Scored> = match allowed {
                Some(set) => set
                    .iter()
                    .filter(|&id| (id as usize) < self.len() && visible(id))
                    .map(|id| Scored {
                        id,
                        score: self.score(query, id),
                    })
                    .collect(),
                None => (0..self.len() as u32)
                    .filter(|&id| visible(id))
                    .map(|id| Scored {
                        id,
                        score: self.score(query, id),
                    })
                    .collect(),
            };
            all.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
            return all;
        }
        let mut top = TopK::new(k);
        match allowed {
            Some(set) => {
                for id in set
                    .iter()
                    .filter(|&id| (id as usize) < self.len() && visible(id))
                {
                    top.push(id, self.score(query, id));
                }
            }
            None => {
                for (id, v) in self.data.chunks_exact(self.dim).enumerate() {
                    let id = id as u32;
                    if visible(id) {
                        top.push(id, dot(query, v));
                    }
                }
            }
        }
        top.into_sorted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_exact_top_k_with_filters_and_tombstones() {
        let mut index = FlatIndex::new(2);
        for i in 0..100 {
            let a = i as f32 / 100.0 * std::f32::consts::PI;
            index.push(&[a.cos(), a.sin()]);
        }
        let q = [1.0, 0.0];
        let ids: Vec<u32> = index
            .search(&q, 3, None, None)
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, [0, 1, 2]);
        let allowed = IdSet::from_ids(100, [50, 10, 90]);
        let ids: Vec<u32> = index
            .search(&q, 2, Some(&allowed), None)
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, [10, 50]);
        let hidden = IdSet::from_ids(100, [0, 1]);
        let ids: Vec<u32> = index
            .search(&q, 2, None, Some(&hidden))
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, [2, 3]);
    }

    #[test]
    fn a_list_as_deep_as_its_candidates_is_the_whole_ranking_in_the_heaps_order() {
        let mut index = FlatIndex::new(2);
        for i in 0..50 {
            // Pairs of equal vectors: ties broken by id.
            let a = (i / 2) as f32 / 50.0 * std::f32::consts::PI;
            index.push(&[a.cos(), a.sin()]);
        }
        let q = [0.6, 0.8];
        let allowed = IdSet::from_ids(50, (0..50).filter(|i| i % 3 != 0));
        let hidden = IdSet::from_ids(50, [4, 5]);
        let whole = index.search(&q, 50, Some(&allowed), Some(&hidden));
        let by_heap = index.search(&q, whole.len() - 1, Some(&allowed), Some(&hidden));
        assert_eq!(whole.len(), allowed.len() - 2);
        assert_eq!(&whole[..by_heap.len()], &by_heap[..]);
        let unfiltered = index.search(&q, 50, None, Some(&hidden));
        assert_eq!(unfiltered.len(), 48);
        assert_eq!(
            &unfiltered[..10],
            &index.search(&q, 10, None, Some(&hidden))[..]
        );
    }
}
