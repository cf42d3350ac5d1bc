"""The OTA engine: stream an image into the inactive slot, verify it, switch boot.

    source -> decode seam -> MD5 (+ SHA-256), checkpoint CRC -> 4096-byte blocks -> slot

`run()` returns `(step, reason)` with CTWing's step codes: 100 when the image is
written, verified and selected for boot; -2 download failed, -3 verification
failed (digest, length, header), -4 flash write failed, -1 anything else. The
boot selection changes only after every check passed, so a power cut at any
moment leaves the running image selected.

A source is a function `(offset, size) -> (stream, offset served)` (see
http.source); the stream has `readinto`. A slot (esp32slot.Esp32Slot,
fileslot.FileSlot: where the new image goes) has `capacity`, `label`, `pending()`,
`busy()`, `check_header(buf)`, `write_block(n, buf)`, `write_tail(n, buf, length)`,
`read_block(n, buf)` and `switch(info)`.

Resume: the journal names the image once (task, size, digests, slot) and, at
most every 15 ms, records the blocks safely written and a CRC-32 of their first
64 bytes each. MicroPython's md5 cannot be saved, so a
restart re-reads that prefix from flash to rebuild the digests, and the CRC
proves the flash still holds those blocks. (A CRC over every byte would cost
three times the MD5; the sample is enough because the final MD5 and read-back
still cover every byte.)
"""
from micropython import const

from fota import journal as jr
from fota.errors import UpdateError  # noqa: F401 - engine.UpdateError, as callers know it

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

_buf = None                  # the one block buffer, allocated once and kept
_sample = None




def block_buffer():
    """The block buffer; call it early, while the heap is still in one piece."""
    global _buf, _sample
    if _buf is None:
        _buf = memoryview(bytearray(BLOCK))
        _sample = _buf[:_SAMPLE]
    return _buf


def _state(sha):
    import hashlib

    return [hashlib.md5(), hashlib.sha256() if sha else None, 0, 0, None]


def _pump(stream, slot, st, buf, block, last, crc32):
    """Move whole blocks up to the next checkpoint; the steady state allocates nothing.

    MicroPython's `readinto` fills the whole buffer unless the peer closed (then it
    returns less) or the socket deadline passed (then it raises).
    """
    stop = block + _CHECKPOINT
    if stop > last:
        stop = last
    md5 = st[_MD5]
    sha = st[_SHA]
    crc = st[_CRC]
    sample = _sample
    while block < stop:
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
        md5.update(buf)
        if sha is not None:
            sha.update(buf)
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


def _hash_slot(slot, st, nbytes, buf):
    """Feed the first `nbytes` of the slot, as flash holds them, into the state."""
    import binascii

    n = 0
    while nbytes > 0:
        slot.read_block(n, buf)
        part = buf if nbytes >= BLOCK else buf[:nbytes]
        st[_MD5].update(part)
        if st[_SHA] is not None:
            st[_SHA].update(part)
        st[_CRC] = binascii.crc32(_sample, st[_CRC])
        nbytes -= BLOCK
        n += 1


def run(slot, source, size, md5, sha256=None, progress=None, journal=None,
        task=None, readback=True, decoder=None, lock_heap=False):
    """One update; `journal` is a file path enabling resume after power loss.
    Returns (step, reason) and never raises."""
    try:
        return update(slot, source, size, md5, sha256, progress, journal, task,
                      readback, decoder, lock_heap)
    except UpdateError as exc:
        return exc.step, exc.reason
    except MemoryError:
        return -1, "out of memory"
    except Exception as exc:  # noqa: BLE001 - an update must never crash the device
        return -1, "internal error: %r" % (exc,)


