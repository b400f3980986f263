//! The node around the bitmaps: what an operation requires once the
//! node's state is taken into account (inactive, bitmaps held by an
//! export), and the operations on the node itself: transactions of bitmap
//! operations (all or nothing), inactivation and activation, exports of a
//! bitmap, and an add with the implementation's default granularity.
//!
//! The readings chosen, none of which the spec states (it describes files,
//! not running programs):
//! - an inactive node has handed its image over: inactivation stores
//!   every persistent bitmap as a clean close would and drops it from the
//!   node, activation loads them back; meanwhile a persistent add under a
//!   name the image already holds must be refused (activation could not
//!   load both), any other change may be refused, and guest I/O is not
//!   carried out (the harness never writes to an inactive node: an export
//!   for it would activate the node);
//! - a bitmap an export holds is in use: changing or dropping it may be
//!   refused, and inactivating the node while an export holds one may be
//!   refused, but the program must go on either way;
//! - a transaction's members see the effects of the members before them;
//!   when any member must be refused the whole transaction must be, and
//!   nothing changes; a member naming a bitmap an earlier member removed
//!   may be refused (the removal completes only when the whole commits).

use super::state::{Disk, Expect, Op, Origin};

/// Why `op` names a bitmap an export holds (`None`: it names none).
fn names_exported(d: &Disk, op: &Op) -> Option<String> {
    let names: Vec<&String> = match op {
        Op::Remove { name } | Op::Clear { name } | Op::Enable { name } | Op::Disable { name } => {
            vec![name]
        }
        Op::Merge { target, sources } => std::iter::once(target).chain(sources).collect(),
        _ => Vec::new(),
    };
    names
        .into_iter()
        .find(|n| d.exported.contains(*n))
        .map(|n| format!("bitmap {n:?} is held by an export and may be refused"))
}

/// A bitmap operation a transaction may hold.
pub(super) fn transaction_action(op: &Op) -> bool {
    matches!(
        op,
        Op::Add { .. }
            | Op::AddDefault { .. }
            | Op::Remove { .. }
            | Op::Clear { .. }
            | Op::Enable { .. }
            | Op::Disable { .. }
            | Op::Merge { .. }
    )
}

/// The bitmap names `op` uses.
pub(super) fn names(op: &Op) -> Vec<&String> {
    match op {
        Op::Add { name, .. }
        | Op::AddDefault { name, .. }
        | Op::Remove { name }
        | Op::Clear { name }
        | Op::Enable { name }
        | Op::Disable { name }
        | Op::Export { name }
        | Op::Unexport { name } => vec![name],
        Op::Merge { target, sources } => std::iter::once(target).chain(sources).collect(),
        _ => Vec::new(),
    }
}

/// A state a transaction's members act on (one node's [`Disk`], or
/// several nodes'), for [`expect_members`].
pub(super) trait Members: Clone {
    type Action: std::fmt::Debug;
    /// How a member names a bitmap.
    type Key: PartialEq + std::fmt::Debug;
    /// Whether `a` may be a member.
    fn member(a: &Self::Action) -> bool;
    /// The bitmaps `a` names.
    fn named(a: &Self::Action) -> Vec<Self::Key>;
    /// The bitmap `a` removes.
    fn removes(a: &Self::Action) -> Option<Self::Key>;
    fn expect_one(&self, a: &Self::Action) -> Expect;
    fn apply_one(&mut self, a: &Self::Action);
}

/// What a transaction of `actions` on `state` requires: its members see
/// the effects of those before them; one that must be refused makes the
/// whole refused; one naming a bitmap an earlier member removed may be
/// refused.
pub(super) fn expect_members<S: Members>(state: &S, actions: &[S::Action]) -> Expect {
    let mut d = state.clone();
    let mut either: Option<String> = None;
    let mut removed: Vec<S::Key> = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        if !S::member(a) {
            return Expect::Refuse(format!("member {i} ({a:?}) is not a transaction action"));
        }
        if let Some(n) = S::named(a).into_iter().find(|n| removed.contains(n)) {
            either.get_or_insert(format!(
                "member {i} names bitmap {n:?}, which an earlier member removes"
            ));
        }
        match d.expect_one(a) {
            Expect::Refuse(why) => return Expect::Refuse(format!("member {i}: {why}")),
            Expect::Either(why) => {
                either.get_or_insert(format!("member {i}: {why}"));
            }
            Expect::Succeed => {}
        }
        removed.extend(S::removes(a));
        d.apply_one(a);
    }
    either.map_or(Expect::Succeed, Expect::Either)
}

