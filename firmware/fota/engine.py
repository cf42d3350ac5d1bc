"""The OTA engine: stream an image into the inactive slot, verify it, switch boot.

    source -> [decoder: compressed/delta] -> MD5/SHA-256, checkpoint CRC -> 4 KiB blocks -> slot

`run()` returns `(step, reason)` with CTWing's step codes: 100 when the image is
written, verified and selected for boot; -2 download failed, -3 verification
failed (digest, length, header, signature, downgrade, delta base), -4 flash write
failed, -1 anything else. The boot selection changes only after every check
passed, so a power cut at any moment leaves the running image selected.

A source is a function `(offset, size) -> (stream, offset served)` (see
http.source); the stream has `readinto`. A slot (esp32slot.Esp32Slot,
fileslot.FileSlot: where the new image goes) has `capacity`, `label`, `pending()`,
`busy()`, `check_header(buf)`, `write_block(n, buf)`, `write_tail(n, buf, length)`,
`read_block(n, buf)`, `switch(info)`, and optionally `read_base` (reads the running
image: the base of a delta), `secure_version` (the running image's) and `root`.

Compressed and delta files (the FOTZ container, docs/images.md) are recognised by
their first 4 bytes: the notice's size and MD5 are the downloaded file's, the
header's SHA-256 is the rebuilt image's. A delta checks its base before anything
is written. Signatures (fota.sbv2): with `trusted` key digests, the image must carry
a valid Secure Boot V2 signature by one of them; its SHA-256 is taken while
streaming and the sector is checked after read-back, before the switch.

Resume: the journal names the image once (task, size, digests, slot) and, at
most every 15 ms, records the blocks safely written and a CRC-32 of their first
64 bytes each. MicroPython's md5 cannot be saved, so a restart re-reads that
prefix from flash to rebuild the digests, and the CRC proves the flash still
holds those blocks. A compressed or delta image also keeps its header (journal
+ ".head"): it restarts at the chunk holding the resume point, with a Range
request; its file MD5 can't be rebuilt then, so a resumed one is checked by the
header's SHA-256 of the image (and its signature, when keys are trusted).
"""
from micropython import const

from fota import journal as jr
from fota.errors import UpdateError  # also engine.UpdateError, as callers know it

BLOCK = const(4096)
_SHIFT = const(12)
_CHECKPOINT = const(8)       # blocks moved between looks at the clock and the journal
_CHECKPOINT_MS = const(15)   # journal writes at most ~66 a second (flash wear, CPU)
_SAMPLE = const(64)          # bytes per block covered by the journal CRC
# Slots of the state list shared with _pump (a list, not an object: cheaper in RAM,
# and assigning to a slot allocates nothing).
_MD5 = const(0)
_SHA = const(1)
_CRC = const(2)
_FAIL = const(3)
_CAUSE = const(4)
_SIG = const(5)              # SHA-256 of the blocks before the signature sector
_SIGEND = const(6)           # how many blocks that covers (0: no signature check)
# Slots of the plan _begin makes (same list idea as the state above).
_BLOCKS = const(0)           # whole blocks already in the slot (resume)
_HEAD = const(1)             # a compressed/delta file's header (resume), else None
_ST = const(2)               # the digest state
_LOG = const(3)              # the open journal, or None
_DEC = const(4)              # the decoder of a compressed/delta file, or None
_ISIZE = const(6)            # bytes of the image (the file's size for a plain image)
_SHA256 = const(7)           # the notice's SHA-256 (lower case) or None
_NOTICE_MD5 = const(8)       # the notice's MD5 (lower case)
_KEPT = const(9)             # the secure_version floor kept in FLOOR
_FLOOR = const(10)           # the floor now (the running image's, when higher)
FLOOR = "fota_secure_version"   # the lowest secure_version accepted from now on

_buf = None                  # the one block buffer, allocated once and kept
_sample = None


def block_buffer():
    """The block buffer; call it early, while the heap is still in one piece."""
    global _buf, _sample
    if _buf is None:
        _buf = memoryview(bytearray(BLOCK))
        _sample = _buf[:_SAMPLE]
    return _buf


