#!/bin/sh
# qcow2-conform campaign --impl qemu-live --sequences: finding seq-qemu-carried-out-transaction-actions-remove-6c0cdb6133
# seed 2223, sequence 114; problems found:
#   QEMU carried out Transaction { actions: [Remove { name: "b" }, Add { name: "c", gbits: 18, persistent: true, disabled: false }, Add { name: "a", gbits: 16, persistent: true, disabled: false }] }, which must be refused: member 2: a bitmap named "a" is stored in the image of the inactive node
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
qemu-img create -q -f qcow2 -o cluster_size=4096 "$D/seq.qcow2" 8388608
start
qmp '{"arguments":{"disabled":false,"granularity":16384,"name":"a","node":"q0","persistent":true},"execute":"block-dirty-bitmap-add"}'
alive; qmp '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' | grep -o '"dirty-bitmaps": *\[[^]]*\]'
qmp '{"arguments":{"disabled":false,"granularity":65536,"name":"b","node":"q0","persistent":false},"execute":"block-dirty-bitmap-add"}'
alive; qmp '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' | grep -o '"dirty-bitmaps": *\[[^]]*\]'
qmp '{"execute":"block-export-del","arguments":{"id":"e0"}}'; sleep 0.2
qmp '{"arguments":{"active":false,"node-name":"q0"},"execute":"blockdev-set-active"}'
alive; qmp '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' | grep -o '"dirty-bitmaps": *\[[^]]*\]'
qmp '{"arguments":{"actions":[{"data":{"name":"b","node":"q0"},"type":"block-dirty-bitmap-remove"},{"data":{"disabled":false,"granularity":262144,"name":"c","node":"q0","persistent":true},"type":"block-dirty-bitmap-add"},{"data":{"disabled":false,"granularity":65536,"name":"a","node":"q0","persistent":true},"type":"block-dirty-bitmap-add"}]},"execute":"transaction"}'
alive; qmp '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' | grep -o '"dirty-bitmaps": *\[[^]]*\]'
for b in a b c d; do qmp '{"execute":"x-debug-block-dirty-bitmap-sha256","arguments":{"node":"q0","name":"'$b'"}}'; done
qmp '{"execute":"quit"}'; wait $PID; PID=
$CHECK check "$D/seq.qcow2"
