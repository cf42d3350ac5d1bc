"""`fota sim board --board B` for every board of boards/chips.py: the newer boards
(ESP32-S3/C3/C6, Pico 2 W) boot as their chip (platform, chip id in the shipped image,
OTA slot size, watchdog limit), take `make deploy` over the serial line, and take an OTA
update through the real platform into their own slots; an unknown board is refused with
the list of known ones. (esp32 and pico_w run the same flow in test_sim_board_deploy.py.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from fota_host.boards import chips, hil
from fota_host.cli.simboard import SIM_BOARDS
from fota_host.images import esp_image, synthetic
from fota_host.platform.process import start_platform
from fota_host.sim import flash as simflash
from fota_host.sim.board import SimBoard
from simboard import FOTA, Board, device_seen, make, mpremote, provision, wait_for
from test_sim_board_deploy import deployed, running

NEW_BOARDS = ["esp32s3", "esp32c3", "esp32c6", "pico2_w"]

# On the board: the port it says it is, and whether its watchdog takes 12 s and 16.777 s
# (the Pico W's RP2040 takes neither, the Pico 2 W's RP2350 both, an ESP32 any).
PROBE = """import sys, machine
ok = []
for ms in (12000, 16777, 16778):
    try:
        machine.WDT(timeout=ms)
        ok.append(ms)
    except ValueError:
        pass
print(sys.platform, ok)
"""


def test_every_board_of_chips_is_a_simulated_board() -> None:
    assert SIM_BOARDS == list(chips.BOARDS)


def test_unknown_board_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    proc = subprocess.run([*FOTA, "sim", "board", "--board", "esp32s2", "--root",
                           str(tmp_path / "b")], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "'esp32s2' is not one of" in proc.stderr
    assert all(f"'{name}'" in proc.stderr for name in chips.BOARDS), proc.stderr
    assert not (tmp_path / "b").exists()            # nothing was made for it
    with pytest.raises(simflash.SimError,
                       match="unknown board 'rp2040'; one of esp32, esp32s3, esp32c3, "
                             "esp32c6, pico_w, pico2_w"):
        SimBoard("rp2040", tmp_path / "c")


def boots_as_its_chip(b: Board) -> None:
    """The first boot: the port, the watchdog limit and (ESP32s) the flash it shipped with."""
    spec = chips.BOARDS[b.board]
    p = mpremote(b.port, "exec", PROBE)
    assert p.returncode == 0, p.stderr
    platform, ok = p.stdout.strip().split(" ", 1)
    assert platform == spec.port
    assert json.loads(ok) == [ms for ms in (12000, 16777, 16778) if ms <= spec.wdt_max_s * 1000]
    if spec.family == "esp32":
        assert "power reset: running ota_0 version 1.0.0" in b.log.read_text()
        assert (b.flash / "ota_1").stat().st_size == spec.ota_slot
        shipped = esp_image.parse_app_image((b.flash / "ota_0").read_bytes())
        assert shipped.chip == b.board and shipped.version == "1.0.0"


@pytest.mark.parametrize("kind", NEW_BOARDS)
def test_new_board_boots_deploys_and_updates_over_the_air(tmp_path: Path, kind: str) -> None:
    platform = start_platform(tmp_path / "data")
    try:
        device = f"board-{kind.replace('_', '')}"
        cfg = provision(tmp_path, platform.broker, device, kind)
        conf = json.loads(cfg.read_text())           # no random wait before the download
        conf.setdefault("download", {})["start_delay_s"] = 0
        cfg.write_text(json.dumps(conf))
        with Board(tmp_path, kind) as b:
            assert b.info["board"] == kind
            boots_as_its_chip(b)
            p = make("deploy", f"BOARD={kind}", f"PORT={b.port}", f"CONFIG={cfg}")
            assert p.returncode == 0, p.stdout + p.stderr
            deployed(b, cfg)                         # the family's entry files and libraries
            client = platform.client()
            wait_for("the deployed main.py informs the platform",
                     lambda: device_seen(client, device))
            image = tmp_path / "new.bin"
            # the board's own kind of image: an app image with its chip id, or a bundle
            image.write_bytes(synthetic.sim_image(kind, "2.0.0", None))
            result = hil.run(kind, b.port, cfg, tmp_path / "data", image, "2.0.0",
                             timeout=120, poll=0.3, echo=lambda _s: None)
            assert result["ok"] and result["state"] == "succeeded", result
            assert running(b) == {"version": "2.0.0", "confirmed": True}
            if chips.family(kind) == "esp32":        # into the other slot of its own size
                st = simflash.status(b.flash)
                assert st["running"] == "ota_1" and st["model"] == kind
            assert b.resets("hard") >= 2             # mpremote's reset, then the update's
            wait_for("the platform knows the new version",
                     lambda: device_seen(client, device)["version"] == "2.0.0")
    finally:
        platform.stop()


def test_an_image_for_another_chip_is_refused_before_the_board(tmp_path: Path) -> None:
    """`fota hil` on an ESP32-C3 with an image built for the S3: said before any task."""
    cfg = tmp_path / "d.json"
    cfg.write_text(json.dumps({"device_id": "d", "broker": {"host": "127.0.0.1"}}))
    image = tmp_path / "s3.bin"
    image.write_bytes(synthetic.sim_image("esp32s3", "2.0.0", None))
    with pytest.raises(hil.HilError, match="built for esp32s3.*not esp32c3"):
        hil.run("esp32c3", "/dev/null", cfg, tmp_path, image, "2.0.0")
