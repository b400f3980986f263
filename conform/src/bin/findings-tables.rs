//! `findings-tables`: rewrites the generated count tables of
//! `docs/findings.md` from the pinned matrices in `snapshots/`
//! ([`conform::matrix`]) and its obligations table from the corpus, the
//! model and the same matrices ([`conform::obligations_table`]); with
//! `--check`, changes nothing and exits 1 when the doc is out of date.
//!
//! `cargo run -p conform --bin findings-tables [-- --check]`

use anyhow::{Context, Result};
use std::path::Path;

/// `doc` with both generated blocks rewritten.
fn generated(root: &Path, doc: &str, pinned: &[conform::matrix::PinnedMatrix]) -> Result<String> {
    use conform::obligations_table as ot;
    let doc = conform::matrix::splice(doc, &conform::matrix::render_tables(pinned))?;
    let cases = ot::read_corpus(&root.join("corpus"))?;
    Ok(conform::matrix::splice_between(
        &doc,
        ot::BEGIN,
        ot::END,
        &ot::render(pinned, &cases),
    )?)
}

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let check = std::env::args().skip(1).any(|a| a == "--check");
    let pinned = conform::matrix::read_pinned(&root.join("snapshots"))?;
    let doc_path = root.join("docs/findings.md");
    let doc = std::fs::read_to_string(&doc_path)
        .with_context(|| format!("cannot read {}", doc_path.display()))?;
    let new = generated(&root, &doc, &pinned)?;
    if new == doc {
        eprintln!("findings-tables: {} is up to date", doc_path.display());
    } else if check {
        eprintln!(
            "findings-tables: {} is out of date: run `cargo run -p conform --bin findings-tables`",
            doc_path.display()
        );
        std::process::exit(1);
    } else {
        std::fs::write(&doc_path, new)
            .with_context(|| format!("cannot write {}", doc_path.display()))?;
        eprintln!(
            "findings-tables: rewrote the tables of {} from {} pinned matrices",
            doc_path.display(),
            pinned.len()
        );
    }
    Ok(())
}
