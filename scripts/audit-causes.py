#!/usr/bin/env python3
"""Regenerates the audit of docs/findings.md from run reports.

Usage:
  for i in qemu imago qcow2-rs qcow2 libqcow; do
    qcow2-conform run --impl $i --corpus corpus --json reports/$i.json --fail-on none
  done
  qcow2-conform run --impl qemu --corpus <manifest of fuzz_targets/regressions> \
      --json reports/qemu-regressions.json --fail-on none
  scripts/audit-causes.py reports/*.json

(`scripts/audit-causes.py --regressions-corpus DIR` writes that corpus of
the campaign's reproducers under fuzz_targets/regressions/ into DIR.)

Every entry cites what the judgement rests on (`cites`, with its
`sentence` in the project's words): the obligation the outcome names
(`qcow2-conform obligations --json`), else the rule the spec is silent
about (`qcow2-conform rules --json`), else nothing for a crash.

Every distinct cause (implementation, outcome, cause key) that is not a
plain pass becomes one entry of audit/causes.json, with its first case as
the reproducer; the spec section and sentence come from SPEC below, keyed
by (implementation, key) or by key alone, and the script fails when a cause
has none (write one before the audit can change). It then rewrites the
audit section of docs/findings.md between its markers. The test
conform/tests/audit.rs replays every entry and checks the doc.
"""
import hashlib
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# The spec sentence behind each kind of cause, paraphrased, with its
# section of QEMU's docs/interop/qcow2.rst.
S_EXTRA = ("Bitmap directory, flags bit 2 `extra_data_compatible`",
           "with the flag set the bitmap may be used as usual and its extra data kept as is; "
           "nothing lets a reader refuse the whole image over it")
S_EXTRA_INCOMPAT = ("Bitmap directory, flags bit 2 `extra_data_compatible`",
                    "without the flag that one bitmap must not be used (and is kept as is); "
                    "the image itself stays valid and may be opened")
S_TAIL = ("Bitmap data", "the unused tail bits of a bitmap's last data cluster must be zero")
S_UNUSABLE = ("Bitmaps extension; Bitmap directory / table / data",
              "each broken field is a `must` of its section; a bitmap whose own structures break "
              "one has no defined contents, so exporting it as a dirty bitmap trusts undefined bits")
S_OVERLAP = ("Host cluster management (refcounts)",
             "a cluster is referenced by one structure unless its refcount says otherwise; a bitmap "
             "table that shares a cluster with the refcount table has no defined contents")
S_SILENT = ("(none: the spec is silent)",
            "the case is `unspecified` (zero-size disk, unknown autoclear bit, longer extension or "
            "table); the behaviour is recorded, not judged")
S_INCOMPAT = ("Header, incompatible_features",
              "an implementation must fail to open an image with an incompatible bit it does not "
              "know: this refusal is required")
S_AUTO = ("Header, autoclear_features; Bitmap directory, flag `auto`",
          "a writer that does not know the bitmaps extension must clear autoclear bit 0 before "
          "writing; an `auto` bitmap must reflect every write")
S_CONFORM = ("Host cluster management; Snapshots",
             "a write must leave a valid image: a cluster shared with a snapshot is copied before "
             "it is written, and refcounts match references")
S_CRYPT = ("Header, crypt_method; Full disk encryption header pointer",
           "in an encrypted image every guest cluster is stored encrypted; plaintext written there "
           "reads back as garbage through a conforming reader")
S_CRASH = ("(any)", "no image, valid or not, allows a crash: a reader must fail cleanly")
S_HANG = ("(any)", "no image, valid or not, allows a reader to run without end: it must answer "
          "or fail within bounded time")
S_HEADER_LEN = ("Header, header_length",
                "for version 3 the header is at least 104 bytes and a multiple of 8; a longer header "
                "(additional fields) is allowed and unknown additional fields may be ignored")
S_V2 = ("Header, version", "valid values are 2 and 3: a version 2 image is conforming")
S_BACKING = ("Header, backing_file_offset; Cluster mapping",
             "an image may have a backing file, and an unallocated cluster reads from it; refusing "
             "backing files is refusing conforming images")
