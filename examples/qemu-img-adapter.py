#!/usr/bin/env python3
"""A qcow2-conform exec-protocol adapter (version 1) built on QEMU's tools.

It shows a vendor what an adapter looks like, and the test suite runs it
next to the built-in `--impl qemu` adapter: both must reach the same
outcome for every case.

    qcow2-conform run --corpus DIR --impl 'exec:python3 examples/qemu-img-adapter.py'

Verbs (see PROTOCOL.md in the corpus, "The exec protocol"):

    capabilities              -> {"protocol": 1, "capabilities": ["observe", "write"],
                                  "name": "qemu-img", "version": "..."}
    observe IMAGE             -> {"protocol": 1, "opened": ..., "error": ..., "bitmaps": [...]}
    write IMAGE OFFSET LEN    -> {"protocol": 1, "ok": ..., "error": ...}

How it observes: `qemu-img info --output=json` says whether QEMU opens the
image and which bitmaps it lists. A bitmap counts as used when QEMU exports
it: `qemu-nbd -r -B NAME` serves it over a Unix socket and `qemu-img map`
reads its dirty ranges through the NBD client's `x-dirty-bitmap` option (a
dirty extent reads as "data": false). The ranges become the bitmap's bytes
(bit k = virtual bytes [k*g, (k+1)*g), least significant bit first) and
their SHA-256 is `content_sha256`. Writes go through `qemu-io`.

Tools are found on PATH, or through QEMU_IMG_PROG, QEMU_NBD_PROG and
QEMU_IO_PROG.
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

PROTOCOL = 1
QEMU_IMG = os.environ.get("QEMU_IMG_PROG") or "qemu-img"
QEMU_NBD = os.environ.get("QEMU_NBD_PROG") or "qemu-nbd"
QEMU_IO = os.environ.get("QEMU_IO_PROG") or "qemu-io"
START_TIMEOUT = 20.0


def reply(obj):
    obj["protocol"] = PROTOCOL
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def run(args):
    return subprocess.run(
        args, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace"
    )


def image_args(image):
    """`-f qcow2 IMAGE`, or for an encrypted case (the runner passes its
    passphrase in QCOW2_CONFORM_SECRET) the image as --image-opts with the
    secret as an --object."""
    secret = os.environ.get("QCOW2_CONFORM_SECRET")
    if not secret:
        return ["-f", "qcow2", image]
    esc = lambda s: s.replace(",", ",,")
    return [
        "--object", "secret,id=sec0,data=" + esc(secret),
        "--image-opts", "driver=qcow2,file.filename=%s,encrypt.key-secret=sec0" % esc(image),
    ]


def qemu_version():
    """QEMU's version as `qemu-img --version` prints it ("10.0.2"), or None."""
    try:
        out = run([QEMU_IMG, "--version"]).stdout
    except OSError:
        return None
    words = first_line(out, "").split()
    return words[2] if len(words) > 2 and words[1] == "version" else None


def first_line(text, fallback):
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return fallback


