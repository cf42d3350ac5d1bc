"""Open a compressed or delta image (the FOTZ container, docs/images.md) as a decoder.

`open()` reads the header (fota.inflate), checks a delta's base before anything is
written, and returns the decoder the engine reads the target image from:
inflate.Decoder for a compressed image, patch.Patcher (loaded only then) for a delta.
Kept apart from inflate.py so the patch applier can build on the inflater without
an import circle; patch.py loads only for a delta.
"""
from micropython import const

_PIECE = const(512)


def open(stream, base=None, base_sha=None, head=None, start=0, file_size=None,
         hasher=None, max_wbits=12, scratch=None, pre=None):
    """The decoder of a compressed or delta image read from `stream`.

    Fresh: `stream` is the file from offset 0 (from len(pre) when the caller read its
    first bytes, `pre`, already). Resume: pass `head` (the decoder's `head` bytes kept
    from the first run) and `start` (image offset to go on from); `stream` is the
    file from `inflate.resume_offset(head, start)`.
    `base(offset, buf)` reads the running image (deltas); `base_sha` is its SHA-256
    (32 bytes) when the caller knows it cheaply, else the base is read once to
    check it. `file_size`, when known (the notice's size), must match the header.
    `hasher.update` sees every byte downloaded (the notice's MD5, fresh runs).
    A deflate window over 2**max_wbits bytes is refused (RAM). `scratch`: a buffer
    free until the decoder's first read (the engine's block buffer), for reading the
    base in large pieces.
    """
    from fota import inflate

    if head is None:
        head = inflate.header(stream, pre, hasher)
        start = 0
    kind, wbits, size, bsize, total, chunk = inflate.parse(head)
    if wbits > max_wbits:
        raise inflate._bad("image needs a %d-byte deflate window, more than this device has"
                           % (1 << wbits))
    if file_size is not None and file_size != total:
        raise inflate._bad("image header says %d bytes, the file has %d" % (total, file_size))
    if not 0 <= start < size:
        raise inflate._bad("resume point outside the image")
    entry = inflate._entry(head, start // chunk)
    inflate.ready()
    if kind == inflate.KIND_COMPRESSED:
        return inflate.Decoder(stream, head, entry, start, hasher)
    if base is None:
        raise inflate._bad("delta base mismatch (no base image on this device)")
    if base_sha is None:
        base_sha = base_digest(base, bsize, scratch)
    if bytes(base_sha) != head[60:92]:
        raise inflate._bad("delta base mismatch")
    from fota.patch import Patcher

    return Patcher(stream, head, entry, start, hasher, base)


def base_digest(base, size, buf=None):
    """SHA-256 (32 bytes) of the first `size` bytes `base(offset, buf)` reads."""
    import hashlib

    sha = hashlib.sha256()
    buf = buf if buf is not None else bytearray(_PIECE)
    pos = 0
    try:
        while pos < size:
            if size - pos < len(buf):
                buf = memoryview(buf)[:size - pos]
            base(pos, buf)
            sha.update(buf)
            pos += len(buf)
    except OSError as exc:
        from fota.errors import UpdateError

        raise UpdateError(-4, "cannot read the running image: %s" % exc)
    return sha.digest()


def for_engine(slot, stream, size, head, start, pre=None, journal=None, scratch=None):
    """open() for the engine: the base is the slot's running image, the file is
    `size` bytes (the notice's), the image must fit the slot. Fresh runs pass `pre`,
    the bytes the engine read already: the file's MD5 is taken then (`.feed.hasher` of
    the decoder; None on resume) and the header is kept beside the journal for a resume."""
    md5 = None
    if pre is not None:
        import hashlib

        md5 = hashlib.md5()
    dec = open(stream, getattr(slot, "read_base", None), None, head, start, size, md5,
               scratch=scratch, pre=pre)
    if dec.size > slot.capacity:
        from fota.errors import UpdateError

        raise UpdateError(-3, "image of %d bytes does not fit the %d-byte slot" % (
            dec.size, slot.capacity))
    if pre is not None and journal:
        # Kept beside the journal (written once, before its first checkpoint): a
        # resume restarts the decoder from it. (This module's open() is the decoder's.)
        import builtins

        with builtins.open(journal + ".head", "wb") as f:
            f.write(dec.head)
    return dec


def image_size(head):
    """The image size a kept header names; 0 when the header is damaged."""
    from fota import inflate
    from fota.errors import UpdateError

    try:
        return inflate.parse(head)[2]
    except UpdateError:
        return 0
