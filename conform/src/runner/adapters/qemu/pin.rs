//! The whole block graph QEMU opens for a case image, spelled out in its
//! options so that QEMU reads no file name from the image itself.
//!
//! Given only an image's path, QEMU reads the backing file name, its
//! format and the external data file name from the header (spec "Header"
//! and "Header extensions") and opens whatever they name. The runner
//! checks those names first ([`crate::runner::corpus::references`]), but
//! defence in depth wants the check and QEMU to agree by construction:
//! every tool invocation on a case image names the qcow2 node, its
//! `file`, its `backing` (`null` when there is none) and its `data-file`
//! (when incompatible bit 2 is set and the extension names one), and each
//! backing image in turn, from the same reading of the header the check
//! makes. QEMU then opens exactly the nodes named here.
//!
//! A name is followed only as the model's layered reads follow it
//! ([`references::followable`]: a plain relative name of a regular file
//! beside the file that holds it); any other name means the tool is not
//! started ([`PinError`]). Paths are formed as QEMU forms them (the
//! holder's directory prefix and the name), so its messages name the same
//! files; the JSON filename QEMU echoes back is turned back into the
//! image's path by [`unpin`].
//!
//! A backing file's format is the "backing file format name" extension's
//! when present, else a probe: qcow2 when it starts with the qcow2 magic
//! and a version of 2 or more, raw otherwise. A backing file of another
//! named format is given to QEMU under that driver, with `backing: null`.

use crate::runner::corpus::references::{self, Kind, Names};
use serde_json::{json, Map, Value};
use std::io::Read;
use std::path::Path;

/// Backing chains deeper than this are refused (a loop, most likely), as
/// the model's layered reads refuse them.
const MAX_DEPTH: usize = 16;

/// Why a tool is not started on an image.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{holder}: the {kind} name {name:?} {why}: QEMU not started (only files beside the image are given to it)")]
    Refused {
        holder: String,
        kind: Kind,
        name: String,
        why: &'static str,
    },
    #[error("cannot read the file names in {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: the backing chain is deeper than {MAX_DEPTH} images: QEMU not started")]
    TooDeep(String),
    #[error("{0:?} is not UTF-8: QEMU's JSON options cannot name it")]
    NotUtf8(String),
}

/// The format driver of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    Qcow2,
    Raw,
    /// A format named by the backing format extension other than qcow2
    /// and raw (QEMU may refuse it: an unknown driver).
    Other(String),
}

/// One node of the graph: a format driver over a `file` protocol node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub driver: Driver,
    /// The path QEMU opens (as QEMU would form it).
    pub path: String,
    /// The backing node (qcow2 only).
    pub backing: Option<Box<Node>>,
    /// The external data file's path (qcow2 with incompatible bit 2 set
    /// and a name).
    pub data_file: Option<String>,
}

/// The pinned graph of the qcow2 image at `image`.
pub fn graph(image: &Path) -> Result<Node, PinError> {
    let path = image
        .to_str()
        .ok_or_else(|| PinError::NotUtf8(image.to_string_lossy().into_owned()))?;
    qcow2(path.to_owned(), 0)
}

fn qcow2(path: String, depth: usize) -> Result<Node, PinError> {
    if depth > MAX_DEPTH {
        return Err(PinError::TooDeep(path));
    }
    let names = references::read_names(Path::new(&path)).map_err(|source| PinError::Read {
        path: path.clone(),
        source,
    })?;
    let backing = match names.backing() {
        None => None,
        Some(name) => {
            let target = follow(&path, Kind::Backing, name)?;
            Some(Box::new(backing_node(target, &names, depth)?))
        }
    };
    let data_file = match &names.data_file {
        Some(name) if names.data_file_bit && !name.is_empty() => {
            Some(follow(&path, Kind::DataFile, name)?)
        }
        _ => None,
    };
    Ok(Node {
        driver: Driver::Qcow2,
        path,
        backing,
        data_file,
    })
}

/// The backing node at `path`, in the format `holder` names or QEMU's
/// probe would find.
fn backing_node(path: String, holder: &Names, depth: usize) -> Result<Node, PinError> {
    let driver = match holder.backing_format.as_deref() {
        Some(b"qcow2") => Driver::Qcow2,
        Some(b"raw") => Driver::Raw,
        Some(other) => Driver::Other(String::from_utf8_lossy(other).into_owned()),
        None if probe_qcow2(Path::new(&path)) => Driver::Qcow2,
        None => Driver::Raw,
    };
    if driver == Driver::Qcow2 {
        return qcow2(path, depth + 1);
    }
    Ok(Node {
        driver,
        path,
        backing: None,
        data_file: None,
    })
}

/// Whether the file at `path` starts as a qcow2 image does (magic, then a
/// version of 2 or more); a file that cannot be read is not.
fn probe_qcow2(path: &Path) -> bool {
    let mut head = [0u8; 8];
    let read = crate::runner::corpus::image_state::open_regular(path)
        .ok()
        .and_then(|mut f| f.read_exact(&mut head).ok());
    read.is_some()
        && head[..4] == *b"QFI\xfb"
        && u32::from_be_bytes([head[4], head[5], head[6], head[7]]) >= 2
}

