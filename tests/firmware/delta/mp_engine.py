# Runs on the MicroPython unix port: the real engine taking compressed and delta files.
# Usage: micropython mp_engine.py cases.json   (MICROPYPATH: firmware/)
# The target is a stand-in for a flash slot (a file); everything else is the product's.
import json
import sys

from fota import engine
from mp_decode import base_reader  # the script's folder is on sys.path


class FileSlot:
    """A flash slot stand-in with the engine's target interface (a file)."""

    label = "test"
    capacity = 4 << 20

    def __init__(self, path):
        self.path = path
        self.f = None
        self.writes = 0
        self.switched = None

    def pending(self):
        return False

    def busy(self):
        return None

    def check_header(self, buf):
        pass

    def _file(self):
        if self.f is None:
            self.f = open(self.path, "w+b")
        return self.f

    def write_block(self, n, buf):
        f = self._file()
        f.seek(n * 4096)
        f.write(buf)
        self.writes += 1

    def write_tail(self, n, buf, length):
        f = self._file()
        f.seek(n * 4096)
        f.write(buf[:length])
        self.writes += 1

    def read_block(self, n, buf):
        f = self._file()
        f.flush()
        f.seek(n * 4096)
        f.readinto(buf)

    def switch(self, info):
        self.switched = info


engine.block_buffer()
with open(sys.argv[1]) as f:
    cases = json.load(f)
for case in cases:
    slot = FileSlot(case["out"])
    base = base_reader(case["base"]) if case.get("base") else None

    def source(offset, size, path=case["file"]):
        return open(path, "rb"), 0

    slot.read_base = base
    # The notice's size and MD5 are the file's; the engine recognises the container.
    step, reason = engine.run(slot, source, case["size"], case["md5"],
                              lock_heap=case.get("lock", False))
    if slot.f is not None:
        slot.f.close()
    print(json.dumps({"name": case["name"], "step": step, "reason": reason,
                      "writes": slot.writes, "switched": slot.switched is not None}))
