//! The layout rules of `docs/ARCHITECTURE.md`, checked on the source tree:
//! no source file of the three library crates above 700 lines, no
//! `Result<_, String>` in their code, and no import cycle among `conform`'s
//! modules (a module is a file; an import is any `crate::`, `super::`,
//! `self::` or child-module path in it, `use` statements included).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 700;
const LIBRARY_SRC: [&str; 3] = ["spec-model/src", "generator/src", "conform/src"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn shown(file: &Path) -> String {
    file.strip_prefix(workspace())
        .unwrap_or(file)
        .display()
        .to_string()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every Rust file of the library crates' sources, with its text.
fn library_sources() -> Vec<(PathBuf, String)> {
    let root = workspace();
    LIBRARY_SRC
        .iter()
        .flat_map(|dir| rust_files(&root.join(dir)))
        .map(|file| {
            let text = fs::read_to_string(&file).unwrap();
            (file, text)
        })
        .collect()
}

#[test]
fn no_library_source_file_is_longer_than_the_limit() {
    let mut long = Vec::new();
    for (file, text) in library_sources() {
        let lines = text.lines().count();
        if lines > MAX_LINES {
            long.push(format!("{} ({lines} lines)", shown(&file)));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// The source with comments, string and character literals blanked out
/// (lengths and newlines kept), so that brace counting and path matching
/// see only code.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |c: u8| if c == b'\n' { b'\n' } else { b' ' };
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    out.push(b' ');
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        out.extend([b' ', b' ']);
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        out.extend([b' ', b' ']);
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        out.push(blank(b[i]));
                        i += 1;
                    }
                }
            }
            b'r' if matches!(b.get(i + 1), Some(b'"') | Some(b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                // Raw string r"..." or r#"..."#.
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    out.push(b[i]);
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == b'"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&b'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.extend(b[i..j.min(b.len())].iter().map(|&c| blank(c)));
                i = j;
            }
            b'"' => {
                out.push(b' ');
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        out.push(b' ');
                        i += 1;
                    }
                    if i < b.len() {
                        out.push(blank(b[i]));
                        i += 1;
                    }
                }
                out.push(b' ');
                i += 1;
            }
            b'\'' => {
                // A character literal ('x', '\n', '\u{..}') or a lifetime.
                let end = if b.get(i + 1) == Some(&b'\\') {
                    b[i + 2..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map(|p| i + 2 + p)
                } else if b.get(i + 2) == Some(&b'\'') {
                    Some(i + 2)
                } else {
                    None
                };
                match end {
                    Some(e) => {
                        out.resize(out.len() + (e + 1 - i), b' ');
                        i = e + 1;
                    }
                    None => {
                        out.push(b'\'');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn no_string_errors_in_library_code() {
    let mut found = Vec::new();
    for (file, text) in library_sources() {
        let code = code_only(&text);
        for (at, _) in code.match_indices("Result<") {
            if at > 0 {
                let before = code.as_bytes()[at - 1];
                if before.is_ascii_alphanumeric() || before == b'_' {
                    continue;
                }
            }
            let args = generic_args(&code[at + "Result<".len()..]);
            if args.get(1).is_some_and(|e| e == "String") {
                let line = code[..at].lines().count();
                found.push(format!("{}:{line}", shown(&file)));
            }
        }
    }
    assert!(
        found.is_empty(),
        "Result<_, String> in library code:\n{}",
        found.join("\n")
    );
}

/// The top-level comma-separated arguments up to the `>` that closes the
/// generic list `text` starts inside, whitespace removed.
fn generic_args(text: &str) -> Vec<String> {
    let mut args = vec![String::new()];
    let mut depth = 0i32;
    for c in text.chars() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' if depth == 0 => break,
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                args.push(String::new());
                continue;
            }
            _ => {}
        }
        if !c.is_whitespace() {
            args.last_mut().unwrap().push(c);
        }
    }
    args
}

/// Module path (`["runner", "adapters"]`) of a file under `src`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// `use` trees expanded into paths: `a::{b, c::{d, self}}` gives
/// `a::b`, `a::c::d`, `a::c`.
fn expand_use(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let base = join(prefix, head);
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_use(&inner[start..i], &base, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand_use(&inner[start..], &base, out);
    } else {
        let path = tree.split(" as ").next().unwrap().trim();
        if path.is_empty() {
            return;
        }
        if path == "self" {
            out.push(prefix.to_string());
        } else {
            out.push(join(prefix, path));
        }
    }
}

fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}::{path}"),
    }
}