/// The path QEMU opens for `name` read from the file at `holder`, when
/// the model follows it ([`references::followable`]).
fn follow(holder: &str, kind: Kind, name: &[u8]) -> Result<String, PinError> {
    let shown = || crate::runner::text::short(&String::from_utf8_lossy(name));
    let refused = |why| PinError::Refused {
        holder: holder.to_owned(),
        kind,
        name: shown(),
        why,
    };
    let name = std::str::from_utf8(name).map_err(|_| refused("is not UTF-8"))?;
    let dir = Path::new(holder)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !references::followable(name, dir) {
        return Err(refused(
            "is not a plain relative name of a regular file beside it",
        ));
    }
    // As QEMU combines a relative name with its holder's path: the
    // holder's directory prefix (up to its last `/`), then the name.
    Ok(match holder.rfind('/') {
        Some(i) => format!("{}{name}", &holder[..=i]),
        None => name.to_owned(),
    })
}

/// Which children a tool opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// The tool opens the backing chain: it is named.
    Open,
    /// The tool opens the image without its backing file (`qemu-img
    /// info`, `qemu-img bitmap`, which refuse backing options): `backing`
    /// is `null` at every level.
    Skip,
}

impl Node {
    /// The node's options as QEMU's JSON: `driver`, `file`, and for qcow2
    /// `backing` and `data-file`.
    pub fn options(&self, backing: Backing) -> Map<String, Value> {
        let mut m = Map::new();
        let driver = match &self.driver {
            Driver::Qcow2 => "qcow2",
            Driver::Raw => "raw",
            Driver::Other(d) => d,
        };
        m.insert("driver".into(), json!(driver));
        m.insert(
            "file".into(),
            json!({"driver": "file", "filename": self.path}),
        );
        if self.driver == Driver::Raw {
            return m;
        }
        let b = match (&self.backing, backing) {
            (Some(b), Backing::Open) => Value::Object(b.options(backing)),
            _ => Value::Null,
        };
        m.insert("backing".into(), b);
        if let Some(d) = &self.data_file {
            m.insert("data-file".into(), json!({"driver": "file", "filename": d}));
        }
        m
    }
}

/// `options` as a QEMU filename (`json:{...}`).
pub fn json_filename(options: &Map<String, Value>) -> String {
    format!("json:{}", Value::Object(options.clone()))
}

/// `text` with every `json:{...}` QEMU printed (the pinned filename, as
/// given or as QEMU writes its options back) replaced by `shown`, the
/// image's path: QEMU's messages keep the meaning they had when the tool
/// was given the bare path.
pub fn unpin(text: &str, shown: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("json:{") {
        out.push_str(&rest[..at]);
        let body = &rest[at + "json:".len()..];
        match object_end(body) {
            Some(end) => {
                out.push_str(shown);
                rest = &body[end..];
            }
            None => {
                out.push_str(&rest[at..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The byte offset just past the JSON object that `s` starts with (braces
/// counted outside strings), `None` when it does not close.
fn object_end(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_filenames_turn_back_into_the_image() {
        let shown = "/w/image.qcow2";
        let msg = r#"qemu-img: Could not open 'json:{"driver": "qcow2", "file": {"filename": "/w/a}\"b"}}': bad"#;
        assert_eq!(
            unpin(msg, shown),
            "qemu-img: Could not open '/w/image.qcow2': bad"
        );
        assert_eq!(unpin("json:{ open", shown), "json:{ open");
        assert_eq!(unpin("no json here", shown), "no json here");
    }

    #[test]
    fn names_are_combined_as_qemu_combines_them() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("base.raw"), b"").unwrap();
        let holder = format!("{}/top.qcow2", d.path().display());
        assert_eq!(
            follow(&holder, Kind::Backing, b"./base.raw").unwrap(),
            format!("{}/./base.raw", d.path().display())
        );
        assert!(follow(&holder, Kind::Backing, b"/etc/passwd").is_err());
        assert!(follow(&holder, Kind::DataFile, b"../x").is_err());
        assert!(follow(&holder, Kind::DataFile, b"nbd:localhost:1").is_err());
    }

    #[test]
    fn a_qcow2_node_names_every_child() {
        let n = Node {
            driver: Driver::Qcow2,
            path: "/w/i.qcow2".into(),
            backing: Some(Box::new(Node {
                driver: Driver::Raw,
                path: "/w/b.raw".into(),
                backing: None,
                data_file: None,
            })),
            data_file: Some("/w/d.raw".into()),
        };
        let open = Value::Object(n.options(Backing::Open));
        assert_eq!(open["backing"]["file"]["filename"], "/w/b.raw");
        assert_eq!(open["data-file"]["filename"], "/w/d.raw");
        assert_eq!(open["file"]["filename"], "/w/i.qcow2");
        let skip = Value::Object(n.options(Backing::Skip));
        assert_eq!(skip["backing"], Value::Null);
    }
}
