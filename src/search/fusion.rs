//! The rules that make ranked lists one, shared by the search pipeline and the text
//! benchmark (`eval::text_benchmark`), so the benchmark's figures are of what ships:
//! reciprocal rank fusion with its constant, and the semantic signal's rules: a report is
//! a semantic match when its sentence vector's cosine to the text's reaches
//! [`SEMANTIC_MIN_COSINE`]; the matches are the BM25 matches and the semantic ones; the
//! semantic list ranks every match by cosine, then id (BM25 matches below the threshold
//! included, so that each match has a share in both lists, as every report has when no
//! threshold cuts the list).

/// Reciprocal rank fusion's constant (Cormack et al. 2009 use 60).
pub const RRF_K: f32 = 60.0;

/// The cosine from which a report is a semantic match of a text query (all-MiniLM-L6-v2
/// sentence vectors). Chosen on the text benchmark (111 judged queries, 500 phrases): fused
/// with BM25 by RRF, nDCG@10 0.919 and recall@50 0.947 at 0.5 (0.919 / 0.952 with no
/// threshold, 0.920 / 0.950 at 0.4, 0.919 / 0.938 at 0.6; BM25 alone 0.907 / 0.918), with
/// 41 semantic matches a query instead of all 500: the match set (and so `total`, facets
/// and exports) stays the reports about the query, not the whole archive.
pub const SEMANTIC_MIN_COSINE: f32 = 0.5;

/// What a list entry at a 1-based `rank` adds to its lesion's fused score.
pub fn rrf_share(rank: usize) -> f32 {
    1.0 / (RRF_K + rank as f32)
}

/// Reciprocal rank fusion of ranked id lists (each best first, an id at most once per
/// list): every id of any list with the sum of its shares, best first, ties by id.
pub fn rrf(lists: &[&[u32]]) -> Vec<(u32, f32)> {
    let mut scores: std::collections::HashMap<u32, f32> = std::collections::HashMap::new();
    for list in lists {
        for (at, &id) in list.iter().enumerate() {
            *scores.entry(id).or_default() += rrf_share(at + 1);
        }
    }
    let mut fused: Vec<(u32, f32)> = scores.into_iter().collect();
    fused.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused
}

/// The semantic list: the `(id, cosine)` pairs that are matches (their cosine reaches
/// `min_cosine`, or `matched` holds them: the BM25 matches), by cosine, then id.
pub fn semantic_ranking(
    scored: impl IntoIterator<Item = (u32, f32)>,
    matched: impl Fn(u32) -> bool,
    min_cosine: f32,
) -> Vec<(u32, f32)> {
    let mut list: Vec<(u32, f32)> = scored
        .into_iter()
        .filter(|&(id, cosine)| cosine >= min_cosine || matched(id))
        .collect();
    list.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrf_prefers_agreement_and_breaks_ties_by_id() {
        let fused = rrf(&[&[1, 2, 3], &[3, 4]]);
        assert_eq!(fused[0].0, 3);
        assert!((fused[0].1 - (rrf_share(3) + rrf_share(1))).abs() < 1e-7);
        // 2 (rank 2 of the first) ties 4 (rank 2 of the second): by id.
        let ids: Vec<u32> = fused.iter().map(|f| f.0).collect();
        assert_eq!(ids, [3, 1, 2, 4]);
    }

    #[test]
    fn the_semantic_list_keeps_what_reaches_the_threshold() {
        let scored = [(5, 0.2), (1, 0.7), (3, 0.7), (2, 0.9), (4, 0.5), (6, 0.1)];
        let list = semantic_ranking(scored, |_| false, 0.5);
        assert_eq!(list, [(2, 0.9), (1, 0.7), (3, 0.7), (4, 0.5)]);
        // A BM25 match below the threshold is in the list, at its cosine's place.
        let list = semantic_ranking(scored, |id| id == 6, 0.5);
        assert_eq!(list, [(2, 0.9), (1, 0.7), (3, 0.7), (4, 0.5), (6, 0.1)]);
    }
}
