#!/bin/sh
# qcow2-conform campaign --impl qemu-live --sequences: finding seq-qemustoragedaemon-died-killed-by-signal-sigabrt-91c9974ca4
# seed 2222, sequence 125; problems found:
#   qemu-storage-daemon died: killed by signal 6 (SIGABRT) after SetActive
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
DISCARD=ignore
qemu-img create -q -f qcow2 "$D/seq.qcow2" 8388608
start
qmp '{"arguments":{"disabled":false,"granularity":2097152,"name":"c","node":"q0","persistent":true},"execute":"block-dirty-bitmap-add"}'
alive; qmp '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' | grep -o '"dirty-bitmaps": *\[[^]]*\]'
qmp '{"arguments":{"bitmaps":["c"],"id":"x2e7d2c03a950","name":"x2e7d2c03a950","node-name":"q0","type":"nbd","writable":true},"execute":"block-export-add"}'
alive; qmp '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' | grep -o '"dirty-bitmaps": *\[[^]]*\]'
qmp '{"execute":"block-export-del","arguments":{"id":"e0"}}'; sleep 0.2
qmp '{"arguments":{"active":false,"node-name":"q0"},"execute":"blockdev-set-active"}'
alive; qmp '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' | grep -o '"dirty-bitmaps": *\[[^]]*\]'
for b in a b c d; do qmp '{"execute":"x-debug-block-dirty-bitmap-sha256","arguments":{"node":"q0","name":"'$b'"}}'; done
qmp '{"execute":"quit"}'; wait $PID; PID=
$CHECK check "$D/seq.qcow2"
