#!/bin/sh
# qcow2-conform campaign --impl qemu-live --sequences: finding seq-virtual-size-expected-98e36eaaec
# seed 2223, sequence 14; problems found:
#   virtual size 999936, expected 1000003
# Replays the saved sequence step by step against the model with
# qemu-storage-daemon (QSD_PROG, else PATH); exit 2: it still fails.
cd "$(dirname "$0")" || exit 1
exec "${QCOW2_CONFORM:-qcow2-conform}" campaign --replay seq-virtual-size-expected-98e36eaaec.json "$@"
