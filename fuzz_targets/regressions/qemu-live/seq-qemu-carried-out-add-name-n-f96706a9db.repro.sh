#!/bin/sh
# qcow2-conform campaign --impl qemu-live --sequences: finding seq-qemu-carried-out-add-name-n-f96706a9db
# seed 2222, sequence 26; problems found:
#   QEMU carried out Add { name: "b", gbits: 14, persistent: true, disabled: true }, which must be refused: a bitmap named "b" is stored in the image of the inactive node
# Replays the saved sequence step by step against the model with
# qemu-storage-daemon (QSD_PROG, else PATH); exit 2: it still fails.
cd "$(dirname "$0")" || exit 1
exec "${QCOW2_CONFORM:-qcow2-conform}" campaign --replay seq-qemu-carried-out-add-name-n-f96706a9db.json "$@"
