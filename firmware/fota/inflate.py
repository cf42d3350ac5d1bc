"""Compressed and delta images: the container header, and the inflating decoder.

The container (docs/images.md): a 92-byte header, a chunk index, a CRC-32, then
one raw deflate stream cut by full flushes every `chunk` output bytes, so a fresh
inflater can start at any chunk's file offset after a power cut. `container.open()`
gives a decoder with the engine's stream interface: `readinto(buf[, n])` puts the
next n bytes of the *target image* in buf, `close()` closes the source.

`deflate.DeflateIO` pulls its input one byte per call. Its input here is an
`io.BytesIO` (C code: no Python call per byte) that this decoder refills from the
source in pieces, hashing what was downloaded and stopping at the end the header
declares. Before each inflater call the buffer holds at least what that call can
consume from a valid stream (2 bytes per output byte, plus block headers), so the
inflater never waits for input mid-call; reading past what was put in is
corrupt (or runs past the declared end).

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
_MAX = const(0x3FFFFFFF)     # sizes stay small ints on 32-bit ports
_CHUNKS = const(4096)        # most index entries accepted
# Inflated bytes per call at most (also the source's read size): 1024 with a window of
# 2 KiB or less (a delta), 512 with a larger one; 3 times that of compressed input held
# (a refill reads at least a piece; a call may take 2 bytes per output byte + _SLACK).
_SLACK = const(640)          # input two deflate block boundaries may take in one call


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


def _loop(native=True):
    """The byte loop (fota.addloop: machine code where the port has the emitter, else
    bytecode; same bytes). Its loader and source text are dropped after."""
    from fota.addloop import load

    fn = load(native)
    try:
        import sys

        sys.modules.pop("fota.addloop", None)
        delattr(sys.modules["fota"], "addloop")
    except Exception:  # noqa: BLE001 - best effort
        pass
    return fn


_run = None                  # the byte loop, loaded with the first decoder


def ready():
    """Compile the byte loop if not yet done (container.open calls it early, while
    less of the heap is taken: before the base check and the patch module)."""
    global _run
    if _run is None:
        _run = _loop()


# Slots of the loop's state (see fota.addloop).
_PI = const(0)
_PN = const(1)
_PH = const(2)
_REM = const(3)
_FRM = const(4)
_BAT = const(5)
_OUT = const(6)
_SIZE = const(7)
_BSIZE = const(8)
_EOF = const(10)
_CARRY = const(4)            # pb bytes before the inflated ones: a number cut by a refill


class Decoder:
    """A compressed image (one region of bytes taken as they are); patch.Patcher
    reads a delta's regions. `base(offset, buf)` reads the base image (deltas)."""

    _short = "compressed data ends before the image does"

    def __init__(self, src, head, entry, start, hasher=None, base=None):
        import array
        import binascii

        import deflate

        ready()
        self.src = src
        self.head = head         # header + index + CRC: keep it to resume
        self.kind, wbits, self.size, self.base_size, self.end, _ = parse(head)
        self.sha256 = binascii.hexlify(head[28:60]).decode()   # the image's, for the engine
        self.pos = entry[0]      # file offset of the next byte from the source
        self.out = entry[1]      # image offset of the next byte made
        self.start = start       # bytes before it are made and dropped (resume)
        self.hasher = hasher
        self.feed = self         # (the engine reads the file's MD5 from .feed.hasher)
        self.base = base
        st = self.st = array.array("i", bytearray(44))
        st[_PI] = st[_PN] = _CARRY
        st[_SIZE] = self.size
        st[_BSIZE] = self.base_size
        if self.kind == KIND_COMPRESSED:
            st[_PH] = 2
            st[_REM] = self.size - self.out
        else:
            st[_FRM] = entry[2]
            st[_REM] = entry[3]
            st[_PH] = entry[4]
            st[_BAT] = -(1 << 30)
        # Inflated bytes go to pb after _CARRY bytes; pb is also the source's read buffer.
        piece = self.piece = 1024 if wbits <= 11 else 512
        self.pb = bytearray(_CARRY + piece)
        self.pv = memoryview(self.pb)[_CARRY:]
        left = (self.end - self.pos) % piece
        self.tail = self.pv[:left] if left else self.pv
        self.bb = self.pb        # the base window (patch.Patcher's own)
        # (getattr: the stubs' BytesIO lacks the stream methods every port has)
        self.bio = getattr(io, "BytesIO")(3 * piece)
        self.vend = 0            # bytes of bio holding input
        self.d = deflate.DeflateIO(self.bio, deflate.RAW, wbits)
        self.fill = self._fill   # bound once: the loop calls them (no allocation then)
        self.rd = self._read

    def _refill(self, have):
        """Move the `have` unread input bytes to the front, then read the source."""
        bio = self.bio
        pv = self.pv
        at = self.vend - have
        piece = self.piece
        i = 0
        while i < have:
            n = have - i
            if n > piece:
                n = piece
            bio.seek(at + i)
            bio.readinto(pv, n)
            bio.seek(i)
            bio.write(pv, 0, n)
            i += n
        bio.seek(have)
        src = self.src
        hasher = self.hasher
        while have <= 2 * piece and self.pos < self.end:
            b = pv if self.end - self.pos >= piece else self.tail
            if src.readinto(b) != len(b):
                raise _Cut
            if hasher is not None:
                hasher.update(b)
            bio.write(b)
            have += len(b)
            self.pos += len(b)
        bio.seek(0)
        self.vend = have
        return have

    def _take(self, k):
        """Inflate up to k (> 0) bytes into pb[_CARRY:], no more than the held input
        surely allows; how many were made (fewer only where the stream ends)."""
        bio = self.bio
        have = self.vend - bio.tell()
        if self.pos < self.end:
            if have < 2 * self.piece:
                have = self._refill(have)
            if self.pos < self.end:          # more to come: stay inside the held input
                have = (have - _SLACK) >> 1
                if k > have:
                    k = have
        try:
            got = self.d.readinto(self.pv, k)
        except OSError:
            got = -1
        except EOFError:              # the held input ran out
            got = -2
        if got == -2 or bio.tell() > self.vend:
            raise _bad("compressed data runs past the size in the header"
                       if self.pos >= self.end else "corrupt deflate stream")
        if got < 0:
            raise _bad("corrupt deflate stream")
        return got

    def _fill(self):
        """pb is used up but for part of a number: keep that before the next piece."""
        st = self.st
        pb = self.pb
        i = st[_PI]
        left = st[_PN] - i
        for j in range(left):
            pb[_CARRY - left + j] = pb[i + j]
        got = self._take(self.piece)
        st[_PI] = _CARRY - left
        st[_PN] = _CARRY + got
        if not got:
            st[_EOF] = 1

    def _why(self, r):
        return self._short

    def _read(self, at):
        """The base window: bb from base offset `at`."""
        try:
            self.base(at, self.bb)
        except OSError as exc:
            raise _bad("cannot read the running image: %s" % exc, -4)

    def _make(self, buf, n):
        """The next n image bytes into buf[0:n] (n = -1: what closes a delta)."""
        st = self.st
        st[_OUT] = self.out
        st[9] = 0
        r = _run(st, buf, n, self.pb, self.bb, self.fill, self.rd)
        if r:
            raise _bad(self._why(r))

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
                    if self.kind == KIND_DELTA:
                        self._make(buf, -1)
                    # The stream, and the file, end here.
                    st = self.st
                    if (st[_PI] != st[_PN] or self._take(1) or self.pos != self.end
                            or self.bio.tell() != self.vend):
                        raise _bad("data after the end of the image")
            return n
        except _Cut:
            return 0

    def close(self):
        self.src.close()


def header(stream, pre, hasher):
    """Read a file's header + index + CRC (`pre`: its first bytes, read already)."""
    head = bytearray(FIXED)
    k = 0
    if pre:
        k = len(pre)
        head[:k] = pre
    try:
        want = FIXED
        while True:
            if stream.readinto(memoryview(head)[k:], want - k) != want - k:
                raise _Cut
            if want > FIXED:
                break
            if head[:4] != b"FOTZ":
                raise _bad("not a compressed or delta image")
            count = head[24] | head[25] << 8 | head[26] << 16 | head[27] << 24
            if count > _CHUNKS:
                raise _bad("image header sizes are inconsistent")
            k = FIXED
            want = FIXED + count * _ENTRY + 4
            head += bytearray(want - FIXED)
    except _Cut:
        raise _bad("download ended in the image header", -2)
    if hasher is not None:
        hasher.update(head)
    return head