impl Members for Disk {
    type Action = Op;
    type Key = String;
    fn member(a: &Op) -> bool {
        transaction_action(a)
    }
    fn named(a: &Op) -> Vec<String> {
        names(a).into_iter().cloned().collect()
    }
    fn removes(a: &Op) -> Option<String> {
        match a {
            Op::Remove { name } => Some(name.clone()),
            _ => None,
        }
    }
    fn expect_one(&self, a: &Op) -> Expect {
        self.expect(a)
    }
    fn apply_one(&mut self, a: &Op) {
        self.apply(a)
    }
}

impl Disk {
    /// QEMU's granularity for an add that gives none: the cluster size,
    /// kept between 4 KiB and 64 KiB.
    pub fn default_gbits(&self) -> u8 {
        self.cluster_bits.clamp(12, 16)
    }

    /// `op` with the default granularity made explicit (other operations
    /// unchanged).
    pub fn resolved(&self, op: &Op) -> Op {
        match op {
            Op::AddDefault {
                name,
                persistent,
                disabled,
            } => Op::Add {
                name: name.clone(),
                gbits: self.default_gbits(),
                persistent: *persistent,
                disabled: *disabled,
            },
            other => other.clone(),
        }
    }

    /// What `op` requires of an implementation in this state.
    pub fn expect(&self, op: &Op) -> Expect {
        if let Some(e) = self.expect_read_only(op) {
            return e;
        }
        match op {
            Op::AddDefault { .. } => self.expect(&self.resolved(op)),
            Op::Transaction { actions } => expect_members(self, actions),
            // Concurrent writes: each as if alone (a bitmap's bits are
            // the union, whatever the order).
            Op::Writes { writes } => {
                let mut either = None;
                for &(offset, len) in writes {
                    match self.expect(&Op::Write { offset, len }) {
                        Expect::Refuse(why) => return Expect::Refuse(why),
                        Expect::Either(why) => {
                            either.get_or_insert(why);
                        }
                        Expect::Succeed => {}
                    }
                }
                either.map_or(Expect::Succeed, Expect::Either)
            }
            Op::SetActive { active: false } if !self.active => {
                Expect::Either("the node is already inactive".into())
            }
            Op::SetActive { active: false } => match self.exported.iter().next() {
                Some(n) => Expect::Either(format!(
                    "an export holds bitmap {n:?}: inactivation may be refused"
                )),
                None => Expect::Succeed,
            },
            Op::SetActive { active: true } if self.active => {
                Expect::Either("the node is already active".into())
            }
            Op::SetActive { active: true } => Expect::Succeed,
            Op::Export { name } => {
                if !self.active {
                    Expect::Either("no export is made of an inactive node".into())
                } else if let Some(why) = self.unusable(name) {
                    Expect::Refuse(why)
                } else if self.exported.contains(name) {
                    Expect::Either(format!("bitmap {name:?} is already exported"))
                } else {
                    Expect::Succeed
                }
            }
            Op::Unexport { name } => {
                if self.exported.contains(name) {
                    Expect::Succeed
                } else {
                    Expect::Refuse(format!("no export holds bitmap {name:?}"))
                }
            }
            Op::Reopen { read_only } => self.expect_reopen(*read_only),
            _ => self.soften(op, self.expect_base(op)),
        }
    }

    /// The base expectation of `op` with the node's state added: an
    /// inactive node, exported bitmaps, requests of no bytes, names the
    /// spec leaves unspecified.
    fn soften(&self, op: &Op, base: Expect) -> Expect {
        if let Op::Add {
            name, persistent, ..
        } = op
        {
            if !self.active && *persistent {
                if self.stored.contains_key(name) {
                    return Expect::Refuse(format!(
                        "a bitmap named {name:?} is stored in the image of the inactive node"
                    ));
                }
                if base == Expect::Succeed {
                    return Expect::Either(
                        "a persistent add on an inactive node may be refused".into(),
                    );
                }
            }
            if base == Expect::Succeed && name.contains('\0') {
                return Expect::Either(
                    "a name with a NUL byte is left unspecified by the spec".into(),
                );
            }
        }
        if base != Expect::Succeed {
            return base;
        }
        match op {
            Op::Write { len: 0, .. }
            | Op::WriteZeroes { len: 0, .. }
            | Op::Discard { len: 0, .. } => {
                Expect::Either("a request of no bytes may be refused".into())
            }
            Op::Write { .. } | Op::WriteZeroes { .. } | Op::Discard { .. } if !self.active => {
                Expect::Either("guest I/O is not carried out on an inactive node".into())
            }
            Op::Remove { .. }
            | Op::Clear { .. }
            | Op::Enable { .. }
            | Op::Disable { .. }
            | Op::Merge { .. }
                if !self.active =>
            {
                Expect::Either("a bitmap change on an inactive node may be refused".into())
            }
            _ => names_exported(self, op).map_or(Expect::Succeed, Expect::Either),
        }
    }

