//! Reading other processes' numbers from `/proc` (Linux): which processes
//! there are, and the fields of their `stat`, `io` and `status` files.
//! Every reader answers `None` for a process that is gone or unreadable.

/// The processes there are now (the numeric entries of `/proc`).
pub fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// Indices into [`stat_fields`] (`proc(5)` field numbers less 4).
pub const PPID: usize = 0;
pub const PGRP: usize = 1;
pub const UTIME: usize = 10;
pub const STIME: usize = 11;

/// The numbers of `/proc/PID/stat` from field 4 (the parent) on: the
/// fields after the command's parenthesised name (which may hold spaces
/// and parentheses itself) and the state letter.
pub fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(
        rest.split_whitespace()
            .skip(1)
            .map(|f| f.parse::<i64>().map_or(0, |v| v.max(0) as u64))
            .collect(),
    )
}

/// rchar, wchar, syscr and syscw of `/proc/PID/io`: the bytes and the
/// system calls of its reads and writes.
pub fn io_counts(pid: u32) -> Option<[u64; 4]> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let mut v = [None; 4];
    for line in text.lines() {
        let (k, n) = line.split_once(':')?;
        let slot = match k {
            "rchar" => 0,
            "wchar" => 1,
            "syscr" => 2,
            "syscw" => 3,
            _ => continue,
        };
        v[slot] = n.trim().parse::<u64>().ok();
    }
    Some([v[0]?, v[1]?, v[2]?, v[3]?])
}

/// The number of field `key` of a `/proc` status file's text.
pub fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