def bitmap_bytes(ranges, size, gbits):
    """The bitmap's data bytes for dirty virtual byte ranges."""
    gran = 1 << gbits
    nbits = -(-size // gran)
    data = bytearray(-(-nbits // 8))
    for start, end in ranges:
        first = min(start >> gbits, nbits)
        stop = min(-(-end // gran), nbits)
        k = first
        # Leading bits up to a byte boundary, whole bytes, trailing bits.
        while k < stop and k % 8:
            data[k // 8] |= 1 << (k % 8)
            k += 1
        whole = (stop - k) // 8
        if whole:
            data[k // 8 : k // 8 + whole] = b"\xff" * whole
            k += whole * 8
        while k < stop:
            data[k // 8] |= 1 << (k % 8)
            k += 1
    return bytes(data)


def set_bits(data):
    return sum(bin(b).count("1") for b in data)


def merge(ranges):
    out = []
    for a, b in sorted(r for r in ranges if r[0] < r[1]):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def export(image, workdir, names, tag):
    """Serves `names` from one qemu-nbd and reads each one's dirty ranges.

    Returns None when the server refused the set as a whole (it never
    listened), else a list with, per name, the ranges or an error string.
    """
    sock = os.path.join(workdir, "nbd%d.sock" % tag)
    log = open(os.path.join(workdir, "nbd%d.log" % tag), "w+")
    args = [QEMU_NBD, "-r", "-t", "-k", sock]
    for n in names:
        args += ["-B", n]
    args += image_args(image)
    server = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
    )
    try:
        started = time.monotonic()
        listening = False
        while server.poll() is None and time.monotonic() - started < START_TIMEOUT:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(sock)
                listening = True
                break
            except OSError:
                time.sleep(0.002)
            finally:
                s.close()
        if not listening:
            log.seek(0)
            why = first_line(log.read(), "qemu-nbd ended without listening")
            return [why] if len(names) == 1 else None
        results = []
        esc = lambda v: v.replace(",", ",,")
        for n in names:
            opts = "driver=nbd,server.type=unix,server.path=%s,x-dirty-bitmap=qemu:dirty-bitmap:%s" % (
                esc(sock),
                esc(n),
            )
            p = run([QEMU_IMG, "map", "--output=json", "--image-opts", opts])
            if p.returncode != 0:
                results.append(first_line(p.stderr, "qemu-img map failed"))
                continue
            try:
                extents = json.loads(p.stdout)
            except ValueError as e:
                results.append("cannot parse qemu-img map's JSON: %s" % e)
                continue
            results.append(
                merge([e["start"], e["start"] + e["length"]] for e in extents if not e["data"])
            )
        alive = server.poll() is None
        if not alive and len(names) > 1 and any(isinstance(r, str) for r in results):
            return None
        return results
    finally:
        if server.poll() is None:
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.wait()
        log.close()


def observe(image):
    p = run([QEMU_IMG, "info", "--output=json"] + image_args(image))
    if p.returncode != 0:
        return reply({"opened": False, "error": first_line(p.stderr, "qemu-img info failed"), "bitmaps": []})
    info = json.loads(p.stdout)
    size = info["virtual-size"]
    listed = ((info.get("format-specific") or {}).get("data") or {}).get("bitmaps") or []
    names = [b["name"] for b in listed]
    results = []
    if names:
        with tempfile.TemporaryDirectory(prefix="qemu-img-adapter") as work:
            results = export(image, work, names, 0)
            if results is None:
                # Refused as a whole: one server per bitmap finds which.
                results = [export(image, work, [n], i + 1)[0] for i, n in enumerate(names)]
    bitmaps = []
    for b, r in zip(listed, results):
        g = b["granularity"]
        gbits = g.bit_length() - 1 if g > 0 and g & (g - 1) == 0 else None
        entry = {
            "name": b["name"],
            "granularity_bits": gbits,
            "flags": {"in_use": "in-use" in b["flags"], "auto": "auto" in b["flags"]},
            "usable": isinstance(r, list),
        }
        if isinstance(r, list):
            entry["dirty_ranges"] = r
            if gbits is not None:
                data = bitmap_bytes(r, size, gbits)
                entry["content_sha256"] = hashlib.sha256(data).hexdigest()
                entry["set_bits"] = set_bits(data)
        else:
            print("bitmap %r not exported: %s" % (b["name"], r), file=sys.stderr)
        bitmaps.append(entry)
    return reply({"opened": True, "error": None, "bitmaps": bitmaps})


def write(image, offset, length):
    p = run([QEMU_IO, "-c", "write -P 0xa5 %d %d" % (offset, length)] + image_args(image))
    failed = [l for l in (p.stdout + p.stderr).splitlines() if "failed" in l or "error" in l]
    if p.returncode != 0 or failed:
        sys.stderr.write(p.stderr)
        err = failed[0] if failed else first_line(p.stderr, "qemu-io exit status %d" % p.returncode)
        return reply({"ok": False, "error": err})
    return reply({"ok": True, "error": None})


def in_image_dir(image):
    """Work in the image's directory: QEMU resolves a relative external data
    file name against its working directory, and the runner puts a case's
    companion files beside the image."""
    image = os.path.abspath(image)
    os.chdir(os.path.dirname(image))
    return image


def main(argv):
    if len(argv) >= 3:
        argv = argv[:2] + [in_image_dir(argv[2])] + argv[3:]
    if len(argv) == 2 and argv[1] == "capabilities":
        return reply({"capabilities": ["observe", "write"], "name": "qemu-img",
                      "version": qemu_version()})
    if len(argv) == 3 and argv[1] == "observe":
        return observe(argv[2])
    if len(argv) == 5 and argv[1] == "write":
        return write(argv[2], int(argv[3]), int(argv[4]))
    print("usage: %s capabilities | observe IMAGE | write IMAGE OFFSET LEN" % argv[0], file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv) or 0)
