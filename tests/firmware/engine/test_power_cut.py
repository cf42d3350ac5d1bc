"""Power cuts (kill -9 of the unix-port process) at random moments of an update.

After every cut: the board still boots the old image (never a partly written or
unverified one), and the next attempt resumes and lands the new image with at
most one checkpoint interval downloaded twice.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from fota_host.boards import chips
from fota_host.images import bundle
from fota_host.images import synthetic as images
from fota_host.sim import flash as simflash
from fota_host.sim import mprun
from fota_host.sim import update as sim
from helpers import wait_for

CHECKPOINT = 8 * 4096


def start_update(flash: Path, board: str, img: dict, task: int):
    # The device side of `fota sim update` takes the family (esp32s3 runs esp32's code).
    args = ["-m", "fota_sim", "update", chips.family(board), img["url"], img["md5"],
            str(img["size"]), "--task", str(task)]
    return mprun.popen(args, heap="64K", flash=flash, cwd=flash)


def journal_size(flash: Path) -> int:
    try:
        return (flash / "fota_journal.json").stat().st_size
    except OSError:
        return 0


def test_random_power_cuts_never_boot_a_partial_image_and_resume(tmp_path, served, any_board):
    board = any_board
    esp = chips.family(board) == "esp32"
    rng = random.Random(20261127 + len(board))
    flash = tmp_path / "flash"
    sim.prepare(flash, board, "1.0.0")
    # Pico W app slots are small (384 KiB); ESP32 slots hold 1.5 MiB.
    size = 1_200_000 if esp else 380_000
    data = images.sim_image(board, "2.0.0", size)
    img = served.add("v2.bin", data)
    # Slow the server so that every cut lands mid-way (about 1.5 s for the whole image).
    served.server.faults.delay_per_chunk = 0.02 if esp else 0.065
    for cut in range(4):
        asked = len(served.server.stats.requests)
        proc = start_update(flash, board, img, task=5)
        # Cut at a random moment of the download, timed from the device's request (not from
        # the process start, which a busy machine makes slow). The last cut waits for a
        # checkpoint too, so that the resume below is always exercised.
        wait_for(lambda n=asked: len(served.server.stats.requests) > n, timeout=30)
        if cut == 3:  # (the file exists before its first checkpoint: 16 bytes + a record)
            wait_for(lambda: journal_size(flash) >= 32, timeout=60, what="a checkpoint")
        time.sleep(rng.uniform(0.05, 0.25))
        proc.kill()                                     # SIGKILL: no cleanup runs
        proc.wait()
        st = simflash.boot(flash)
        assert st["version"] == "1.0.0", f"cut {cut}: booted {st}"
        assert not st["pending"]
        if esp:
            assert st["running"] == "ota_0"
    served.server.faults.delay_per_chunk = 0.0
    report = sim.update(flash, board, img["url"], img["md5"], size, task=5)
    assert report["ok"], report
    # At least one resumed request, starting on a block boundary.
    ranges = [r["range"] for r in served.server.stats.requests if r["range"]]
    assert ranges and all(int(r[6:-1]) % 4096 == 0 for r in ranges)
    st = simflash.boot(flash)
    assert st["version"] == "2.0.0" and st["pending"]


def test_cut_right_after_switch_boots_the_new_image_on_trial(tmp_path, served, esp32_board):
    """Once set_boot returned the switch is complete; a cut then is just a reboot."""
    flash = tmp_path / "flash"
    sim.prepare(flash, esp32_board, "1.0.0")
    img = served.add("v2.bin", images.sim_image(esp32_board, "2.0.0", 100_000 - 100_000 % 16))
    assert sim.update(flash, esp32_board, img["url"], img["md5"], img["size"])["ok"]
    st = simflash.boot(flash)
    assert (st["version"], st["pending"]) == ("2.0.0", True)


def test_bundle_unpack_cut_keeps_old_app(tmp_path, served, pico_board):
    """A cut while the slot folder is half unpacked: the pointer still names the old slot."""
    flash = tmp_path / "flash"
    sim.prepare(flash, pico_board, "1.0.0")
    # Simulate the state a cut during unpack leaves: slot b partly written, pointer unchanged.
    (flash / "slots" / "b").mkdir(parents=True)
    (flash / "slots" / "b" / "app.py").write_text("half")
    st = simflash.boot(flash)
    assert (st["running"], st["version"]) == ("a", "1.0.0")
    data = bundle.pack("2.0.0", bundle.sim_app("2.0.0"))
    img = served.add("b.fotb", data)
    assert sim.update(flash, pico_board, img["url"], img["md5"], img["size"])["ok"]
    st = simflash.boot(flash)
    assert (st["running"], st["version"], st["pending"]) == ("b", "2.0.0", True)
    assert "def healthy" in (flash / "slots" / "b" / "app.py").read_text()
