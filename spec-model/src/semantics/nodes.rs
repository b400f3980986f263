//! Several nodes in one program, each an image of its own with its own
//! bitmaps ([`Nodes`]: one [`Disk`] per node): an operation aimed at one
//! node, a merge whose sources name bitmaps on other nodes, and a
//! transaction whose members name any node ([`NodeOp`]).
//!
//! The spec describes one image at a time; what crosses nodes is this
//! project's reading, in the terms QEMU's bitmaps.rst uses (a merge takes
//! one or more sources, each a bitmap of the target's node or a
//! `{node, name}` pair; a transaction is all or nothing):
//! - a merge from another node's bitmap is as a merge from one of the
//!   target's own: each source's bits (and the granules it leaves open)
//!   rounded out to the target's granularity; the checks of a merge apply
//!   to every source on its own node (it must exist and be usable) and to
//!   the target on its node (inactive, exported, read-only);
//! - the sources' disks may differ in size from the target's: such a
//!   merge may be refused (QEMU requires equal sizes); if it is carried
//!   out, what lies past the target's end is dropped;
//! - a source on an inactive node, or held by an export, may be refused;
//! - a transaction's members see the effects of the members before them,
//!   whatever their node; when any must be refused, the whole must be, and
//!   no node changes.
//!
//! Each image is judged on its own when the program ends ([`Disk::close`],
//! [`Disk::crash`] of its node).

use super::node::{expect_members, names, transaction_action, Members};
use super::state::{Disk, Expect, Op};
use serde::{Deserialize, Serialize};

/// A merge source: bitmap `name` of node `node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub node: usize,
    pub name: String,
}

/// One operation on a program holding several nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum NodeOp {
    /// `op` aimed at node `node` (as on a program holding that node only).
    On { node: usize, op: Op },
    /// Bitmap `target` of node `node` gains the union of `sources`, which
    /// may lie on any node.
    Merge {
        node: usize,
        target: String,
        sources: Vec<Source>,
    },
    /// Bitmap operations on any node, all together or not at all.
    Transaction { actions: Vec<NodeOp> },
}

impl NodeOp {
    /// The nodes this operation names.
    pub fn nodes(&self) -> Vec<usize> {
        match self {
            NodeOp::On { node, .. } => vec![*node],
            NodeOp::Merge { node, sources, .. } => std::iter::once(*node)
                .chain(sources.iter().map(|s| s.node))
                .collect(),
            NodeOp::Transaction { actions } => actions.iter().flat_map(NodeOp::nodes).collect(),
        }
    }

    /// The `(node, bitmap)` pairs this operation names.
    fn named(&self) -> Vec<(usize, String)> {
        match self {
            NodeOp::On { node, op } => names(op).into_iter().map(|n| (*node, n.clone())).collect(),
            NodeOp::Merge {
                node,
                target,
                sources,
            } => std::iter::once((*node, target.clone()))
                .chain(sources.iter().map(|s| (s.node, s.name.clone())))
                .collect(),
            NodeOp::Transaction { actions } => actions.iter().flat_map(NodeOp::named).collect(),
        }
    }
}

/// The name a source of another node takes inside the target's disk while
/// a merge is judged or carried out: no bitmap of the disk can have it
/// (a NUL byte first, then the node).
fn foreign(s: &Source) -> String {
    format!("\0{}\0{}", s.node, s.name)
}

impl Members for Nodes {
    type Action = NodeOp;
    type Key = (usize, String);
    fn member(a: &NodeOp) -> bool {
        match a {
            NodeOp::On { op, .. } => transaction_action(op),
            NodeOp::Merge { .. } => true,
            NodeOp::Transaction { .. } => false,
        }
    }
    fn named(a: &NodeOp) -> Vec<(usize, String)> {
        a.named()
    }
    fn removes(a: &NodeOp) -> Option<(usize, String)> {
        match a {
            NodeOp::On {
                node,
                op: Op::Remove { name },
            } => Some((*node, name.clone())),
            _ => None,
        }
    }
    fn expect_one(&self, a: &NodeOp) -> Expect {
        self.expect(a)
    }
    fn apply_one(&mut self, a: &NodeOp) {
        self.apply(a)
    }
}

