"""Compressed and delta images: the container header, and the inflating decoder.

The container (docs/images.md): a 92-byte header, a chunk index, a CRC-32, then
one raw deflate stream cut by full flushes every `chunk` output bytes, so a fresh
inflater can start at any chunk's file offset after a power cut. `container.open()` gives a
decoder with the engine's stream interface: `readinto(buf[, n])` puts the next n
bytes of the *target image* in buf, `close()` closes the source.

Errors in the file raise UpdateError (fota.errors) with step -3 and a reason; a source
that fails or ends early surfaces as the engine expects from a download (the
source's exception, or a short read): step -2, resumable.
"""
import io
from micropython import const

KIND_COMPRESSED = const(1)
KIND_DELTA = const(2)
FIXED = const(92)            # bytes of the fixed header
_ENTRY = const(20)
_FEED = const(256)           # source bytes read at a time
_MAX = const(0x3FFFFFFF)     # sizes stay small ints on 32-bit ports
_CHUNKS = const(4096)        # most index entries accepted


def _bad(reason, step=-3):
    from fota.errors import UpdateError

    return UpdateError(step, reason)


class _Cut(Exception):
    """The source ended before the file did: a short read for the engine (-2)."""


def _entry(raw, i):
    """Index entry i: (file offset, image offset, base offset, left in region, phase)."""
    import struct

    return struct.unpack_from("<IIIIB", raw, FIXED + i * _ENTRY)


def parse(raw):
    """Check a header (+ index + CRC); (kind, wbits, size, base size, file size, chunk)."""
    import binascii
    import struct

    if len(raw) < FIXED or raw[:4] != b"FOTZ":
        raise _bad("not a compressed or delta image")
    _, ver, kind, wbits, _, size, bsize, payload, chunk, count = struct.unpack_from(
        "<4sBBBBIIIII", raw, 0)
    hlen = FIXED + count * _ENTRY + 4
    if ver != 1 or kind not in (KIND_COMPRESSED, KIND_DELTA):
        raise _bad("unknown image container version or kind")
    if len(raw) != hlen or binascii.crc32(memoryview(raw)[:-4]) != struct.unpack_from(
            "<I", raw, hlen - 4)[0]:
        raise _bad("image header CRC mismatch")
    if (not 9 <= wbits <= 15 or not 0 < size <= _MAX or bsize > _MAX or payload > _MAX
            or not 0 < chunk <= _MAX or chunk & 4095 or count > _CHUNKS
            or count != (size + chunk - 1) // chunk
            or (kind == KIND_DELTA) != (bsize > 0)):
        raise _bad("image header sizes are inconsistent")
    total = hlen + payload
    prev = hlen - 1
    for i in range(count):
        off, out, frm, rem, phase = _entry(raw, i)
        if (out != i * chunk or off <= prev or off >= total or (i == 0) != (off == hlen)
                or rem > size - out or frm > bsize or (phase == 1 and frm + rem > bsize)
                or phase > (0 if kind == KIND_COMPRESSED or i == 0 else 2)
                or (kind == KIND_DELTA and i and not phase)):
            raise _bad("image chunk index is inconsistent")
        prev = off
    return kind, wbits, size, bsize, total, chunk


