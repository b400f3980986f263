#!/bin/sh
# qcow2-conform campaign --impl qemu-live --sequences: finding seq-qemustoragedaemon-died-killed-by-signal-sigsegv-06e047375f
# seed 2222, sequence 0; problems found:
#   qemu-storage-daemon died: killed by signal 11 (SIGSEGV) after Transaction (member 0: no bitmap named "b")
set -u
command -v socat >/dev/null || { echo "this reproducer needs socat (QMP over a Unix socket)" >&2; exit 1; }
QSD=${QSD_PROG:-qemu-storage-daemon}
D=$(mktemp -d)
PID=
qmp() { printf '%s\n%s\n' '{"execute":"qmp_capabilities"}' "$1" | socat -t 1 - "UNIX-CONNECT:$D/qmp.sock" | tail -n +3; }
trap '[ -n "$PID" ] && kill -9 $PID 2>/dev/null; rm -rf "$D"' EXIT
start() {
  rm -f "$D/qmp.sock" "$D/nbd.sock"
  "$QSD" --blockdev "driver=file,filename=$D/seq.qcow2,node-name=f0,discard=$DISCARD" \
    --blockdev "driver=qcow2,file=f0,node-name=q0,discard=$DISCARD" \
    --chardev "socket,id=m0,path=$D/qmp.sock,server=on,wait=off" --monitor chardev=m0 \
    --nbd-server "addr.type=unix,addr.path=$D/nbd.sock" &
  PID=$!
  while [ ! -S "$D/qmp.sock" ]; do sleep 0.05; done
  qmp '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e0","node-name":"q0","name":"disk","writable":true}}'
}
io() { qemu-io -f raw "nbd+unix:///disk?socket=$D/nbd.sock" -c "$1"; }
alive() { sleep 0.1; kill -0 "$PID" 2>/dev/null || { wait "$PID"; echo "qemu-storage-daemon died: exit status $? (128+N: signal N)"; PID=; exit 1; }; }
CHECK=${QCOW2_CONFORM:-qcow2-conform}
DISCARD=unmap
qemu-img create -q -f qcow2 "$D/seq.qcow2" 1048576
start
qmp '{"arguments":{"actions":[{"data":{"name":"b","node":"q0"},"type":"block-dirty-bitmap-enable"}]},"execute":"transaction"}'
alive; qmp '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' | grep -o '"dirty-bitmaps": *\[[^]]*\]'
for b in a b c d; do qmp '{"execute":"x-debug-block-dirty-bitmap-sha256","arguments":{"node":"q0","name":"'$b'"}}'; done
qmp '{"execute":"quit"}'; wait $PID; PID=
$CHECK check "$D/seq.qcow2"
