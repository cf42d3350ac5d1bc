"""Compressed and delta images: the container the device inflates (docs/images.md).

A container is a small header with a chunk index, then one raw deflate stream. The
stream is cut by full flushes at every `chunk` output bytes, so a device that lost
power can start a fresh inflater at a chunk's file offset (HTTP Range) and carry on:
no back-reference crosses a chunk boundary. For a delta, the deflated data is a
`detools` sequential patch (uncompressed) and each index entry also carries the
applier's state at that boundary (phase, bytes left in the region, base offset).
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"FOTZ"
VERSION = 1
KIND_COMPRESSED = 1
KIND_DELTA = 2
KINDS = {KIND_COMPRESSED: "compressed", KIND_DELTA: "delta"}

# Applier phases kept in the index.
PHASE_START = 0      # before the patch header (chunk 0 of a delta; every compressed chunk)
PHASE_DIFF = 1       # inside a diff region: output = patch byte + base byte
PHASE_EXTRA = 2      # inside an extra region: output = patch byte

# magic, version, kind, wbits, reserved, target size, base size, payload size,
# chunk (output bytes), number of chunks, target SHA-256, base SHA-256
FIXED = struct.Struct("<4sBBBBIIIII32s32s")
# file offset, output offset, base offset, bytes left in the region, phase
ENTRY = struct.Struct("<IIIIB3x")
CRC = struct.Struct("<I")

BLOCK = 4096
DEFAULT_CHUNK = 64 * 1024
# Window of the deflate stream (log2). The device allocates 2**wbits bytes for it:
# 2 KiB keeps a delta update inside its 8 KiB heap budget; 4 KiB for a compressed
# image (no base window or patch buffers) brings it under 0.5 of the image.
DEFAULT_WBITS_DELTA = 11
DEFAULT_WBITS_COMPRESSED = 12
_MAX_SIZE = (1 << 30) - 1    # small ints on 32-bit ports; far above any slot


class FormatError(ValueError):
    """Not a valid container (or not the one expected)."""


@dataclass(frozen=True)
class Entry:
    file_offset: int
    out_offset: int
    base_offset: int
    remaining: int
    phase: int


@dataclass(frozen=True)
class Header:
    kind: int
    wbits: int
    target_size: int
    base_size: int
    payload_size: int
    chunk: int
    target_sha256: bytes
    base_sha256: bytes
    index: tuple[Entry, ...]

    @property
    def length(self) -> int:
        """Bytes of header, index and CRC: where the deflate stream starts."""
        return head_length(len(self.index))

    @property
    def file_size(self) -> int:
        return self.length + self.payload_size

    def entry_for(self, out_offset: int) -> Entry:
        """The checkpoint to resume from to produce output from `out_offset` on."""
        return self.index[min(out_offset // self.chunk, len(self.index) - 1)]


def head_length(chunks: int) -> int:
    return FIXED.size + chunks * ENTRY.size + CRC.size


# -- the detools sequential patch format (uncompressed) ----------------------------------

def _size(data: bytes, pos: int) -> tuple[int, int]:
    """One of detools' signed variable-length numbers: (value, next position).

    First byte: bit 7 more bytes follow, bit 6 negative, bits 0-5 the low bits;
    each next byte: bit 7 more, bits 0-6 the next bits.
    """
    if pos >= len(data):
        raise FormatError("patch ends inside a number")
    byte = data[pos]
    negative = byte & 0x40
    value = byte & 0x3F
    shift = 6
    pos += 1
    while byte & 0x80:
        if pos >= len(data):
            raise FormatError("patch ends inside a number")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        shift += 7
        pos += 1
    return (-value if negative else value), pos


def patch(old: bytes, new: bytes) -> bytes:
    """The `detools` sequential patch from `old` to `new`, uncompressed (bsdiff)."""
    import detools

    out = io.BytesIO()
    detools.create_patch(io.BytesIO(old), io.BytesIO(new), out, compression="none",
                         patch_type="sequential", algorithm="bsdiff")
    return out.getvalue()


def apply(old: bytes, data: bytes) -> bytes:
    """`detools`' own apply_patch on an uncompressed sequential patch (the reference)."""
    import detools

    out = io.BytesIO()
    detools.apply_patch(io.BytesIO(old), io.BytesIO(data), out)
    return out.getvalue()


