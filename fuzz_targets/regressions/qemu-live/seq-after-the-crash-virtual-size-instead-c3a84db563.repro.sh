#!/bin/sh
# qcow2-conform campaign --impl qemu-live --sequences: finding seq-after-the-crash-virtual-size-instead-c3a84db563
# seed 2223, sequence 446; problems found:
#   after the crash: virtual size 999936 instead of 1000003
# Replays the saved sequence step by step against the model with
# qemu-storage-daemon (QSD_PROG, else PATH); exit 2: it still fails.
cd "$(dirname "$0")" || exit 1
exec "${QCOW2_CONFORM:-qcow2-conform}" campaign --replay seq-after-the-crash-virtual-size-instead-c3a84db563.json "$@"
