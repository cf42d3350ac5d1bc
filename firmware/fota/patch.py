"""The delta applier: a `detools` sequential patch (uncompressed) against the running image.

The patch, as the inflater yields it: one byte (0x00: sequential, no compression),
the image size, a data-format size (0), then until the image is complete: a diff
region (n, then n bytes each added to the next base byte), an extra region (n,
then n bytes taken as they are), and a signed adjustment of the base offset. The
numbers are detools' variable-length signed integers. The state between two
bytes of output is (phase, bytes left in the region, base offset): the container's
chunk index stores it at every checkpoint, so a resume starts mid-region.

Every region is checked before a byte of it is used: it must not write past the
image or read outside the base. Errors are step -3 (-4 for a base read failure).
"""
from micropython import const

from fota.inflate import LOOPS, Decoder, _bad

_PIECE = const(256)          # patch and base bytes handled at a time
_START = const(0)
_DIFF = const(1)
_EXTRA = const(2)


def _add_bytecode(dst, at, a, b, boff, n):
    for i in range(n):
        dst[at + i] = (a[i] + b[boff + i]) & 0xFF


def _copy_bytecode(dst, at, src, n):
    for i in range(n):
        dst[at + i] = src[i]


if LOOPS:      # machine code where the port has the native emitter; same bytes either way
    add, copy = LOOPS
else:
    add = _add_bytecode
    copy = _copy_bytecode


class Patcher(Decoder):
    def __init__(self, feed, head, entry, start, base):
        super().__init__(feed, head, entry[1], start)
        self.base = base
        self.frm = entry[2]
        self.rem = entry[3]
        self.phase = entry[4]
        self.pbuf = bytearray(_PIECE)
        bsize = self.base_size
        self.bbuf = bytearray(_PIECE if bsize > _PIECE else bsize)
        self.bat = -(1 << 20)     # base offset of bbuf's first byte (none read yet)

    _short = "truncated patch"

    def _byte(self):
        self.fill(self.one, 1)
        return self.one[0]

    def _num(self):
        b = self._byte()
        v = b & 0x3F
        neg = b & 0x40
        sh = 6
        while b & 0x80:
            if sh > 20:           # more than 4 bytes: beyond any image (and small ints)
                raise _bad("bad number in patch")
            b = self._byte()
            v |= (b & 0x7F) << sh
            sh += 7
        return -v if neg else v

    def _next(self, pos):
        """Read region headers until one has bytes; `pos` is the image offset."""
        ph = self.phase
        while self.rem == 0:
            if ph == _START:
                if self._byte() != 0:
                    raise _bad("not a sequential uncompressed detools patch")
                if self._num() != self.size:
                    raise _bad("patch and header disagree on the image size")
                if self._num() != 0:
                    raise _bad("detools data formats are not supported")
                ph = _DIFF
            elif ph == _DIFF:
                ph = _EXTRA
            else:
                self.frm += self._num()
                ph = _DIFF
            n = self._num()
            if n < 0 or n > self.size - pos:
                raise _bad("patch writes past the end of the image")
            if ph == _DIFF and n and (self.frm < 0 or self.frm + n > self.base_size):
                raise _bad("patch reads outside the base image")
            self.phase = ph
            self.rem = n

    def _make(self, buf, n):
        pb = self.pbuf
        bb = self.bbuf
        blen = len(bb)
        done = 0
        while done < n:
            if self.rem == 0:
                self._next(self.out + done)
            k = n - done
            if k > self.rem:
                k = self.rem
            if k > _PIECE:
                k = _PIECE
            if self.phase == _DIFF:
                frm = self.frm
                at = self.bat
                if frm < at or frm >= at + blen:
                    at = frm if frm + blen <= self.base_size else self.base_size - blen
                    try:
                        self.base(at, bb)
                    except OSError as exc:
                        raise _bad("cannot read the running image: %s" % exc, -4)
                    self.bat = at
                if k > at + blen - frm:
                    k = at + blen - frm
                self.fill(pb, k)
                add(buf, done, pb, bb, frm - at, k)
                self.frm = frm + k
            else:
                self.fill(pb, k)
                copy(buf, done, pb, k)
            self.rem -= k
            done += k

    def _end(self):
        """The image is complete: read what closes the patch (it must end there)."""
        if self.phase == _DIFF:
            if self._num() != 0:
                raise _bad("patch writes past the end of the image")
            self.phase = _EXTRA
        if self.phase == _EXTRA:
            self._num()               # the last adjustment, unused
