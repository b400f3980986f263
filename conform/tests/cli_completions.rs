//! `qcow2-conform completions SHELL` and `qcow2-conform man`: the scripts
//! are accepted by the shells themselves, and the manual pages name every
//! visible subcommand and their options.

use std::process::Command;

fn conform() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qcow2-conform"))
}

fn stdout_of(args: &[&str]) -> String {
    let out = conform().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_completion_parses_and_completes_subcommands_and_flags() {
    let script = stdout_of(&["completions", "bash"]);
    for word in ["corpus", "campaign", "--fail-on", "--impl", "completions"] {
        assert!(script.contains(word), "bash completion lacks {word}");
    }
    // bash itself must accept the script (syntax check, then load it and
    // ask for the completion of `qcow2-conform ru`).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qcow2-conform.bash");
    std::fs::write(&path, &script).unwrap();
    let probe = format!(
        "source {}; COMP_WORDS=(qcow2-conform ru); COMP_CWORD=1; COMP_LINE='qcow2-conform ru'; \
         COMP_POINT=${{#COMP_LINE}}; _qcow2__conform qcow2-conform ru qcow2-conform; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path.display()
    );
    let out = Command::new("bash").arg("-c").arg(&probe).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let words = String::from_utf8(out.stdout).unwrap();
    assert!(
        words.lines().any(|w| w == "run"),
        "completions of `ru`: {words:?}"
    );
}

#[test]
fn zsh_and_fish_completions_are_generated() {
    assert!(stdout_of(&["completions", "zsh"]).starts_with("#compdef qcow2-conform"));
    assert!(stdout_of(&["completions", "fish"]).contains("complete -c qcow2-conform"));
    let bad = conform().args(["completions", "cmd.exe"]).output().unwrap();
    assert_eq!(
        bad.status.code(),
        Some(1),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_pages_cover_every_command() {
    let top = stdout_of(&["man"]);
    assert!(
        top.starts_with(".ie") || top.contains(".TH qcow2-conform 1"),
        "{top}"
    );
    for sub in ["check", "dump", "run", "campaign", "corpus", "completions"] {
        assert!(top.contains(sub), "top-level page lacks {sub}");
    }
    let dir = tempfile::tempdir().unwrap();
    stdout_of(&["man", "--out", dir.path().to_str().unwrap()]);
    let run = std::fs::read_to_string(dir.path().join("qcow2-conform-run.1")).unwrap();
    assert!(run.contains(".TH qcow2-conform-run 1"), "{run}");
    assert!(
        run.contains("fail\\-on"),
        "the run page documents --fail-on"
    );
    assert!(!dir.path().join("qcow2-conform-adapter-probe.1").exists());
}
