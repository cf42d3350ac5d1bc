"""The engine's checks after the download, loaded only then (the download's
buffers are free by then): MD5 / SHA-256, flash read-back, the Secure Boot V2
signature (fota.sbv2) when keys are trusted, then the boot switch and the
anti-rollback floor. The plan is the engine's list (slot names in engine.py).
"""
from micropython import const

from fota import journal as jr
from fota.errors import UpdateError

_BLOCK = const(4096)
FLOOR = "fota_secure_version"   # as engine.FLOOR
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
_KEPT = const(9)
_FLOOR = const(10)


def _hex(h):
    import binascii

    return binascii.hexlify(h.digest()).decode()


def finish(slot, plan, progress, journal, task, readback, trusted, allow_unsigned, buf):
    """The download is complete: check it all, then switch boot; (100, "ok")."""
    isize = plan[_ISIZE]
    st = plan[_ST]
    dec = plan[_DEC]
    md5 = plan[_NOTICE_MD5]
    if progress:
        progress(isize, isize)
    if journal:
        jr.remove(journal)
    md5h = dec.md5 if dec is not None else st[_MD5]
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
    if trusted:
        import gc

        gc.collect()                 # RSA-3072 needs a few KiB for a moment
        from fota import sbv2

        why = sbv2.check_slot(slot, sig, isize, buf, trusted, allow_unsigned)
        sbv2 = None
        import sys

        sys.modules.pop("fota.sbv2", None)
        if why:
            raise UpdateError(-3, why)
    floor = plan[_FLOOR]
    slot.switch({"task": task, "size": isize, "md5": md5, "floor": floor})
    if floor > plan[_KEPT]:
        _keep(slot, floor)
    return 100, "ok"


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


def _keep(slot, floor):
    path = getattr(slot, "root", "") + FLOOR
    try:
        with open(path + ".tmp", "w") as f:
            f.write(str(floor))
        import os

        os.rename(path + ".tmp", path)
    except OSError:
        pass                         # the running image's own counter still holds
