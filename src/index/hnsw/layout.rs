//! The graph's neighbour lists in flat arrays: the upper layers as offsets into one array of
//! neighbour ids, layer 0 at a fixed stride per node.

/// Neighbour lists of one layer in one array.
#[derive(Debug, Clone, Default)]
pub(super) struct Layer {
    /// `offsets[id]..offsets[id + 1]` indexes `neighbours`; ids absent from the layer have an
    /// empty range.
    pub(super) offsets: Vec<u32>,
    pub(super) neighbours: Vec<u32>,
}

impl Layer {
    #[inline]
    pub(super) fn of(&self, id: u32) -> &[u32] {
        let i = id as usize;
        if i + 1 >= self.offsets.len() {
            return &[];
        }
        &self.neighbours[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    pub(super) fn from_lists(lists: &[Vec<u32>]) -> Self {
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

    /// Bytes held by the offsets and the neighbour ids.
    pub(super) fn memory_bytes(&self) -> usize {
        (self.offsets.len() + self.neighbours.len()) * 4
    }
}

/// Layer 0 with a fixed stride per node (count, then neighbours), so that expanding a node
/// is one contiguous read that can be prefetched before it is needed.
#[derive(Debug, Clone, Default)]
pub(super) struct BaseLayer {
    stride: usize,
    slots: Vec<u32>,
}

impl BaseLayer {
    pub(super) fn from_layer(layer: &Layer) -> Self {
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

    pub(super) fn from_lists(lists: &[Vec<u32>]) -> Self {
        BaseLayer::from_layer(&Layer::from_lists(lists))
    }

    pub(super) fn nodes(&self) -> usize {
        self.slots.len().checked_div(self.stride).unwrap_or(0)
    }

    #[inline]
    pub(super) fn of(&self, id: u32) -> &[u32] {
        let start = id as usize * self.stride;
        let count = self.slots[start] as usize;
        &self.slots[start + 1..start + 1 + count]
    }

    #[inline]
    pub(super) fn prefetch(&self, id: u32) {
        let start = id as usize * self.stride;
        if let Some(slots) = self.slots.get(start..start + self.stride) {
            crate::index::simd::prefetch(slots);
        }
    }

    /// Every node's list, copied out (for repair, which edits them).
    pub(super) fn to_lists(&self) -> Vec<Vec<u32>> {
        (0..self.nodes() as u32)
            .map(|id| self.of(id).to_vec())
            .collect()
    }

    pub(super) fn to_layer(&self) -> Layer {
        Layer::from_lists(&self.to_lists())
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.slots.len() * 4
    }
}
