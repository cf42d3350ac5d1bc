"""Open a compressed or delta image (the FOTZ container, docs/images.md) as a decoder.

`open()` reads the header (fota.inflate), checks a delta's base before anything is
written, and returns the decoder the engine reads the target image from:
inflate.Decoder for a compressed image, patch.Patcher (loaded only then) for a delta.
Kept apart from inflate.py so the patch applier can build on the inflater without
an import circle.
"""
from micropython import const

_PIECE = const(512)


def open(stream, base=None, base_sha=None, head=None, start=0, file_size=None,
         hasher=None, max_wbits=12):
    """The decoder of a compressed or delta image read from `stream`.

    Fresh: `stream` is the file from offset 0. Resume: pass `head` (the decoder's
    `head` bytes kept from the first run) and `start` (image offset to go on
    from); `stream` is the file from `inflate.resume_offset(head, start)`.
    `base(offset, buf)` reads the running image (deltas); `base_sha` is its SHA-256
    (32 bytes) when the caller knows it cheaply, else the base is read once to
    check it. `file_size`, when known (the notice's size), must match the header.
    `hasher.update` sees every byte downloaded (the notice's MD5, fresh runs).
    A deflate window over 2**max_wbits bytes is refused (RAM).
    """
    from fota import inflate

    feed, head, ent, start = inflate.prepare(stream, head, start, file_size, hasher,
                                             max_wbits)
    if head[5] == inflate.KIND_COMPRESSED:
        return inflate.Decoder(feed, head, ent[1], start)
    if base is None:
        raise inflate._bad("delta image but no base to apply it to")
    if base_sha is None:
        base_sha = base_digest(base, inflate.parse(head)[3])
    if bytes(base_sha) != head[60:92]:
        raise inflate._bad("delta base mismatch")
    from fota.patch import Patcher

    return Patcher(feed, head, ent, start, base)


def base_digest(base, size):
    """SHA-256 (32 bytes) of the first `size` bytes `base(offset, buf)` reads."""
    import hashlib

    sha = hashlib.sha256()
    buf = bytearray(_PIECE)
    pos = 0
    try:
        while pos < size:
            if size - pos < _PIECE:
                buf = bytearray(size - pos)
            base(pos, buf)
            sha.update(buf)
            pos += len(buf)
    except OSError as exc:
        from fota.errors import UpdateError

        raise UpdateError(-4, "cannot read the running image: %s" % exc)
    return sha.digest()