    /// Carries out `op`, which succeeded. An operation the model says must
    /// be refused changes nothing.
    pub fn apply(&mut self, op: &Op) {
        if let Expect::Refuse(_) = self.expect(op) {
            return;
        }
        match op {
            Op::AddDefault { .. } => {
                let op = self.resolved(op);
                self.apply_base(&op);
            }
            Op::Transaction { actions } => {
                for a in actions {
                    self.apply(a);
                }
            }
            Op::Writes { writes } => {
                for &(offset, len) in writes {
                    self.apply(&Op::Write { offset, len });
                }
            }
            // Inactivating an inactive node changes nothing (what it may
            // store is judged as `FileBitmap::Any`).
            Op::SetActive { active: false } if !self.active => {}
            Op::SetActive { active: false } => self.inactivate(),
            Op::SetActive { active: true } => self.activate(),
            Op::Export { name } => {
                if self.active {
                    self.exported.insert(name.clone());
                }
            }
            Op::Unexport { name } => {
                self.exported.remove(name);
            }
            Op::Reopen { read_only } => self.reopen(*read_only),
            Op::Write { .. } | Op::WriteZeroes { .. } | Op::Discard { .. } if !self.active => {}
            _ => self.apply_base(op),
        }
    }

    /// Every persistent bitmap stored in the image and dropped from the
    /// node; the non-persistent ones stay, and so do inconsistent ones
    /// (never stored: their copy in the image stays `in_use`).
    fn inactivate(&mut self) {
        let names: Vec<String> = self
            .bitmaps
            .iter()
            .filter(|(_, b)| b.persistent && !b.inconsistent)
            .map(|(n, _)| n.clone())
            .collect();
        for n in names {
            if let Some(mut b) = self.bitmaps.remove(&n) {
                b.origin = Origin::Loaded;
                self.stored.entry(n).or_insert(b);
            }
        }
        self.exported.clear();
        self.removed.clear();
        self.on_image = self.stored.keys().cloned().collect();
        self.active = false;
    }