S_ENCRYPT = ("Header, crypt_method", "0, 1 (AES) and 2 (LUKS) are all defined: an encrypted image is conforming")

S_SIZE = ("Header, size",
          "the virtual disk size in bytes, with no alignment required: QEMU rounds a size that is "
          "not a multiple of 512 down (the last bytes cannot be read, and a read-write open "
          "writes the smaller size back), so the disk it presents is not the image's")
S_SIZE_TAIL = ("Header, size; Bitmap data",
               "QEMU rounds the virtual size down on a read-write open; the bits of the old disk's "
               "last granules then lie past the new end, as tail bits, which must be zero")
S_TAIL_USED = ("Bitmap data",
               "the unused tail bits of the last data cluster must be zero; the bits inside the disk "
               "(bit 0 included) are defined and QEMU exports exactly them, but a bitmap whose data "
               "breaks a rule of its section is one the digest says must not be used "
               "(bitmaps.never-use-invalid, stricter than the spec)")
S_AUTOCLEAR = ("Header, autoclear_features",
               "an implementation may only write to an image with unknown auto-clear bits if it "
               "clears them first: bits 2-63 for everyone, bit 0 for a writer that does not "
               "maintain bitmaps")
S_OPENED_INCOMPAT = ("Header, incompatible_features",
                     "an implementation must fail to open an image with an incompatible bit it does "
                     "not know; this one opened it and read guest data")
S_KEYLESS = ("Data encryption",
             "the payload must be decrypted on every read: without the key, the only way to meet "
             "that is to refuse; returning the stored bytes returns ciphertext")
S_CAP = ("Bitmap directory, granularity; Bitmaps (QEMU's implementation)",
         "nothing in the spec caps a bitmap's size; QEMU keeps each bitmap in memory and refuses one "
         "whose data exceeds 512 MiB, refusing a conforming image")
S_FLAG = ("Bitmap directory, flags bit 2 `extra_data_compatible`",
          "flag bit 2 is defined: with it set and no extra data the bitmap is an ordinary one, to be "
          "used as usual; QEMU checks the flags as if bit 2 were reserved and refuses the whole image")
S_REFUSE_KEYLESS = ("Data encryption",
                    "the payload must be decrypted on every read; without the key this refusal is "
                    "how an implementation meets that")
S_NAME = ("Bitmap directory, name",
          "name_size bytes, not NUL-terminated, unique among the bitmaps: a bitmap is identified by "
          "all of its name's bytes")
S_V2_EXT = ("Header; Header extensions",
            "a version 2 header is exactly 72 bytes and the header extensions follow it directly")

S_NAME_IN_USE = ("Bitmap directory, name; flags bit 0 `in_use`",
                 "a bitmap's name must be unique among the bitmaps of the image, in_use or not; QEMU "
                 "checks names only as it creates its in-memory bitmaps, and a repeated name whose "
                 "later entry is in_use is not caught: it opens the image and uses the first entry's "
                 "bitmap (with the in_use entry first, or neither in_use, it refuses: \"Bitmap "
                 "already exists\")")
S_TABLE_IN_USE = ("Bitmap table; Bitmap directory, flags bit 0 `in_use`",
                  "every bitmap table entry must point to a cluster boundary; an in_use bitmap's "
                  "metadata may be outdated but stays well-formed, so a misaligned entry there makes "
                  "the extension invalid; QEMU never reads an in_use bitmap's table on open, does not "
                  "see it, and uses the image's other bitmaps")

S_GUEST = ("Cluster mapping (L2 entries; backing file)",
           "a guest read returns what the L2 entries and their zero flag say, and for an "
           "unallocated cluster the backing file's data (zeros only without a backing file)")
S_SNAP = ("Snapshots", "internal snapshots and their table are part of a conforming image")