def _patch_checkpoints(data: bytes, to_size: int, chunk: int) -> list[tuple[int, Entry]]:
    """(patch offset, applier state) at every multiple of `chunk` output bytes.

    A checkpoint at output X sits right after the patch byte that produced output
    X-1, so it always falls inside (or at the end of) a diff or extra region.
    """
    if not data or data[0] != 0x00:
        raise FormatError("not an uncompressed sequential detools patch")
    size, pos = _size(data, 1)
    if size != to_size:
        raise FormatError(f"patch makes {size} bytes, not {to_size}")
    dfsize, pos = _size(data, pos)
    if dfsize != 0:
        raise FormatError("detools data formats are not supported")
    points = [(0, Entry(0, 0, 0, 0, PHASE_START))]
    out = frm = 0
    nxt = chunk
    while out < to_size:
        for phase in (PHASE_DIFF, PHASE_EXTRA):
            length, pos = _size(data, pos)
            if length < 0 or out + length > to_size:
                raise FormatError("patch region writes past the image end")
            while out < nxt <= out + length and nxt < to_size:
                done = nxt - out
                base = frm + done if phase == PHASE_DIFF else frm
                points.append((pos + done, Entry(0, nxt, base, length - done, phase)))
                nxt += chunk
            pos += length
            out += length
            if phase == PHASE_DIFF:
                frm += length
        adjust, pos = _size(data, pos)
        frm += adjust
    if pos != len(data):
        raise FormatError("data after the end of the patch")
    return points


# -- the container ------------------------------------------------------------------------

def _pack(kind: int, wbits: int, stream: bytes, points: list[tuple[int, Entry]],
          target: bytes, base: bytes | None, chunk: int, level: int) -> bytes:
    if not 9 <= wbits <= 15:
        raise ValueError("wbits must be 9..15")
    if chunk <= 0 or chunk % BLOCK:
        raise ValueError(f"chunk must be a positive multiple of {BLOCK}")
    if not 0 < len(target) <= _MAX_SIZE or (base is not None and len(base) > _MAX_SIZE):
        raise ValueError("image size out of range")
    comp = zlib.compressobj(level, zlib.DEFLATED, -wbits, 9)
    parts: list[bytes] = []
    offsets: list[int] = []
    done = 0
    bounds = [p for p, _ in points[1:]] + [len(stream)]
    start = 0
    for end in bounds:
        offsets.append(done)
        piece = comp.compress(stream[start:end])
        # A full flush byte-aligns the output and forgets the window: a fresh
        # inflater can start right here. The last piece finishes the stream.
        piece += comp.flush(zlib.Z_FULL_FLUSH if end < len(stream) else zlib.Z_FINISH)
        parts.append(piece)
        done += len(piece)
        start = end
    payload = b"".join(parts)
    hlen = head_length(len(points))
    index = b"".join(
        ENTRY.pack(hlen + off, e.out_offset, e.base_offset, e.remaining, e.phase)
        for off, (_, e) in zip(offsets, points, strict=True))
    fixed = FIXED.pack(MAGIC, VERSION, kind, wbits, 0, len(target),
                       0 if base is None else len(base), len(payload), chunk, len(points),
                       hashlib.sha256(target).digest(),
                       hashlib.sha256(base).digest() if base is not None else bytes(32))
    head = fixed + index
    return head + CRC.pack(zlib.crc32(head)) + payload


def compress(image: bytes, *, wbits: int = DEFAULT_WBITS_COMPRESSED,
             chunk: int = DEFAULT_CHUNK, level: int = 9) -> bytes:
    """A compressed container of `image` (kind 1)."""
    points = [(x, Entry(0, x, 0, 0, PHASE_START)) for x in range(0, len(image), chunk)]
    return _pack(KIND_COMPRESSED, wbits, image, points, image, None, chunk, level)


