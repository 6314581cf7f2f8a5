//! A set of dense lesion ids as a bitset: filters, tombstones.

/// Bitset over ids `0..capacity`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdSet {
    words: Vec<u64>,
    len: usize,
}

impl IdSet {
    pub fn new(capacity: usize) -> Self {
        IdSet {
            words: vec![0; capacity.div_ceil(64)],
            len: 0,
        }
    }

    pub fn full(capacity: usize) -> Self {
        let mut set = IdSet::new(capacity);
        for id in 0..capacity as u32 {
            set.insert(id);
        }
        set
    }

    pub fn from_ids(capacity: usize, ids: impl IntoIterator<Item = u32>) -> Self {
        let mut set = IdSet::new(capacity);
        for id in ids {
            set.insert(id);
        }
        set
    }

    pub fn insert(&mut self, id: u32) {
        let (w, b) = (id as usize / 64, id % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        if self.words[w] & (1 << b) == 0 {
            self.words[w] |= 1 << b;
            self.len += 1;
        }
    }

    #[inline]
    pub fn remove(&mut self, id: u32) {
        let (w, b) = (id as usize / 64, id % 64);
        if w < self.words.len() && self.words[w] & (1 << b) != 0 {
            self.words[w] &= !(1 << b);
            self.len -= 1;
        }
    }

    pub fn contains(&self, id: u32) -> bool {
        let w = id as usize / 64;
        w < self.words.len() && self.words[w] & (1 << (id % 64)) != 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                Some((w * 64) as u32 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_counts_and_iterates_in_order() {
        let set = IdSet::from_ids(200, [5, 64, 199, 5, 0]);
        assert_eq!(set.len(), 4);
        assert!(set.contains(64) && !set.contains(63) && !set.contains(10_000));
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 5, 64, 199]);
    }
}