SPEC = {
    "recorded--silent": S_SILENT,
    ("qcow", "strict--open--open.conforming--a04900e3"): S_SNAP,
    "mismatch--name-cut--bitmaps.list-as-stored": S_NAME,
    ("qcow2-rs", "strict--open--open.conforming--21693f3b"): S_V2_EXT,
    "corrupting--write--write.leaves-valid--a8f7b7db": S_TAIL,
    "lenient--used-unusable--bitmaps.never-use-invalid--unusable_bitmaps.data.tail-bits": S_TAIL_USED,
    "mismatch--virtual-size--guest.virtual-size": S_SIZE,
    "lenient--used-unusable--bitmaps.never-use-invalid--unusable_refcount.overlap": S_OVERLAP,
    "lenient--used-unusable--bitmaps.never-use-invalid--unusable_bitmaps.dir.name-unique": S_NAME_IN_USE,
    "lenient--used-unusable--bitmaps.never-use-invalid--unusable_bitmaps.table.entry-alignment": S_TABLE_IN_USE,
}


# Sentences by the cause's check, looked up before the obligation and
# features are considered ...
FIRST_BY_CHECK = {
    "opened-unsupported": S_OPENED_INCOMPAT,
    "encrypted": S_KEYLESS,
    "virtual-size": S_SIZE,
}
# ... and after them.
THEN_BY_CHECK = {
    "unsupported-feature": S_INCOMPAT,
    "used-unusable": S_UNUSABLE,
    "signal": S_CRASH,
    "timeout": S_HANG,
    "guest-data": S_GUEST,
}


def spec_for(imp, key, cause):
    if (imp, key) in SPEC:
        return SPEC[(imp, key)]
    if key in SPEC:
        return SPEC[key]
    check = cause["check"]
    msg = cause["message"]
    feats = cause["features"]
    if key.startswith("recorded--"):
        return S_SILENT
    if check in FIRST_BY_CHECK:
        return FIRST_BY_CHECK[check]
    if cause.get("obligation") == "crypt.refuse-without-key":
        return S_REFUSE_KEYLESS
    if "bitmap-over-512MiB" in feats:
        return S_CAP
    if check == "open" and "satisfy the constraints" in msg:
        return S_FLAG
    if check in THEN_BY_CHECK:
        return THEN_BY_CHECK[check]
    if check == "write":
        if "size was rewritten" in msg:
            return S_SIZE_TAIL
        if msg.startswith("autoclear bit"):
            return S_AUTOCLEAR
        if "plaintext" in msg:
            return S_CRYPT
        if "auto bitmap" in msg:
            return S_AUTO
        if "tail-bits" in msg:
            return S_TAIL
        return S_CONFORM
    if check in ("open", "guest-read"):
        if "extra_data_compatible" in feats:
            return S_EXTRA
        if "extra data" in msg.lower():
            return S_EXTRA_INCOMPAT
        if "header" in msg.lower() and ("size" in msg or "bytes" in msg):
            return S_HEADER_LEN
        if "version" in msg.lower():
            return S_V2
        if "backing" in msg.lower() or "parent" in msg.lower():
            return S_BACKING
        if "encryption" in msg.lower():
            return S_ENCRYPT
    return None


def key_of(kind, cause):
    parts = [kind, cause["check"]]
    if cause.get("obligation"):
        parts.append(cause["obligation"])
    if cause["features"]:
        parts.append("+".join(cause["features"]).replace(":", "_").replace("/", "_").replace(" ", "_"))
    if cause["message"]:
        parts.append(hashlib.sha256(cause["message"].encode()).hexdigest()[:8])
    return "--".join(parts)


def catalogue(what):
    """`qcow2-conform obligations|rules --json`, by ID."""
    import subprocess
    bin_ = os.environ.get("QCOW2_CONFORM", os.path.join(ROOT, "target/debug/qcow2-conform"))
    out = subprocess.run([bin_, what, "--json"], capture_output=True, text=True, check=True).stdout
    return {e["id"]: e for e in json.loads(out)}


def cites(cause, obligations, rules):
    """What a cause rests on: its obligation, else the rules the spec is
    silent about, else nothing (a crash, a hang)."""
    o = cause.get("obligation")
    if o:
        return o, obligations[o]["sentence"]
    silent = [f.split(":", 1)[1] for f in cause["features"] if f.startswith("unspecified:")]
    if silent:
        return ", ".join(silent), "; ".join(rules[r]["condition"] for r in silent if r in rules)
    return "-", "no obligation: no image allows a crash or a hang"


