//! Which dispatch node serves which line. Each line belongs to one of the live dispatch nodes by
//! rendezvous hashing: every node ranks the nodes for a line by a hash of (node, line) and the
//! highest wins. Each node so gets about its share, every node computes the same answer from the
//! same list without asking anyone, and when a node joins or leaves only the lines that go to or
//! come from it move.
//!
//! The list is the `nodes` table's live dispatch nodes ([`crate::cluster`]), read by the
//! dispatcher at every scan. The lease stays the proof of ownership: this only decides which node
//! tries to take a line, and when a node hands one back (it is no longer the line's node, or it
//! is draining).

use std::sync::{Arc, RwLock};

pub struct Ownership {
    node: String,
    /// The live dispatch nodes, in id order. Empty: no view of the cluster (a single node without
    /// a membership, or the list could not be read yet): this node takes every line.
    live: RwLock<Arc<Vec<String>>>,
}

impl Ownership {
    pub fn new(node: &str) -> Self {
        Self { node: node.to_owned(), live: RwLock::new(Arc::new(Vec::new())) }
    }

    /// Replace the view of the live nodes; whether it changed.
    pub fn update(&self, live: Vec<String>) -> bool {
        let mut current = self.live.write().expect("ownership lock");
        if **current == live {
            return false;
        }
        *current = Arc::new(live);
        true
    }

    pub fn live(&self) -> Arc<Vec<String>> {
        self.live.read().expect("ownership lock").clone()
    }

    /// The node that should serve `line_id` (`None`: no view of the cluster).
    pub fn node_for(&self, line_id: &str) -> Option<String> {
        let live = self.live();
        live.iter().max_by_key(|node| weight(node, line_id)).cloned()
    }

    /// Whether this node should serve `line_id`: it is the line's node, or there is no view of
    /// the cluster. A node missing from the live list (draining, or its heartbeat stale) serves
    /// nothing.
    pub fn is_mine(&self, line_id: &str) -> bool {
        match self.node_for(line_id) {
            Some(node) => node == self.node,
            None => true,
        }
    }
}

/// A stable 64-bit weight of (node, line): FNV-1a over both, then a finalizer that spreads the
/// bits (FNV alone ranks ids that differ only at the end too alike).
fn weight(node: &str, line_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0xff]).chain(line_id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finalizer.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("line_01j{i:023}")).collect()
    }

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn without_a_view_of_the_cluster_a_node_serves_every_line() {
        let ownership = Ownership::new("a");
        assert!(lines(10).iter().all(|l| ownership.is_mine(l)));
    }

    #[test]
    fn the_live_nodes_share_the_lines_about_evenly_and_agree_on_each() {
        let live = nodes(&["node-a", "node-b", "node-c"]);
        let views: Vec<Ownership> = live.iter().map(|n| Ownership::new(n)).collect();
        for view in &views {
            view.update(live.clone());
        }
        let lines = lines(3000);
        let mut counts = [0usize; 3];
        for line in &lines {
            let mine: Vec<usize> = (0..3).filter(|i| views[*i].is_mine(line)).collect();
            assert_eq!(mine.len(), 1, "exactly one node serves {line}");
            counts[mine[0]] += 1;
        }
        for count in counts {
            assert!((800..=1200).contains(&count), "each of three nodes serves about a third: {counts:?}");
        }
    }

    #[test]
    fn when_a_node_leaves_only_its_lines_move() {
        let view = Ownership::new("x");
        view.update(nodes(&["node-a", "node-b", "node-c"]));
        let before: Vec<String> = lines(2000).iter().map(|l| view.node_for(l).unwrap()).collect();
        view.update(nodes(&["node-a", "node-c"]));
        for (line, was) in lines(2000).iter().zip(before) {
            let now = view.node_for(line).unwrap();
            if was != "node-b" {
                assert_eq!(now, was, "{line} stays where it was");
            }
        }
    }

    #[test]
    fn a_node_missing_from_the_live_list_serves_nothing() {
        let draining = Ownership::new("node-b");
        draining.update(nodes(&["node-a", "node-c"]));
        assert!(lines(500).iter().all(|l| !draining.is_mine(l)));
    }
}
