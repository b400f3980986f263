#!/bin/sh
# qcow2-conform campaign --impl qemu-live --sequences: finding seq-qemu-carried-out-transaction-actions-remove-6c0cdb6133
# seed 2223, sequence 114; problems found:
#   QEMU carried out Transaction { actions: [Remove { name: "b" }, Add { name: "c", gbits: 18, persistent: true, disabled: false }, Add { name: "a", gbits: 16, persistent: true, disabled: false }] }, which must be refused: member 2: a bitmap named "a" is stored in the image of the inactive node
# Replays the saved sequence step by step against the model with
# qemu-storage-daemon (QSD_PROG, else PATH); exit 2: it still fails.
cd "$(dirname "$0")" || exit 1
exec "${QCOW2_CONFORM:-qcow2-conform}" campaign --replay seq-qemu-carried-out-transaction-actions-remove-6c0cdb6133.json "$@"
