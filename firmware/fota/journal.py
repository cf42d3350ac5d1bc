"""Small state files that survive power cuts.

`load`/`save`/`clear`: a JSON document replaced atomically (temp file + rename),
so a cut leaves the old version or the new one, never half of one.

`ck_*`: the resume journal of an update. A 16-byte header names the update (a
CRC-32 of task, size, digests and slot); then two 16-byte checkpoint records,
written in place alternately (a rename per checkpoint would cost more than the
download on a fast link). Each record carries a sequence number and its own
CRC, so a cut in the middle of a write leaves the other record valid.
"""
from micropython import const

_REC = const(16)


def load(path):
    """The document, or None when absent or unreadable (then start over)."""
    import json

    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def save(path, data):
    import json
    import os

    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.rename(tmp, path)


def clear(path):
    import os

    for name in (path, path + ".tmp"):
        try:
            os.remove(name)
        except OSError:
            pass


def ck_open(path, ident, fresh):
    """The checkpoint file of the update `ident` (a CRC-32 naming task and image).

    Returns the handle [file, record, head, seq], or None when the file on disk
    belongs to another update (or is unreadable) and `fresh` is False.
    """
    import struct

    rec = bytearray(_REC)
    if fresh:
        f = open(path, "w+b")
        struct.pack_into("<4sI", rec, 0, b"FJ01", ident)
        f.write(rec)        # made durable by the first checkpoint's flush
    else:
        try:
            f = open(path, "r+b")
        except OSError:
            return None
        if f.readinto(rec) != _REC or struct.unpack_from("<4sI", rec) != (b"FJ01", ident):
            f.close()
            return None
    return [f, rec, memoryview(rec)[:12], 0]


def ck_last(ck):
    """(blocks, crc) of the newest intact record, or None."""
    import binascii
    import struct

    f, rec, head, _ = ck
    best = None
    for slot in (1, 2):
        f.seek(slot * _REC)
        if f.readinto(rec) != _REC:
            continue
        seq, blocks, crc, check = struct.unpack("<IIII", rec)
        if check == binascii.crc32(head) and (best is None or seq > best[0]):
            best = (seq, blocks, crc)
    if best is None:
        return None
    ck[3] = best[0]
    return best[1], best[2]


def ck_write(ck, blocks, crc):
    import binascii
    import struct

    f, rec, head, seq = ck
    seq += 1
    ck[3] = seq
    struct.pack_into("<IIII", rec, 0, seq, blocks, crc, 0)
    struct.pack_into("<I", rec, 12, binascii.crc32(head))
    f.seek(16 + (seq & 1) * _REC)
    f.write(rec)
    f.flush()
