"""File slots (Pico W, unix): A/B application slots on the filesystem.

RP2040 has no API to switch between firmware slots, so the *application* is
updated instead. Layout under the filesystem root:

    slots/a/, slots/b/   unpacked application (app.py/.mpy + files, manifest.json)
    slots/<x>.img        the bundle being streamed into the inactive slot
    fota_boot.json       pointer: active slot, previous slot, confirmed, trial count

The pointer is replaced atomically (temp file + rename). The launcher (`launch`)
runs on every boot: an unconfirmed slot gets `max_trials` boots to confirm,
after which the previous slot comes back.
"""
from micropython import const

POINTER = "fota_boot.json"
_HEADER = const(64)
_FORMAT = const(1)


def _load(root):
    """The pointer; a damaged one (checksum, unreadable, no slot named) is replaced by
    one naming a slot that holds an app, with "damaged" saying what happened (the
    agent reports it as a failure, never as a success)."""
    from fota import statefile

    state, why = statefile.check(root + POINTER)
    if not why and not state:
        return {"active": "a", "previous": None, "confirmed": True, "trial": 0}
    if not why and state.get("active") not in ("a", "b"):
        why = "names no slot"
    if not why:
        return state
    import os

    task = state.get("task") if state else None
    active = "a"
    try:
        os.stat(root + "slots/a/manifest.json")
    except OSError:
        active = "b"
    return {"active": active, "previous": None, "confirmed": True, "trial": 0,
            "damaged": {"task": task if isinstance(task, int) else -1,
                        "reason": "boot pointer %s is damaged (%s): booted slot %s" % (
                            POINTER, why, active)}}


def _save(root, state):
    from fota import statefile

    statefile.save(root + POINTER, state)


def _error(step, reason):
    from fota.engine import UpdateError

    return UpdateError(step, reason)


def _u16(b, at):
    return b[at] | b[at + 1] << 8


def _u32(b, at):
    return b[at] | b[at + 1] << 8 | b[at + 2] << 16 | b[at + 3] << 24


def slot_version(root, slot, key="version", default="unknown"):
    from fota import statefile

    manifest = statefile.load("%sslots/%s/manifest.json" % (root, slot))
    return manifest.get(key, default) if manifest else default


def _rmtree(path):
    import os

    try:
        entries = os.listdir(path)
    except OSError:
        return
    for name in entries:
        full = path + "/" + name
        try:
            os.remove(full)
        except OSError:
            _rmtree(full)
    os.rmdir(path)


def _makedirs(path):
    import os

    at = 0
    while True:
        at = path.find("/", at + 1)
        part = path if at < 0 else path[:at]
        try:
            os.mkdir(part)
        except OSError:
            pass
        if at < 0:
            return


def _safe_name(name):
    if not name or name[0] == "/" or "\\" in name:
        return False
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return False
    return True


