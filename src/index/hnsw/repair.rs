//! Reachability on layer 0: joining the nodes a walk from the entry point cannot reach, so
//! that no `ef` is ever short of a node because of the graph's shape, and measuring it.

use super::layout::BaseLayer;
use super::Graph;
use crate::index::flat::FlatIndex;
use crate::index::idset::IdSet;

/// Links a node may take beyond its degree when an island is joined to the graph.
const REPAIR_SLACK: usize = 4;

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
pub(super) fn join_islands(
    graph: &mut Graph,
    flat: &FlatIndex,
    ids: &[u32],
    degree: usize,
) -> usize {
    let capacity = graph.base.nodes();
    let most = degree + REPAIR_SLACK;
    let mut joined = 0;
    loop {
        let mut lists = graph.base.to_lists();
        let reached = reached_from(graph.entry, &lists, capacity);
        let stranded: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| !reached.contains(id))
            .collect();
        if stranded.is_empty() {
            return joined;
        }
        for &u in &stranded {
            let near = graph.search(flat, flat.vector(u), 8, 64, Some(&reached), None);
            let host = near
                .iter()
                .map(|s| s.id)
                .find(|&h| lists[h as usize].len() < most)
                .unwrap_or(graph.entry);
            if !lists[host as usize].contains(&u) {
                lists[host as usize].push(u);
            }
            if lists[u as usize].len() < most && !lists[u as usize].contains(&host) {
                lists[u as usize].push(host);
            }
            joined += 1;
        }
        graph.base = BaseLayer::from_lists(&lists);
    }
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
        Connectivity {
            nodes: member.iter().filter(|&&m| m).count(),
            reachable: self.reachable_count(),
            without_in_links: (0..n)
                .filter(|&i| member[i] && in_links[i] == 0 && i != self.entry as usize)
                .count(),
        }
    }

    /// Nodes a walk from the entry point along layer-0 links reaches, the entry included.
    fn reachable_count(&self) -> usize {
        let mut seen = vec![false; self.base.nodes()];
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
        reachable
    }
}
