#!/usr/bin/env python3
"""An exec-protocol adapter (PROTOCOL.md, version 1) for a reader that does
not know the bitmaps extension: it answers `read`, not `observe`, so the
runner judges the guest data it returns, its refusals and its crashes.

The reader is a small qcow2 reader written for this example with Python's
standard library only (no bitmaps, no writes): versions 2 and 3, standard,
zero and deflate-compressed clusters, extended L2 entries (subclusters), a
backing chain (qcow2 or raw) and an external data file. What it does not
support it refuses cleanly, with a message: an encrypted image (answered
`"cannot_decrypt": true`), zstd compression, an unknown incompatible
feature bit. Copy it and replace `Image` with calls into
your own library.

    capabilities                 -> {"protocol": 1, "capabilities": ["read"], "name": ..., "version": ...}
    read IMAGE OFFSET:LEN ...    -> {"protocol": 1, "opened": bool, "error": ..., "size": N,
                                     "ranges": [{"offset", "length", "sha256" | "error"}]}

Every answer is one JSON object on standard output. A failure the reader
detects is a clean answer (`"opened": false` with `error`, or a range's
`error`); only a bug of the reader itself escapes as an exception, which
the runner judges `crash` (see PROTOCOL.md).
"""

import hashlib
import json
import os
import struct
import sys
import zlib

NAME = "tiny-qcow2-reader"
VERSION = "1.0"

# Set to True to refuse every image (the kit's CI document uses this to
# show what a regression looks like).
REFUSE_ALL = False

MAGIC = b"QFI\xfb"
OFFSET_MASK = 0x00FFFFFFFFFFFE00
COMPRESSED = 1 << 62
COPIED = 1 << 63
# Incompatible feature bits this reader handles: dirty (0), corrupt (1:
# reading is still allowed, writing is not), external data file (2),
# compression type (3), extended L2 entries (4).
KNOWN_INCOMPATIBLE = 0x1F
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_DATA_FILE = 0x44415441
MAX_CHAIN = 16


class Refused(Exception):
    """The reader cannot open this image (a clean refusal)."""

    def __init__(self, message, cannot_decrypt=False):
        super().__init__(message)
        self.cannot_decrypt = cannot_decrypt


class ReadFailed(Exception):
    """One range cannot be read (reported for that range only)."""


def read_at(f, offset, length):
    f.seek(offset)
    data = f.read(length)
    if len(data) != length:
        raise ReadFailed("short read: %d of %d bytes at offset %d" % (len(data), length, offset))
    return data


def child_path(image_path, name):
    """A file an image names, resolved as QEMU does: relative to the
    image's directory."""
    if os.path.isabs(name):
        return name
    return os.path.join(os.path.dirname(os.path.abspath(image_path)), name)


class Raw:
    def __init__(self, path):
        self.f = open(path, "rb")
        self.size = os.fstat(self.f.fileno()).st_size

    def read(self, offset, length):
        if offset >= self.size:
            return bytes(length)
        self.f.seek(offset)
        data = self.f.read(min(length, self.size - offset))
        return data + bytes(length - len(data))