def resume_offset(head, start):
    """The file offset to fetch (HTTP Range) to go on making the image from `start`."""
    return _entry(head, start // parse(head)[5])[0]


class _Feed(io.IOBase):
    """The source as DeflateIO reads it: one byte per call, from a small buffer.

    DeflateIO pulls its input a byte at a time; from a socket that would be a
    system call per byte. Served from here it is faster, stops at the end the
    header declares, hashes what was downloaded, and keeps network failures
    (-2) apart from bad data (-3). Nothing here allocates once running.
    """

    def __init__(self, src, pos, end, hasher):
        import array

        self.src = src
        self.buf = bytearray(_FEED)
        self.st = array.array("i", (0, 0))   # next byte in buf, bytes in buf
        self.pos = pos           # file offset after the buffered bytes
        self.hasher = hasher
        self.err = None          # what the source raised
        self.cut = False         # the source ended early
        self.over = False        # wanted past the declared end
        self.limit(end)

    def limit(self, end):
        self.end = end
        left = (end - self.pos) % _FEED
        self.tail = memoryview(self.buf)[:left] if left else self.buf

    def consumed(self):
        """File offset of the next byte the inflater will take."""
        return self.pos - self.st[1] + self.st[0]

    def fill(self, b):
        """The buffer is used up: read more from the source, then serve one byte."""
        k = self.end - self.pos
        if k <= 0:
            self.over = True
            return 0
        if k > _FEED:
            k = _FEED
        try:
            got = self.src.readinto(self.buf, k)
        except Exception as exc:  # noqa: BLE001 - the decoder reports it as the download's failure
            self.err = exc
            return 0
        if got != k:
            self.cut = True
            return 0
        if self.hasher is not None:
            self.hasher.update(self.buf if k == _FEED else self.tail)
        self.pos += k
        b[0] = self.buf[0]
        st = self.st
        st[0] = 1
        st[1] = k
        return 1

    def readinto_bytecode(self, b):
        st = self.st
        i = st[0]
        if i >= st[1]:
            return self.fill(b)
        b[0] = self.buf[i]
        st[0] = i + 1
        return 1

    readinto = readinto_bytecode     # replaced by addloop's machine code where it loads


def _loops():
    """Machine code for the byte loops where the port has the emitter: the feed's
    readinto, and (add, copy) for patch.py; None where it does not load."""
    try:
        from fota.addloop import load

        add, copy, feed = load()
        del load
    except Exception:  # noqa: BLE001 - no emitter (SyntaxError), or no room to compile it
        return None
    _Feed.readinto = feed
    try:  # the loader (its source text) is not needed any more: let the GC have it
        import sys

        sys.modules.pop("fota.addloop", None)
        delattr(sys.modules["fota"], "addloop")
    except Exception:  # noqa: BLE001 - best effort
        pass
    return add, copy


LOOPS = _loops()


class Decoder:
    """A compressed image: the inflated stream is the image (Patcher: a delta)."""

    _short = "compressed data ends before the image does"

    def __init__(self, feed, head, out, start):
        import deflate

        self.feed = feed
        self.head = head         # header + index + CRC: keep it to resume
        self.kind, wbits, self.size, self.base_size, _, self.chunk = parse(head)
        import binascii

        self.sha256 = binascii.hexlify(head[28:60]).decode()   # the image's, for the engine
        self.out = out           # image offset of the next byte made
        self.start = start       # bytes before it are made and dropped (resume)
        self.one = bytearray(1)
        self.d = deflate.DeflateIO(feed, deflate.RAW, wbits)

    def fill(self, buf, n):
        """Exactly n bytes of the inflated stream into buf[0:n] (n=0: must be at its end)."""
        try:
            got = self.d.readinto(buf if n else self.one, n or 1)
        except (OSError, EOFError):   # EOFError: DeflateIO's input ran out
            got = -1
        f = self.feed
        if f.err is not None:
            raise f.err
        if f.cut:
            raise _Cut
        if f.over:
            raise _bad("compressed data runs past the size in the header")
        if got < 0:
            raise _bad("corrupt deflate stream")
        if n == 0:
            if got or f.consumed() != f.end:
                raise _bad("data after the end of the image")
        elif got != n:
            raise _bad(self._short)

    _make = fill

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
                    self.fill(None, 0)    # the stream, and the file, end here
            return n
        except _Cut:
            return 0

    def close(self):
        self.feed.src.close()


def prepare(stream, head=None, start=0, file_size=None, hasher=None, max_wbits=12):
    """Read and check the header (fresh) or take the kept one (resume); returns
    (feed, head, index entry of the chunk holding `start`, start). See
    container.open, which makes the decoder from these."""
    if head is None:
        feed = _Feed(stream, 0, FIXED, hasher)
        try:
            head = _take(feed, bytearray(FIXED), 0)
            if head[:4] != b"FOTZ":
                raise _bad("not a compressed or delta image")
            count = head[24] | head[25] << 8 | head[26] << 16 | head[27] << 24
            if count > _CHUNKS:
                raise _bad("image header sizes are inconsistent")
            feed.limit(FIXED + count * _ENTRY + 4)
            head = _take(feed, head + bytearray(feed.end - FIXED), FIXED)
        except _Cut:
            if feed.over:
                raise _bad("image header cut short")
            raise _bad("download ended in the image header", -2)
        start = 0
        feed.limit(parse(head)[4])
    else:
        feed = _Feed(stream, resume_offset(head, start), parse(head)[4], hasher)
    _, wbits, size, _, total, chunk = parse(head)
    if wbits > max_wbits:
        raise _bad("image needs a %d-byte deflate window, more than this device has" % (
            1 << wbits))
    if file_size is not None and file_size != total:
        raise _bad("image header says %d bytes, the file has %d" % (total, file_size))
    if not 0 <= start < size:
        raise _bad("resume point outside the image")
    return feed, head, _entry(head, start // chunk), start


def _take(feed, buf, at):
    """Fill buf[at:] from the feed (the header: allocating here is fine)."""
    mv = memoryview(buf)
    for k in range(at, len(buf)):
        if not feed.readinto(mv[k:k + 1]):
            raise _Cut
    return buf
