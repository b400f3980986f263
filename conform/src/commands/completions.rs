//! `qcow2-conform completions SHELL` and `qcow2-conform man`: the shell
//! completion script and the manual pages, both generated from the clap
//! definitions in [`crate::cli`] (clap_complete, clap_mangen).

use crate::cli::Cli;
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::io::Write;
use std::path::Path;

/// The completion script for `shell` on standard output.
pub fn completions(shell: clap_complete::Shell) -> Result<i32> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, "qcow2-conform", &mut out);
    out.flush()?;
    Ok(0)
}

/// The top-level manual page on standard output; with `out`, that page as
/// `qcow2-conform.1` and one page per visible subcommand
/// (`qcow2-conform-run.1`, ...) in the directory `out`.
pub fn man(out: Option<&Path>) -> Result<i32> {
    let cmd = Cli::command();
    let Some(dir) = out else {
        let mut stdout = std::io::stdout().lock();
        clap_mangen::Man::new(cmd).render(&mut stdout)?;
        stdout.flush()?;
        return Ok(0);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut pages = vec![("qcow2-conform".to_owned(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let bin = format!("qcow2-conform {}", sub.get_name());
        pages.push((
            format!("qcow2-conform-{}", sub.get_name()),
            sub.clone().bin_name(bin),
        ));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(page).title(name).render(&mut buf)?;
        std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(0)
}
