//! 8-bit codes of the graph's vectors, for the walk over the graph.
//!
//! A graph walk at a million vectors touches thousands of vectors in random order, so it is
//! bound by memory, not arithmetic: a 256-d float vector is 16 cache lines, its code 4.
//! Each dimension has its own scale (embedding dimensions differ in range), folded into the
//! query, so a score is one integer dot product. The walk ranks by these scores; the final
//! candidates are re-ranked with the exact float vectors, so the scores returned stay exact.

use super::flat::FlatIndex;

/// Codes for ids `0..len`, one byte per dimension.
#[derive(Debug, Clone, Default)]
pub struct Codes {
    dim: usize,
    /// Per dimension `1 / scale` (0 where the scale is), where code = round((x - centre) *
    /// scale); the centre itself is never needed again (see [`Codes::encode`]). Stored
    /// inverted so that preparing a query needs no division.
    inverse_scale: Vec<f32>,
    codes: Vec<i8>,
}

/// A query prepared for [`Codes::score`]: the scales folded in, then 16-bit integers.
pub struct PreparedQuery {
    values: Vec<i16>,
}

impl Codes {
    /// Codes for the first `count` vectors of `flat`. Each dimension's range is centred
    /// before it is scaled: CNN features are non-negative and share a large common part, so
    /// codes of raw values would spend most of their 8 bits on what every vector has.
    /// The centre drops out of the ranking: `q·x = q·centre + Σ q_i (x_i - centre_i)`, and
    /// the first term is the same for every vector of one query.
    pub fn encode(flat: &FlatIndex, count: usize) -> Codes {
        let dim = flat.dim();
        let mut low = vec![f32::INFINITY; dim];
        let mut high = vec![f32::NEG_INFINITY; dim];
        for id in 0..count as u32 {
            for ((lo, hi), &x) in low.iter_mut().zip(high.iter_mut()).zip(flat.vector(id)) {
                *lo = lo.min(x);
                *hi = hi.max(x);
            }
        }
        let centre: Vec<f32> = low
            .iter()
            .zip(&high)
            .map(|(lo, hi)| if lo.is_finite() { (lo + hi) / 2.0 } else { 0.0 })
            .collect();
        let scale: Vec<f32> = low
            .iter()
            .zip(&high)
            .map(|(lo, hi)| {
                let half = (hi - lo) / 2.0;
                if half > 0.0 {
                    127.0 / half
                } else {
                    0.0
                }
            })
            .collect();
        let mut codes = Vec::with_capacity(count * dim);
        for id in 0..count as u32 {
            codes.extend(
                flat.vector(id)
                    .iter()
                    .zip(centre.iter().zip(&scale))
                    .map(|(x, (c, s))| ((x - c) * s).round().clamp(-127.0, 127.0) as i8),
            );
        }
        let inverse_scale = scale
            .iter()
            .map(|s| if *s > 0.0 { 1.0 / s } else { 0.0 })
            .collect();
        Codes {
            dim,
            inverse_scale,
            codes,
        }
    }

    pub fn memory_bytes(&self) -> usize {
        self.codes.len() + self.inverse_scale.len() * 4
    }

    /// Folds the per-dimension scales into the query: `Σ q_i x_i ≈ const + Σ (q_i / s_i) code_i`,
    /// then maps it onto 16-bit integers, small enough that `dim` products of 127 times
    /// the largest value cannot overflow the 32-bit sum.
    pub fn prepare(&self, query: &[f32]) -> PreparedQuery {
        let folded: Vec<f32> = query
            .iter()
            .zip(&self.inverse_scale)
            .map(|(q, inverse)| q * inverse)
            .collect();
        let max = folded.iter().fold(0f32, |m, x| m.max(x.abs()));
        let largest = (i32::MAX as f32 / (127.0 * self.dim.max(1) as f32)).min(32767.0);
        let to_int = if max > 0.0 { largest / max } else { 0.0 };
        // Rounds half away from zero like `f32::round`, which is a libm call here and cost
        // a few percent of a query on small indexes; `as` saturates, and |x| <= 32767.
        let mut values: Vec<i16> = folded
            .iter()
            .map(|x| {
                let y = x * to_int;
                (y + 0.5f32.copysign(y)) as i16
            })
            .collect();
        values.resize(self.dim.next_multiple_of(16), 0);
        PreparedQuery { values }
    }

    #[inline]
    pub fn code(&self, id: u32) -> &[i8] {
        let start = id as usize * self.dim;
        &self.codes[start..start + self.dim]
    }

    /// Starts loading `id`'s code ahead of [`Codes::score`].
    #[inline]
    pub fn prefetch(&self, id: u32) {
        let start = id as usize * self.dim;
        if let Some(code) = self.codes.get(start..start + self.dim) {
            super::simd::prefetch(code);
        }
    }

    /// Approximate score of `id`, in the query's own units (comparable within one query).
    #[inline]
    pub fn score(&self, query: &PreparedQuery, id: u32) -> i32 {
        dot_i8_i16(self.code(id), &query.values)
    }

