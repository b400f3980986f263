#!/bin/sh
# qcow2-conform campaign --impl qemu-live --sequences: finding seq-bitmap-n-granularity-recording-false-persistent-f26705c5ab
# seed 2222, sequence 123; problems found:
#   bitmap "c": granularity 65536 recording false persistent true inconsistent false, expected 65536 true true false
# Replays the saved sequence step by step against the model with
# qemu-storage-daemon (QSD_PROG, else PATH); exit 2: it still fails.
cd "$(dirname "$0")" || exit 1
exec "${QCOW2_CONFORM:-qcow2-conform}" campaign --replay seq-bitmap-n-granularity-recording-false-persistent-f26705c5ab.json "$@"
