#!/bin/sh
# qcow2-conform campaign --impl qemu-live --sequences: finding seq-after-the-clean-shutdown-bitmap-n-de78d9c4f5
# seed 2223, sequence 367; problems found:
#   after the clean shutdown: bitmap "a" is missing
# Replays the saved sequence step by step against the model with
# qemu-storage-daemon (QSD_PROG, else PATH); exit 2: it still fails.
cd "$(dirname "$0")" || exit 1
exec "${QCOW2_CONFORM:-qcow2-conform}" campaign --replay seq-after-the-clean-shutdown-bitmap-n-de78d9c4f5.json "$@"
