"""The resume journal of an update: where to continue after a power cut.

A 16-byte header names the update (`ident`: a CRC-32 of task, size, digests and
slot); then two 16-byte checkpoint records, written in place alternately (a rename
per checkpoint would cost more than the download on a fast link). Each record
carries a sequence number and its own CRC, so a cut in the middle of a write leaves
the other record valid:

    header  b"FJ01", ident u32, 8 zero bytes
    record  seq u32, blocks u32, crc u32, CRC-32 of the record's first 12 bytes u32

`start()` and `resume()` return an open journal: the list [file, record buffer,
view of its first 12 bytes, last sequence number] (a list, not an object: cheaper
in RAM, and checkpoints pack into the one buffer without allocating).
"""
from micropython import const

_RECORD = const(16)


def _opened(f):
    rec = bytearray(_RECORD)
    return [f, rec, memoryview(rec)[:12], 0]


def start(path, ident):
    """A new journal for the update `ident`, replacing any file at `path`."""
    import struct

    _drop(path + ".head")
    log = _opened(open(path, "w+b"))
    struct.pack_into("<4sI", log[1], 0, b"FJ01", ident)
    log[0].write(log[1])  # made durable by the first checkpoint's flush
    return log


def resume(path, ident):
    """The journal at `path` if it belongs to the update `ident`, else None."""
    import struct

    try:
        log = _opened(open(path, "r+b"))
    except OSError:
        return None
    f, rec = log[0], log[1]
    if f.readinto(rec) != _RECORD or struct.unpack_from("<4sI", rec) != (b"FJ01", ident):
        f.close()
        return None
    return log


def last(log):
    """(blocks, crc) of the newest intact checkpoint, or None."""
    import binascii
    import struct

    f, rec, head, _ = log
    best = None
    for slot in (1, 2):
        f.seek(slot * _RECORD)
        if f.readinto(rec) != _RECORD:
            continue
        seq, blocks, crc, check = struct.unpack("<IIII", rec)
        if check == binascii.crc32(head) and (best is None or seq > best[0]):
            best = (seq, blocks, crc)
    if best is None:
        return None
    log[3] = best[0]
    return best[1], best[2]


def save(log, blocks, crc):
    """Checkpoint: `blocks` whole blocks are written, `crc` is their sampled CRC."""
    import binascii
    import struct

    f, rec, head, seq = log
    seq += 1
    log[3] = seq
    struct.pack_into("<III", rec, 0, seq, blocks, crc)
    struct.pack_into("<I", rec, 12, binascii.crc32(head))
    f.seek(_RECORD + (seq & 1) * _RECORD)
    f.write(rec)
    f.flush()


def close(log):
    log[0].close()


def remove(path):
    """The journal and the header kept beside it (container.for_engine)."""
    _drop(path)
    _drop(path + ".head")


def _drop(path):
    import os

    try:
        os.remove(path)
    except OSError:
        pass
