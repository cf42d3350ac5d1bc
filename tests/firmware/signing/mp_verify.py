# Runs on the MicroPython unix port: checks many signature cases in one process.
# argv[1] is a JSON list of cases; prints one JSON line per case.
#   {"file": path, "trusted": [...]}  stream the file as the engine would: SHA-256
#       over everything before sbv2.sector_offset(size), then the sector read into
#       the same 4 KiB buffer.
#   {"sector": path, "sha": hex, "trusted": [...]}  verify the bytes of `path` as a
#       sector (may be short: truncated) against the given image digest.
#   {"digest": path, "block": i}  sbv2.key_digest of block i of the sector in `path`.
import binascii
import hashlib
import json
import sys

from fota import sbv2

buf = memoryview(bytearray(4096))


def stream(path, trusted):
    import os

    size = os.stat(path)[6]
    off = sbv2.sector_offset(size)
    if off < 0:
        return False, "unsigned"
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        left = off
        while left:
            n = f.readinto(buf if left >= 4096 else buf[:left])
            sha.update(buf if n == 4096 else buf[:n])
            left -= n
        f.readinto(buf)
    return sbv2.verify(buf, sha.digest(), trusted)


def trusted_of(case):
    out = []
    for t in case.get("trusted", []):
        # "raw:" entries are given as 32 bytes, the rest as 64-hex strings
        out.append(binascii.unhexlify(t[4:]) if t.startswith("raw:") else t)
    return out


with open(sys.argv[1]) as f:
    cases = json.load(f)
for case in cases:
    if "file" in case:
        ok, why = stream(case["file"], trusted_of(case))
        out = {"ok": ok, "reason": why}
    elif "sector" in case:
        with open(case["sector"], "rb") as f:
            data = f.read()
        ok, why = sbv2.verify(data, binascii.unhexlify(case["sha"]), trusted_of(case))
        out = {"ok": ok, "reason": why}
    else:
        with open(case["digest"], "rb") as f:
            data = f.read()
        blk = memoryview(data)[-4096 + case["block"] * sbv2.BLOCK:]
        out = {"digest": binascii.hexlify(sbv2.key_digest(blk)).decode()}
    out["id"] = case["id"]
    print(json.dumps(out))