/// The nodes of one program, in the order the program opened them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nodes {
    pub disks: Vec<Disk>,
}

impl Nodes {
    /// The target's disk with every source of a merge of `node` as a
    /// bitmap of its own (sources of other nodes under [`foreign`] names,
    /// marked exported when their node's export holds them), and the
    /// single-node merge that stands for it. `Err`: the refusal a node or a
    /// source bitmap that does not exist requires.
    fn merge_view(
        &self,
        node: usize,
        target: &str,
        sources: &[Source],
    ) -> Result<(Disk, Op), Expect> {
        let mut view = self
            .disks
            .get(node)
            .cloned()
            .ok_or_else(|| Expect::Refuse(format!("no node {node}")))?;
        let mut names = Vec::new();
        for s in sources {
            if s.node == node {
                names.push(s.name.clone());
                continue;
            }
            let d = self
                .disks
                .get(s.node)
                .ok_or_else(|| Expect::Refuse(format!("no node {}", s.node)))?;
            let b = d.bitmaps.get(&s.name).ok_or_else(|| {
                Expect::Refuse(format!("no bitmap named {:?} on node {}", s.name, s.node))
            })?;
            let mut b = b.clone();
            if d.size != view.size {
                // Bits past the target's end are dropped.
                let n = super::granules::nbits(view.size, b.gbits);
                b.bits = super::granules::clip(&b.bits, n);
                b.unspecified = super::granules::clip(&b.unspecified, n);
            }
            let name = foreign(s);
            if d.exported.contains(&s.name) {
                view.exported.insert(name.clone());
            }
            view.bitmaps.insert(name.clone(), b);
            names.push(name);
        }
        let op = Op::Merge {
            target: target.to_owned(),
            sources: names,
        };
        Ok((view, op))
    }

    /// What `op` requires of the program in this state.
    pub fn expect(&self, op: &NodeOp) -> Expect {
        match op {
            NodeOp::On { node, op } => match self.disks.get(*node) {
                Some(d) => d.expect(op),
                None => Expect::Refuse(format!("no node {node}")),
            },
            NodeOp::Merge {
                node,
                target,
                sources,
            } => {
                let (view, merge) = match self.merge_view(*node, target, sources) {
                    Ok(v) => v,
                    Err(refusal) => return refusal,
                };
                let base = view.expect(&merge);
                if base != Expect::Succeed {
                    return base;
                }
                for s in sources.iter().filter(|s| s.node != *node) {
                    let d = &self.disks[s.node];
                    if d.size != view.size {
                        return Expect::Either(format!(
                            "a source on node {} of {} bytes merged into a disk of {} bytes may be refused",
                            s.node, d.size, view.size
                        ));
                    }
                    if !d.active {
                        return Expect::Either(format!(
                            "a source on the inactive node {} may be refused",
                            s.node
                        ));
                    }
                }
                Expect::Succeed
            }
            NodeOp::Transaction { actions } => expect_members(self, actions),
        }
    }

