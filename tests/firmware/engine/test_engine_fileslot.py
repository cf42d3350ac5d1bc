"""File slots (Pico W, Pico 2 W): app bundles streamed into the inactive slot folder, on the
unix port."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
from pathlib import Path

from fota_host.images import bundle
from fota_host.images import synthetic as images
from fota_host.sim import flash as simflash
from fota_host.sim import mprun
from fota_host.sim import update as sim


def new_flash(tmp_path: Path, board: str) -> Path:
    flash = tmp_path / "flash"
    sim.prepare(flash, board, "1.0.0")
    return flash


def test_bundle_update_unpacks_into_inactive_slot_and_switches(tmp_path, served, pico_board):
    board = pico_board
    flash = new_flash(tmp_path, board)
    app = tmp_path / "app"
    (app / "lib").mkdir(parents=True)
    (app / "app.py").write_text("VERSION = '2.0.0'\ndef main():\n    return 42\n")
    (app / "lib" / "helper.py").write_text("X = 1\n")
    (app / "config.txt").write_text("hello")
    data = bundle.from_folder(app, "2.0.0")
    img = served.add("app.fotb", data)
    report = sim.update(flash, board, img["url"], img["md5"], img["size"],
                        sha256=img["sha256"])
    assert report["ok"], report
    st = simflash.status(flash)
    assert (st["running"], st["boot"]) == ("a", "b")
    slot = flash / "slots" / "b"
    assert (slot / "app.mpy").exists() and (slot / "lib" / "helper.mpy").exists()
    assert (slot / "config.txt").read_text() == "hello"
    assert json.loads((slot / "manifest.json").read_text())["version"] == "2.0.0"
    # The new app really runs on MicroPython from its slot.
    proc = mprun.run(["-c", "import sys; sys.path.insert(0, 'slots/b'); import app; "
                      "print(app.main())"], cwd=flash)
    assert proc.stdout.strip() == "42", proc.stderr


def test_launcher_gives_new_slot_n_trials_then_falls_back(tmp_path, served, pico_board):
    board = pico_board
    flash = new_flash(tmp_path, board)
    img = served.add("app.fotb", images.sim_image(board, "2.0.0", None))
    assert sim.update(flash, board, img["url"], img["md5"], img["size"], task=9)["ok"]
    for trial in (1, 2, 3):
        st = simflash.boot(flash)
        assert (st["running"], st["pending"], st["trial"]) == ("b", True, trial)
    st = simflash.boot(flash)
    assert (st["running"], st["version"], st["pending"]) == ("a", "1.0.0", False)
    pointer = json.loads((flash / "fota_boot.json").read_text())
    assert pointer["rolled_back"]["task"] == 9


def test_confirmed_slot_stays(tmp_path, served, pico_board):
    board = pico_board
    flash = new_flash(tmp_path, board)
    img = served.add("app.fotb", images.sim_image(board, "2.0.0", None))
    assert sim.update(flash, board, img["url"], img["md5"], img["size"])["ok"]
    simflash.boot(flash)
    simflash.confirm(flash)
    for _ in range(5):
        st = simflash.boot(flash)
    assert (st["running"], st["version"], st["pending"]) == ("b", "2.0.0", False)


def test_not_a_bundle_is_refused_on_first_block(tmp_path, served, pico_board):
    board = pico_board
    flash = new_flash(tmp_path, board)
    img = served.add("x.bin", b"\xe9" + bytes(9999))
    report = sim.update(flash, board, img["url"], img["md5"], img["size"])
    assert report["step"] == -3 and "not an app bundle" in report["reason"]
    assert simflash.status(flash)["boot"] == "a"


def test_bundle_with_path_escape_is_refused(tmp_path, served, pico_board):
    board = pico_board
    flash = new_flash(tmp_path, board)
    good = bundle.pack("2.0.0", {"app.py": b"x=1\n", "zz.py": b"y=2\n"})
    # Forge an entry name that climbs out of the slot, and fix up the CRC.
    evil = good.replace(b"zz.py", b"../x.")
    import binascii
    import struct

    payload = evil[bundle.HEADER:]
    evil = evil[:12] + struct.pack("<I", binascii.crc32(payload)) + evil[16:]
    img = served.add("evil.fotb", evil)
    report = sim.update(flash, board, img["url"], img["md5"], img["size"])
    assert report["step"] == -3 and "bad path" in report["reason"]
    assert not (flash / "slots" / "x.").exists()
    assert simflash.status(flash)["boot"] == "a"


def test_full_filesystem_is_a_flash_write_failure(tmp_path, served, pico_board):
    """RLIMIT_FSIZE makes writes past 100 kB fail with EFBIG, like a full filesystem."""
    board = pico_board
    flash = new_flash(tmp_path, board)
    img = served.add("big.fotb", images.sim_image(board, "2.0.0", 300_000))

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    # (the device side of `fota sim update` takes the family: the Pico 2 W's code is the Pico W's)
    args = ["-m", "fota_sim", "update", "pico_w", img["url"], img["md5"], str(img["size"])]
    proc = mprun.popen(args, heap="64K", flash=flash, cwd=flash, stdout=subprocess.PIPE,
                       text=True, preexec_fn=limit)
    out, _ = proc.communicate(timeout=60)
    report = json.loads(out.strip().splitlines()[-1])
    assert report["step"] == -4 and "flash write failed" in report["reason"], report
    assert simflash.status(flash)["boot"] == "a"
    assert simflash.boot(flash)["version"] == "1.0.0"


def test_bundle_bigger_than_slot_capacity_is_refused_before_download(tmp_path, served,
                                                                     pico_board):
    board = pico_board
    flash = new_flash(tmp_path, board)
    img = served.add("huge.fotb", images.sim_image(board, "2.0.0", 400_000))
    report = sim.update(flash, board, img["url"], img["md5"], img["size"])
    assert report["step"] == -3 and "does not fit" in report["reason"]
    assert served.server.stats.requests == []