def _pump(stream, slot, st, buf, block, last, crc32, have=False):
    """Move whole blocks up to the next checkpoint; the steady state allocates nothing.
    `have`: buf already holds the first of them.

    MicroPython's `readinto` fills the whole buffer unless the peer closed (then it
    returns less) or the socket deadline passed (then it raises).
    """
    stop = block + _CHECKPOINT
    if stop > last:
        stop = last
    md5 = st[_MD5]
    sha = st[_SHA]
    sig = st[_SIG]
    sigend = st[_SIGEND]
    crc = st[_CRC]
    sample = _sample
    while block < stop:
        if have:
            have = False
        else:
            try:
                got = stream.readinto(buf)
            except (OSError, MemoryError) as exc:
                st[_FAIL] = -2
                st[_CAUSE] = exc
                break
            if got != BLOCK:
                st[_FAIL] = -2
                break
        if block == 0:
            slot.check_header(buf)
        if md5 is not None:
            md5.update(buf)
        if sha is not None:
            sha.update(buf)
        if block < sigend:
            sig.update(buf)
        crc = crc32(sample, crc)
        try:
            slot.write_block(block, buf)
        except (OSError, MemoryError) as exc:
            st[_FAIL] = -4
            st[_CAUSE] = exc
            break
        block += 1
    st[_CRC] = crc
    return block


def run(slot, source, size, md5, sha256=None, progress=None, journal=None,
        task=None, readback=True, trusted=None, lock_heap=False, allow_unsigned=False,
        downloaded=None):
    """One update; `journal` is a file path enabling resume after power loss;
    `trusted`: key digests (64 hex) an image must be signed by (None/empty: no check);
    `downloaded()`: called once the download is over, before the checks, so the caller
    can drop what only the download needed (the HTTP client).
    Returns (step, reason) and never raises."""
    try:
        return update(slot, source, size, md5, sha256, progress, journal, task,
                      readback, trusted, lock_heap, allow_unsigned, downloaded)
    except UpdateError as exc:
        return exc.step, exc.reason
    except MemoryError:
        return -1, "out of memory"
    except Exception as exc:  # noqa: BLE001 - an update must never crash the device
        return -1, "internal error: %r" % (exc,)


def update(slot, source, size, md5, sha256=None, progress=None, journal=None,
           task=None, readback=True, trusted=None, lock_heap=False, allow_unsigned=False,
           downloaded=None):
    """run() without the safety net: returns (100, "ok"), raises UpdateError for a
    failed update and anything else for a bug (`fota_sim update --trace` shows it).
    The checks after the download (fota.verify) load once its buffers are free."""
    buf = block_buffer()
    plan = _begin(slot, size, md5, sha256, journal, task, trusted, buf)
    log = plan[_LOG]
    try:
        _transfer(slot, source, size, plan, progress, journal, trusted, lock_heap, buf)
        source = None
        if downloaded is not None:
            downloaded()
        if log is not None:
            jr.close(log)
            log = None
        from fota import verify

        sig = verify.finish(slot, plan, progress, journal, readback, buf)
        verify = buf = None
        _unload()
        if trusted:
            why = _signature(slot, sig, plan[_ISIZE], trusted)
            if why != "ok" and not (why == "unsigned" and allow_unsigned):
                raise UpdateError(-3, why)
        floor = plan[_FLOOR]
        slot.switch({"task": task, "size": plan[_ISIZE], "md5": plan[_NOTICE_MD5],
                     "floor": floor})
        if floor > plan[_KEPT]:
            _keep_floor(slot, floor)
        return 100, "ok"
    finally:
        if log is not None:
            jr.close(log)
        _unload()


def _unload():
    """Drop the modules only an update needs (checks, decoders, signatures)."""
    import sys

    for name in ("verify", "container", "inflate", "patch", "sbv2"):
        if sys.modules.pop("fota." + name, None) is not None:
            try:
                delattr(sys.modules["fota"], name)
            except (AttributeError, KeyError):
                pass


