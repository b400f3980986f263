//! A running node reopened read-only, and read-write again (QMP
//! `blockdev-reopen` with another `read-only`; a commit job does the same
//! to a backing file).
//!
//! The spec describes files, so the reading is this project's: it follows
//! from the spec's `in_use` flag ("the bitmap was not saved correctly" and
//! "must not be used" when set) and from what a read-only node may do
//! ([`super::readonly`]):
//! - going read-only, the node gives up writing the image, so every
//!   persistent bitmap it holds must be stored first, as a clean close
//!   would store it (`in_use` clear, bits exact); an inconsistent bitmap
//!   stays `in_use`. The bitmaps stay loaded, with their bits, and from
//!   then on count as loaded from a read-only image: changes to them may
//!   be refused, guest writes and resizes must be. Until the node is
//!   writable again, whatever happens to it, the file keeps what the
//!   reopen stored (a persistent bitmap added meanwhile is never stored);
//! - going read-write again, the node takes the image back: every bitmap
//!   the reopen stored is in the node's hands again and must be marked
//!   `in_use` in the image, as at an open, so that a crash from then on
//!   leaves them `in_use`; the bits in the node are kept;
//! - a reopen that changes nothing changes nothing, and may be refused;
//!   an inactive node is
//!   not reopened (the harness refuses it, the model allows either), and
//!   with an export holding a bitmap the reopen may be refused (the export
//!   holds the node).

use super::state::{Disk, Expect, Origin};

impl Disk {
    /// What a reopen to `read_only` requires.
    pub(super) fn expect_reopen(&self, read_only: bool) -> Expect {
        if read_only == self.read_only {
            // QEMU stores the bitmaps again on every read-only reopen, and
            // refuses when one it accepted on the read-only node cannot
            // be written.
            Expect::Either("a reopen that changes nothing may be refused".into())
        } else if !self.active {
            Expect::Either("an inactive node is not reopened".into())
        } else if let Some(n) = self.exported.iter().next() {
            Expect::Either(format!(
                "an export holds bitmap {n:?}: the reopen may be refused"
            ))
        } else {
            Expect::Succeed
        }
    }

    /// A reopen that succeeded (see the module documentation).
    pub(super) fn reopen(&mut self, read_only: bool) {
        if !self.active || read_only == self.read_only {
            return;
        }
        if read_only {
            let mut stored = std::collections::BTreeMap::new();
            for (n, b) in self.bitmaps.iter_mut().filter(|(_, b)| b.persistent) {
                b.origin = Origin::Loaded;
                stored.insert(n.clone(), b.clone());
            }
            self.frozen = Some(stored);
        } else if let Some(stored) = self.frozen.take() {
            for n in stored.keys() {
                if self.bitmaps.contains_key(n) {
                    self.on_image.insert(n.clone());
                } else {
                    self.removed.insert(n.clone());
                }
            }
        }
        self.read_only = read_only;
    }
}

#[cfg(test)]
mod tests {
    use super::super::lifecycle::FileBitmap;
    use super::super::node::tests::add;
    use super::super::state::{Bitmap, Op};
    use super::*;

    #[test]
    fn read_only_stores_and_read_write_marks_in_use() {
        let mut d = Disk::opened(
            1 << 20,
            [(
                "old".to_string(),
                Bitmap::loaded(16, true, true, Vec::new()),
            )],
        );
        d.apply(&add("p", true));
        d.apply(&add("t", false));
        d.apply(&Op::Write {
            offset: 70_000,
            len: 1,
        });
        let ro = Op::Reopen { read_only: true };
        assert_eq!(d.expect(&ro), Expect::Succeed);
        d.apply(&ro);
        assert!(d.read_only);
        // Stored as a clean close stores them; the in_use one stays so.
        let file = d.close();
        assert!(
            matches!(&file.bitmaps["p"], FileBitmap::Stored { bits, auto: true, .. } if *bits == vec![(1, 2)])
        );
        assert!(matches!(file.bitmaps["old"], FileBitmap::InUse { .. }));
        assert!(!file.bitmaps.contains_key("t"));
        assert_eq!(d.crash(), file, "nothing in the file is in use");
        // Guest writes refused; changes to the stored bitmap may be; the
        // transient one works; a persistent add may be, and is not stored.
        assert!(matches!(
            d.expect(&Op::Write { offset: 0, len: 1 }),
            Expect::Refuse(_)
        ));
        assert!(matches!(
            d.expect(&Op::Clear { name: "p".into() }),
            Expect::Either(_)
        ));
        assert_eq!(d.expect(&Op::Clear { name: "t".into() }), Expect::Succeed);
        assert!(matches!(d.expect(&add("q", true)), Expect::Either(_)));
        d.apply(&add("q", true));
        assert!(!d.close().bitmaps.contains_key("q"));
        // A second reopen read-only changes nothing (and may be refused).
        assert!(matches!(d.expect(&ro), Expect::Either(_)));
        let before = d.clone();
        d.apply(&ro);
        assert_eq!(d, before);

        let rw = Op::Reopen { read_only: false };
        assert_eq!(d.expect(&rw), Expect::Succeed);
        d.apply(&rw);
        assert!(!d.read_only && d.frozen.is_none());
        // The stored bitmaps are the node's again: in_use after a crash;
        // the one added while read-only was never in the image.
        let crashed = d.crash();
        assert!(matches!(crashed.bitmaps["p"], FileBitmap::InUse { .. }));
        assert!(matches!(crashed.bitmaps["old"], FileBitmap::InUse { .. }));
        assert!(!crashed.bitmaps.contains_key("q"));
        // Writes record again; a clean close stores everything persistent.
        d.apply(&Op::Write { offset: 0, len: 1 });
        assert_eq!(d.bitmaps["p"].bits, vec![(0, 2)]);
        let closed = d.close();
        assert!(matches!(closed.bitmaps["q"], FileBitmap::Stored { .. }));
    }

    #[test]
    fn inactive_or_exported_nodes_may_refuse() {
        let mut d = Disk::new(1 << 20);
        d.apply(&add("a", true));
        d.apply(&Op::Export { name: "a".into() });
        assert!(matches!(
            d.expect(&Op::Reopen { read_only: true }),
            Expect::Either(_)
        ));
        d.apply(&Op::Unexport { name: "a".into() });
        d.apply(&Op::SetActive { active: false });
        assert!(matches!(
            d.expect(&Op::Reopen { read_only: true }),
            Expect::Either(_)
        ));
        let before = d.clone();
        d.apply(&Op::Reopen { read_only: true });
        assert_eq!(d, before, "an inactive node is not reopened");
    }
}
