//! Tests of the semantic model's operations ([`super::state`]).

use super::*;

fn add(name: &str, gbits: u8) -> Op {
    Op::add(name, gbits, true, false)
}

#[test]
fn writes_set_touched_granules_of_enabled_bitmaps_only() {
    let mut d = Disk::new(1 << 20);
    d.apply(&add("a", 16));
    d.apply(&add("b", 12));
    d.apply(&Op::Disable { name: "b".into() });
    d.apply(&Op::Write {
        offset: 1000,
        len: 70_000,
    });
    d.apply(&Op::Discard {
        offset: 300_000,
        len: 1,
    });
    assert_eq!(d.bitmaps["a"].bits, vec![(0, 2), (4, 5)]);
    assert!(d.bitmaps["b"].bits.is_empty());
    assert_eq!(
        d.expect(&Op::Write {
            offset: 1 << 20,
            len: 1
        }),
        Expect::Refuse(format!(
            "{}+1 lies past the end of the disk ({})",
            1 << 20,
            1 << 20
        ))
    );
}

#[test]
fn merge_crosses_granularities() {
    let mut d = Disk::new(1 << 20);
    d.apply(&add("fine", 12));
    d.apply(&Op::Write {
        offset: 70_000,
        len: 1,
    });
    d.apply(&Op::add("coarse", 16, false, true));
    d.apply(&Op::Merge {
        target: "coarse".into(),
        sources: vec!["fine".into()],
    });
    assert_eq!(d.bitmaps["coarse"].bits, vec![(1, 2)]);
    assert!(!d.bitmaps["coarse"].enabled);
    d.apply(&Op::Merge {
        target: "fine".into(),
        sources: vec!["coarse".into()],
    });
    assert_eq!(d.bitmaps["fine"].bits, vec![(16, 32)]);
}

#[test]
fn refusals() {
    let mut d = Disk::one_loaded("old", true);
    assert!(matches!(d.expect(&add("old", 16)), Expect::Refuse(_)));
    assert!(matches!(
        d.expect(&Op::Clear { name: "old".into() }),
        Expect::Refuse(_)
    ));
    assert!(matches!(
        d.expect(&Op::Merge {
            target: "x".into(),
            sources: vec![]
        }),
        Expect::Refuse(_)
    ));
    assert!(matches!(d.expect(&add("tiny", 8)), Expect::Either(_)));
    assert!(d.bitmaps["old"].bits.is_empty() && !d.bitmaps["old"].enabled);
    d.apply(&Op::Write {
        offset: 0,
        len: 1 << 20,
    });
    assert!(d.bitmaps["old"].bits.is_empty());
    assert_eq!(
        d.expect(&Op::Remove { name: "old".into() }),
        Expect::Succeed
    );
    d.apply(&Op::Remove { name: "old".into() });
    assert!(d.removed.contains("old") && d.on_image.is_empty());
}

#[test]
fn resize_keeps_drops_and_leaves_grown_area_open() {
    let mut d = Disk::new(3 * 65_536 + 512);
    d.apply(&add("a", 16));
    d.apply(&Op::Write {
        offset: 0,
        len: 3 * 65_536 + 512,
    });
    assert_eq!(d.bitmaps["a"].bits, vec![(0, 4)]);
    d.apply(&Op::Resize { size: 8 * 65_536 });
    assert_eq!(d.bitmaps["a"].bits, vec![(0, 4)]);
    assert_eq!(d.bitmaps["a"].unspecified, vec![(4, 8)]);
    assert!(d.bitmaps["a"].matches(&[(0, 6)]));
    assert!(!d.bitmaps["a"].matches(&[(0, 3)]));
    assert_eq!(d.bitmaps["a"].content_sha256(d.size), None);
    d.apply(&Op::Write {
        offset: 5 * 65_536,
        len: 1,
    });
    assert_eq!(d.bitmaps["a"].unspecified, vec![(4, 5), (6, 8)]);
    d.apply(&Op::Resize { size: 2 * 65_536 });
    assert_eq!(d.bitmaps["a"].bits, vec![(0, 2)]);
    assert!(d.bitmaps["a"].unspecified.is_empty());
    d.apply(&Op::Clear { name: "a".into() });
    assert_eq!(d.bitmaps["a"].dirty_ranges(d.size), vec![]);
}

