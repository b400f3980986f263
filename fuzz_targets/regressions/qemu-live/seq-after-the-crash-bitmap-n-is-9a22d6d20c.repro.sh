#!/bin/sh
# qcow2-conform campaign --impl qemu-live --sequences: finding seq-after-the-crash-bitmap-n-is-9a22d6d20c
# seed 2223, sequence 55; problems found:
#   after the crash: bitmap "c" is missing
# Replays the saved sequence step by step against the model with
# qemu-storage-daemon (QSD_PROG, else PATH); exit 2: it still fails.
cd "$(dirname "$0")" || exit 1
exec "${QCOW2_CONFORM:-qcow2-conform}" campaign --replay seq-after-the-crash-bitmap-n-is-9a22d6d20c.json "$@"
