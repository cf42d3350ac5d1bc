"""Compressed and delta images: the container header, and the inflating decoder.

The container (docs/images.md): a 92-byte header, a chunk index, a CRC-32, then
one raw deflate stream cut by full flushes every `chunk` output bytes, so a fresh
inflater can start at any chunk's file offset after a power cut. `open()` gives a
decoder with the engine's stream interface: `readinto(buf[, n])` puts the next n
bytes of the *target image* in buf, `close()` closes the source.

Errors in the file raise engine.UpdateError with step -3 and a reason; a source
that fails or ends early surfaces as the engine expects from a download (the
source's exception, or a short read): step -2, resumable.
"""
import io

from micropython import const

KIND_COMPRESSED = const(1)
KIND_DELTA = const(2)
FIXED = const(92)            # bytes of the fixed header (head_size needs them)
_ENTRY = const(20)
_FEED = const(512)           # source bytes read at a time
_MAX = const(0x3FFFFFFF)     # sizes stay small ints on 32-bit ports
_START = const(0)


def _bad(reason, step=-3):
    from fota.engine import UpdateError

    return UpdateError(step, reason)


class _Cut(Exception):
    """The source ended before the file did: a short read for the engine (-2)."""


class Head:
    """The parsed header; `raw` is what to keep to resume (header + index + CRC)."""

    def __init__(self, raw):
        import binascii
        import struct

        if len(raw) < FIXED or raw[:4] != b"FOTZ":
            raise _bad("not a compressed or delta image")
        (_, ver, kind, wbits, _, size, bsize, payload, chunk,
         count) = struct.unpack_from("<4sBBBBIIIII", raw, 0)
        hlen = FIXED + count * _ENTRY + 4
        if ver != 1 or kind not in (KIND_COMPRESSED, KIND_DELTA):
            raise _bad("unknown image container version or kind")
        if len(raw) != hlen:
            raise _bad("image header cut short")
        if binascii.crc32(memoryview(raw)[:hlen - 4]) != struct.unpack_from("<I", raw,
                                                                              hlen - 4)[0]:
            raise _bad("image header CRC mismatch")
        if (not 9 <= wbits <= 15 or not 0 < size <= _MAX or bsize > _MAX
                or payload > _MAX or not 0 < chunk <= _MAX or chunk & 4095
                or count != (size + chunk - 1) // chunk
                or (kind == KIND_DELTA) != (bsize > 0)):
            raise _bad("image header sizes are inconsistent")
        self.raw = raw
        self.kind = kind
        self.wbits = wbits
        self.size = size
        self.base_size = bsize
        self.length = hlen
        self.total = hlen + payload
        self.chunk = chunk
        self.count = count
        self.sha256 = binascii.hexlify(raw[28:60]).decode()
        self.base_sha = bytes(raw[60:92])
        prev = hlen - 1
        for i in range(count):
            off, out, frm, rem, phase = self.entry(i)
            if (out != i * chunk or off <= prev or off >= self.total
                    or (i == 0) != (off == hlen) or rem > size - out or frm > bsize
                    or phase > (0 if kind == KIND_COMPRESSED or i == 0 else 2)
                    or (kind == KIND_DELTA and i and not phase)):
                raise _bad("image chunk index is inconsistent")
            prev = off

    def entry(self, i):
        """(file offset, output offset, base offset, bytes left in region, phase)."""
        import struct

        return struct.unpack_from("<IIIIB", self.raw, FIXED + i * _ENTRY)


def head_size(fixed):
    """Bytes of header + index + CRC, from the first FIXED bytes of the file."""
    import struct

    if len(fixed) < FIXED or fixed[:4] != b"FOTZ":
        raise _bad("not a compressed or delta image")
    return FIXED + struct.unpack_from("<I", fixed, 24)[0] * _ENTRY + 4


