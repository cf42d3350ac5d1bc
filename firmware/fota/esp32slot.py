"""ESP32 slot: the inactive OTA app partition, through `esp32.Partition`.

`switch()` writes a trial record (fota.esp32trial, `fota_trial.json`) just before
`set_boot()`; esp32trial reads it after the reset (MicroPython has no
pending-verify API).
"""
from micropython import const

from fota import esp32trial

_IMAGE_MAGIC = const(0xE9)
_DESC_OFFSET = const(0x20)
_VERSION_OFFSET = const(0x30)
_SECURE_VERSION_OFFSET = const(0x24)
CHIPS = {0: "esp32", 2: "esp32s2", 5: "esp32c3", 9: "esp32s3", 13: "esp32c6"}


def _u16(buf, at):
    return buf[at] | buf[at + 1] << 8


def _has_app_desc(buf):
    # esp_app_desc_t.magic_word 0xABCD5432, little-endian.
    o = _DESC_OFFSET
    return buf[o] == 0x32 and buf[o + 1] == 0x54 and buf[o + 2] == 0xCD and buf[o + 3] == 0xAB


def secure_version(buf):
    """esp_app_desc_t.secure_version of the image starting in `buf`."""
    o = _SECURE_VERSION_OFFSET
    return buf[o] | buf[o + 1] << 8 | buf[o + 2] << 16 | buf[o + 3] << 24


def desc_string(buf, at, size=32):
    end = at
    while end < at + size and buf[end]:
        end += 1
    return bytes(buf[at:end]).decode()


def header_problem(buf, chip):
    """None when `buf` starts a usable app image for `chip`, else the reason."""
    if buf[0] != _IMAGE_MAGIC:
        return "not an ESP32 app image (magic 0x%02x)" % buf[0]
    if not _has_app_desc(buf):
        return "no app descriptor at 0x20: combined firmware.bin? send the app image"
    got = _u16(buf, 12)
    if chip is not None and got != chip:
        return "image for %s, this board is %s" % (CHIPS.get(got, got), CHIPS.get(chip, chip))
    return None


class Esp32Slot:
    def __init__(self, partition_cls=None):
        if partition_cls is None:
            from esp32 import Partition as partition_cls
        self._cls = partition_cls
        # (The stub's Partition(id: str) omits the documented RUNNING/BOOT ints.)
        self.running = partition_cls(partition_cls.RUNNING)  # pyright: ignore[reportArgumentType]
        self.running_label = self.running.info()[4]
        self.boot_label = partition_cls(partition_cls.BOOT).info()[4]  # pyright: ignore[reportArgumentType]
        self.off = None     # why OTA is off on this board (None: it is on)
        try:
            self.part = self.running.get_next_update()
        except OSError:
            # ENOENT: a partition table without ota_0/ota_1 (a plain, non-OTA firmware
            # running from `factory`). The app must run anyway: OTA only switches off.
            self.part = None
            self.off = ("this firmware has no OTA partitions (running from %s): flash an "
                        "OTA build to enable updates" % self.running_label)
        if self.part is not None:
            # Whole blocks go straight to the partition's own (erasing) writeblocks:
            # no Python frame per block in the engine's loop.
            self.write_block = self.part.writeblocks
            info = self.part.info()
            self.label = info[4]
            self.capacity = info[3]
        else:
            self.label = None
            self.capacity = 0
        head = bytearray(0x50)
        self.running.readblocks(0, head, 0)
        self.chip = _u16(head, 12) if head[0] == _IMAGE_MAGIC else None
        desc = _has_app_desc(head)
        self.version = desc_string(head, _VERSION_OFFSET) if desc else "unknown"
        # ESP-IDF's anti-rollback counter (esp_app_desc_t.secure_version).
        self.secure_version = secure_version(head) if desc else 0
        self.floor = self.secure_version     # the engine raises it to the kept minimum

    # --- what the engine calls ---
    def pending(self):
        return esp32trial.pending(self.running_label)

    def busy(self):
        if self.boot_label != self.running_label:
            return "a new image is selected and waits for a reboot"
        return None

    def check_header(self, buf):
        problem = header_problem(buf, self.chip)
        if not problem and secure_version(buf) < self.floor:
            problem = "downgrade: secure_version %d is below %d" % (secure_version(buf),
                                                                   self.floor)
        if problem:
            from fota.errors import UpdateError

            raise UpdateError(-3, problem)

    def read_base(self, offset, buf):
        """The running image from `offset` (the base a delta is made against)."""
        self.running.readblocks(offset >> 12, buf, offset & 4095)

    def write_tail(self, n, buf, length):
        self.part.ioctl(6, n)                  # erase, then write without erasing
        self.part.writeblocks(n, buf[:length], 0)

    def read_block(self, n, buf):
        self.part.readblocks(n, buf)

    def switch(self, info):
        esp32trial.begin({"task": info.get("task"), "slot": self.label,
                          "from": self.running_label, "md5": info.get("md5")})
        try:
            self.part.set_boot()
        except OSError as exc:
            esp32trial.forget()
            from fota.errors import UpdateError

            raise UpdateError(-3, "bootloader refused the image: %s" % exc)
        self.boot_label = self.label

    # --- what the agent calls around reboots (the trial record: fota.esp32trial) ---
    def boot_state(self):
        cls = self._cls
        boot = cls(cls.BOOT).info()[4]  # pyright: ignore[reportArgumentType] (as above)
        return esp32trial.boot_state(self.running_label, boot)

    def note(self, reason):
        esp32trial.note(reason)

    def confirm(self):
        esp32trial.confirm(self._cls)

    def forget(self):
        esp32trial.forget()