class FileSlot:
    def __init__(self, root="", capacity=393216):
        self.root = root
        self.state = state = _load(root)
        # Right after a switch (trial 0, unconfirmed) the old slot is still running.
        waiting = not state.get("confirmed", True) and not state.get("trial", 0)
        self.active = state["previous"] if waiting and state.get("previous") else state["active"]
        self.label = "b" if self.active == "a" else "a"
        self.capacity = capacity
        self.version = slot_version(root, self.active)
        # The bundle's anti-rollback counter (manifest.json "secure_version").
        sv = slot_version(root, self.active, "secure_version", "none")
        self.secure_version = self.floor = sv if isinstance(sv, int) else 0
        self._img = "%sslots/%s.img" % (root, self.label)
        self._f = None
        # The running slot's bundle as it was downloaded: the base of a delta.
        self._base = "%sslots/%s.img" % (root, self.active)
        self._bf = None
        import os

        try:
            os.stat(self._base)
        except OSError:
            self.read_base = None  # pyright: ignore[reportAttributeAccessIssue] (no delta base)

    def _file(self):
        if self._f is None:
            _makedirs(self.root + "slots")
            try:
                self._f = open(self._img, "r+b")
            except OSError:
                self._f = open(self._img, "w+b")
        return self._f

    # --- what the engine calls ---
    def pending(self):
        return self.boot_state()[0] == "pending"

    def busy(self):
        state = self.state
        if not state.get("confirmed", True) and not state.get("trial", 0):
            return "a new app is selected and waits for a reboot"
        return None

    def check_header(self, buf):
        if bytes(buf[0:4]) != b"FOTB":
            raise _error(-3, "not an app bundle (magic)")
        if buf[4] != _FORMAT:
            raise _error(-3, "bundle format %d not supported" % buf[4])
        if _HEADER + _u32(buf, 8) > self.capacity:
            raise _error(-3, "bundle does not fit the slot")

    def write_block(self, n, buf):
        f = self._file()
        f.seek(n << 12)
        f.write(buf)

    def write_tail(self, n, buf, length):
        self.write_block(n, buf[:length])
        self._f.flush()

    def read_block(self, n, buf):
        f = self._file()
        f.seek(n << 12)
        f.readinto(buf)

    def read_base(self, offset, buf):
        """The running slot's bundle from `offset` (the base a delta is made against)."""
        if self._bf is None:
            self._bf = open(self._base, "rb")
        self._bf.seek(offset)
        if self._bf.readinto(buf) != len(buf):
            raise OSError(5)

    def switch(self, info):
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._bf is not None:
            self._bf.close()
            self._bf = None
        version = self._unpack(info["size"], info.get("floor", 0))
        # The bundle stays: the base of the next delta update.
        self.state = {"active": self.label, "previous": self.active, "confirmed": False,
                      "trial": 0, "task": info.get("task"), "version": version}
        _save(self.root, self.state)

    def _unpack(self, size, floor=0):
        """Check the bundle in the slot image and unpack it; returns its version."""
        import binascii

        from fota.engine import block_buffer

        buf = block_buffer()
        dest = "%sslots/%s" % (self.root, self.label)
        with open(self._img, "rb") as f:
            head = f.read(_HEADER)
            if len(head) < _HEADER or head[:4] != b"FOTB":
                raise _error(-3, "not an app bundle")
            count = _u16(head, 6)
            length = _u32(head, 8)
            end = _HEADER + length
            # A signed bundle (fota.sbv2) is padded to 4 KiB and ends with the sector.
            if end != size and size != ((end + 4095) & ~4095) + 4096:
                raise _error(-3, "bundle length does not match its header")
            crc = 0
            left = length
            while left:
                n = f.readinto(buf) if left >= 4096 else f.readinto(buf, left)
                if not n:
                    raise _error(-3, "bundle truncated")
                crc = binascii.crc32(buf[:n] if n < 4096 else buf, crc)
                left -= n
            if crc != _u32(head, 12):
                raise _error(-3, "bundle CRC mismatch")
            end = head[16:48].find(b"\0")
            version = bytes(head[16:48 if end < 0 else 16 + end]).decode()
            _rmtree(dest)
            _makedirs(dest)
            f.seek(_HEADER)
            try:
                for _ in range(count):
                    name = f.read(_u16(f.read(2), 0)).decode()
                    if not _safe_name(name):
                        raise _error(-3, "bad path in bundle")
                    left = _u32(f.read(4), 0)
                    slash = name.rfind("/")
                    if slash > 0:
                        _makedirs(dest + "/" + name[:slash])
                    with open(dest + "/" + name, "wb") as out:
                        while left:
                            n = f.readinto(buf) if left >= 4096 else f.readinto(buf, left)
                            if not n:
                                raise _error(-3, "bundle truncated")
                            out.write(buf[:n] if n < 4096 else buf)
                            left -= n
                from fota import statefile

                sv = statefile.load(dest + "/manifest.json") or {}
                sv = sv.get("secure_version", 0) if isinstance(sv, dict) else 0
                sv = sv if isinstance(sv, int) else 0
                if sv < floor:
                    raise _error(-3, "downgrade: secure_version %d is below %d" % (sv, floor))
                statefile.save(dest + "/manifest.json", {"version": version,
                                                         "secure_version": sv})
            except OSError as exc:
                raise _error(-4, "unpacking the bundle failed: %s" % exc)
        return version

    # --- what the agent calls before and after an update ---
    def room(self, size):
        """None when the filesystem can take an update of `size` bytes, else why.

        The bundle and its unpacked files both need room (2 x size, and a margin for
        the filesystem's own blocks). The inactive slot's old app goes first: once the
        running one is confirmed nobody needs it."""
        if self.busy() or self.pending():
            return None                     # refused by the engine, which says why
        import os

        _rmtree("%sslots/%s" % (self.root, self.label))
        have = 0
        try:
            have = os.stat(self._img)[6]    # a partial bundle is written over in place
        except OSError:
            pass
        st = os.statvfs(self.root or ".")      # (the filesystem the slots live on)
        have = (have if have < size else size) + st[4] * st[1]
        need = 2 * size + 8 * st[0]
        if have < need:
            return "not enough space: need %d KiB, have %d KiB" % (need >> 10, have >> 10)
        return None

    def discard(self):
        """After a failed attempt: give the app its space back (the partial bundle, a
        half-unpacked slot). Nothing is touched while a new slot waits for its reboot
        or its confirmation."""
        if self.busy() or self.pending():
            return
        import os

        if self._f is not None:
            self._f.close()
            self._f = None
        try:
            os.remove(self._img)
        except OSError:
            pass
        _rmtree("%sslots/%s" % (self.root, self.label))

    # --- what the agent calls around reboots ---
    def boot_state(self):
        state = self.state
        if state.get("damaged"):
            return "damaged", state["damaged"]
        if state.get("rolled_back"):
            return "rolled_back", state["rolled_back"]
        if not state.get("confirmed", True) and state.get("trial", 0):
            return "pending", {"task": state.get("task"), "slot": state["active"]}
        return "normal", None

    def note(self, reason):
        self.state["reason"] = reason
        _save(self.root, self.state)

    def confirm(self):
        self.state["confirmed"] = True
        self.state["trial"] = 0
        self.state.pop("task", None)
        self.state.pop("reason", None)
        _save(self.root, self.state)

    def forget(self):
        gone = self.state.pop("rolled_back", None)
        if self.state.pop("damaged", None) is not None or gone is not None:
            _save(self.root, self.state)


