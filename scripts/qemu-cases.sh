#!/usr/bin/env bash
# Makes the QEMU-made corpus cases of real-world image shapes: bitmaps in
# overlays of backing chains (after `qemu-img commit`, a safe and an unsafe
# rebase), in images with an external data file (data_file_raw on and off),
# and in a LUKS-encrypted image; and the data paths a reader must follow
# (cases 6-11: compressed clusters, zero clusters, extended L2, a short
# backing file, version 2 with a backing format, a backing file in a
# subdirectory). Every image is made by QEMU's own tools;
# backing and data file names are stored relative, so a case directory can
# be copied anywhere as a whole.
#
# Usage: scripts/qemu-cases.sh OUTDIR   (OUTDIR/<case>/... is created)
# The checked-in copy is corpus-src/qemu (`scripts/qemu-cases.sh corpus-src/qemu`,
# then `qcow2-conform corpus build corpus`); each case's expected bitmaps
# and companions are in generator/src/qemu_made.rs, which must follow any
# change here (conform/tests/runner_companions.rs checks the bitmaps).
# The LUKS passphrase is fixed (qemu_made::LUKS_SECRET), so it is not
# written to a file.
set -euo pipefail
export LC_ALL=C
for tool in qemu-img qemu-io; do
  command -v "$tool" >/dev/null || { echo "qemu-cases.sh: $tool not found (install qemu-utils)" >&2; exit 1; }
done
out=${1:?usage: qemu-cases.sh OUTDIR}
mkdir -p "$out"
cd "$out"
size=1M
img() { qemu-img create -q -f qcow2 -o cluster_size=4096 "$@"; }
# 4 KiB clusters keep the files small; every bitmap has 64 KiB granularity.
add() { qemu-img bitmap --add -g 65536 "$@"; }
io() { local f=$1; shift; for c in "$@"; do qemu-io -f qcow2 -c "$c" "$f" >/dev/null; done; }

# 1. Overlay after commit: base <- mid <- top; mid and top carry bitmaps;
# the commit writes top's data into mid (mid's enabled bitmap records it)
# and empties top (its bitmap keeps what was written to it). Two cases:
# top with mid and base, mid with base.
rm -rf backing-commit && mkdir backing-commit && (
  cd backing-commit
  img base.qcow2 $size
  io base.qcow2 'write -P 0x11 0 4k'
  img -b base.qcow2 -F qcow2 mid.qcow2
  add mid.qcow2 mid-enabled
  add --disable mid.qcow2 mid-disabled
  io mid.qcow2 'write -P 0x22 256k 4k' 'write -P 0x23 320k 4k'
  img -b mid.qcow2 -F qcow2 top.qcow2
  add top.qcow2 top-enabled
  io top.qcow2 'write -P 0x33 512k 4k' 'write -P 0x34 768k 4k'
  qemu-img commit -q top.qcow2
)

# 2. Safe rebase: top moves from old.qcow2 to new.qcow2; QEMU copies into
# top every cluster where the two backings differ (top's bitmap records it).
rm -rf rebase-safe && mkdir rebase-safe && (
  cd rebase-safe
  img old.qcow2 $size
  io old.qcow2 'write -P 0x41 0 4k' 'write -P 0x41 128k 4k'
  img new.qcow2 $size
  io new.qcow2 'write -P 0x42 128k 4k' 'write -P 0x42 320k 4k'
  img -b old.qcow2 -F qcow2 top.qcow2
  add top.qcow2 since-create
  io top.qcow2 'write -P 0x43 640k 4k'
  qemu-img rebase -q -b new.qcow2 -F qcow2 top.qcow2
  rm old.qcow2
)

# 3. Unsafe rebase: only the backing file name changes.
rm -rf rebase-unsafe && mkdir rebase-unsafe && (
  cd rebase-unsafe
  img old.qcow2 $size
  img other.qcow2 $size
  io other.qcow2 'write -P 0x51 0 4k'
  img -b old.qcow2 -F qcow2 top.qcow2
  add top.qcow2 b0
  io top.qcow2 'write -P 0x52 512k 4k'
  qemu-img rebase -q -u -b other.qcow2 -F qcow2 top.qcow2
  rm old.qcow2
)

# 4. External data file, data_file_raw on and off (a 256 KiB disk: the
# data file is as large as the disk).
for raw in on off; do
  rm -rf "data-file-raw-$raw" && mkdir "data-file-raw-$raw" && (
    cd "data-file-raw-$raw"
    img -o data_file=disk.data,data_file_raw=$raw image.qcow2 256k
    add image.qcow2 b0
    io image.qcow2 'write -P 0x61 0 4k' 'write -P 0x62 128k 4k' 'write -P 0x63 192k 4k'
  )
