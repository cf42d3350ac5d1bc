# MicroPython (unix port): check a signed file the way the engine would, for
# bench_signature.py and tests/firmware/signing. Run with the fota package (.mpy)
# on MICROPYPATH:  micropython signature_probe.py MODE FILE DIGEST
#   base    stream and hash the file, read the sector; print DONE (the baseline heap)
#   verify  the same, then sbv2.verify; print DONE when it passes
#   time    verify 40 times; print {"ms_min": .., "ms_median": ..}
import hashlib
import sys

buf = memoryview(bytearray(4096))        # the engine's block buffer, allocated first

from fota import sbv2  # noqa: E402

mode, path, digest = sys.argv[1], sys.argv[2], sys.argv[3]


def _hash(path):
    import os

    off = sbv2.sector_offset(os.stat(path)[6])
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while off:
            n = f.readinto(buf)
            sha.update(buf)
            off -= n
        f.readinto(buf)
    return sha.digest()


image_sha = _hash(path)
trusted = [digest]
if mode == "base":
    print("DONE")
elif mode == "verify":
    ok, why = sbv2.verify(buf, image_sha, trusted)
    print("DONE" if ok else why)
else:
    import time

    times = []
    for _ in range(40):
        t0 = time.ticks_us()
        ok, why = sbv2.verify(buf, image_sha, trusted)
        times.append(time.ticks_diff(time.ticks_us(), t0))
        if not ok:
            print(why)
            sys.exit(1)
    times.sort()
    import json

    print(json.dumps({"ms_min": times[0] / 1000, "ms_median": times[20] / 1000}))
