//! The count tables of `docs/findings.md` are generated from the pinned
//! matrices in `snapshots/` (`conform::matrix`): this test fails when the
//! doc and the snapshots disagree, and names the command that regenerates
//! the tables. It also holds the crate versions the matrices are keyed by
//! to the versions the workspace pins.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn findings_tables_agree_with_the_pinned_matrices() {
    let pinned = conform::matrix::read_pinned(&root().join("snapshots")).unwrap();
    let families: Vec<&str> = pinned.iter().map(|m| m.family()).collect();
    for f in ["imago", "libqcow", "qcow", "qcow2", "qcow2-rs", "qemu"] {
        assert!(
            families.contains(&f),
            "no pinned matrix for {f}: {families:?}"
        );
    }
    let qemu: Vec<&str> = pinned
        .iter()
        .filter(|m| m.family() == "qemu")
        .map(|m| m.version.as_str())
        .collect();
    assert!(qemu.len() >= 2, "QEMU pinned at one version only: {qemu:?}");
    let doc = std::fs::read_to_string(root().join("docs/findings.md")).unwrap();
    let want = conform::matrix::splice(&doc, &conform::matrix::render_tables(&pinned)).unwrap();
    // The obligations table: from the corpus, the model and the matrices.
    let cases = conform::obligations_table::read_corpus(&root().join("corpus")).unwrap();
    let want = conform::matrix::splice_between(
        &want,
        conform::obligations_table::BEGIN,
        conform::obligations_table::END,
        &conform::obligations_table::render(&pinned, &cases),
    )
    .unwrap();
    assert!(
        doc == want,
        "docs/findings.md's generated tables disagree with snapshots/matrix@*.snap (or the corpus): \
         run `cargo run -p conform --bin findings-tables` (diff: {})",
        first_difference(&doc, &want)
    );
}

/// The first line that differs, for the failure message.
fn first_difference(a: &str, b: &str) -> String {
    a.lines()
        .zip(b.lines())
        .find(|(x, y)| x != y)
        .map(|(x, y)| format!("doc has {x:?}, snapshots give {y:?}"))
        .unwrap_or_else(|| "one is a prefix of the other".into())
}

#[test]
fn crate_versions_are_the_ones_the_workspace_pins() {
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    for (spec, krate) in [
        ("imago", "imago"),
        ("qcow2-rs", "qcow2-rs"),
        ("qcow2", "qcow2"),
        ("qcow", "qcow"),
    ] {
        let v = conform::runner::adapters::versions::version_of(spec).unwrap();
        let line = cargo
            .lines()
            .find(|l| l.starts_with(&format!("{krate} =")))
            .unwrap_or_else(|| panic!("{krate} is not a workspace dependency"));
        assert!(line.contains(&format!("\"={v}\"")), "{spec} {v}: {line}");
    }
}

/// Every obligation is in the table, and every one the corpus can
/// exercise has a case for some implementation of a kind it binds.
#[test]
fn the_obligations_table_lists_every_obligation() {
    let pinned = conform::matrix::read_pinned(&root().join("snapshots")).unwrap();
    let cases = conform::obligations_table::read_corpus(&root().join("corpus")).unwrap();
    let t = conform::obligations_table::render(&pinned, &cases);
    for o in spec_model::Obligation::ALL {
        assert!(
            t.contains(&format!("| `{}`", o.id())),
            "{} missing:\n{t}",
            o.id()
        );
    }
    let row = |id: &str| {
        t.lines()
            .find(|l| l.starts_with(&format!("| `{id}`")))
            .unwrap()
            .to_owned()
    };
    // Obligations the corpus exercises today (a case each).
    for id in [
        "open.unknown-incompatible",
        "open.conforming",
        "write.clear-unknown-autoclear",
        "write.leaves-valid",
        "crypt.refuse-without-key",
        "guest.virtual-size",
        "bitmaps.never-use-in-use",
        "bitmaps.ignore-inconsistent",
        "bitmaps.never-use-invalid",
        "bitmaps.mark-written",
    ] {
        assert!(
            !row(id).contains("| none |"),
            "no case exercises {id}: {}",
            row(id)
        );
    }
}