class Image:
    def __init__(self, path, depth=0):
        if depth > MAX_CHAIN:
            raise Refused("backing chain longer than %d" % MAX_CHAIN)
        self.f = open(path, "rb")
        h = self.f.read(112)
        if len(h) < 72 or h[:4] != MAGIC:
            raise Refused("not a qcow2 image")
        (self.version, backing_offset, backing_size, self.cluster_bits, self.size,
         crypt, self.l1_size, self.l1_offset) = struct.unpack(">IQIIQIIQ", h[4:48])
        if self.version not in (2, 3):
            raise Refused("unsupported version %d" % self.version)
        if not 9 <= self.cluster_bits <= 21:
            raise Refused("cluster_bits %d out of range" % self.cluster_bits)
        if crypt != 0:
            raise Refused("encrypted image (crypt_method %d): this reader cannot decrypt" % crypt,
                          cannot_decrypt=True)
        incompatible, header_length, compression = 0, 72, 0
        if self.version == 3:
            if len(h) < 104:
                raise Refused("version 3 header shorter than 104 bytes")
            incompatible = struct.unpack(">Q", h[72:80])[0]
            header_length = struct.unpack(">I", h[100:104])[0]
            if header_length >= 105 and len(h) >= 105:
                compression = h[104]
        unknown = incompatible & ~KNOWN_INCOMPATIBLE
        if unknown:
            raise Refused("unknown incompatible feature bits 0x%x" % unknown)
        if incompatible & (1 << 3) and compression != 0:
            raise Refused("compression type %d is not supported (deflate only)" % compression)
        self.extended_l2 = bool(incompatible & (1 << 4))
        self.cluster_size = 1 << self.cluster_bits
        self.l2_entries = self.cluster_size // (16 if self.extended_l2 else 8)
        self.l2_cache = {}

        backing_format, data_file = None, None
        for kind, data in self.extensions(header_length):
            if kind == EXT_BACKING_FORMAT:
                backing_format = data.decode("utf-8", "replace")
            elif kind == EXT_DATA_FILE:
                data_file = data.decode("utf-8", "replace")
        if incompatible & (1 << 2):
            if not data_file:
                raise Refused("external data file bit set but no data file named")
            self.data = open(child_path(path, data_file), "rb")
        else:
            self.data = self.f
        self.backing = None
        if backing_offset and backing_size:
            name = read_at(self.f, backing_offset, min(backing_size, 1023)).decode("utf-8", "replace")
            bpath = child_path(path, name)
            if backing_format == "raw":
                self.backing = Raw(bpath)
            else:
                with open(bpath, "rb") as b:
                    is_qcow2 = b.read(4) == MAGIC
                self.backing = Image(bpath, depth + 1) if is_qcow2 else Raw(bpath)

    def extensions(self, header_length):
        """(type, data) of each header extension until the end marker."""
        pos = header_length if self.version == 3 else 72
        end = min(self.cluster_size, 1 << 16)
        while pos + 8 <= end:
            kind, length = struct.unpack(">II", read_at(self.f, pos, 8))
            if kind == 0:
                return
            yield kind, read_at(self.f, pos + 8, min(length, end))
            pos += 8 + ((length + 7) & ~7)

    def l2_entry(self, cluster):
        """(entry, subcluster bitmap) of a guest cluster; (0, 0) when unmapped."""
        l1_index, l2_index = divmod(cluster, self.l2_entries)
        if l1_index >= self.l1_size:
            return 0, 0
        l2_offset = self.l2_cache.get(l1_index)
        if l2_offset is None:
            l1 = struct.unpack(">Q", read_at(self.f, self.l1_offset + 8 * l1_index, 8))[0]
            l2_offset = l1 & OFFSET_MASK
            self.l2_cache[l1_index] = l2_offset
        if l2_offset == 0:
            return 0, 0
        if self.extended_l2:
            entry, bitmap = struct.unpack(">QQ", read_at(self.f, l2_offset + 16 * l2_index, 16))
            return entry, bitmap
        return struct.unpack(">Q", read_at(self.f, l2_offset + 8 * l2_index, 8))[0], None

    def below(self, offset, length):
        """What shows through where this image stores nothing."""
        if self.backing is None or offset >= self.backing.size:
            return bytes(length)
        take = min(length, self.backing.size - offset)
        return self.backing.read(offset, take) + bytes(length - take)

    def compressed(self, entry):
        shift = 62 - (self.cluster_bits - 8)
        host = entry & ((1 << shift) - 1)
        sectors = ((entry >> shift) & ((1 << (self.cluster_bits - 8)) - 1)) + 1
        stored = self.read_available(host, sectors * 512 - (host & 511))
        out = zlib.decompressobj(-15).decompress(stored, self.cluster_size)
        if len(out) != self.cluster_size:
            raise ReadFailed("compressed cluster at %d inflates to %d bytes" % (host, len(out)))
        return out

    def read_available(self, offset, length):
        """Compressed data may end before its last sector: read what is there."""
        self.f.seek(offset)
        data = self.f.read(length)
        if not data:
            raise ReadFailed("compressed cluster at %d is past the end of the file" % offset)
        return data

    def read_cluster_part(self, cluster, start, length):
        entry, bitmap = self.l2_entry(cluster)
        base = cluster * self.cluster_size
        if entry & COMPRESSED:
            return self.compressed(entry)[start:start + length]
        host = entry & OFFSET_MASK
        if bitmap is None:
            if entry & 1 and self.version == 3:
                return bytes(length)
            # Offset 0 means "not allocated", except in an external data
            # file, where it is a real offset: there the COPIED bit (63)
            # tells an allocated cluster.
            if host == 0 and not (self.data is not self.f and entry & COPIED):
                return self.below(base + start, length)
            return read_at(self.data, host + start, length)
        # Extended L2: 32 subclusters, an allocation and a zero bit each.
        sub = self.cluster_size // 32
        out = bytearray()
        pos = start
        while pos < start + length:
            i = pos // sub
            take = min((i + 1) * sub, start + length) - pos
            if bitmap & (1 << (32 + i)):
                out += bytes(take)
            elif bitmap & (1 << i):
                out += read_at(self.data, host + pos, take)
            else:
                out += self.below(base + pos, take)
            pos += take
        return bytes(out)

    def read(self, offset, length):
        if offset + length > self.size:
            raise ReadFailed("range ends past the disk size %d" % self.size)
        out = bytearray()
        while length > 0:
            cluster, start = divmod(offset, self.cluster_size)
            take = min(length, self.cluster_size - start)
            out += self.read_cluster_part(cluster, start, take)
            offset += take
            length -= take
        return bytes(out)


def reply(obj):
    obj["protocol"] = 1
    print(json.dumps(obj))
    return 0


def read_verb(path, specs):
    try:
        if REFUSE_ALL:
            raise Refused("refusing every image (REFUSE_ALL)")
        image = Image(path)
    except Refused as e:
        return reply({"opened": False, "error": str(e), "cannot_decrypt": e.cannot_decrypt})
    except (OSError, ReadFailed, struct.error, ValueError) as e:
        return reply({"opened": False, "error": "cannot open: %s" % e})
    ranges = []
    for spec in specs:
        offset, length = (int(x) for x in spec.split(":"))
        r = {"offset": offset, "length": length}
        try:
            r["sha256"] = hashlib.sha256(image.read(offset, length)).hexdigest()
        except (OSError, ReadFailed, zlib.error) as e:
            r["error"] = str(e)
        ranges.append(r)
    return reply({"opened": True, "error": None, "size": image.size, "ranges": ranges})


def main(argv):
    if len(argv) == 2 and argv[1] == "capabilities":
        return reply({"capabilities": ["read"], "name": NAME, "version": VERSION})
    if len(argv) >= 3 and argv[1] == "read":
        return read_verb(argv[2], argv[3:])
    print("usage: %s capabilities | read IMAGE OFFSET:LEN..." % argv[0], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
