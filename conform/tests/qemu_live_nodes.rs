//! Two nodes in one `qemu-storage-daemon` (issue 22): two images, each
//! its own qcow2 node of its own cluster size, with bitmap operations
//! aimed at either node, merges whose sources name the other node's
//! bitmaps (`{"node", "name"}`), transactions across both, guest writes
//! to each, and each image judged on its own after `quit` and `kill -9`.
//! The semantic model keeps one state per node ([`Nodes`]).

use conform::campaign::sequences::gen::{Second, Shape};
use conform::campaign::sequences::{self, Sequence, Step};
use conform::runner::adapters::qemu_live::session::read_file;
use spec_model::semantics::{Expect, NodeOp, Op, Source};

#[path = "common/live.rs"]
mod live;
use live::{limits, qsd};

/// A persistent, enabled bitmap added to node `node`.
fn add(node: usize, name: &str, gbits: u8) -> Step {
    let add = Op::Add {
        name: name.into(),
        gbits,
        persistent: true,
        disabled: false,
    };
    Step::Nodes { op: on(node, add) }
}

fn on(node: usize, op: Op) -> NodeOp {
    NodeOp::On { node, op }
}

fn src(node: usize, name: &str) -> Source {
    Source {
        node,
        name: name.into(),
    }
}

fn two_nodes(size1: u64, steps: Vec<Step>) -> Sequence {
    Sequence {
        size: 1 << 20,
        shape: Shape::default(),
        second: Some(Second {
            size: size1,
            shape: Shape {
                cluster_bits: Some(12),
                ..Shape::default()
            },
        }),
        steps,
    }
}

#[test]
fn two_nodes_agree_with_the_model_through_merges_transactions_restarts_and_crashes() {
    let write = |node, offset, len| Step::Nodes {
        op: on(node, Op::Write { offset, len }),
    };
    let seq = two_nodes(
        1 << 20,
        vec![
            add(0, "a", 16),
            add(1, "a", 12),
            add(1, "b", 14),
            write(1, 70_000, 1),
            write(0, 300_000, 2),
            // Node 1's "b" into node 0's "a": the merge names the other
            // node's bitmap, which has the same name as one of node 0's
            // only by chance.
            Step::Nodes {
                op: NodeOp::Merge {
                    node: 0,
                    target: "a".into(),
                    sources: vec![src(1, "b")],
                },
            },
            Step::Nodes {
                op: NodeOp::Transaction {
                    actions: vec![
                        on(1, Op::Clear { name: "b".into() }),
                        NodeOp::Merge {
                            node: 1,
                            target: "a".into(),
                            sources: vec![src(0, "a"), src(1, "b")],
                        },
                        on(0, Op::Disable { name: "a".into() }),
                    ],
                },
            },
            // A transaction with a member QEMU must refuse changes neither
            // node.
            Step::Nodes {
                op: NodeOp::Transaction {
                    actions: vec![
                        on(0, Op::Clear { name: "a".into() }),
                        on(
                            1,
                            Op::Clear {
                                name: "missing".into(),
                            },
                        ),
                    ],
                },
            },
            Step::Restart,
            write(1, 0, 5),
            write(0, 0, 5),
            Step::Crash,
        ],
    );
    let work = tempfile::tempdir().unwrap();
    let _w = conform::runner::process::sandbox::writable(work.path());
    let r =
        sequences::run_sequence(&qsd(), &seq, work.path(), &limits(), sequences::MODEL).unwrap();
    assert!(!r.failed(), "{r:#?}");
    assert_eq!(r.operations, 10);
    // The merges went out with node 1's bitmap named by node and name.
    let t = r.transcript.join("\n");
    assert!(t.contains(r#"{"name":"b","node":"q1"}"#), "{t}");
    // Each image holds its own bitmaps after the final `quit` (in use
    // since the crash).
    let f1 = read_file(&work.path().join("seq1.qcow2")).unwrap();
    let names: Vec<&String> = f1.bitmaps.keys().collect();
    assert_eq!(names, ["a", "b"]);
    let f0 = read_file(&work.path().join("seq.qcow2")).unwrap();
    assert_eq!(f0.bitmaps.keys().collect::<Vec<_>>(), ["a"]);
}

#[test]
fn a_merge_across_disks_of_different_sizes_may_be_refused_and_node_1_is_checked() {
    let work = tempfile::tempdir().unwrap();
    let _w = conform::runner::process::sandbox::writable(work.path());
    let seq = two_nodes(2 << 20, Vec::new());
    let image = work.path().join("seq.qcow2");
    let mut s = sequences::run::open_session(&qsd(), &seq, &image, &limits())
        .unwrap()
        .unwrap();
    for st in [add(0, "a", 16), add(1, "b", 16)] {
        let Step::Nodes { op } = st else {
            unreachable!()
        };
        assert_eq!(s.step_nodes(&op).unwrap(), Vec::<String>::new());
    }
    let merge = NodeOp::Merge {
        node: 0,
        target: "a".into(),
        sources: vec![src(1, "b")],
    };
    assert!(matches!(s.nodes().expect(&merge), Expect::Either(_)));
    assert_eq!(s.step_nodes(&merge).unwrap(), Vec::<String>::new());
    let t = s.full_transcript().join("\n");
    assert!(t.contains("different sizes"), "QEMU 10.0.2 refuses it: {t}");
    // A wrong prediction about node 1 is caught on node 1.
    s.others[0]
        .model
        .bitmaps
        .get_mut("b")
        .unwrap()
        .bits
        .push((3, 4));
    let p = s.compare().unwrap();
    assert!(
        p.iter().any(|m| m.starts_with("node q1: bitmap \"b\"")),
        "{p:?}"
    );
    let _ = s.close();
    let f = read_file(&work.path().join("seq1.qcow2")).unwrap();
    assert!(f.bitmaps.contains_key("b"));
}

#[test]
fn the_generator_draws_two_node_sequences() {
    let two: Vec<Sequence> = (0..400)
        .map(|i| Sequence::random(3, i))
        .filter(|s| s.second.is_some())
        .collect();
    assert!((40..160).contains(&two.len()), "{}", two.len());
    let across = two
        .iter()
        .flat_map(|s| &s.steps)
        .filter(|st| {
            matches!(st, Step::Nodes { op } if op.nodes().contains(&0) && op.nodes().contains(&1))
        })
        .count();
    assert!(across > 50, "{across}");
    // A sequence of one node is saved as before (no `second`).
    let one = (0..400)
        .map(|i| Sequence::random(3, i))
        .find(|s| s.second.is_none())
        .unwrap();
    assert!(!serde_json::to_string(&one).unwrap().contains("second"));
}
