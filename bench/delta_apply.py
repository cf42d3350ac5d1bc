# Delta benchmark on the MicroPython unix port (run by bench_delta.py):
#   micropython delta_apply.py MODE FILE BASE OUT REPEAT
# MODE raw: FILE is the image, copied block by block (the plain full update's work);
# MODE image: FILE is a compressed or delta container, decoded by fota.inflate.
# Both hash what is downloaded (MD5) and what is written (SHA-256), as the engine does.
# Prints one JSON line: CPU seconds (best of REPEAT), the decoder's heap, and the
# bytes downloaded after each output block (for the resume overhead).
import gc
import hashlib
import json
import sys
import time

from fota import container, inflate

BLOCK = 4096
mode, path, base_path, out_path, repeat = sys.argv[1:6]
buf = memoryview(bytearray(BLOCK))
bf = open(base_path, "rb") if base_path != "-" else None


def base(offset, b):
    bf.seek(offset)
    if bf.readinto(b) != len(b):
        raise OSError(5)


def once(trace):
    src = open(path, "rb")
    out = open(out_path, "wb")
    md5 = hashlib.md5()
    sha = hashlib.sha256()
    held = 0
    if mode == "raw":
        d = src
        size = src.seek(0, 2)
        src.seek(0)
    else:
        gc.collect()
        before = gc.mem_alloc()
        d = container.open(src, base=base if bf else None, hasher=md5)
        size = d.size
    pos = 0
    while pos < size:
        n = BLOCK if size - pos >= BLOCK else size - pos
        if d.readinto(buf, n) != n:
            raise SystemExit("short read at " + str(pos))
        part = buf if n == BLOCK else buf[:n]
        if mode == "raw":
            md5.update(part)
        sha.update(part)
        out.write(part)
        pos += n
        if trace is not None:
            trace.append(d.pos)
        if mode != "raw" and pos == BLOCK:
            gc.collect()
            held = gc.mem_alloc() - before
    out.close()
    src.close()
    return held


if mode == "image-bytecode":   # the fallback loop, for ports without the emitter
    inflate._run = inflate._loop(False)
best = None
held = 0
for _ in range(int(repeat)):
    t = time.clock()
    held = once(None)
    t = time.clock() - t
    best = t if best is None or t < best else best
trace = [] if mode != "raw" else None
if trace is not None:
    once(trace)
print(json.dumps({"cpu_s": best, "held": held, "trace": trace}))
