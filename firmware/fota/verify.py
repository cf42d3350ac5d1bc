"""The engine's checks after the download, loaded only then (the download's
buffers are free by then): MD5 / SHA-256 and the flash read-back. (The signature,
fota.sbv2, is checked next, with this module gone again: RAM.) The plan is the
engine's list (slot names in engine.py).
"""
from micropython import const

from fota import journal as jr
from fota.errors import UpdateError

_BLOCK = const(4096)
# Digest state slots (engine.py's _MD5, _SHA, _SIG).
_MD5 = const(0)
_SHA = const(1)
_SIG = const(5)
# Plan slots (engine.py's).
_ST = const(2)
_DEC = const(4)
_ISIZE = const(6)
_SHA256 = const(7)
_NOTICE_MD5 = const(8)


def _hex(h):
    import binascii

    return binascii.hexlify(h.digest()).decode()


def finish(slot, plan, progress, journal, readback, buf):
    """The download is complete: check the digests and read the slot back. Returns the
    SHA-256 for the signature check (of all but the last 4 KiB block; None when the
    image can't hold a signature sector or no keys are trusted)."""
    isize = plan[_ISIZE]
    st = plan[_ST]
    dec = plan[_DEC]
    md5 = plan[_NOTICE_MD5]
    if progress:
        progress(isize, isize)
    if journal:
        jr.remove(journal)
    md5h = dec.feed.hasher if dec is not None else st[_MD5]
    if md5h is not None and _hex(md5h) != md5:
        raise UpdateError(-3, "md5 mismatch")
    want = plan[_SHA256] if dec is None else dec.sha256
    if st[_SHA] is not None and _hex(st[_SHA]) != want:
        raise UpdateError(-3, "sha256 mismatch" if dec is None else
                          "rebuilt image does not match the SHA-256 in its header")
    sig = st[_SIG].digest() if st[_SIG] is not None else None
    plan[_DEC] = plan[_ST] = dec = st = md5h = None
    if readback and _readback(slot, isize, buf, want is None) != (md5 if want is None else want):
        raise UpdateError(-4, "flash read-back does not match what was written")
    return sig


def _readback(slot, size, buf, md5):
    """MD5 (or SHA-256) of the first `size` bytes of the slot, as flash holds them."""
    import hashlib

    h = hashlib.md5() if md5 else hashlib.sha256()
    n = 0
    while size > 0:
        slot.read_block(n, buf)
        h.update(buf if size >= _BLOCK else buf[:size])
        size -= _BLOCK
        n += 1
    return _hex(h)
