//! The one sanitiser for every human and markup output: the terminal
//! (the matrix, `check` and `dump`, `report diff`, `corpus verify`, every
//! message on standard error), JUnit and HTML. Text from a corpus or from
//! a program under test (case IDs, bitmap and feature names, error
//! messages, standard error) may hold anything; what could act on a
//! terminal or break XML is shown as a visible escape instead:
//!
//! - C0 control characters except tab and newline (ESC, so CSI and OSC
//!   sequences, BEL, backspace, carriage return, NUL, ...), DEL and the
//!   C1 controls U+0080-U+009F, as `\x1b`;
//! - the bidirectional-text controls (U+061C, U+200E-U+200F,
//!   U+202A-U+202E, U+2066-U+2069), which reorder what a reader sees, as
//!   `\u{202e}`;
//! - Unicode noncharacters (U+FDD0-U+FDEF and the last two code points of
//!   every plane, U+FFFE and U+FFFF among them), which XML 1.0 forbids or
//!   discourages, as `\u{ffff}`.
//!
//! A Rust string holds no surrogate, so every other character is one XML
//! allows. [`clean`] is the text for a terminal; [`markup`] is the text
//! for XML and HTML (cleaned, then `&`, `<`, `>`, `"` and `'` escaped).

use std::borrow::Cow;
use std::fmt::Write as _;

/// True for a character that [`clean`] replaces.
pub fn is_unsafe(c: char) -> bool {
    let u = c as u32;
    match u {
        0x09 | 0x0a => false,
        0x00..=0x1f | 0x7f..=0x9f => true,
        0x061c | 0x200e | 0x200f | 0x202a..=0x202e | 0x2066..=0x2069 => true,
        0xfdd0..=0xfdef => true,
        _ => u & 0xfffe == 0xfffe,
    }
}

/// The visible form of an unsafe character.
fn escaped(o: &mut String, c: char) {
    let u = c as u32;
    if u < 0x100 {
        let _ = write!(o, "\\x{u:02x}");
    } else {
        let _ = write!(o, "\\u{{{u:x}}}");
    }
}

/// `s` with every unsafe character ([`is_unsafe`]) shown as an escape;
/// tabs and newlines kept.
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) {
            escaped(&mut o, c);
        } else {
            o.push(c);
        }
    }
    Cow::Owned(o)
}

/// `s` on one line: [`clean`], with newlines and tabs shown as escapes too
/// (for a field that must not start a new line, such as a table cell).
pub fn one_line(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) || c == '\n' || c == '\t') {
        return Cow::Borrowed(s);
    }
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c if is_unsafe(c) => escaped(&mut o, c),
            c => o.push(c),
        }
    }
    Cow::Owned(o)
}

/// `s` for XML or HTML element content and quoted attribute values:
/// [`clean`], then the five markup characters as entities.
pub fn markup(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if is_unsafe(c) => escaped(&mut o, c),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use crate::runner::report::sanitise::*;

    #[test]
    fn control_sequences_become_visible() {
        assert_eq!(clean("plain\ttext\n"), "plain\ttext\n");
        assert!(matches!(clean("plain"), Cow::Borrowed(_)));
        assert_eq!(clean("\x1b]0;title\x07"), "\\x1b]0;title\\x07");
        assert_eq!(clean("a\x1b[2Jb\rc"), "a\\x1b[2Jb\\x0dc");
        assert_eq!(clean("\u{9b}31m"), "\\x9b31m");
        assert_eq!(clean("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(
            clean("\u{ffff}\u{fffe}\u{1fffe}"),
            "\\u{ffff}\\u{fffe}\\u{1fffe}"
        );
        assert_eq!(clean("\0\x7f"), "\\x00\\x7f");
        assert_eq!(clean("é ü 日本"), "é ü 日本");
        assert_eq!(one_line("a\nb\tc"), "a\\nb\\tc");
    }

    #[test]
    fn markup_is_escaped_and_well_formed() {
        assert_eq!(
            markup("<a href='x'>&\"\u{ffff}\x1b"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;\\u{ffff}\\x1b"
        );
        assert_eq!(markup("line\nnext\ttab"), "line\nnext\ttab");
    }
}