def resume_offset(head, start):
    """The file offset to fetch (HTTP Range) to produce output from `start` on."""
    h = head if isinstance(head, Head) else Head(head)
    return h.entry(min(start // h.chunk, h.count - 1))[0]


class _Feed(io.IOBase):
    """The source as DeflateIO reads it: one byte per call from a 512-byte buffer.

    DeflateIO pulls its input one byte at a time; from a socket that would be a
    system call per byte. Serving it from here is faster, stops at the end the
    header declares, hashes what was downloaded, and keeps network failures
    (-2) apart from bad data (-3). Nothing here allocates once running.
    """

    def __init__(self, src, pos, end, hasher):
        self.src = src
        self.buf = bytearray(_FEED)
        self.i = 0
        self.n = 0
        self.pos = pos           # file offset after the buffered bytes
        self.hasher = hasher
        self.err = None          # what the source raised
        self.cut = False         # the source ended early
        self.over = False        # wanted past the declared end
        self.limit(end)

    def limit(self, end):
        self.end = end
        left = (end - self.pos) % _FEED
        self.tail = memoryview(self.buf)[:left] if left else None

    def consumed(self):
        return self.pos - self.n + self.i

    def _fill(self):
        k = self.end - self.pos
        if k <= 0:
            self.over = True
            return 0
        if k > _FEED:
            k = _FEED
        try:
            got = self.src.readinto(self.buf, k)
        except Exception as exc:  # noqa: reported by the decoder as the download's failure
            self.err = exc
            return 0
        if got != k:
            self.cut = True
            return 0
        if self.hasher is not None:
            self.hasher.update(self.buf if k == _FEED else self.tail)
        self.pos += k
        self.i = 0
        self.n = k
        return k

    def readinto(self, b):
        i = self.i
        if i >= self.n:
            if not self._fill():
                return 0
            i = 0
        b[0] = self.buf[i]
        self.i = i + 1
        return 1

    def check(self):
        if self.err is not None:
            raise self.err
        if self.cut:
            raise _Cut()
        if self.over:
            raise _bad("compressed data runs past the size in the header")

    def take(self, n):
        out = bytearray(n)
        one = bytearray(1)
        for j in range(n):
            if not self.readinto(one):
                self.check()
                raise _Cut()
            out[j] = one[0]
        return out


class Decoder:
    """A compressed image: the inflated stream is the image."""

    def __init__(self, feed, head, out, start):
        import deflate

        self.feed = feed
        self.head = head
        self.size = head.size
        self.sha256 = head.sha256
        self.out = out           # image offset of the next byte made
        self.start = start       # bytes before it are made and dropped (resume)
        self.one = bytearray(1)
        self.d = deflate.DeflateIO(feed, deflate.RAW, head.wbits)

    def fill(self, buf, n):
        """Exactly n bytes of the inflated stream into buf[0:n]."""
        try:
            got = self.d.readinto(buf, n)
        except (OSError, EOFError):   # EOFError: DeflateIO's input ran out
            got = -1
        self.feed.check()
        if got < 0:
            raise _bad("corrupt deflate stream")
        if got != n:
            raise _bad(self._short)

    _short = "compressed data ends before the image does"

    def _make(self, buf, n):
        self.fill(buf, n)

    def _end(self):
        pass

    def readinto(self, buf, n=-1):
        try:
            while self.out < self.start:
                k = self.start - self.out
                if k > len(buf):
                    k = len(buf)
                self._make(buf, k)
                self.out += k
            if n < 0:
                n = len(buf)
            if n > len(buf) or n > self.size - self.out:
                raise _bad("read past the end of the image")
            if n:
                self._make(buf, n)
                self.out += n
                if self.out == self.size:
                    self._end()
                    self._finish()
            return n
        except _Cut:
            return 0

    def _finish(self):
        """The stream must end exactly here, and the file with it."""
        try:
            got = self.d.readinto(self.one)
        except (OSError, EOFError):   # EOFError: DeflateIO's input ran out
            got = -1
        self.feed.check()
        if got or self.feed.consumed() != self.feed.end:
            raise _bad("data after the end of the image")

    def close(self):
        self.feed.src.close()


def open(stream, base=None, base_sha=None, head=None, start=0, file_size=None,
         hasher=None):
    """The decoder of a compressed or delta image read from `stream`.

    Fresh: `stream` is the file from offset 0. Resume: pass `head` (the `head.raw`
    kept from the first run) and `start` (image offset to go on from); `stream`
    is the file from `resume_offset(head, start)`. `base(offset, buf)` reads the
    running image (deltas); `base_sha` is its SHA-256 (32 bytes) when the caller
    knows it cheaply, else the base is read once to check it. `file_size`, when
    known (the notice's size), must match the header. `hasher.update` sees every
    byte downloaded (the notice's MD5 on a fresh run).
    """
    try:
        if head is None:
            feed = _Feed(stream, 0, FIXED, hasher)
            fixed = feed.take(FIXED)
            feed.limit(head_size(fixed))
            h = Head(fixed + feed.take(feed.end - FIXED))
            feed.limit(h.total)
            start = 0
        else:
            h = head if isinstance(head, Head) else Head(head)
            feed = _Feed(stream, resume_offset(h, start), h.total, hasher)
    except _Cut:
        raise _bad("download ended in the image header", -2)
    if file_size is not None and file_size != h.total:
        raise _bad("image header says %d bytes, the file has %d" % (h.total, file_size))
    if not 0 <= start < h.size:
        raise _bad("resume point outside the image")
    i = start // h.chunk
    ent = h.entry(i)
    if h.kind == KIND_COMPRESSED:
        return Decoder(feed, h, ent[1], start)
    if base is None:
        raise _bad("delta image but no base to apply it to")
    if base_sha is None:
        base_sha = _hash_base(base, h.base_size)
    if bytes(base_sha) != h.base_sha:
        raise _bad("delta base mismatch")
    from fota.patch import Patcher

    return Patcher(feed, h, ent, start, base)


def _hash_base(base, size):
    import hashlib

    sha = hashlib.sha256()
    buf = bytearray(_FEED)
    pos = 0
    try:
        while pos < size:
            if size - pos < _FEED:
                buf = bytearray(size - pos)
            base(pos, buf)
            sha.update(buf)
            pos += len(buf)
    except OSError as exc:
        raise _bad("cannot read the running image: %s" % exc, -4)
    return sha.digest()