#[test]
fn persistent_add_on_a_version_2_image_must_be_refused() {
    let d = Disk::new(1 << 20).with_version(2);
    assert!(matches!(d.expect(&add("a", 16)), Expect::Refuse(m) if m.contains("version 2")));
    let transient = Op::add("t", 16, false, false);
    assert_eq!(d.expect(&transient), Expect::Succeed);
    assert_eq!(Disk::new(1 << 20).expect(&add("a", 16)), Expect::Succeed);
}

#[test]
fn the_65536th_persistent_bitmap_may_be_refused() {
    let loaded =
        (0..MAX_BITMAPS).map(|i| (format!("{i}"), Bitmap::loaded(16, false, false, Vec::new())));
    let d = Disk::opened(1 << 20, loaded);
    assert!(matches!(d.expect(&add("one-more", 16)), Expect::Either(m) if m.contains("65535")));
    let transient = Op::add("t", 16, false, false);
    assert_eq!(d.expect(&transient), Expect::Succeed);
    let mut fewer = d.clone();
    fewer.apply(&Op::Remove { name: "0".into() });
    assert_eq!(fewer.expect(&add("one-more", 16)), Expect::Succeed);
}

#[test]
fn a_directory_past_its_byte_limit_may_be_refused() {
    // 64,600 entries of 1,040 bytes (24 + a 1,016-byte name) fill
    // 67,184,000 bytes, past 1024 * 65535 = 67,107,840, while their
    // number stays under 65,535.
    let name = |i: usize| format!("{i:0>1016}");
    let loaded = (0..64_600).map(|i| (name(i), Bitmap::loaded(16, false, false, Vec::new())));
    let d = Disk::opened(1 << 20, loaded);
    assert!(
        matches!(d.expect(&add(&name(70_000), 16)), Expect::Either(m) if m.contains("directory"))
    );
    assert_eq!(entry_bytes(1), 32);
    assert_eq!(entry_bytes(8), 32);
    assert_eq!(entry_bytes(9), 40);
}

#[test]
fn a_merge_without_sources_may_be_refused_or_do_nothing() {
    let mut d = Disk::new(1 << 20);
    d.apply(&add("a", 16));
    d.apply(&Op::Write { offset: 0, len: 1 });
    let empty = Op::Merge {
        target: "a".into(),
        sources: vec![],
    };
    assert!(matches!(d.expect(&empty), Expect::Either(_)));
    let before = d.clone();
    d.apply(&empty);
    assert_eq!(d, before);
}

#[test]
fn discard_sets_bits_only_when_the_node_carries_it_out() {
    let discard = Op::Discard {
        offset: 65_536,
        len: 65_536,
    };
    let mut unmap = Disk::new(1 << 20).with_discard(DiscardMode::Unmap);
    unmap.apply(&add("a", 16));
    unmap.apply(&discard);
    assert_eq!(unmap.bitmaps["a"].bits, vec![(1, 2)]);
    assert!(!unmap.bitmaps["a"].matches(&[]));

    let mut ignore = Disk::new(1 << 20).with_discard(DiscardMode::Ignore);
    ignore.apply(&add("a", 16));
    ignore.apply(&Op::Write { offset: 0, len: 1 });
    ignore.apply(&Op::Discard {
        offset: 0,
        len: 3 * 65_536,
    });
    let a = &ignore.bitmaps["a"];
    assert_eq!(a.bits, vec![(0, 1)]);
    assert_eq!(a.unspecified, vec![(1, 3)]);
    // Either answer is accepted for the dropped discard's granules, the
    // written one must stay set.
    assert!(a.matches(&[(0, 1)]) && a.matches(&[(0, 3)]));
    assert!(!a.matches(&[(1, 3)]));
    // A later real write there makes the granule definite again.
    ignore.apply(&Op::Write {
        offset: 65_536,
        len: 1,
    });
    assert_eq!(ignore.bitmaps["a"].unspecified, vec![(2, 3)]);
}
