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

/// The environment variable that carries a program's address-space limit
/// in bytes ([`crate::runner::process::command`]): the program sets the
/// limit on itself before exec, and [`command_line`] shows it as the
/// equivalent `prlimit --as=BYTES --`.
pub const ADDRESS_LIMIT_ENV: &str = "QCOW2_CONFORM_ADDRESS_LIMIT";

/// Quotes a command line for display (and for pasting into a shell).
pub fn command_line(cmd: &Command) -> String {
    let limit = cmd
        .get_envs()
        .find(|(k, _)| *k == ADDRESS_LIMIT_ENV)
        .and_then(|(_, v)| v);
    let prlimit = limit.map(|bytes| {
        let mut as_arg = std::ffi::OsString::from("--as=");
        as_arg.push(bytes);
        ["prlimit".into(), as_arg, "--".into()]
    });
    let line = prlimit
        .iter()
        .flatten()
        .map(|a| a.as_os_str())
        .chain(std::iter::once(cmd.get_program()))
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
