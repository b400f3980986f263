#!/usr/bin/env python3
"""The empty merge (docs/findings.md) against each QEMU given: one line per
QEMU saying what its qemu-storage-daemon did with
block-dirty-bitmap-merge of no source bitmap.

Usage: scripts/qemu-empty-merge.py PREFIX...
  PREFIX: a directory with bin/ or usr/bin/ holding qemu-img and
  qemu-storage-daemon (~/.cache/qcow2-conform/qemu-7.2,
  ~/.cache/qcow2-conform/qemu-src-10.2.2), or "system" for the tools on PATH.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def tools(prefix):
    if prefix == "system":
        return shutil.which("qemu-img"), shutil.which("qemu-storage-daemon")
    for b in ("bin", "usr/bin"):
        d = os.path.join(prefix, b)
        if os.path.exists(os.path.join(d, "qemu-img")):
            return os.path.join(d, "qemu-img"), os.path.join(d, "qemu-storage-daemon")
    sys.exit(f"no qemu-img under {prefix}")


def qmp(sock_path, commands, timeout=20):
    deadline = time.time() + timeout
    while not os.path.exists(sock_path):
        if time.time() > deadline:
            raise TimeoutError("no monitor socket")
        time.sleep(0.05)
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.settimeout(timeout)
    f = s.makefile("rw")
    f.readline()  # greeting
    answers = []
    for c in commands:
        f.write(json.dumps(c) + "\n")
        f.flush()
        while True:
            line = f.readline()
            if not line:
                answers.append(None)  # the daemon closed the monitor
                return answers
            msg = json.loads(line)
            if "event" in msg:
                continue
            answers.append(msg)
            break
    return answers


def one(prefix):
    img, qsd = tools(prefix)
    env = dict(os.environ)
    if "/usr/bin/" in qsd:
        root = qsd.rsplit("/usr/bin/", 1)[0]
        env["LD_LIBRARY_PATH"] = f"{root}/usr/lib/x86_64-linux-gnu:{root}/lib/x86_64-linux-gnu"
    version = subprocess.run([qsd, "--version"], env=env, capture_output=True, text=True).stdout.split("\n")[0]
    with tempfile.TemporaryDirectory() as d:
        image = os.path.join(d, "disk.qcow2")
        subprocess.run([img, "create", "-q", "-f", "qcow2", image, "64M"], env=env, check=True)
        sock = os.path.join(d, "qmp.sock")
        p = subprocess.Popen(
            [qsd, "--blockdev", f"driver=file,filename={image},node-name=f0",
             "--blockdev", "driver=qcow2,file=f0,node-name=q0",
             "--chardev", f"socket,id=m0,path={sock},server=on,wait=off",
             "--monitor", "chardev=m0"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            a = qmp(sock, [
                {"execute": "qmp_capabilities"},
                {"execute": "block-dirty-bitmap-add",
                 "arguments": {"node": "q0", "name": "b", "granularity": 65536, "persistent": True}},
                {"execute": "block-dirty-bitmap-merge",
                 "arguments": {"node": "q0", "target": "b", "bitmaps": []}},
                {"execute": "quit"},
            ])
        except (OSError, TimeoutError) as e:
            a = [f"monitor: {e}"]
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        merge = a[2] if len(a) > 2 else None
        if p.returncode < 0:
            what = f"the daemon died of signal {-p.returncode}"
        elif merge is None:
            what = f"the daemon closed the monitor (exit status {p.returncode})"
        elif "error" in merge:
            what = f"refused: {merge['error'].get('desc')} (exit status {p.returncode})"
        else:
            what = f"accepted (a no-op), exit status {p.returncode}"
        err = (p.stderr.read() or "").strip().splitlines()
        tail = f"; stderr: {err[0][:160]}" if err else ""
        print(f"{version}: {what}{tail}")


for prefix in sys.argv[1:] or ["system"]:
    one(prefix)
