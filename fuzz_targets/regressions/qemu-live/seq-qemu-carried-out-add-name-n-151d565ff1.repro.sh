#!/bin/sh
# qcow2-conform campaign --impl qemu-live --sequences: finding seq-qemu-carried-out-add-name-n-151d565ff1
# seed 2222, sequence 172; problems found:
#   QEMU carried out Add { name: "c", gbits: 18, persistent: true, disabled: false }, which must be refused: a bitmap named "c" is stored in the image of the inactive node
# Replays the saved sequence step by step against the model with
# qemu-storage-daemon (QSD_PROG, else PATH); exit 2: it still fails.
cd "$(dirname "$0")" || exit 1
exec "${QCOW2_CONFORM:-qcow2-conform}" campaign --replay seq-qemu-carried-out-add-name-n-151d565ff1.json "$@"