def update(slot, source, size, md5, sha256=None, progress=None, journal=None,
           task=None, readback=True, decoder=None, lock_heap=False):
    """run() without the safety net: returns (100, "ok"), raises UpdateError for a
    failed update and anything else for a bug (`fota_sim update --trace` shows it)."""
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
    buf = block_buffer()
    # The url is left out on purpose: a retried notice may carry a fresh token.
    ident = binascii.crc32(repr([task, size, md5, sha256, slot.label]).encode())
    st = _state(sha256)
    blocks = 0
    log = None                   # the open journal (see fota.journal)
    if journal:
        log = jr.resume(journal, ident)
        point = jr.last(log) if log else None
        if point:
            # md5 state can't be saved: rebuild it from flash, and check the
            # flash still holds what the journal recorded.
            _hash_slot(slot, st, point[0] << _SHIFT, buf)
            if st[_CRC] == point[1]:
                blocks = point[0]
            else:
                st = _state(sha256)
        if not blocks:
            if log is not None:
                jr.close(log)
            log = jr.start(journal, ident)
    last = size >> _SHIFT
    tail = size - (last << _SHIFT)
    try:
        stream, offset = source(blocks << _SHIFT, size)
    except OSError as exc:
        raise UpdateError(-2, "cannot open the image: %s" % exc)
    if offset != blocks << _SHIFT:       # the server would not resume: from the top
        st = _state(sha256)
        blocks = 0
    if decoder is not None:              # the seam for compressed or delta images
        stream = decoder(stream)
    crc32 = binascii.crc32
    import time

    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    saved_at = ticks_ms()
    try:
        while blocks < last:
            # Checkpoint at a bounded rate: a cut repeats at most ~15 ms of download
            # (and never less than the 8 blocks since the last look).
            if log is not None and blocks and ticks_diff(ticks_ms(), saved_at) >= _CHECKPOINT_MS:
                jr.save(log, blocks, st[_CRC])
                saved_at = ticks_ms()
            if progress:
                progress(blocks << _SHIFT, size)
            # Every block after the first is the steady state and must not allocate:
            # with lock_heap (tests) an allocation there fails the update.
            locked = lock_heap and blocks > 0
            if locked:
                import micropython

                micropython.heap_lock()
            try:
                blocks = _pump(stream, slot, st, buf, blocks, last, crc32)
            finally:
                if locked:
                    micropython.heap_unlock()
            if st[_FAIL]:
                break
        if tail and not st[_FAIL]:
            try:
                if stream.readinto(buf, tail) != tail:
                    st[_FAIL] = -2
            except OSError as exc:
                st[_FAIL] = -2
                st[_CAUSE] = exc
            if not st[_FAIL]:
                if last == 0:
                    slot.check_header(buf)
                part = buf[:tail]
                st[_MD5].update(part)
                if st[_SHA] is not None:
                    st[_SHA].update(part)
                try:
                    slot.write_tail(last, buf, tail)
                except OSError as exc:
                    st[_FAIL] = -4
                    st[_CAUSE] = exc
    finally:
        if log is not None:
            jr.close(log)
        try:
            stream.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
    if st[_FAIL] == -4:
        raise UpdateError(-4, "flash write failed at block %d: %s" % (blocks, st[_CAUSE]))
    if st[_FAIL]:
        raise UpdateError(-2, "download %s at byte %d" % (
            "ended early" if st[_CAUSE] is None else "failed (%s)" % st[_CAUSE],
            blocks << _SHIFT))
    if progress:
        progress(size, size)
    if journal:
        jr.remove(journal)
    hexlify = binascii.hexlify
    if hexlify(st[_MD5].digest()).decode() != md5:
        raise UpdateError(-3, "md5 mismatch")
    if st[_SHA] is not None and hexlify(st[_SHA].digest()).decode() != sha256:
        raise UpdateError(-3, "sha256 mismatch")
    if readback:
        st = _state(None)
        _hash_slot(slot, st, size, buf)
        if hexlify(st[_MD5].digest()).decode() != md5:
            raise UpdateError(-4, "flash read-back does not match what was written")
    slot.switch({"task": task, "size": size, "md5": md5})
    return 100, "ok"
