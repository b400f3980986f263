#!/usr/bin/env python3
"""Summarises the gcovr JSON files scripts/qemu-coverage.sh writes.

Usage: qemu-coverage-summary.py QEMU_SOURCE_DIR OUT_DIR

Prints a Markdown table of line and branch coverage of QEMU's bitmap
code per activity (OUT_DIR/ACTIVITY.json) and for all of them together
(OUT_DIR/together.json), then the functions of block/qcow2-bitmap.c that
nothing reached. "The bitmap parts of block/qcow2.c" are its lines that
name a bitmap, the lines of its functions whose names do, and the
bitmaps-extension case of the header-extension reader.
"""

import json
import os
import re
import sys

FILES = [
    "block/qcow2-bitmap.c",
    "block/dirty-bitmap.c",
    "block/monitor/bitmap-qmp-cmds.c",
    "block/qcow2.c (bitmap parts)",
]
ACTIVITIES = ["corpus", "ops", "images", "sequences", "together", "guided", "blind"]


def bitmap_lines_of_qcow2(src):
    """Line numbers of block/qcow2.c that belong to its bitmap handling."""
    with open(os.path.join(src, "block/qcow2.c"), encoding="utf-8", errors="replace") as f:
        text = f.read().split("\n")
    keep = set()
    in_case = False
    for i, line in enumerate(text, start=1):
        if "case QCOW2_EXT_MAGIC_BITMAPS" in line:
            in_case = True
        elif in_case and re.match(r"\s*(case |default:)", line):
            in_case = False
        if in_case or "bitmap" in line.lower():
            keep.add(i)
    return keep


def per_line(entry):
    """{line: (count, [branch counts])}, gcovr's per-function duplicates summed."""
    out = {}
    for ln in entry.get("lines", []):
        if ln.get("gcovr/noncode") or ln.get("gcovr/excluded"):
            continue
        n = ln["line_number"]
        count, branches = out.get(n, (0, []))
        bs = [b.get("count", 0) for b in ln.get("branches", [])]
        if len(branches) < len(bs):
            branches = branches + [0] * (len(bs) - len(branches))
        branches = [a + (bs[k] if k < len(bs) else 0) for k, a in enumerate(branches)]
        out[n] = (count + ln.get("count", 0), branches)
    return out


def stats(lines, only=None):
    sel = {n: v for n, v in lines.items() if only is None or n in only}
    lt = len(sel)
    lc = sum(1 for c, _ in sel.values() if c > 0)
    bt = sum(len(b) for _, b in sel.values())
    bc = sum(1 for _, b in sel.values() for x in b if x > 0)
    return lc, lt, bc, bt


def load(path, src):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    by_file = {}
    for entry in data.get("files", []):
        name = entry["file"]
        if os.path.isabs(name):
            name = os.path.relpath(name, src)
        by_file[name] = entry
    return by_file


def pct(a, b):
    return f"{100.0 * a / b:.1f}% ({a}/{b})" if b else "n/a"


def main():
    src, out = sys.argv[1], sys.argv[2]
    qcow2_bitmap = bitmap_lines_of_qcow2(src)
    rows = []
    loaded = {}
    for act in ACTIVITIES:
        path = os.path.join(out, f"{act}.json")
        if not os.path.exists(path):
            continue
        loaded[act] = load(path, src)
    print("| activity | file | lines | branches |")
    print("|---|---|---|---|")
    for act, by_file in loaded.items():
        for label in FILES:
            name = label.split(" ")[0]
            entry = by_file.get(name)
            if entry is None:
                rows.append((act, label, "not reached", "not reached"))
                continue
            only = qcow2_bitmap if name == "block/qcow2.c" else None
            lc, lt, bc, bt = stats(per_line(entry), only)
            rows.append((act, label, pct(lc, lt), pct(bc, bt)))
    for r in rows:
        print(f"| {r[0]} | `{r[1]}` | {r[2]} | {r[3]} |")
    together = loaded.get("together", {}).get("block/qcow2-bitmap.c")
    if together:
        print()
        print("Functions of block/qcow2-bitmap.c never reached (all activities together):")
        print()
        for fn in sorted(together.get("functions", []), key=lambda f: f.get("lineno", 0)):
            counts = fn.get("execution_count", 0)
            if counts == 0:
                name = fn.get("demangled_name") or fn.get("name")
                print(f"- `{name}` (line {fn.get('lineno')})")


if __name__ == "__main__":
    main()
