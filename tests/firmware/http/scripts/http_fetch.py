# Device side of tests/firmware/http: fetch one image through fota.http.source the way
# the engine reads it (whole 4096-byte blocks, then the tail) and print one JSON line:
# {"step", "reason", "offset", "md5", "got", "ticks", "max_gap_ms"}.
# usage: micropython -m http_fetch URL SIZE [key=value ...]
#   offset=N  resume point asked for      ca=PATH   CA file (PEM or DER)
#   insecure=1  downgrade=1  timeout_ms=N  idle_ms=N  total_ms=N
#   lock=1    lock the heap while reading every block after the first
import json
import sys
import time

from fota import http
from fota.engine import UpdateError


def main():
    url, size = sys.argv[1], int(sys.argv[2])
    opts = {}
    for a in sys.argv[3:]:
        k, v = a.split("=", 1)
        opts[k] = v
    ca = None
    if "ca" in opts:
        with open(opts["ca"], "rb") as f:
            ca = f.read()
    ticks = [0, 0, time.ticks_ms()]       # calls, longest gap, last call

    def tick():
        now = time.ticks_ms()
        gap = time.ticks_diff(now, ticks[2])
        if gap > ticks[1]:
            ticks[1] = gap
        ticks[0] += 1
        ticks[2] = now

    kw = {"tick": tick, "downgrade": opts.get("downgrade") == "1"}
    for k in ("idle_ms", "total_ms"):
        if k in opts:
            kw[k] = int(opts[k])
    out = {"step": 100, "reason": "ok", "offset": None, "md5": None, "got": 0}
    import binascii
    import hashlib

    buf = memoryview(bytearray(4096))
    md5 = hashlib.md5()
    try:
        src = http.source(url, int(opts.get("timeout_ms", "10000")), ca,
                          opts.get("insecure") == "1", **kw)
        ticks[2] = time.ticks_ms()
        stream, offset = src(int(opts.get("offset", "0")), size)
        out["offset"] = offset
        left = size - offset
        first = True
        try:
            while left > 0:
                n = 4096 if left >= 4096 else left
                lock = opts.get("lock") == "1" and not first and n == 4096
                if lock:
                    import micropython

                    micropython.heap_lock()
                try:
                    got = stream.readinto(buf, n)
                finally:
                    if lock:
                        micropython.heap_unlock()
                first = False
                md5.update(buf[:got])
                out["got"] += got
                left -= got
                if got != n:
                    out["step"], out["reason"] = -2, "ended early"
                    break
        finally:
            stream.close()
    except UpdateError as exc:
        out["step"], out["reason"] = exc.step, exc.reason
    except MemoryError as exc:
        out["step"], out["reason"] = -9, "allocation: " + str(exc)
    out["md5"] = binascii.hexlify(md5.digest()).decode()
    out["ticks"] = ticks[0]
    out["max_gap_ms"] = ticks[1]
    print(json.dumps(out))


main()
