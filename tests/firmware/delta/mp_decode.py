# Runs on the MicroPython unix port: decode compressed/delta images as the engine
# would (4096-byte blocks, then the tail) for a list of cases; one JSON line each.
# Usage: micropython mp_decode.py cases.json   (MICROPYPATH: firmware/)
# base_reader() serves mp_engine.py too.
import gc
import hashlib
import json
import sys

import micropython
from fota import container, inflate
from fota.errors import UpdateError

BLOCK = 4096


def base_reader(path):
    f = open(path, "rb")

    def read(offset, buf):
        f.seek(offset)
        if f.readinto(buf) != len(buf):
            raise OSError(5)
    return read


def run(case, buf):
    inflate._run = BYTECODE if case.get("bytecode") else FAST
    start = case.get("start", 0)
    head = None
    if case.get("head"):
        with open(case["head"], "rb") as f:
            head = f.read()
    src = open(case["file"], "rb")
    if head is not None:
        src.seek(inflate.resume_offset(head, start))
    base = base_reader(case["base"]) if case.get("base") else None
    md5 = hashlib.md5() if head is None else None
    gc.collect()
    before = gc.mem_alloc()
    d = container.open(src, base=base, head=head, start=start, file_size=case.get("file_size"),
                     hasher=md5)
    gc.collect()
    held = gc.mem_alloc() - before
    if case.get("head_out"):
        with open(case["head_out"], "wb") as f:
            f.write(d.head)
    out = open(case["out"], "r+b" if start else "wb")
    out.seek(start)
    size = d.size
    pos = start
    stop = case.get("stop", size)
    lock = case.get("lock")
    res = {}
    try:
        while pos + BLOCK <= size and pos < stop:
            locked = lock and pos > start   # the first block may allocate, as in the engine
            if locked:
                micropython.heap_lock()
            try:
                got = d.readinto(buf)
            finally:
                if locked:
                    micropython.heap_unlock()
            if got != BLOCK:
                return {"short": pos}
            out.write(buf)
            pos += BLOCK
        if pos < stop and pos < size:
            tail = size - pos
            if d.readinto(buf, tail) != tail:
                return {"short": pos}
            out.write(buf[:tail])
            pos += tail
    finally:
        out.close()
        d.close()
    res["done"] = pos
    res["native"] = inflate._run is FAST
    res["held"] = held
    res["sha_ok"] = pos == size
    if md5 is not None and pos == size:
        import binascii
        res["md5"] = binascii.hexlify(md5.digest()).decode()
    return res


if __name__ == "__main__":     # not when mp_engine.py imports base_reader
    FAST = inflate._loop()            # machine code (viper)
    BYTECODE = inflate._loop(False)   # the same loop as bytecode (ports without the emitter)
    buf = memoryview(bytearray(BLOCK))
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    for case in cases:
        try:
            res = run(case, buf)
        except UpdateError as exc:
            res = {"step": exc.step, "reason": exc.reason}
        except Exception as exc:  # a crash: the test fails on it
            res = {"crash": repr(exc)}
        res["name"] = case["name"]
        print(json.dumps(res))
