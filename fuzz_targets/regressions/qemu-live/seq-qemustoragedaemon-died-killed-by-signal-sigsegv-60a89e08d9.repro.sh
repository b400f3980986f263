#!/bin/sh
# qcow2-conform campaign --impl qemu-live --sequences: finding seq-qemustoragedaemon-died-killed-by-signal-sigsegv-60a89e08d9
# seed 2223, sequence 681; problems found:
#   qemu-storage-daemon died: killed by signal 11 (SIGSEGV) after Transaction (member 0: bitmap "d" is in_use (inconsistent) and must not be used)
# Replays the saved sequence step by step against the model with
# qemu-storage-daemon (QSD_PROG, else PATH); exit 2: it still fails.
cd "$(dirname "$0")" || exit 1
exec "${QCOW2_CONFORM:-qcow2-conform}" campaign --replay seq-qemustoragedaemon-died-killed-by-signal-sigsegv-60a89e08d9.json "$@"