def regressions_corpus(out):
    """A corpus of the campaign's reproducers (fuzz_targets/regressions/KEY/),
    case IDs `regression:KEY`, as conform/tests/audit.rs stages them."""
    base = os.path.join(ROOT, "fuzz_targets/regressions")
    cases = []
    for key in sorted(os.listdir(base)):
        finding = os.path.join(base, key, "finding.json")
        if not os.path.exists(finding):
            continue
        os.makedirs(os.path.join(out, "regressions", key), exist_ok=True)
        with open(os.path.join(base, key, "image.qcow2"), "rb") as f:
            data = f.read()
        with open(os.path.join(out, "regressions", key, "image.qcow2"), "wb") as f:
            f.write(data)
        cases.append({"id": f"regression:{key}", "file": f"regressions/{key}/image.qcow2",
                      "expected": json.load(open(finding))["expected"], "description": ""})
    manifest = json.load(open(os.path.join(ROOT, "corpus/manifest.json")))
    manifest["cases"] = cases
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print(f"{len(cases)} reproducers in {out}")


def main(paths):
    if paths[:1] == ["--regressions-corpus"]:
        return regressions_corpus(paths[1])
    obligations, rules = catalogue("obligations"), catalogue("rules")
    entries, seen, missing = [], set(), []
    for path in paths:
        report = json.load(open(path))
        for case in report["cases"]:
            for res in case["results"]:
                o = res["outcome"]
                if o["kind"] in ("pass", "error") and o["cause"]["check"] != "unsupported-feature":
                    continue
                imp = res["implementation"]
                key = key_of(o["kind"], o["cause"])
                if (imp, key) in seen:
                    continue
                seen.add((imp, key))
                spec = spec_for(imp, key, o["cause"])
                if spec is None:
                    missing.append(f"{imp} {key}: {o['cause']['message']}")
                    continue
                cited, sentence = cites(o["cause"], obligations, rules)
                entries.append({
                    "implementation": imp,
                    "outcome": o["kind"],
                    "key": key,
                    "reproducer": case["id"],
                    "cites": cited,
                    "sentence": sentence,
                    "signature": f"{o['kind']} | {o['cause']['check']} | "
                                 f"{'+'.join(o['cause']['features']) or '-'} | {o['cause']['message']}",
                    "section": spec[0],
                    "spec": spec[1],
                })
    if missing:
        sys.exit("no spec sentence for:\n" + "\n".join(missing))
    order = {"qemu": 0, "qemu-live": 1, "imago": 2, "qcow2-rs": 3, "qcow2": 4, "qcow": 5,
             "libqcow": 6}
    entries.sort(key=lambda e: (order.get(e["implementation"].split("@")[0], 9), e["implementation"],
                                e["outcome"], e["key"]))
    os.makedirs(os.path.join(ROOT, "audit"), exist_ok=True)
    with open(os.path.join(ROOT, "audit/causes.json"), "w") as f:
        json.dump({"causes": entries}, f, indent=2)
        f.write("\n")
    rows, current = [], None
    for e in entries:
        if e["implementation"] != current:
            current = e["implementation"]
            rows += ["", f"### {current}", "",
                     "| key | outcome | reproducer | cause (normalised message) | obligation or rule | spec section: sentence |",
                     "|---|---|---|---|---|---|"]
        sig = e["signature"].split(" | ", 3)[3].replace("|", "\\|") or "-"
        if len(sig) > 140:
            sig = sig[:137] + "..."
        rows.append(f"| `{e['key']}` | {e['outcome']} | `{e['reproducer']}` | {sig} | "
                    f"`{e['cites']}` | {e['section']}: {e['spec']} |")
    doc_path = os.path.join(ROOT, "docs/findings.md")
    doc = open(doc_path).read()
    begin, end = "<!-- audit:begin -->", "<!-- audit:end -->"
    if begin not in doc:
        sys.exit(f"docs/findings.md has no {begin} marker")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(doc_path, "w") as f:
        f.write(head + begin + "\n" + "\n".join(rows).lstrip("\n") + "\n" + end + tail)
    print(f"{len(entries)} causes written")


if __name__ == "__main__":
    main(sys.argv[1:])