def _begin(slot, size, md5, sha256, journal, task, trusted, buf):
    """Check the notice against the slot and open (or resume) the journal; the plan."""
    import binascii

    if not isinstance(size, int) or size <= 0:
        raise UpdateError(-3, "bad size")
    if not isinstance(md5, str) or len(md5) != 32:
        raise UpdateError(-3, "bad md5")
    if size > slot.capacity:
        raise UpdateError(-3, "image of %d bytes does not fit the %d-byte slot" % (
            size, slot.capacity))
    if slot.pending():
        raise UpdateError(-1, "running image not confirmed yet")
    why = slot.busy()
    if why:
        raise UpdateError(-1, why)
    md5 = md5.lower()
    if sha256:
        sha256 = sha256.lower()
    try:
        with open(getattr(slot, "root", "") + FLOOR) as f:
            kept = int(f.read())
    except (OSError, ValueError):
        kept = 0
    run = getattr(slot, "secure_version", 0) or 0
    slot.floor = run if run > kept else kept
    plan = [0, None, None, None, None, None, size, sha256, md5, kept, slot.floor]
    if not journal:
        return plan
    # The url is left out on purpose: a retried notice may carry a fresh token.
    ident = binascii.crc32(repr([task, size, md5, sha256, slot.label]).encode())
    log = jr.resume(journal, ident)
    point = jr.last(log) if log else None
    head = None
    if point:
        try:
            with open(journal + ".head", "rb") as f:   # compressed/delta (container.py)
                head = f.read()
        except OSError:
            pass
    if head is not None:
        from fota import container

        plan[_ISIZE] = container.image_size(head)   # 0: a damaged header, start over
        _unload()
        if not plan[_ISIZE]:
            point = head = None
    if point:
        # md5 state can't be saved: rebuild it from flash, and check the flash
        # still holds what the journal recorded.
        plan[_HEAD] = head
        st = _state(plan, trusted)
        _hash_slot(slot, st, point[0] << _SHIFT, buf)
        if st[_CRC] == point[1]:
            plan[_BLOCKS] = point[0]
            plan[_ST] = st
            plan[_LOG] = log
            return plan
    plan[_HEAD] = None
    plan[_ISIZE] = size
    if log is not None:
        jr.close(log)
    plan[_LOG] = jr.start(journal, ident)
    return plan


def _transfer(slot, source, size, plan, progress, journal, trusted, lock_heap, buf):
    blocks = plan[_BLOCKS]
    head = plan[_HEAD]
    want = 0
    if blocks:
        want = blocks << _SHIFT
        if head is not None:
            from fota.inflate import resume_offset

            want = resume_offset(head, want)
    try:
        stream, offset = source(want, size)
    except OSError as exc:
        raise UpdateError(-2, "cannot open the image: %s" % exc)
    have = False
    try:
        if offset != want:               # the server would not resume: from the top
            blocks = 0
        if blocks and head is not None:
            from fota import container

            stream = plan[_DEC] = container.for_engine(slot, stream, size, head,
                                                       blocks << _SHIFT, scratch=buf)
            plan[_ISIZE] = stream.size
        elif not blocks:
            plan[_ISIZE] = size
            plan[_DEC] = None
            # The first bytes tell a plain image from a compressed or delta file.
            n = size if size < 4 else 4
            got = stream.readinto(buf, n)
            if got != n:
                raise UpdateError(-2, "download ended at byte %d" % (got or 0))
            if bytes(buf[:n]) == b"FOTZ":
                from fota import container

                stream = plan[_DEC] = container.for_engine(slot, stream, size, None, 0,
                                                           b"FOTZ", journal, buf)
                plan[_ISIZE] = stream.size
            else:
                k = size if size < BLOCK else BLOCK   # the rest of the first block
                got = stream.readinto(buf[n:k]) if k > n else 0
                if k > n and got != k - n:
                    raise UpdateError(-2, "download ended at byte %d" % (n + (got or 0)))
                have = True
            plan[_HEAD] = None
            plan[_ST] = _state(plan, trusted)
        _move(slot, stream, plan[_ST], buf, blocks, plan[_ISIZE], progress, plan[_LOG],
              lock_heap, have)
    finally:
        try:
            stream.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


