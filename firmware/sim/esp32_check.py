"""ESP-IDF-style app image validation for the simulated `esp32.Partition.set_boot()`.

Checks what the real bootloader checks before accepting a slot: magic, segment
table, app descriptor, and the appended SHA-256 (hash_appended images). The XOR
checksum byte is not recomputed here: the SHA-256 covers it.
"""


_buf = bytearray(512)   # allocated at import, before the updater fragments the heap


def image_problem(f, size):
    """ESP-IDF-style validation of the image at the start of open file `f`."""
    import hashlib
    import struct

    head = f.read(24)
    if len(head) < 24 or head[0] != 0xE9:
        return "bad magic"
    segments = head[1]
    hash_appended = head[23]
    pos = 24
    for _ in range(segments):
        f.seek(pos)
        seg = f.read(8)
        if len(seg) < 8:
            return "truncated segment header"
        _, length = struct.unpack("<II", seg)
        if length % 4 or pos + 8 + length > size:
            return "bad segment length"
        if pos == 24:
            f.seek(pos + 8)
            if f.read(4) != b"\x32\x54\xcd\xab":
                return "no app descriptor"
        pos += 8 + length
    pos += 16 - (pos % 16)                 # padding, then the checksum byte ends the block
    if hash_appended:
        if pos + 32 > size:
            return "truncated image"
        h = hashlib.sha256()
        f.seek(0)
        left = pos
        while left:
            n = f.readinto(_buf)
            if n <= 0:
                return "truncated image"
            n = min(n, left)
            h.update(_buf if n == 512 else memoryview(_buf)[:n])
            left -= n
        f.seek(pos)
        if f.read(32) != h.digest():
            return "sha256 mismatch"
    return None