def delta(old: bytes, new: bytes, *, wbits: int = DEFAULT_WBITS_DELTA,
          chunk: int = DEFAULT_CHUNK, level: int = 9) -> bytes:
    """A delta container (kind 2) that turns `old` (the device's running image) into `new`."""
    if not new:
        raise ValueError("image size out of range")
    data = patch(old, new)
    points = _patch_checkpoints(data, len(new), chunk)
    return _pack(KIND_DELTA, wbits, data, points, new, old, chunk, level)


def wrap(kind: int, stream: bytes, target: bytes, base: bytes | None = None, *,
         wbits: int = DEFAULT_WBITS_DELTA) -> bytes:
    """`stream` (an image, or a patch, taken as it is) in a container of one chunk.

    No checks and no resume points inside: for tests of the device's checks, and
    for streams made elsewhere.
    """
    chunk = -(-len(target) // BLOCK) * BLOCK
    return _pack(kind, wbits, stream, [(0, Entry(0, 0, 0, 0, PHASE_START))], target, base,
                 chunk, 9)


def is_container(data: bytes) -> bool:
    return data[:4] == MAGIC


def parse_header(data: bytes) -> Header:
    """The header of a container (FormatError when it is not a valid one)."""
    if len(data) < FIXED.size + CRC.size or data[:4] != MAGIC:
        raise FormatError("not a compressed or delta image")
    (_, version, kind, wbits, _, target_size, base_size, payload_size, chunk, count,
     target_sha, base_sha) = FIXED.unpack_from(data)
    if version != VERSION or kind not in KINDS:
        raise FormatError("unknown container version or kind")
    hlen = head_length(count)
    if len(data) < hlen:
        raise FormatError("header cut short")
    if zlib.crc32(data[:hlen - CRC.size]) != CRC.unpack_from(data, hlen - CRC.size)[0]:
        raise FormatError("header CRC mismatch")
    index = tuple(Entry(*ENTRY.unpack_from(data, FIXED.size + i * ENTRY.size))
                  for i in range(count))
    return Header(kind, wbits, target_size, base_size, payload_size, chunk,
                  target_sha, base_sha, index)


def _inflate(data: bytes, head: Header, file_offset: int) -> bytes:
    d = zlib.decompressobj(-head.wbits)
    out = d.decompress(data[file_offset:head.file_size])
    if not d.eof or d.unused_data:
        raise FormatError("deflate stream does not end where the header says")
    return out


def decode(data: bytes, base: bytes | None = None) -> bytes:
    """The target image a container rebuilds (host reference; checks the SHA-256s)."""
    head = parse_header(data)
    if len(data) != head.file_size:
        raise FormatError(f"file is {len(data)} bytes, its header says {head.file_size}")
    stream = _inflate(data, head, head.length)
    if head.kind == KIND_DELTA:
        if base is None or hashlib.sha256(base).digest() != head.base_sha256:
            raise FormatError("delta base mismatch")
        out = apply(base, stream)
    else:
        out = stream
    if hashlib.sha256(out).digest() != head.target_sha256:
        raise FormatError("target sha256 mismatch")
    return out


def chunk_stream(data: bytes, i: int) -> bytes:
    """What a fresh inflater started at chunk `i` produces (patch bytes for a delta)."""
    head = parse_header(data)
    return _inflate(data, head, head.index[i].file_offset)


def describe(file: bytes | str | Path) -> dict:
    """Size, digests, kind and ratio to the full image of a container (or a plain image)."""
    data = file if isinstance(file, bytes) else Path(file).read_bytes()
    info: dict = {"size": len(data), "md5": hashlib.md5(data).hexdigest(),
                  "sha256": hashlib.sha256(data).hexdigest()}
    if not is_container(data):
        info.update(kind="full", image_size=len(data), image_sha256=info["sha256"],
                    ratio=1.0)
        return info
    head = parse_header(data)
    info.update(kind=KINDS[head.kind], image_size=head.target_size,
                image_sha256=head.target_sha256.hex(),
                ratio=round(len(data) / head.target_size, 4),
                wbits=head.wbits, chunk=head.chunk, chunks=len(head.index),
                header_size=head.length)
    if head.kind == KIND_DELTA:
        info.update(base_size=head.base_size, base_sha256=head.base_sha256.hex())
    return info