def _state(plan, trusted):
    """The digest state: [md5, sha256, crc, fail, cause, signature sha256, blocks it
    covers]. A plain image: MD5 (+ the notice's SHA-256); a compressed or delta file:
    the SHA-256 of the image it makes. The signature covers all but the last 4 KiB
    block, when the size can hold a sector."""
    import hashlib

    dec = plan[_DEC] is not None or plan[_HEAD] is not None
    isize = plan[_ISIZE]
    sig = trusted and not isize & (BLOCK - 1) and isize >= 2 * BLOCK
    return [None if dec else hashlib.md5(), hashlib.sha256() if dec or plan[_SHA256] else None,
            0, 0, None, hashlib.sha256() if sig else None, (isize >> _SHIFT) - 1 if sig else 0]


def _hash_slot(slot, st, nbytes, buf):
    """Feed the first `nbytes` of the slot, as flash holds them, into the state."""
    import binascii

    n = 0
    while nbytes > 0:
        slot.read_block(n, buf)
        part = buf if nbytes >= BLOCK else buf[:nbytes]
        if st[_MD5] is not None:
            st[_MD5].update(part)
        if st[_SHA] is not None:
            st[_SHA].update(part)
        if n < st[_SIGEND]:
            st[_SIG].update(part)
        st[_CRC] = binascii.crc32(_sample, st[_CRC])
        nbytes -= BLOCK
        n += 1


def _move(slot, stream, st, buf, blocks, isize, progress, log, lock_heap, have):
    """The download loop: blocks, checkpoints, the tail (`have`: buf holds the first)."""
    import binascii
    import time

    last = isize >> _SHIFT
    tail = isize - (last << _SHIFT)
    crc32 = binascii.crc32
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    saved_at = ticks_ms()
    while blocks < last:
        # Checkpoint at a bounded rate: a cut repeats at most ~15 ms of download
        # (and never less than the 8 blocks since the last look).
        if log is not None and blocks and ticks_diff(ticks_ms(), saved_at) >= _CHECKPOINT_MS:
            jr.save(log, blocks, st[_CRC])
            saved_at = ticks_ms()
        if progress:
            progress(blocks << _SHIFT, isize)
        # Every block after the first is the steady state and must not allocate:
        # with lock_heap (tests) an allocation there fails the update.
        locked = lock_heap and blocks > 0
        if locked:
            import micropython

            micropython.heap_lock()
        try:
            blocks = _pump(stream, slot, st, buf, blocks, last, crc32, have)
        finally:
            if locked:
                micropython.heap_unlock()
        have = False
        if st[_FAIL]:
            break
    if tail and not st[_FAIL]:
        try:
            if not have and stream.readinto(buf, tail) != tail:
                st[_FAIL] = -2
        except OSError as exc:
            st[_FAIL] = -2
            st[_CAUSE] = exc
        if not st[_FAIL]:
            if last == 0:
                slot.check_header(buf)
            part = buf[:tail]
            if st[_MD5] is not None:
                st[_MD5].update(part)
            if st[_SHA] is not None:
                st[_SHA].update(part)
            try:
                slot.write_tail(last, buf, tail)
            except OSError as exc:
                st[_FAIL] = -4
                st[_CAUSE] = exc
    if st[_FAIL] == -4:
        raise UpdateError(-4, "flash write failed at block %d: %s" % (blocks, st[_CAUSE]))
    if st[_FAIL]:
        raise UpdateError(-2, "download %s at byte %d" % (
            "ended early" if st[_CAUSE] is None else "failed (%s)" % st[_CAUSE],
            blocks << _SHIFT))


def _keep_floor(slot, floor):
    path = getattr(slot, "root", "") + FLOOR
    try:
        with open(path + ".tmp", "w") as f:
            f.write(str(floor))
        import os

        os.rename(path + ".tmp", path)
    except OSError:
        pass                         # the running image's own counter still holds


def _signature(slot, digest, size, trusted):
    """Secure Boot V2 (fota.sbv2): "ok" or the reason. `digest`: SHA-256 of all but the
    image's last 4 KiB block (the sector), None when the size can't hold a sector.
    Runs with the download's socket and buffers gone: RSA-3072 needs a few KiB."""
    if digest is None:
        return "unsigned"
    slot.read_block((size >> _SHIFT) - 1, _buf)
    import gc

    gc.collect()
    from fota import sbv2

    try:
        best, keys = sbv2.candidates(_buf, digest, trusted)
        return sbv2.check(keys, digest, best)[1]
    finally:
        keys = sbv2 = None
        _unload()
