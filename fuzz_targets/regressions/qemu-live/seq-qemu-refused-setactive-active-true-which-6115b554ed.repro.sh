#!/bin/sh
# qcow2-conform campaign --impl qemu-live --sequences: finding seq-qemu-refused-setactive-active-true-which-6115b554ed
# seed 2223, sequence 885; problems found:
#   QEMU refused SetActive { active: true }, which must succeed: Could not reopen qcow2 layer: Bitmap already exists: a
# Replays the saved sequence step by step against the model with
# qemu-storage-daemon (QSD_PROG, else PATH); exit 2: it still fails.
cd "$(dirname "$0")" || exit 1
exec "${QCOW2_CONFORM:-qcow2-conform}" campaign --replay seq-qemu-refused-setactive-active-true-which-6115b554ed.json "$@"