/// Every module path a file's code names, with the depth of inline modules
/// (`mod tests { .. }`) it was named from.
fn named_paths(code: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    // Byte offset -> inline-module depth, from a brace walk.
    let bytes = code.as_bytes();
    let mut depth_at = vec![0usize; bytes.len() + 1];
    let mut braces = 0usize;
    let mut inline: Vec<usize> = Vec::new();
    // 0: nothing; 1: after `mod`; 2: after `mod NAME`.
    let mut mod_state = 0u8;
    let words: Vec<(usize, &str)> = word_starts(code);
    let mut w = 0;
    for (i, &c) in bytes.iter().enumerate() {
        if w < words.len() && words[w].0 == i {
            mod_state = match (mod_state, words[w].1) {
                (_, "mod") => 1,
                (1, _) => 2,
                _ => 0,
            };
            w += 1;
        }
        match c {
            b'{' => {
                braces += 1;
                if mod_state == 2 {
                    inline.push(braces);
                }
                mod_state = 0;
            }
            b'}' => {
                if inline.last() == Some(&braces) {
                    inline.pop();
                }
                braces = braces.saturating_sub(1);
            }
            b';' => mod_state = 0,
            _ => {}
        }
        depth_at[i] = inline.len();
    }
    // `use` statements.
    let mut search = 0;
    while let Some(p) = code[search..].find("use ") {
        let at = search + p;
        search = at + 4;
        let word_start =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        if !word_start {
            continue;
        }
        let Some(end) = code[at..].find(';') else {
            break;
        };
        let mut paths = Vec::new();
        expand_use(&code[at + 4..at + end], "", &mut paths);
        for path in paths {
            out.push((path, depth_at[at]));
        }
        search = at + end;
    }
    // Paths in code: `crate::x::y`, `super::x`, `self::x`, `name::x`.
    for (start, word) in &words {
        let rest = &code[*start..];
        let mut end = word.len();
        while rest[end..].starts_with("::") {
            let next = &rest[end + 2..];
            let len = next
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(next.len());
            if len == 0 {
                break;
            }
            end += 2 + len;
        }
        if end > word.len() {
            out.push((rest[..end].to_string(), depth_at[*start]));
        }
    }
    out
}

