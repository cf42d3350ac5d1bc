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
The loop that reads the regions and makes the bytes is fota.addloop's, shared with
compressed images (which are one region of bytes taken as they are).
"""
from micropython import const

from fota.inflate import Decoder

_BASE = const(1024)          # base bytes read at a time
_WHY = ("truncated patch", "bad number in patch", "patch writes past the end of the image",
        "patch reads outside the base image", "not a sequential uncompressed detools patch",
        "patch and header disagree on the image size", "detools data formats are not supported")


class Patcher(Decoder):
    _short = _WHY[0]

    def __init__(self, src, head, entry, start, hasher, base):
        super().__init__(src, head, entry, start, hasher, base)
        bsize = self.base_size
        self.bb = bytearray(_BASE if bsize > _BASE else bsize)

    def _why(self, r):
        return _WHY[-r - 1]