    /// The bitmaps an inactivation stored loaded back. Persistent bitmaps
    /// added while the node was inactive may be written to the image on
    /// the way (QEMU reopens its image layer): after a crash the image may
    /// hold them `in_use`, or not at all.
    fn activate(&mut self) {
        for (n, b) in &self.bitmaps {
            if b.persistent && !self.on_image.contains(n) {
                self.removed.insert(n.clone());
            }
        }
        for (n, b) in std::mem::take(&mut self.stored) {
            self.bitmaps.entry(n).or_insert(b);
        }
        self.active = true;
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::lifecycle::FileBitmap;
    use super::*;

    /// An add of a bitmap of granularity 64 KiB, enabled.
    pub(in crate::semantics) fn add(name: &str, persistent: bool) -> Op {
        Op::add(name, 16, persistent, false)
    }

    fn merge(target: &str, sources: &[&str]) -> Op {
        Op::Merge {
            target: target.into(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_transaction_is_all_or_nothing_and_sequential() {
        let mut d = Disk::new(1 << 20);
        d.apply(&add("a", true));
        d.apply(&Op::Write { offset: 0, len: 1 });
        let failing = Op::Transaction {
            actions: vec![
                add("x", false),
                Op::Clear { name: "a".into() },
                Op::Remove {
                    name: "missing".into(),
                },
            ],
        };
        assert!(matches!(d.expect(&failing), Expect::Refuse(m) if m.starts_with("member 2")));
        let before = d.clone();
        d.apply(&failing);
        assert_eq!(d, before);
        let ok = Op::Transaction {
            actions: vec![
                add("x", false),
                merge("x", &["a"]),
                Op::Clear { name: "a".into() },
            ],
        };
        assert_eq!(d.expect(&ok), Expect::Succeed);
        d.apply(&ok);
        assert_eq!(d.bitmaps["x"].bits, vec![(0, 1)]);
        assert!(d.bitmaps["a"].bits.is_empty());
        // An empty merge as a member, or a member naming a bitmap an
        // earlier member removed, may be refused.
        let empty = Op::Transaction {
            actions: vec![merge("a", &[])],
        };
        assert!(matches!(d.expect(&empty), Expect::Either(_)));
        let reuse = Op::Transaction {
            actions: vec![Op::Remove { name: "x".into() }, add("x", true)],
        };
        assert!(matches!(d.expect(&reuse), Expect::Either(m) if m.contains("earlier member")));
        let not_bitmap = Op::Transaction {
            actions: vec![Op::Write { offset: 0, len: 1 }],
        };
        assert!(matches!(d.expect(&not_bitmap), Expect::Refuse(_)));
    }

    #[test]
    fn inactivation_stores_persistent_bitmaps_and_activation_loads_them() {
        let mut d = Disk::new(1 << 20);
        d.apply(&add("p", true));
        d.apply(&add("t", false));
        d.apply(&Op::Write {
            offset: 70_000,
            len: 1,
        });
        assert_eq!(d.expect(&Op::SetActive { active: false }), Expect::Succeed);
        d.apply(&Op::SetActive { active: false });
        assert!(!d.active);
        assert_eq!(d.bitmaps.keys().collect::<Vec<_>>(), ["t"]);
        let file = d.close();
        assert!(
            matches!(&file.bitmaps["p"], FileBitmap::Stored { bits, .. } if *bits == vec![(1, 2)])
        );
        assert!(!file.bitmaps.contains_key("t"));
        // Guest I/O is not carried out; a persistent add under a stored
        // name must be refused, under a new one may be.
        let w = Op::Write { offset: 0, len: 1 };
        assert!(matches!(d.expect(&w), Expect::Either(_)));
        d.apply(&w);
        assert!(matches!(d.expect(&add("p", true)), Expect::Refuse(m) if m.contains("stored")));
        assert!(matches!(d.expect(&add("n", true)), Expect::Either(_)));
        assert_eq!(d.expect(&add("n", false)), Expect::Succeed);
        d.apply(&add("n", true));
        assert!(matches!(d.close().bitmaps["n"], FileBitmap::Any));
        assert_eq!(d.expect(&Op::SetActive { active: true }), Expect::Succeed);
        d.apply(&Op::SetActive { active: true });
        assert!(d.active && d.stored.is_empty());
        assert_eq!(d.bitmaps["p"].bits, vec![(1, 2)]);
        assert!(d.bitmaps["t"].bits.is_empty() || d.bitmaps["t"].bits == vec![(1, 2)]);
        // "n" may have been written by the activation: after a crash it
        // may be in the image, in use.
        assert!(matches!(
            d.crash().bitmaps["n"],
            FileBitmap::InUseOrAbsent { .. }
        ));
        assert!(matches!(d.crash().bitmaps["p"], FileBitmap::InUse { .. }));
    }

    #[test]
    fn an_exported_bitmap_is_in_use() {
        let mut d = Disk::new(1 << 20);
        d.apply(&add("a", true));
        assert_eq!(d.expect(&Op::Export { name: "a".into() }), Expect::Succeed);
        assert!(matches!(
            d.expect(&Op::Export { name: "zz".into() }),
            Expect::Refuse(_)
        ));
        assert!(matches!(
            d.expect(&Op::Unexport { name: "a".into() }),
            Expect::Refuse(_)
        ));
        d.apply(&Op::Export { name: "a".into() });
        for op in [
            Op::Remove { name: "a".into() },
            Op::Clear { name: "a".into() },
            Op::Disable { name: "a".into() },
            Op::SetActive { active: false },
        ] {
            assert!(matches!(d.expect(&op), Expect::Either(_)), "{op:?}");
        }
        assert_eq!(
            d.expect(&Op::Unexport { name: "a".into() }),
            Expect::Succeed
        );
        d.apply(&Op::Unexport { name: "a".into() });
        assert_eq!(d.expect(&Op::SetActive { active: false }), Expect::Succeed);
    }

    #[test]
    fn defaults_names_and_empty_requests() {
        for (cluster, want) in [(9, 12), (12, 12), (14, 14), (16, 16), (21, 16)] {
            let d = Disk::new(1 << 20).with_cluster_bits(cluster);
            assert_eq!(d.default_gbits(), want);
            let op = Op::AddDefault {
                name: "a".into(),
                persistent: true,
                disabled: false,
            };
            assert!(matches!(d.resolved(&op), Op::Add { gbits, .. } if gbits == want));
        }
        let d = Disk::new(1 << 20);
        assert!(matches!(
            d.expect(&add("nul\0byte", false)),
            Expect::Either(_)
        ));
        assert!(matches!(d.expect(&add("", false)), Expect::Refuse(_)));
        assert!(matches!(
            d.expect(&add(&"n".repeat(1024), true)),
            Expect::Either(_)
        ));
        assert_eq!(d.expect(&add(&"n".repeat(1023), true)), Expect::Succeed);
        assert!(matches!(
            d.expect(&Op::Discard { offset: 0, len: 0 }),
            Expect::Either(_)
        ));
        let mut d = d;
        d.apply(&add("a", true));
        let w = Op::Writes {
            writes: vec![(0, 1), (3 << 16, 1)],
        };
        assert_eq!(d.expect(&w), Expect::Succeed);
        d.apply(&w);
        assert_eq!(d.bitmaps["a"].bits, vec![(0, 1), (3, 4)]);
        let past = Op::Writes {
            writes: vec![(0, 1), (1 << 20, 1)],
        };
        assert!(matches!(d.expect(&past), Expect::Refuse(_)));
    }
}