    /// Carries out `op` as the program did (nothing, when the model says
    /// it must be refused).
    pub fn apply(&mut self, op: &NodeOp) {
        let refused = matches!(self.expect(op), Expect::Refuse(_));
        match op {
            _ if refused => {}
            NodeOp::On { node, op } => {
                if let Some(d) = self.disks.get_mut(*node) {
                    d.apply(op);
                }
            }
            NodeOp::Merge {
                node,
                target,
                sources,
            } => {
                let Ok((mut view, merge)) = self.merge_view(*node, target, sources) else {
                    return;
                };
                view.apply(&merge);
                if let (Some(d), Some(b)) = (self.disks.get_mut(*node), view.bitmaps.remove(target))
                {
                    d.bitmaps.insert(target.clone(), b);
                }
            }
            NodeOp::Transaction { actions } => {
                for a in actions {
                    self.apply(a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(node: usize, op: Op) -> NodeOp {
        NodeOp::On { node, op }
    }

    fn add(node: usize, name: &str, gbits: u8) -> NodeOp {
        on(node, Op::add(name, gbits, true, false))
    }

    /// One byte written at `offset` of `node`'s disk.
    fn write(node: usize, offset: u64) -> NodeOp {
        on(node, Op::Write { offset, len: 1 })
    }

    fn clear(node: usize, name: &str) -> NodeOp {
        on(node, Op::Clear { name: name.into() })
    }

    fn merge(node: usize, target: &str, sources: Vec<Source>) -> NodeOp {
        NodeOp::Merge {
            node,
            target: target.into(),
            sources,
        }
    }

    fn src(node: usize, name: &str) -> Source {
        Source {
            node,
            name: name.into(),
        }
    }

    /// Two nodes, 1 MiB and `size1` bytes, with bitmap "a" of 64 KiB
    /// granules on the first and `second` (name, granularity bits) on the
    /// other, after one byte written at `offset` of node `node`.
    fn two(size1: u64, second: (&str, u8), (node, offset): (usize, u64)) -> Nodes {
        let mut n = Nodes {
            disks: vec![Disk::new(1 << 20), Disk::new(size1).with_cluster_bits(12)],
        };
        n.apply(&add(0, "a", 16));
        n.apply(&add(1, second.0, second.1));
        n.apply(&write(node, offset));
        n
    }

    #[test]
    fn each_node_keeps_its_own_bitmaps_and_writes() {
        let n = two(1 << 20, ("a", 12), (1, 5000));
        assert!(n.disks[0].bitmaps["a"].bits.is_empty());
        assert_eq!(n.disks[1].bitmaps["a"].bits, vec![(1, 2)]);
        assert!(matches!(n.expect(&write(2, 0)), Expect::Refuse(_)));
    }

    #[test]
    fn a_merge_takes_sources_from_the_other_node() {
        let mut n = two(1 << 20, ("b", 12), (1, 70_000));
        let m = merge(0, "a", vec![src(1, "b")]);
        assert_eq!(n.expect(&m), Expect::Succeed);
        n.apply(&m);
        // 70,000 lies in 4 KiB granule 17 of node 1, 64 KiB granule 1 of
        // node 0.
        assert_eq!(n.disks[0].bitmaps["a"].bits, vec![(1, 2)]);
        assert_eq!(n.disks[1].bitmaps["b"].bits, vec![(17, 18)]);
        assert!(!n.disks[0].bitmaps.keys().any(|k| k.starts_with('\0')));
        // A source missing on its node must be refused, even if the
        // target's node has a bitmap of that name.
        let missing = merge(0, "a", vec![src(1, "a")]);
        assert!(matches!(n.expect(&missing), Expect::Refuse(_)));
        // Disks of different sizes: may be refused.
        let mut n = two(2 << 20, ("b", 16), (1, (1 << 20) + 5));
        let m = merge(0, "a", vec![src(1, "b")]);
        assert!(matches!(n.expect(&m), Expect::Either(_)));
        n.apply(&m);
        assert!(n.disks[0].bitmaps["a"].bits.is_empty());
    }

    #[test]
    fn a_transaction_across_nodes_is_all_or_nothing() {
        let mut n = two(1 << 20, ("b", 16), (0, 0));
        let before = n.clone();
        let failing = NodeOp::Transaction {
            actions: vec![clear(1, "b"), clear(1, "a")],
        };
        assert!(matches!(n.expect(&failing), Expect::Refuse(m) if m.starts_with("member 1")));
        n.apply(&failing);
        assert_eq!(n, before);
        let ok = NodeOp::Transaction {
            actions: vec![merge(1, "b", vec![src(0, "a")]), clear(0, "a")],
        };
        assert_eq!(n.expect(&ok), Expect::Succeed);
        n.apply(&ok);
        assert_eq!(n.disks[1].bitmaps["b"].bits, vec![(0, 1)]);
        assert!(n.disks[0].bitmaps["a"].bits.is_empty());
        let reuse = NodeOp::Transaction {
            actions: vec![
                on(1, Op::Remove { name: "b".into() }),
                merge(0, "a", vec![src(1, "b")]),
            ],
        };
        assert!(matches!(
            n.expect(&reuse),
            Expect::Refuse(_) | Expect::Either(_)
        ));
        let io = NodeOp::Transaction {
            actions: vec![write(1, 0)],
        };
        assert!(matches!(n.expect(&io), Expect::Refuse(_)));
    }
}