/// Identifier-like words that start a path (not preceded by `::` or a
/// word character).
fn word_starts(code: &str) -> Vec<(usize, &str)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let after_colons = start >= 2 && &b[start - 2..start] == b"::";
            if !after_colons {
                out.push((start, &code[start..i]));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The known module a path lands in, resolved from module `here` (inside
/// `inline` levels of inline modules), or `None` when it leaves the crate.
fn resolve(
    path: &str,
    here: &[String],
    inline: usize,
    modules: &BTreeSet<Vec<String>>,
) -> Option<Vec<String>> {
    let segs: Vec<&str> = path.split("::").map(str::trim).collect();
    let mut abs: Vec<String>;
    let mut rest = &segs[..];
    match segs[0] {
        "crate" => {
            abs = Vec::new();
            rest = &segs[1..];
        }
        "self" => {
            abs = here.to_vec();
            rest = &segs[1..];
        }
        "super" => {
            abs = here.to_vec();
            let mut inline = inline;
            while rest.first() == Some(&"super") {
                if inline > 0 {
                    inline -= 1;
                } else {
                    abs.pop()?;
                }
                rest = &rest[1..];
            }
        }
        first => {
            let mut child = here.to_vec();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
            abs = here.to_vec();
        }
    }
    // Longest prefix that is a known module.
    let mut best = modules.contains(&abs).then(|| abs.clone());
    for seg in rest {
        abs.push(seg.to_string());
        if modules.contains(&abs) {
            best = Some(abs.clone());
        } else {
            break;
        }
    }
    best
}

#[test]
fn conform_modules_import_one_way() {
    let src = workspace().join("conform/src");
    let files: Vec<PathBuf> = rust_files(&src)
        .into_iter()
        .filter(|f| !f.ends_with("main.rs"))
        .collect();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for file in &files {
        let here = module_of(&src, file);
        let code = code_only(&fs::read_to_string(file).unwrap());
        let out = edges.entry(here.clone()).or_default();
        for (path, inline) in named_paths(&code) {
            if let Some(to) = resolve(&path, &here, inline, &modules) {
                if to != here {
                    out.insert(to);
                }
            }
        }
    }
    let cycles = find_cycles(&edges);
    let show = |m: &Vec<String>| {
        if m.is_empty() {
            "crate".to_string()
        } else {
            m.join("::")
        }
    };
    let listed: Vec<String> = cycles
        .iter()
        .map(|(members, walk)| {
            format!(
                "{} (all of: {})",
                walk.iter().map(show).collect::<Vec<_>>().join(" -> "),
                members.iter().map(show).collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    assert!(
        listed.is_empty(),
        "import cycles among conform's modules:\n{}",
        listed.join("\n")
    );
}

/// A module path.
type Module = Vec<String>;

/// Each strongly connected component of more than one module (Tarjan's
/// algorithm): its members, and a closed walk through some of them.
fn find_cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<(BTreeSet<Module>, Vec<Module>)> {
    struct Walk<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        components: Vec<Vec<&'a Vec<String>>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a Vec<String>) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    self.components.push(comp);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    // A closed walk through each component: breadth-first from its first
    // member back to itself, staying inside the component.
    walk.components
        .into_iter()
        .map(|comp| {
            let members: BTreeSet<&Vec<String>> = comp.iter().copied().collect();
            let start = *members.iter().next().unwrap();
            let mut prev: BTreeMap<&Vec<String>, &Vec<String>> = BTreeMap::new();
            let mut queue = std::collections::VecDeque::from([start]);
            let mut closing = None;
            while let Some(v) = queue.pop_front() {
                for w in edges.get(v).into_iter().flatten() {
                    if !members.contains(w) {
                        continue;
                    }
                    if w == start {
                        closing = Some(v);
                        queue.clear();
                        break;
                    }
                    if !prev.contains_key(w) {
                        prev.insert(w, v);
                        queue.push_back(w);
                    }
                }
            }
            let mut path = vec![start.clone()];
            let mut v = closing.unwrap_or(start);
            let mut back = Vec::new();
            while v != start {
                back.push(v.clone());
                v = prev[v];
            }
            back.reverse();
            path.extend(back);
            path.push(start.clone());
            (members.into_iter().cloned().collect(), path)
        })
        .collect()
}

#[test]
fn the_cycle_finder_finds_a_planted_cycle() {
    let m = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    let mut edges = BTreeMap::new();
    edges.insert(m("a"), BTreeSet::from([m("b")]));
    edges.insert(m("b"), BTreeSet::from([m("c")]));
    edges.insert(m("c"), BTreeSet::from([m("a")]));
    edges.insert(m("d"), BTreeSet::from([m("a")]));
    let cycles = find_cycles(&edges);
    let members = BTreeSet::from([m("a"), m("b"), m("c")]);
    assert_eq!(
        cycles,
        vec![(members, vec![m("a"), m("b"), m("c"), m("a")])]
    );
}

#[test]
fn paths_are_resolved_through_use_trees_super_and_inline_modules() {
    let modules: BTreeSet<Vec<String>> = [
        vec![],
        vec!["runner".to_string()],
        vec!["runner".to_string(), "adapters".to_string()],
        vec!["runner".to_string(), "process".to_string()],
    ]
    .into_iter()
    .collect();
    let here = vec!["runner".to_string(), "adapters".to_string()];
    let code = code_only(
        "use super::{process::Proc, Limits};\n// use crate::nothing::Here;\n\
         fn f() { let s = \"crate::runner::process\"; }\n\
         #[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
    );
    let resolved: BTreeSet<Vec<String>> = named_paths(&code)
        .into_iter()
        .filter_map(|(p, inline)| resolve(&p, &here, inline, &modules))
        .collect();
    let want: BTreeSet<Vec<String>> = [
        vec!["runner".to_string(), "process".to_string()],
        vec!["runner".to_string()],
        here.clone(),
    ]
    .into_iter()
    .collect();
    assert_eq!(resolved, want);
    assert_eq!(
        generic_args("Duration, String> rest"),
        vec!["Duration".to_string(), "String".to_string()]
    );
}
