//! `findings-tables`: rewrites the generated count tables of
//! `docs/findings.md` from the pinned matrices in `snapshots/`
//! ([`conform::matrix`]); with `--check`, changes nothing and exits 1 when
//! the doc is out of date.
//!
//! `cargo run -p conform --bin findings-tables [-- --check]`

use anyhow::{Context, Result};
use std::path::Path;

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let check = std::env::args().skip(1).any(|a| a == "--check");
    let pinned = conform::matrix::read_pinned(&root.join("snapshots"))?;
    let doc_path = root.join("docs/findings.md");
    let doc = std::fs::read_to_string(&doc_path)
        .with_context(|| format!("cannot read {}", doc_path.display()))?;
    let new = conform::matrix::splice(&doc, &conform::matrix::render_tables(&pinned))?;
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