def launch(root="", max_trials=3):
    """Boot-time slot choice with trial counting; returns the slot folder to run, and
    says which one and why in one line."""
    state = _load(root)
    damaged = state.get("damaged")
    if damaged:
        print("fota:", damaged["reason"])
        _save(root, state)                   # kept for the agent's report
    if not state.get("confirmed", True):
        state["trial"] = state.get("trial", 0) + 1
        if state["trial"] > max_trials and state.get("previous"):
            state["rolled_back"] = {
                "task": state.get("task"), "slot": state["active"],
                "reason": state.get("reason") or "not confirmed after %d boots" % max_trials,
            }
            state["active"] = state["previous"]
            state["previous"] = None
            state["confirmed"] = True
            state["trial"] = 0
            state.pop("task", None)
            state.pop("reason", None)
        _save(root, state)
    active = state["active"]
    if state.get("rolled_back"):
        why = "rolled back from slot %s: %s" % (state["rolled_back"]["slot"],
                                                state["rolled_back"]["reason"])
    elif not state.get("confirmed", True):
        why = "new app on trial, boot %d of %d" % (state["trial"], max_trials)
    else:
        why = "confirmed"
    if not damaged:
        print("fota: booting slot %s (version %s): %s" % (active, slot_version(root, active),
                                                          why))
    return "%sslots/%s" % (root, active)
