//! Text helpers shared by the runner's modules: bitmap names and range
//! lists shortened for messages, and command lines quoted for a shell.

use std::ffi::OsStr;
use std::process::Command;

/// A bitmap name cut to a readable length for messages.
pub fn short(name: &str) -> String {
    if name.chars().count() <= 40 {
        format!("{name:?}")
    } else {
        let head: String = name.chars().take(32).collect();
        format!("{head:?}... ({} chars)", name.chars().count())
    }
}

/// Half-open byte ranges as `[a..b, c..d]`, at most `most` of them, then
/// how many more there are.
pub fn show_ranges(r: &[(u64, u64)], most: usize) -> String {
    let parts: Vec<String> = r
        .iter()
        .take(most)
        .map(|(a, b)| format!("{a}..{b}"))
        .collect();
    let more = if r.len() > most {
        format!(" (+{} more)", r.len() - most)
    } else {
        String::new()
    };
    format!("[{}]{more}", parts.join(", "))
}

/// Quotes a command line for display (and for pasting into a shell).
pub fn command_line(cmd: &Command) -> String {
    let line = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ");
    match cmd.get_current_dir() {
        Some(dir) => format!("(cd {} && {line})", shell_quote(dir.as_os_str())),
        None => line,
    }
}

/// One word quoted for a shell: as it is when it holds only characters a
/// shell leaves alone, else in single quotes.
pub fn shell_quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=,:+@%".contains(&b));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_command_lines() {
        let mut c = Command::new("qemu-img");
        c.args(["info", "a b", "x'y"]);
        assert_eq!(command_line(&c), r"qemu-img info 'a b' 'x'\''y'");
    }
}
