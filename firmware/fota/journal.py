"""Small state files that survive power cuts.

`load`/`save`/`clear`: a JSON document replaced atomically (temp file + rename),
so a cut leaves the old version or the new one, never half of one.

`ck_*`: the resume progress of an update, written every few blocks. A
rename per checkpoint would cost more than the download itself on a fast link, so
a checkpoint is a 16-byte record written in place, alternating between two
slots; each record carries a sequence number and its own CRC, so a cut in the
middle of a write leaves the other slot valid.
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

    for name in (path, path + ".tmp", path + ".ck"):
        try:
            os.remove(name)
        except OSError:
            pass


def ck_open(path, fresh):
    """Open the checkpoint file; returns the handle list [file, record, head, seq]."""
    rec = bytearray(_REC)
    return [open(path + ".ck", "w+b" if fresh else "r+b"), rec, memoryview(rec)[:12], 0]


def ck_last(ck):
    """(blocks, crc) of the newest intact record, or None."""
    import binascii
    import struct

    f, rec, head, _ = ck
    best = None
    for slot in (0, 1):
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
    f.seek((seq & 1) * _REC)
    f.write(rec)
    f.flush()
