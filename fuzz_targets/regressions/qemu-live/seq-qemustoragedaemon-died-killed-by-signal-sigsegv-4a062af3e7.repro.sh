#!/bin/sh
# qcow2-conform campaign --impl qemu-live --sequences: finding seq-qemustoragedaemon-died-killed-by-signal-sigsegv-4a062af3e7
# seed 2222, sequence 597; problems found:
#   qemu-storage-daemon died: killed by signal 11 (SIGSEGV) after Transaction (member 0: a persistent add on an inactive node may be refused)
# Replays the saved sequence step by step against the model with
# qemu-storage-daemon (QSD_PROG, else PATH); exit 2: it still fails.
cd "$(dirname "$0")" || exit 1
exec "${QCOW2_CONFORM:-qcow2-conform}" campaign --replay seq-qemustoragedaemon-died-killed-by-signal-sigsegv-4a062af3e7.json "$@"
