"""The unix-port stand-in for esp32.Partition keeps the real module's semantics."""

from __future__ import annotations

import json

from fota_host.boards import chips
from fota_host.sim import mprun
from fota_host.sim import update as sim

SCRIPT = r"""
import json
from esp32 import Partition
run = Partition(Partition.RUNNING)
nxt = run.get_next_update()
out = {"running": run.info()[4], "next": nxt.info()[4], "size": nxt.info()[3],
       "blocks": nxt.ioctl(4, 0), "block_size": nxt.ioctl(5, 0)}
buf = bytearray(4096)
nxt.writeblocks(3, bytearray(b"\xf0" * 4096))          # erasing form
nxt.writeblocks(3, bytearray(b"\x3c" * 16), 100)        # no erase: bits only clear
nxt.readblocks(3, buf)
out["and"] = [buf[99], buf[100], buf[115], buf[116]]
nxt.ioctl(6, 3)                                         # erase one block
nxt.readblocks(3, buf)
out["erased"] = buf == bytearray(b"\xff" * 4096)
try:
    nxt.set_boot()                                      # no valid image there
    out["set_boot"] = "accepted"
except OSError as e:
    out["set_boot"] = e.args[0]
try:
    Partition("nvs")
except OSError as e:
    out["unknown"] = e.args[0]
print(json.dumps(out))
"""


def test_partition_stand_in_semantics(tmp_path, esp32_board):
    flash = tmp_path / "flash"
    sim.prepare(flash, esp32_board, "1.0.0")
    proc = mprun.run(["-c", SCRIPT], flash=flash, cwd=flash)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["running"] == "ota_0" and out["next"] == "ota_1"
    # the slot of MicroPython's OTA table for the board's usual flash (8 MiB on the S3)
    slot = chips.BOARDS[esp32_board].ota_slot
    assert out["size"] == slot == out["blocks"] * out["block_size"]
    assert out["block_size"] == 4096
    assert out["and"] == [0xF0, 0x30, 0x30, 0xF0]          # 0xF0 & 0x3C, untouched around
    assert out["erased"] is True
    assert out["set_boot"] == -5379                         # ESP_ERR_OTA_VALIDATE_FAILED
    assert out["unknown"] == 2                              # ENOENT
    assert json.loads((flash / "otadata.json").read_text())["boot"] == "ota_0"
