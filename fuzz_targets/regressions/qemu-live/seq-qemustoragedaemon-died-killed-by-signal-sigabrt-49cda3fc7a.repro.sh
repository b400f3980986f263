#!/bin/sh
# qcow2-conform campaign --impl qemu-live --sequences: finding seq-qemustoragedaemon-died-killed-by-signal-sigabrt-49cda3fc7a
# seed 2223, sequence 404; problems found:
#   qemu-storage-daemon died: killed by signal 6 (SIGABRT) after Remove
# Replays the saved sequence step by step against the model with
# qemu-storage-daemon (QSD_PROG, else PATH); exit 2: it still fails.
cd "$(dirname "$0")" || exit 1
exec "${QCOW2_CONFORM:-qcow2-conform}" campaign --replay seq-qemustoragedaemon-died-killed-by-signal-sigabrt-49cda3fc7a.json "$@"
