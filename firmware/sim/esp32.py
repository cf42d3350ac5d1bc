"""Stand-in for the ESP32 port's `esp32` module on the unix port (simulation, tests).

Each OTA app partition is a file named after its label in the flash folder
($FOTA_FLASH, else the current directory), 1.5 MiB as in MicroPython's
ESP32_GENERIC OTA partition table. The semantics follow the real module:
4096-byte blocks; 2-argument `writeblocks` erases the blocks it covers first,
3-argument `writeblocks` does not erase (NOR flash can only clear bits);
`ioctl(6, n)` erases one block; `set_boot()` validates the image as ESP-IDF does
and raises OSError(-5379) on a bad one; `otadata.json` holds the boot selection
and per-slot OTA states, which the simulated bootloader (host side) applies at
every simulated hard reset. Kept small: on a board this module costs no RAM.
"""
import os

SLOT_SIZE = 0x180000
_size = [0]
_LABELS = ("ota_0", "ota_1")
_ERASED = b"\xff" * 256
# set_boot's validation reads through this, allocated before the heap fragments;
# 1 KiB: 256 B reads made the hashing cost nearly twice as much CPU.
_buf = bytearray(1024)


def _path(name):
    return (os.getenv("FOTA_FLASH") or ".") + "/" + name


def _slot_size():
    # A flash folder's slots are as big as its ota_0 file: `fota sim init --board esp32s3`
    # makes the 8 MiB OTA table's 0x270000 (host boards/chips.py), SLOT_SIZE by default.
    if not _size[0]:
        try:
            _size[0] = os.stat(_path("ota_0"))[6]
        except OSError:
            _size[0] = SLOT_SIZE
    return _size[0]


def _otadata(data=None):
    import json

    if data is None:
        with open(_path("otadata.json")) as f:
            return json.load(f)
    with open(_path("otadata.json.tmp"), "w") as f:
        json.dump(data, f)
    os.rename(_path("otadata.json.tmp"), _path("otadata.json"))


def _running():
    with open(_path("running")) as f:
        return f.read().strip()


def _valid(f):
    """What ESP-IDF checks before accepting a slot: magic, segment table, app
    descriptor, and the appended SHA-256 (which also covers the checksum byte)."""
    import hashlib
    import struct

    f.seek(0)
    head = f.read(24)
    if len(head) < 24 or head[0] != 0xE9:
        return False
    pos = 24
    for _ in range(head[1]):
        f.seek(pos)
        seg = f.read(8)
        if len(seg) < 8:
            return False
        length = struct.unpack("<II", seg)[1]
        if length % 4 or pos + 8 + length > _slot_size():
            return False
        if pos == 24:
            f.seek(pos + 8)
            if f.read(4) != b"\x32\x54\xcd\xab":
                return False
        pos += 8 + length
    pos += 16 - (pos % 16)                 # padding, then the checksum byte ends the line
    if not head[23]:                       # no hash appended
        return True
    if pos + 32 > _slot_size():
        return False
    h = hashlib.sha256()
    f.seek(0)
    left = pos
    while left:
        n = min(f.readinto(_buf), left)
        if n <= 0:
            return False
        h.update(_buf if n == 1024 else memoryview(_buf)[:n])
        left -= n
    f.seek(pos)
    return f.read(32) == h.digest()


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0

    def __init__(self, id, block_size=4096):
        if id == 1:
            id = _running()
        elif id == 0:
            # No otadata (a table without OTA slots): ESP-IDF boots `factory`.
            try:
                id = _otadata()["boot"]
            except OSError:
                id = "factory"
        if id not in _LABELS and (id != "factory" or _running() != "factory"):
            raise OSError(2)  # ENOENT, as the real module does for an unknown label
        self.label = id
        self._f = open(_path(id), "r+b")

    def info(self):
        if self.label == "factory":  # a plain firmware's one app partition (subtype 0)
            return (0, 0, 0x10000, _slot_size(), "factory", False)
        i = _LABELS.index(self.label)
        return (0, 0x10 + i, 0x10000 + i * _slot_size(), _slot_size(), self.label, False)

    def readblocks(self, block, buf, offset=0):
        self._f.seek(block * 4096 + offset)
        self._f.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        f = self._f
        at = block * 4096 + (offset or 0)
        if at < 0 or at + len(buf) > _slot_size():
            raise OSError(22)  # EINVAL
        if offset is None:
            # Erasing form: the blocks are erased, then written (whole blocks here).
            f.seek(at)
            f.write(buf)
            return
        # Non-erasing form: NOR flash can only turn 1 bits into 0. The AND runs on
        # 64-byte integers (C code) so the stand-in stays cheap in time and heap.
        done = 0
        while done < len(buf):
            n = min(64, len(buf) - done)
            f.seek(at + done)
            old = f.read(n)
            new = int.from_bytes(old, "little") & int.from_bytes(buf[done:done + n], "little")
            f.seek(at + done)
            f.write(new.to_bytes(n, "little"))
            done += n

    def ioctl(self, op, arg):
        if op == 4:
            return _slot_size() // 4096
        if op == 5:
            return 4096
        if op == 6:
            self._f.seek(arg * 4096)
            for _ in range(16):
                self._f.write(_ERASED)
        return 0

    def get_next_update(self):
        if self.label == "factory":
            raise OSError(2)  # ENOENT: no OTA partitions (esp_ota_get_next_update_partition)
        return Partition(_LABELS[1 - _LABELS.index(self.label)])

    def set_boot(self):
        self._f.flush()
        self._f.seek(0)
        if not _valid(self._f):
            raise OSError(-5379)  # ESP_ERR_OTA_VALIDATE_FAILED
        data = _otadata()
        data["boot"] = self.label
        data["states"][self.label] = "new"   # ESP_OTA_IMG_NEW: the next boot is a trial
        _otadata(data)

    @staticmethod
    def mark_app_valid_cancel_rollback():
        data = _otadata()
        data["states"][_running()] = "valid"
        _otadata(data)