done

# 5. LUKS encryption (the passphrase is part of the case).
rm -rf luks && mkdir luks && (
  cd luks
  secret=conform-secret
  obj="secret,id=sec0,data=$secret"
  qemu-img create -q -f qcow2 --object "$obj" \
    -o cluster_size=4096,encrypt.format=luks,encrypt.cipher-alg=aes-128,encrypt.key-secret=sec0,encrypt.iter-time=10 \
    image.qcow2 $size
  opts="driver=qcow2,file.filename=image.qcow2,encrypt.key-secret=sec0"
  add --object "$obj" --image-opts "$opts" b0
  qemu-io --object "$obj" --image-opts "$opts" -c 'write -P 0x71 0 4k' -c 'write -P 0x72 512k 4k' >/dev/null
)

# Data-path cases: guest data stored in every way the spec allows, each
# made by QEMU's own writes (the bitmap records every write, compressed
# and zeroing ones included).

# 6. Compressed clusters: deflate (compression_type 0) and zstd
# (compression_type 1, incompatible bit 3). `write -c` compresses whole
# clusters; the plain write beside them stays uncompressed.
for comp in zlib zstd; do
  rm -rf "compressed-$comp" && mkdir "compressed-$comp" && (
    cd "compressed-$comp"
    img -o compression_type=$comp image.qcow2 $size
    add image.qcow2 b0
    io image.qcow2 'write -c -P 0x81 0 4k' 'write -c -P 0x82 196k 4k' \
      'write -P 0x83 448k 4k' 'write -c -P 0x84 1020k 4k'
  )
done

# 7. Zero clusters: a zeroing write over allocated data keeps the host
# cluster (zero flag with a host offset: "preallocated zero"), one over
# unallocated clusters sets the zero flag alone; a zeroing write with
# unmap (-u) frees the cluster it zeroes.
rm -rf zero-clusters && mkdir zero-clusters && (
  cd zero-clusters
  img image.qcow2 $size
  add image.qcow2 b0
  io image.qcow2 'write -P 0x91 0 16k' 'write -z 4k 4k' 'write -z 320k 8k' \
    'write -P 0x92 640k 8k' 'write -z -u 644k 4k'
)

# 8. Extended L2 entries (16 KiB clusters, 2 KiB subclusters): data in
# guest clusters 1 and 3 only (none in cluster 0), partly allocated
# clusters, and subclusters read as zero with and without a host cluster.
rm -rf extended-l2 && mkdir extended-l2 && (
  cd extended-l2
  qemu-img create -q -f qcow2 -o cluster_size=16384,extended_l2=on image.qcow2 $size
  add image.qcow2 b0
  io image.qcow2 'write -P 0xa1 16k 2k' 'write -P 0xa2 22k 4k' \
    'write -P 0xa3 48k 16k' 'write -z 52k 2k' 'write -z 130k 2k'
)

# 9. A backing file shorter than its overlay: base is 512 KiB (data up to
# its last byte), the overlay 1 MiB; reads past the base's end are zeros.
rm -rf backing-short && mkdir backing-short && (
  cd backing-short
  img base.qcow2 512k
  io base.qcow2 'write -P 0xb1 0 4k' 'write -P 0xb2 508k 4k'
  img -b base.qcow2 -F qcow2 top.qcow2 $size
  add top.qcow2 b0
  io top.qcow2 'write -P 0xb3 4k 4k' 'write -P 0xb4 768k 4k'
)

# 10. A version 2 image (compat=0.10) with a backing file and a backing
# format header extension; version 2 has no place for bitmaps.
rm -rf version-2-backing && mkdir version-2-backing && (
  cd version-2-backing
  img -o compat=0.10 base.qcow2 $size
  io base.qcow2 'write -P 0xc1 0 8k' 'write -P 0xc2 512k 4k'
  img -o compat=0.10 -b base.qcow2 -F qcow2 top.qcow2
  io top.qcow2 'write -P 0xc3 4k 4k' 'write -P 0xc4 900k 4k'
)

# 11. A backing file in a subdirectory: the stored backing name is
# `sub/base.qcow2` (relative to the overlay's directory).
rm -rf backing-subdir && mkdir -p backing-subdir/sub && (
  cd backing-subdir
  img sub/base.qcow2 $size
  io sub/base.qcow2 'write -P 0xd1 0 4k' 'write -P 0xd2 256k 4k'
  img -b sub/base.qcow2 -F qcow2 top.qcow2
  add top.qcow2 b0
  io top.qcow2 'write -P 0xd3 260k 4k'
)