    /// Whether [`Codes::score_avx2`] may be called on this CPU for these codes.
    #[cfg(target_arch = "x86_64")]
    pub fn avx2() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
    }

    /// [`Codes::score`] without the feature check, for callers compiled for AVX2 (it then
    /// inlines into their loop).
    ///
    /// # Safety
    /// The CPU must have AVX2 ([`Codes::avx2`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    pub unsafe fn score_avx2(&self, query: &PreparedQuery, id: u32) -> i32 {
        let code = self.code(id);
        if code.len().is_multiple_of(16) {
            dot_i8_i16_avx2(code, &query.values)
        } else {
            dot_i8_i16_portable(code, &query.values)
        }
    }
}

#[inline]
fn dot_i8_i16(code: &[i8], query: &[i16]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if code.len().is_multiple_of(16) && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the feature was just detected; lengths are checked inside.
            return unsafe { dot_i8_i16_avx2(code, query) };
        }
    }
    dot_i8_i16_portable(code, query)
}

fn dot_i8_i16_portable(code: &[i8], query: &[i16]) -> i32 {
    code.iter()
        .zip(query)
        .map(|(&c, &q)| i32::from(c) * i32::from(q))
        .sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn dot_i8_i16_avx2(code: &[i8], query: &[i16]) -> i32 {
    use std::arch::x86_64::*;
    assert!(query.len() >= code.len());
    let (pc, pq) = (code.as_ptr(), query.as_ptr());
    let mut acc0 = _mm256_setzero_si256();
    let mut acc1 = _mm256_setzero_si256();
    let mut i = 0;
    while i + 32 <= code.len() {
        let c0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pc.add(i).cast()));
        let c1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pc.add(i + 16).cast()));
        let q0 = _mm256_loadu_si256(pq.add(i).cast());
        let q1 = _mm256_loadu_si256(pq.add(i + 16).cast());
        acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(c0, q0));
        acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(c1, q1));
        i += 32;
    }
    if i < code.len() {
        let c0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pc.add(i).cast()));
        let q0 = _mm256_loadu_si256(pq.add(i).cast());
        acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(c0, q0));
    }
    let acc = _mm256_add_epi32(acc0, acc1);
    let s = _mm_add_epi32(
        _mm256_castsi256_si128(acc),
        _mm256_extracti128_si256(acc, 1),
    );
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_scores_rank_like_exact_ones() {
        let dim = 256;
        let data = crate::index::clustered_unit_vectors(500, dim, 5, 3);
        let flat = FlatIndex::from_data(dim, data);
        let codes = Codes::encode(&flat, flat.len());
        assert_eq!(codes.memory_bytes(), 500 * dim + dim * 4);
        let query = flat.vector(7).to_vec();
        let prepared = codes.prepare(&query);
        let mut exact: Vec<(u32, f32)> = (0..500).map(|id| (id, flat.score(&query, id))).collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut approx: Vec<(u32, i32)> = (0..500)
            .map(|id| (id, codes.score(&prepared, id)))
            .collect();
        approx.sort_by_key(|a| std::cmp::Reverse(a.1));
        assert_eq!(approx[0].0, 7, "a vector is its own best match");
        let top_exact: Vec<u32> = exact[..10].iter().map(|e| e.0).collect();
        let found = approx[..20]
            .iter()
            .filter(|a| top_exact.contains(&a.0))
            .count();
        assert!(
            found >= 9,
            "only {found} of the exact top 10 in the approximate top 20"
        );
    }

    /// Non-negative features sharing a large common part (as a CNN's pooled ReLU outputs
    /// do): centred codes keep the fine differences that rank near neighbours.
    #[test]
    fn codes_of_offset_features_still_rank_near_neighbours() {
        let dim = 512;
        let mut rng = crate::util::Rng::new(5);
        let common: Vec<f32> = (0..dim).map(|_| 0.5 + rng.unit()).collect();
        let mut data = Vec::with_capacity(2_000 * dim);
        for _ in 0..2_000 {
            let v: Vec<f32> = common
                .iter()
                .map(|c| (c + 0.15 * rng.unit()).max(0.0))
                .collect();
            data.extend(crate::util::l2_normalised(v));
        }
        let flat = FlatIndex::from_data(dim, data);
        let codes = Codes::encode(&flat, flat.len());
        let mut found = 0;
        for q in 0..20u32 {
            let query = flat.vector(q * 97).to_vec();
            let prepared = codes.prepare(&query);
            let mut exact: Vec<(u32, f32)> =
                (0..2_000).map(|id| (id, flat.score(&query, id))).collect();
            exact.sort_by(|a, b| b.1.total_cmp(&a.1));
            let mut approx: Vec<(u32, i32)> = (0..2_000)
                .map(|id| (id, codes.score(&prepared, id)))
                .collect();
            approx.sort_by_key(|a| std::cmp::Reverse(a.1));
            let top_exact: Vec<u32> = exact[..10].iter().map(|e| e.0).collect();
            found += approx[..40]
                .iter()
                .filter(|a| top_exact.contains(&a.0))
                .count();
        }
        assert!(
            found >= 190,
            "{found} of 200 exact top-10 neighbours in the code top 40"
        );
    }

    #[test]
    fn simd_and_portable_agree() {
        for dim in [16, 32, 48, 256, 512] {
            let code: Vec<i8> = (0..dim).map(|i| ((i * 37) % 255) as i8).collect();
            let query: Vec<i16> = (0..dim)
                .map(|i| ((i * 7919) % 65535 - 32767) as i16)
                .collect();
            assert_eq!(
                dot_i8_i16(&code, &query),
                dot_i8_i16_portable(&code, &query),
                "dim {dim}"
            );
        }
    }
}
